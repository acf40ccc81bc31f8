"""e-prop and the MDGL family against autograd oracles (spec I), in float64.

Every comparison checks that it is not vacuous (spikes, nonzero gradients) and that a deliberately
wrong variant fails it.
"""

from __future__ import annotations

import pytest
import torch
from oracles import loss_of

from mdgl_analysis.network.model import Gradients
from mdgl_analysis.recording.traces import Synapses, eligibility_chunks, gradients_from_traces
from mdgl_analysis.rules import RULES, get_rule
from mdgl_analysis.rules.adjoint import adjoint, synaptic_gradients
from mdgl_analysis.rules.bptt import bptt, bptt_credit
from mdgl_analysis.rules.local import (
    block_masks,
    mdgl_signal,
    modulatory_weights,
    signal_of,
)

from helpers import StepTask, make_small

TASKS = {
    "evidence": None,  # cross-entropy at the last step
    "ce_steps": StepTask(density=0.4),  # cross-entropy at ~40% of the steps
    "mse_every_step": StepTask(loss="mse", density=1.0),  # squared error at every step
}
"""Losses every oracle test runs on: the paper's last-step loss and two per-step losses."""


def small(seed: int, task: str):
    return make_small(seed, task=TASKS[task])


def kind_of(fwd) -> str:
    return "cross_entropy" if fwd.target.dtype == torch.int64 else "mse"


LOCAL_RULES = [name for name in RULES if name != "bptt"]


def rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def oracle_grads(snap, fwd, **flags):
    loss, w_in, w_rec, _ = loss_of(snap, fwd.x, fwd.target, fwd.mask, kind_of(fwd), **flags)
    return torch.autograd.grad(loss, [w_in, w_rec])


def nonvacuous(fwd, *grads):
    assert fwd.traj.z.sum() > 10
    assert (fwd.traj.z.sum((0, 1)) > 0).float().mean() > 0.5
    for g in grads:
        assert g.abs().max() > 0


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eprop_equals_autograd_with_the_recurrent_spike_stopped(seed, task):
    """I.1"""
    cfg, net, snap, fwd = small(seed, task)
    g_in, g_rec = oracle_grads(snap, fwd, stop_recurrent=True)
    got = RULES["eprop"](snap, fwd)
    nonvacuous(fwd, g_in, g_rec)
    assert rel_err(got.w_in, g_in) < 1e-12
    assert rel_err(got.w_rec, g_rec) < 1e-12
    # the oracle distinguishes e-prop from BPTT
    assert rel_err(bptt(snap, fwd).w_rec, g_rec) > 1e-3


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mdgl_exact_equals_autograd_of_the_one_step_truncated_graph(seed, task):
    """I.2"""
    cfg, net, snap, fwd = small(seed, task)
    g_in, g_rec = oracle_grads(snap, fwd, stop_recurrent=True, truncated_readout=True)
    got = RULES["mdgl_exact"](snap, fwd)
    nonvacuous(fwd, g_in, g_rec)
    assert rel_err(got.w_in, g_in) < 1e-12
    assert rel_err(got.w_rec, g_rec) < 1e-12
    assert rel_err(RULES["eprop"](snap, fwd).w_rec, g_rec) > 1e-3


@pytest.mark.parametrize("task", TASKS)
def test_modulation_paired_one_step_late_or_early_fails_the_truncation_oracle(task):
    cfg, net, snap, fwd = small(0, task)
    g_in, g_rec = oracle_grads(snap, fwd, stop_recurrent=True, truncated_readout=True)
    drive = fwd.traj.psi * fwd.signal
    same_step = fwd.signal + (1 - snap.params.alpha) * (drive @ snap.weights.w_rec)  # M(t), wrong
    lam, _ = adjoint(same_step, fwd.traj.psi, snap.params)
    _, wrong = synaptic_gradients(lam, fwd.x, fwd.traj.z)
    assert rel_err(wrong, g_rec) > 1e-3


