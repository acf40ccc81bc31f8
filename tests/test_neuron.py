"""The ALIF step against values computed by hand from spec A.2-A.3."""

from __future__ import annotations

import math

import torch

from mdgl_analysis.network.neuron import ALIFParams, ALIFState, alif_step, psi, rollout


def params(beta=(0.0, 1.8), n_ref=5) -> ALIFParams:
    return ALIFParams(
        alpha=math.exp(-1 / 20),
        rho=math.exp(-1 / 2000),
        kappa=math.exp(-1 / 20),
        v_th=0.01,
        gamma=0.3,
        n_ref=n_ref,
        beta=torch.tensor(beta, dtype=torch.float64),
    )


def run_scalar_reference(drive, beta, p):
    """Spec A.2 written out with Python floats for one isolated neuron (no recurrence)."""
    v = a = z = 0.0
    last = []
    out = []
    for i in drive:
        a = p.rho * a + (1 - p.rho) * z
        thr = p.v_th + beta * a
        v = p.alpha * v + (1 - p.alpha) * i - p.v_th * z
        refractory = any(last[-p.n_ref :]) if p.n_ref else False
        z_new = 1.0 if (not refractory and (v - thr) / p.v_th > 0) else 0.0
        out.append((z_new, v, a, thr, refractory))
        last.append(z_new)
        z = z_new
    return out


def test_one_step_by_hand_with_reset_refractoriness_and_adaptation():
    p = params()
    # a strong constant drive makes both cells fire as often as refractoriness allows
    drive = [0.5] * 20 + [0.0] * 5 + [0.3] * 10
    i_in = torch.tensor(drive, dtype=torch.float64)[:, None, None].expand(-1, 1, 2) * (1 - p.alpha)
    state = ALIFState.zeros(1, 2, "cpu", torch.float64)
    w = torch.zeros(2, 2, dtype=torch.float64)
    got = []
    for t in range(len(drive)):
        state, thr, refr = alif_step(i_in[t], state, w, p)
        got.append((state.z.clone(), state.v.clone(), state.a.clone(), thr.clone(), refr.clone()))
    for j, beta in enumerate((0.0, 1.8)):
        ref = run_scalar_reference(drive, beta, p)
        spikes = [r[0] for r in ref]
        assert sum(spikes) >= 3, "the test must exercise spikes"
        for t, (z, v, a, thr, refr) in enumerate(ref):
            assert got[t][0][0, j].item() == z
            assert math.isclose(got[t][1][0, j].item(), v, rel_tol=1e-13, abs_tol=1e-16)
            assert math.isclose(got[t][2][0, j].item(), a, rel_tol=1e-13, abs_tol=1e-16)
            assert math.isclose(got[t][3][0, j].item(), thr, rel_tol=1e-13)
            assert got[t][4][0, j].item() == refr


def test_first_steps_match_hand_computed_numbers():
    p = params(beta=(1.8,))
    a1 = 1 - p.alpha
    i_in = torch.tensor([[0.5 * a1]], dtype=torch.float64)
    state = ALIFState.zeros(1, 1, "cpu", torch.float64)
    w = torch.zeros(1, 1, dtype=torch.float64)
    # t=0: v = (1-alpha) * 0.5 = 0.02438..., above 0.01: spike
    state, thr, _ = alif_step(i_in, state, w, p)
    assert math.isclose(state.v.item(), 0.5 * a1)
    assert state.z.item() == 1.0 and thr.item() == 0.01
    # t=1: reset by the baseline threshold one step later, adaptation jumps by (1 - rho)
    state, thr, refr = alif_step(i_in, state, w, p)
    v1 = p.alpha * 0.5 * a1 + 0.5 * a1 - 0.01
    assert math.isclose(state.v.item(), v1, rel_tol=1e-14)
    assert math.isclose(state.a.item(), 1 - p.rho, rel_tol=1e-14)
    assert math.isclose(thr.item(), 0.01 + 1.8 * (1 - p.rho), rel_tol=1e-14)
    assert refr.item() and state.z.item() == 0.0  # refractory although v is above threshold


def test_refractory_period_is_exactly_n_ref_steps():
    p = params(beta=(0.0,), n_ref=5)
    i_in = torch.full((1, 1), 10.0, dtype=torch.float64)  # far above threshold at every step
    state = ALIFState.zeros(1, 1, "cpu", torch.float64)
    w = torch.zeros(1, 1, dtype=torch.float64)
    spikes = []
    for _ in range(20):
        state, _, _ = alif_step(i_in, state, w, p)
        spikes.append(int(state.z.item()))
    assert [t for t, s in enumerate(spikes) if s] == [0, 6, 12, 18]


def test_spike_threshold_is_strict():
    p = params(beta=(0.0,))
    # v exactly at threshold after one step: no spike (H(0) = 0)
    i_in = torch.full((1, 1), 0.01, dtype=torch.float64)
    state, _, _ = alif_step(
        i_in, ALIFState.zeros(1, 1, "cpu", torch.float64), torch.zeros(1, 1, dtype=torch.float64), p
    )
    assert state.v.item() == 0.01 and state.z.item() == 0.0


def test_recurrent_spikes_arrive_one_step_later():
    p = params(beta=(0.0, 0.0))
    w = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # [post, pre]: 0 -> 1
    x = torch.zeros(4, 1, 1, dtype=torch.float64)
    x[0] = 1.0
    w_in = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    traj = rollout(x, w_in, w, p)
    assert traj.z[0, 0, 0] == 1 and traj.v[0, 0, 1] == 0
    assert math.isclose(traj.v[1, 0, 1].item(), (1 - p.alpha) * 2.0)


def test_psi_is_the_scaled_pseudo_derivative_and_zero_when_refractory():
    p = params(beta=(0.0,))
    v = torch.tensor([0.01, 0.015, 0.02, 0.005, 0.01], dtype=torch.float64)
    thr = torch.full_like(v, 0.01)
    refr = torch.tensor([False, False, False, False, True])
    got = psi(v, thr, refr, p)
    expected = torch.tensor([30.0, 15.0, 0.0, 15.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_fast_and_autograd_rollouts_are_identical(small):
    cfg, net, snap, fwd = small
    w = snap.weights
    leaves = [w.w_in.clone().requires_grad_(), w.w_rec.clone().requires_grad_()]
    with torch.enable_grad():
        traj = rollout(fwd.x, leaves[0], leaves[1], snap.params)
    assert fwd.traj.z.sum() > 0
    for a, b in zip(traj, fwd.traj, strict=True):
        assert torch.equal(a.detach(), b)


def test_lean_rollout_keeps_the_same_spikes_and_psi(small):
    cfg, net, snap, fwd = small
    w = snap.weights
    lean = rollout(fwd.x, w.w_in, w.w_rec, snap.params, lean=True)
    assert lean.v is None and lean.a is None and lean.threshold is None
    assert torch.equal(lean.z, fwd.traj.z) and torch.equal(lean.psi, fwd.traj.psi)
    assert torch.equal(lean.refractory, fwd.traj.refractory)
