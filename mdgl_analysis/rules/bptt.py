"""Exact BPTT (spec D.1): the hand-written adjoint, and plain autograd as its reference."""

from __future__ import annotations

import torch
from torch import Tensor

from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.network.neuron import rollout
from mdgl_analysis.network.readout import Loss, readout
from mdgl_analysis.rules.adjoint import adjoint, adjoint_gradients
from mdgl_analysis.tasks.base import TaskBatch


def bptt(snap: Snapshot, fwd: Forward) -> Gradients:
    """Exact gradient of the loss through the whole unrolled network, by the adjoint recursion."""
    return adjoint_gradients(fwd, snap.params, fwd.signal, snap.weights.w_rec, core=snap.core)


def bptt_credit(snap: Snapshot, fwd: Forward) -> tuple[Tensor, Tensor]:
    """Per-step BPTT quantities ``(dE/dI, L_tot)``, each ``[time, batch, neuron]`` (spec I.3)."""
    lam, total = adjoint(fwd.signal, fwd.traj.psi, snap.params, snap.weights.w_rec, core=snap.core)
    assert total is not None
    return lam, total


def bptt_autograd(snap: Snapshot, batch: TaskBatch, loss: Loss) -> Gradients:
    """Reference BPTT: autograd through :func:`~mdgl_analysis.network.neuron.rollout` with the
    surrogate spike function. Slow and memory-hungry; used as the oracle in tests and the baseline
    in the benchmark."""
    x, target, mask = batch
    p = snap.params
    leaves = [t.detach().clone().requires_grad_(True) for t in snap.weights]
    w_in, w_rec, w_out, b_out = leaves
    with torch.enable_grad():
        traj = rollout(
            x,
            w_in,
            w_rec * (1 - torch.eye(w_rec.shape[0], dtype=w_rec.dtype, device=w_rec.device)),
            p,
        )
        ro = readout(traj.z, w_out, b_out, target, mask, p.kappa, loss)
        grads = torch.autograd.grad(ro.loss + ro.reg, leaves)
    return Gradients(*grads)