@pytest.mark.parametrize("task", TASKS)
def test_bptt_equals_total_learning_signal_times_the_local_traces(task):
    """I.3, with the explicit forward traces"""
    cfg, net, snap, fwd = small(1, task)
    _, total = bptt_credit(snap, fwd)
    syn = Synapses.dense(12, 8)
    g_in, g_rec = gradients_from_traces(snap, fwd, syn, {"bptt": total}, chunk=17)["bptt"]
    ref = bptt(snap, fwd)
    nonvacuous(fwd, ref.w_rec)
    assert rel_err(g_rec, ref.w_rec) < 1e-12
    assert rel_err(g_in, ref.w_in) < 1e-12


@pytest.mark.parametrize("task", TASKS)
def test_total_learning_signal_equals_autograd_wrt_the_global_spikes(task):
    """I.3: L_tot is dE/dz through readout and synapses, excluding the cell's own paths."""
    cfg, net, snap, fwd = small(2, task)
    loss, _, _, spikes = loss_of(snap, fwd.x, fwd.target, fwd.mask, kind_of(fwd), local_copy=True)
    grads = torch.stack(torch.autograd.grad(loss, [g for g, _ in spikes]))
    _, total = bptt_credit(snap, fwd)
    nonvacuous(fwd, grads)
    assert rel_err(total, grads) < 1e-12
    assert rel_err(fwd.signal, grads) > 1e-3  # the readout-only signal is not the total


@pytest.mark.parametrize("task", TASKS)
def test_mdgl_equals_mdgl_exact_when_blocks_are_uniform(task):
    """I.4"""
    cfg, net, snap, fwd0 = small(0, task)
    w_rec = snap.weights.w_rec.clone()
    exists = w_rec != 0
    for mask in block_masks(snap.inhibitory).values():
        sel = mask & exists
        w_rec[sel] = w_rec[sel].mean()
    snap = snap._replace(weights=snap.weights._replace(w_rec=w_rec))
    from mdgl_analysis.network.model import forward, loss_of
    from mdgl_analysis.tasks import TaskBatch

    batch = TaskBatch(fwd0.x, fwd0.target, fwd0.mask)
    fwd = forward(snap, batch, loss_of(cfg, kind_of(fwd0)))
    a, b = RULES["mdgl"](snap, fwd), RULES["mdgl_exact"](snap, fwd)
    nonvacuous(fwd, a.w_rec)
    assert rel_err(a.w_rec, b.w_rec) < 1e-12 and rel_err(a.w_in, b.w_in) < 1e-12
    # and it is not trivially e-prop
    assert rel_err(a.w_rec, RULES["eprop"](snap, fwd).w_rec) > 1e-3
    # while with the original, non-uniform weights the two differ
    _, _, snap0, fwd0 = small(0, task)
    assert rel_err(RULES["mdgl"](snap0, fwd0).w_rec, RULES["mdgl_exact"](snap0, fwd0).w_rec) > 1e-3


def test_mdgl_block_weights_are_means_over_existing_connections():
    cfg, net, snap, fwd = make_small(0)
    w = snap.weights.w_rec
    w_hat = modulatory_weights(w, snap.inhibitory, "type")
    assert ((w_hat != 0) == (w != 0)).all()
    for mask in block_masks(snap.inhibitory).values():
        sel = mask & (w != 0)
        assert torch.allclose(w_hat[sel], w[sel].mean().expand(int(sel.sum())))
    nonlocal_ = modulatory_weights(w, snap.inhibitory, "nonlocal")
    for mask in block_masks(snap.inhibitory).values():
        assert torch.allclose(nonlocal_[mask], w[mask].mean().expand(int(mask.sum())))


