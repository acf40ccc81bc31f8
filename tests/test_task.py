"""The evidence-accumulation task (spec F)."""

from __future__ import annotations

import torch

from mdgl_analysis.tasks.evidence import EvidenceTask, cue_bits


def sample(task, n_in, batch, gen):
    """A batch of the task as (x, side, pattern), like the pre-plug-in ``sample``."""
    b, pattern = task.sample_patterns(batch, gen)
    assert (b.target == b.target[-1]).all() and b.mask[-1].all() and not b.mask[:-1].any()
    return b._replace(target=b.target[-1]), pattern


def timeline(task):
    return task.timeline()


def test_paper_timeline_has_seven_cues_a_delay_and_a_recall_window():
    tl = timeline(EvidenceTask())
    assert tl.n_steps == 2000
    assert tl.cues == [(150 * c, 150 * c + 100) for c in range(7)]
    assert tl.cues[-1][1] == 1000
    assert tl.recall == (1850, 2000)


def test_inputs_follow_the_cues_and_targets_are_the_majority_side():
    cfg = EvidenceTask()
    b, pattern = sample(cfg, 40, 64, torch.Generator().manual_seed(0))
    assert b.x.shape == (2000, 64, 40)
    bits = cue_bits(pattern, 7)
    assert torch.equal(b.target, (bits.sum(1) >= 4).long())
    for c, (start, stop) in enumerate(timeline(cfg).cues):
        left = b.x[start:stop, :, 0:10].sum((0, 2))
        right = b.x[start:stop, :, 10:20].sum((0, 2))
        assert ((left > 0) <= bits[:, c].bool()).all()  # left channels silent on right cues
        assert ((right > 0) <= ~bits[:, c].bool()).all()
    assert b.x[:1850, :, 20:30].sum() == 0 and b.x[1850:, :, 20:30].sum() > 0
    assert b.x[1000:1850, :, :30].sum() == 0  # delay: only noise


def test_poisson_rates_are_40_hz_on_cues_and_10_hz_noise():
    cfg = EvidenceTask()
    b, _ = sample(cfg, 40, 128, torch.Generator().manual_seed(1))
    noise = b.x[:, :, 30:].mean().item()
    recall = b.x[1850:, :, 20:30].mean().item()
    assert abs(noise - 0.01) < 0.0005
    assert abs(recall - 0.04) < 0.003
    assert b.x.max() >= 2  # counts, not Bernoulli (P(>=2) = 7.8e-4 per bin)


def test_cue_patterns_are_distinct_within_a_batch_and_classes_balance_over_all_patterns():
    cfg = EvidenceTask()
    b, pattern = sample(cfg, 40, 128, torch.Generator().manual_seed(2))
    assert pattern.unique().numel() == 128
    assert int(b.target.sum()) == 64
    _, small = sample(cfg, 40, 64, torch.Generator().manual_seed(3))
    assert small.unique().numel() == 64


def test_bits_are_most_significant_first():
    assert cue_bits(torch.tensor([0b1000000, 0b0000011]), 7).tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 1],
    ]


def test_same_seed_same_batch_different_seed_different_batch():
    cfg = EvidenceTask()
    a, _ = sample(cfg, 40, 8, torch.Generator().manual_seed(7))
    b, _ = sample(cfg, 40, 8, torch.Generator().manual_seed(7))
    c, _ = sample(cfg, 40, 8, torch.Generator().manual_seed(8))
    assert torch.equal(a.x, b.x) and torch.equal(a.target, b.target)
    assert not torch.equal(a.x, c.x)
