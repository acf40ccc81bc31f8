"""Exact BPTT by the adjoint recursion against autograd (float64), and the learning signal."""

from __future__ import annotations

import pytest
import torch

from mdgl_analysis.network.model import Forward, loss_of
from mdgl_analysis.network.neuron import rollout
from mdgl_analysis.network.readout import Loss, learning_signal, readout
from mdgl_analysis.rules.adjoint import adjoint, synaptic_gradients
from mdgl_analysis.rules.bptt import bptt, bptt_autograd
from mdgl_analysis.tasks import TaskBatch

from helpers import StepTask, make_small

TASKS = {
    "evidence": None,  # cross-entropy at the last step
    "ce_steps": StepTask(density=0.4),  # cross-entropy at ~40% of the steps
    "mse_every_step": StepTask(loss="mse", density=1.0),  # squared error at every step
    "mse_few_steps": StepTask(loss="mse", density=0.05),
}


def kind_of(fwd) -> str:
    return "cross_entropy" if fwd.target.dtype == torch.int64 else "mse"


def autograd(snap, fwd, cfg):
    return bptt_autograd(snap, TaskBatch(fwd.x, fwd.target, fwd.mask), loss_of(cfg, kind_of(fwd)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def assert_not_vacuous(fwd: Forward, grads) -> None:
    z = fwd.traj.z
    assert z.sum() > 10, "no spikes: the comparison would be vacuous"
    assert (z.sum((0, 1)) > 0).float().mean() > 0.5, "most cells must spike"
    for g in grads:
        assert g.abs().max() > 0


@pytest.mark.parametrize("task", TASKS)
def test_adjoint_bptt_equals_autograd_to_machine_precision(task):
    for seed in range(3):
        cfg, net, snap, fwd = make_small(seed, task=TASKS[task])
        got = bptt(snap, fwd)
        ref = autograd(snap, fwd, cfg)
        assert_not_vacuous(fwd, ref)
        for a, b in zip(got, ref, strict=True):
            assert rel_err(a, b) < 1e-12


def test_bptt_with_firing_rate_regulariser_equals_autograd():
    cfg, net, snap, fwd = make_small(1, reg_rate=0.1)
    got = bptt(snap, fwd)
    ref = autograd(snap, fwd, cfg)
    assert fwd.ro.reg > 0
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("task", TASKS)
def test_wrong_variants_fail_the_same_comparison(task):
    cfg, net, snap, fwd = make_small(2, task=TASKS[task])
    ref = autograd(snap, fwd, cfg)
    # dropping the recurrent path (e-prop's truncation) is not BPTT
    lam, _ = adjoint(fwd.signal, fwd.traj.psi, snap.params, None)
    g_in, g_rec = synaptic_gradients(lam, fwd.x, fwd.traj.z)
    assert rel_err(g_rec, ref.w_rec) > 1e-3
    # pairing lam(t) with z(t) instead of z(t-1): a one-step time shift
    lam, _ = adjoint(fwd.signal, fwd.traj.psi, snap.params, snap.weights.w_rec)
    shifted = lam.reshape(-1, lam.shape[-1]).T @ fwd.traj.z.reshape(-1, lam.shape[-1])
    shifted.fill_diagonal_(0.0)
    assert rel_err(shifted, ref.w_rec) > 1e-3
    # dropping the reset term (v_th = 0 in the backward pass only)
    p_wrong = snap.params._replace(v_th=0.0)
    lam, _ = adjoint(fwd.signal, fwd.traj.psi, p_wrong, snap.weights.w_rec)
    _, g_rec = synaptic_gradients(lam, fwd.x, fwd.traj.z)
    assert rel_err(g_rec, ref.w_rec) > 1e-3


@pytest.mark.parametrize("task", TASKS)
def test_closed_form_learning_signal_equals_autograd_of_the_loss_wrt_spikes(task):
    """I.5, for any per-step loss: one backward filter of dE/dy over time."""
    cfg, net, snap, fwd = make_small(0, task=TASKS[task])
    w = snap.weights
    loss = Loss(kind_of(fwd))
    z = fwd.traj.z.clone().requires_grad_(True)
    ro = readout(z, w.w_out, w.b_out, fwd.target, fwd.mask, snap.params.kappa, loss)
    (dz,) = torch.autograd.grad(ro.loss, z)
    signal = learning_signal(fwd.ro, w.w_out, loss)
    assert dz.abs().max() > 0 and fwd.mask.sum() >= 1
    assert rel_err(signal, dz) < 1e-13
    # an unfiltered signal (dE/dy(t) @ w_out, the step's own readout only) is wrong
    assert rel_err(fwd.ro.dy @ w.w_out, dz) > 1e-3
    # cells without a readout weight get no learning signal (spec D.0)
    silent = (w.w_out == 0).all(0)
    assert silent.any() and (signal[..., silent] == 0).all()
    assert (signal[..., ~silent] != 0).any()


def test_total_learning_signal_factorises_bptt_over_local_traces():
    """Spec I.3: BPTT credit lam equals the local adjoint driven by L_tot."""
    cfg, net, snap, fwd = make_small(0)
    lam, total = adjoint(fwd.signal, fwd.traj.psi, snap.params, snap.weights.w_rec)
    lam_local, _ = adjoint(total, fwd.traj.psi, snap.params, None)
    assert rel_err(lam_local, lam) < 1e-12
    assert rel_err(total, fwd.signal) > 1e-3  # the recurrent part is not negligible here


def test_gradient_is_zero_when_the_pseudo_derivative_vanishes():
    cfg, net, snap, fwd = make_small(0)
    p = snap.params._replace(gamma=0.0)
    traj = rollout(fwd.x, snap.weights.w_in, snap.weights.w_rec, p)
    lam, _ = adjoint(fwd.signal, traj.psi, p, snap.weights.w_rec)
    g_in, g_rec = synaptic_gradients(lam, fwd.x, traj.z)
    assert g_in.abs().max() == 0 and g_rec.abs().max() == 0
