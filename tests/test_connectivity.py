"""Initialisation statistics (spec B)."""

from __future__ import annotations

import torch

from mdgl_analysis.config import PRESETS
from mdgl_analysis.network.connectivity import (
    balanced_magnitudes,
    connection_budget,
    dale_signs,
    initial_connectivity,
)


def test_dale_signs_put_19_inhibitory_cells_first_and_7_inhibitory_inputs():
    s = dale_signs(100, 0.8)
    assert (s[:19] == -1).all() and (s[19:] == 1).all()
    assert int((dale_signs(40, 0.8) < 0).sum()) == 7


def test_balanced_dense_matrix_has_zero_column_sums_and_spectral_radius_one():
    gen = torch.Generator().manual_seed(3)
    sign = dale_signs(100, 0.8)
    theta = balanced_magnitudes(sign, 100, gen)
    w = sign[:, None] * theta
    assert (theta >= 0).all()
    torch.testing.assert_close(w.sum(0), torch.zeros(100, dtype=torch.float64), atol=1e-12, rtol=0)
    radius = torch.linalg.eigvals(w).abs().max().item()
    assert abs(radius - 1.0) < 1e-10


def test_paper_initialisation_statistics_over_seeds():
    cfg = PRESETS["paper"].sized_network
    counts = {"in": [], "rec": [], "out": []}
    for seed in range(10):
        c = initial_connectivity(cfg, torch.Generator().manual_seed(seed))
        for m in counts:
            counts[m].append(int((getattr(c, f"theta_{m}") > 0).sum()))
        # signs follow the presynaptic cell, no autapses, inhibitory cells first
        assert c.inhibitory[:19].all() and not c.inhibitory[19:].any()
        assert c.adaptive[50:].all() and not c.adaptive[:50].any()
        assert (c.sign_rec == torch.where(c.inhibitory, -1.0, 1.0)[None, :].double()).all()
        assert (c.sign_out == c.sign_rec[:2]).all()
        assert (c.sign_in == torch.where(c.input_inhibitory, -1.0, 1.0)[None, :].double()).all()
        assert int(c.input_inhibitory.sum()) == 7
        assert (c.theta_rec.diagonal() == 0).all()
        assert int(
            (c.theta_in > 0).sum() + (c.theta_rec > 0).sum() + (c.theta_out > 0).sum()
        ) <= connection_budget(cfg)
    mean = {m: sum(v) / len(v) for m, v in counts.items()}
    # spec B.3: about 379 of 4000, 950 of 10000 (with ~9 diagonal entries, masked here), 19 of 200
    assert 365 < mean["in"] < 393
    assert 925 < mean["rec"] < 955
    assert 16 < mean["out"] < 21
    assert connection_budget(cfg) == 1420


def test_input_signs_are_shuffled_by_the_seed():
    cfg = PRESETS["paper"].sized_network
    a = initial_connectivity(cfg, torch.Generator().manual_seed(0)).input_inhibitory
    b = initial_connectivity(cfg, torch.Generator().manual_seed(1)).input_inhibitory
    assert not torch.equal(a, b)
    assert not a[:7].all()  # not simply inhibitory-first


def test_same_seed_gives_the_same_network():
    cfg = PRESETS["paper"].sized_network
    a = initial_connectivity(cfg, torch.Generator().manual_seed(5))
    b = initial_connectivity(cfg, torch.Generator().manual_seed(5))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_an_input_layer_too_small_for_inhibitory_channels_is_all_excitatory_and_finite():
    from dataclasses import replace

    cfg = replace(PRESETS["paper"].sized_network, n_in=3)
    conn = initial_connectivity(cfg, torch.Generator().manual_seed(0))
    assert not conn.input_inhibitory.any()
    assert torch.isfinite(conn.theta_in).all() and (conn.theta_in >= 0).all()
    assert conn.theta_in.sum() > 0