def test_mdgl_with_an_empty_block_gives_zero_for_that_block_not_nan():
    cfg, net, snap, fwd = make_small(0)
    w = snap.weights.w_rec.clone()
    w[block_masks(snap.inhibitory)["II"]] = 0.0
    with pytest.warns(RuntimeWarning, match="block II"):
        w_hat = modulatory_weights(w, snap.inhibitory, "type")
    assert torch.isfinite(w_hat).all()


def test_mdgl_with_zero_modulation_equals_eprop():
    cfg, net, snap, fwd = make_small(1)
    signal = mdgl_signal(fwd, torch.zeros_like(snap.weights.w_rec), snap.params.alpha)
    lam, _ = adjoint(signal, fwd.traj.psi, snap.params)
    g_in, g_rec = synaptic_gradients(lam, fwd.x, fwd.traj.z)
    ref = RULES["eprop"](snap, fwd)
    assert torch.equal(g_rec, ref.w_rec) and torch.equal(g_in, ref.w_in)


def dense_traces(snap, fwd):
    """Every trace e(t) ``[time, batch, synapse]`` of the dense layout, and its synapses."""
    syn = Synapses.dense(12, 8)
    e = torch.cat([c.e for c in eligibility_chunks(snap, fwd, syn, chunk=1000)])
    return syn, e


def readout_filtered(u, kappa):
    """ubar(t) = kappa ubar(t-1) + (1-kappa) u(t), step by step."""
    out, acc = [], torch.zeros_like(u[0])
    for t in range(u.shape[0]):
        acc = kappa * acc + (1 - kappa) * u[t]
        out.append(acc)
    return torch.stack(out)


@pytest.mark.parametrize("task", TASKS)
def test_online_eprop_term_equals_the_filtered_form(task):
    """I.6: sum_t L(t) e(t) = sum_t dE/dpsp(t) ebar(t), ebar the readout-filtered trace."""
    cfg, net, snap, fwd = small(2, task)
    syn, e = dense_traces(snap, fwd)
    ebar = readout_filtered(e, snap.params.kappa)
    lbar = fwd.ro.dy @ snap.weights.w_out  # dE/dpsp(t) [time, batch, neuron]
    post = torch.cat([syn.rec_post, syn.in_post])
    online = (lbar[:, :, post] * ebar).sum((0, 1))
    g_in, g_rec = syn.scatter(online[: syn.n_rec], online[syn.n_rec :], 12, 8)
    ref = RULES["eprop"](snap, fwd)
    nonvacuous(fwd, ref.w_rec)
    assert rel_err(g_rec, ref.w_rec) < 1e-12 and rel_err(g_in, ref.w_in) < 1e-12


