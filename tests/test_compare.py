"""Same-batch comparison with BPTT and its recording during training."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from mdgl_analysis.config import validate
from mdgl_analysis.training.compare import comparison_masks, cosine, same_batch
from mdgl_analysis.training.loop import start

from helpers import make_small, small_config


def test_cosine_of_identical_negated_and_orthogonal_vectors():
    a = torch.tensor([1.0, 2.0, 0.0])
    assert math.isclose(cosine(a, 3 * a), 1.0)
    assert math.isclose(cosine(a, -a), -1.0)
    assert cosine(a, torch.tensor([-2.0, 1.0, 5.0])) == 0.0
    assert math.isnan(cosine(a, torch.zeros(3)))


def test_blocks_select_the_synapses_of_their_cell_types():
    cfg, net, snap, fwd = make_small(0)
    masks = comparison_masks(snap)
    inh = snap.inhibitory
    post, pre = masks["rec_IE"][1].nonzero(as_tuple=True)
    assert post.numel() > 0 and inh[pre].all() and not inh[post].any()
    post, pre = masks["rec_EI"][1].nonzero(as_tuple=True)
    assert post.numel() > 0 and not inh[pre].any() and inh[post].all()
    blocks = sum(masks[f"rec_{b}"][1].long() for b in ("EE", "EI", "IE", "II"))
    assert torch.equal(blocks.bool(), masks["rec"][1]) and blocks.max() == 1
    assert torch.equal(masks["in_E"][1] | masks["in_I"][1], masks["in"][1])
    assert not masks["rec"][1].diagonal().any()


def test_same_batch_gives_one_for_bptt_against_itself_and_less_for_eprop():
    cfg, net, snap, fwd = make_small(1)
    grads, cos = same_batch(snap, fwd, ["eprop", "mdgl_exact"])
    assert set(grads) == {"bptt", "eprop", "mdgl_exact"}
    _, self_cos = same_batch(snap, fwd, ["bptt"])
    assert self_cos == {}  # BPTT is the reference, never compared with itself
    assert -1 <= cos["eprop_rec"] < 0.999
    assert cos["mdgl_exact_rec"] > cos["eprop_rec"]  # one more step of exact credit helps here


def test_training_records_cosines_every_compare_every_iterations(tmp_path):
    cfg = small_config()
    cfg = validate(
        replace(
            cfg,
            train=replace(
                cfg.train, iterations=5, compare_every=2, rule="mdgl", compare_rules="eprop,mdgl"
            ),
        )
    )
    run, _ = start(cfg, tmp_path / "r", ["test"], progress=False)
    rows = [r for r in run.read_metrics() if r["name"].startswith("cos_")]
    assert sorted({r["iteration"] for r in rows}) == [0, 2, 4]
    names = {r["name"] for r in rows}
    assert {"cos_eprop_rec", "cos_mdgl_in", "cos_mdgl_rec_EE", "cos_eprop_in_I"} <= names