@pytest.mark.parametrize("task", TASKS)
def test_online_mdgl_second_term_is_the_product_of_filtered_factors_one_step_apart(task):
    """mode 7: (1-alpha) sum_{t<=T-2} ebar(t) c(t+1), c(t) = What^T (psibar(t) Lbar(t))."""
    cfg, net, snap, fwd = small(0, task)
    p, w = snap.params, snap.weights
    syn, e = dense_traces(snap, fwd)
    ebar = readout_filtered(e, p.kappa)
    psibar = readout_filtered(fwd.traj.psi, p.kappa)
    lbar = fwd.ro.dy @ w.w_out
    w_hat = modulatory_weights(w.w_rec, snap.inhibitory, "type")
    c = (1 - p.alpha) * ((psibar * lbar) @ w_hat)  # [time, batch, neuron p]
    post = torch.cat([syn.rec_post, syn.in_post])
    second = (ebar[:-1] * c[1:, :, post]).sum((0, 1))
    g2_in, g2_rec = syn.scatter(second[: syn.n_rec], second[syn.n_rec :], 12, 8)
    got = RULES["mdgl_online"](snap, fwd)
    ref = RULES["eprop"](snap, fwd)
    assert g2_rec.abs().max() > 0
    assert rel_err(got.w_rec - ref.w_rec, g2_rec) < 1e-10
    assert rel_err(got.w_in - ref.w_in, g2_in) < 1e-10
    # the same factors paired at the same step (not one apart) fail the comparison
    wrong = (ebar * c[:, :, post]).sum((0, 1))
    _, wrong_rec = syn.scatter(wrong[: syn.n_rec], wrong[syn.n_rec :], 12, 8)
    assert rel_err(got.w_rec - ref.w_rec, wrong_rec) > 1e-3


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("rule", LOCAL_RULES)
@pytest.mark.parametrize("layout", ["list", "dense"])
def test_adjoint_equals_forward_traces(rule, layout, task):
    cfg, net, snap, fwd = small(1, task)
    if layout == "dense":
        syn = Synapses.dense(12, 8)
    else:
        syn = Synapses.from_masks(net.init_rec, net.init_in)
    signal = signal_of(rule, snap, fwd)
    g_in, g_rec = gradients_from_traces(snap, fwd, syn, {rule: signal}, chunk=7)[rule]
    got = RULES[rule](snap, fwd)
    mask_rec = torch.zeros_like(got.w_rec, dtype=torch.bool)
    mask_rec[syn.rec_post, syn.rec_pre] = True
    mask_in = torch.zeros_like(got.w_in, dtype=torch.bool)
    mask_in[syn.in_post, syn.in_pre] = True
    nonvacuous(fwd, got.w_rec[mask_rec])
    assert rel_err(g_rec[mask_rec], got.w_rec[mask_rec]) < 1e-12
    assert rel_err(g_in[mask_in], got.w_in[mask_in]) < 1e-12


def test_traces_with_the_reset_term_dropped_fail_the_comparison():
    cfg, net, snap, fwd = make_small(1)
    syn = Synapses.dense(12, 8)
    wrong = snap._replace(params=snap.params._replace(v_th=snap.params.v_th * 1e-9))
    wrong_fwd = fwd  # same trajectory, traces built without the reset path (c11 = alpha)
    g_in, g_rec = gradients_from_traces(wrong, wrong_fwd, syn, {"e": fwd.signal})["e"]
    ref = RULES["eprop"](snap, fwd)
    assert rel_err(g_rec, ref.w_rec) > 1e-3


def test_traces_are_zero_for_the_adaptation_component_of_lif_cells():
    cfg, net, snap, fwd = make_small(0)
    syn = Synapses.dense(12, 8)
    post = torch.cat([syn.rec_post, syn.in_post])
    lif = ~net.adaptive[post]
    for c in eligibility_chunks(snap, fwd, syn, chunk=50):
        assert (c.eps_a[..., lif] == 0).all()
        assert (c.eps_a[..., ~lif] != 0).any()


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
        ),
    ],
)
def test_every_rule_returns_finite_detached_gradients_shaped_like_the_weights(name, device):
    cfg, net, snap, fwd = make_small(0)
    if device == "cuda":
        from mdgl_analysis.network.model import forward, loss_of
        from mdgl_analysis.tasks import TaskBatch

        net = net.to(device)
        snap = net.snapshot()
        batch = TaskBatch(fwd.x.to(device), fwd.target.to(device), fwd.mask.to(device))
        fwd = forward(snap, batch, loss_of(cfg, "cross_entropy"))
    grads = get_rule(name)(snap, fwd)
    assert isinstance(grads, Gradients)
    for g, w in zip(grads, snap.weights, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype and g.device == w.device
        assert torch.isfinite(g).all()
        assert g.grad_fn is None and not g.requires_grad
    assert grads.w_rec.diagonal().abs().max() == 0
    assert grads.w_rec.abs().max() > 0
    # readout gradients are exact for every rule
    ref = bptt(snap, fwd)
    assert torch.equal(grads.w_out, ref.w_out) and torch.equal(grads.b_out, ref.b_out)


def test_unknown_rule_lists_the_known_names():
    with pytest.raises(KeyError, match="eprop.*mdgl"):
        get_rule("backprop")
