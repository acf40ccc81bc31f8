r"""e-prop and the MDGL family (spec D.2, D.3): local traces times a per-neuron signal.

Every rule here has the form ``G[p, q] = sum_{b,t} s_p(t) e_pq(t)`` with the eligibility traces of
spec C and a per-neuron signal ``s [time, batch, neuron]``:

* ``eprop`` (mode 1): ``s = L``, the learning signal through the readout (spec D.2).
* MDGL (spec D.3): ``s(t) = L(t) + (1-alpha) M(t+1)`` for ``t <= T-2`` with the modulatory input
  ``M_p(t+1) = sum_j What[j, p] psi_j(t+1) L_j(t+1)``; the variants differ in ``What``
  (``[post j, pre p]``, the modulatory weight from p to j):

  - ``mdgl_exact`` (mode 2): the current weights ``W_rec`` (the exact one-step truncation, I.2);
  - ``mdgl`` (mode 3, the paper's MDGL): the mean of the existing weights of the cell-type block
    of (p, j), on existing connections only;
  - ``mdgl_nonlocal`` (mode 5): the plain mean of each block (zeros included), on all pairs;
  - ``mdgl_online`` (mode 7): mode-3 weights, but the second term built from causally filtered
    factors, ``(1-alpha) sum_{b, t<=T-2} ebar_pq(t) c_p(t+1)`` with
    ``c_p(t) = sum_j What[j,p] psibar_j(t) Lbar_j(t)``, ``ebar`` and ``psibar`` the readout-filtered
    trace and psi and ``Lbar(t) = dE/dy(t) @ w_out`` the derivative with respect to the filtered
    spikes at t. Since ``ebar`` is a causal filter of ``e``, the term equals
    ``sum_t e(t) (1-alpha)(1-kappa) sum_{t'=t}^{T-2} kappa^(t'-t) c(t'+1)``: a signal
    ``s = L + (1-alpha)(1-kappa) anticausal_filter(c(.+1))`` (docs/rules.md derives it; for a
    last-step loss only ``c(T-1)`` is nonzero and ``s_p(t) = L_p(t) + (1-alpha)(1-kappa)
    kappa^(T-2-t) c_p(T-1)``, the original's single time index).

Gradients are computed by :func:`~.adjoint.adjoint` without the recurrent term (no synapse-sized
tensor), MDGL's modulatory term formed inside it step by step (no trial-sized temporary);
:mod:`mdgl_analysis.recording.traces` computes the same sums from explicit forward traces.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.network.readout import anticausal_filter, causal_filter
from mdgl_analysis.rules.adjoint import adjoint_gradients
from mdgl_analysis.rules.feedback import random_feedback_signal
from mdgl_analysis.rules.truncated import truncated_signal

BLOCKS = {"EE": (False, False), "EI": (False, True), "IE": (True, False), "II": (True, True)}
"""Cell-type blocks named pre->post (``"EI"`` is E -> I): (pre inhibitory, post inhibitory)."""


def block_masks(inhibitory: Tensor) -> dict[str, Tensor]:
    """Bool ``[post, pre]`` masks of the four cell-type blocks (named pre->post, e.g. ``"IE"``)."""
    return {
        name: (inhibitory == post_inh)[:, None] & (inhibitory == pre_inh)[None, :]
        for name, (pre_inh, post_inh) in BLOCKS.items()
    }


def modulatory_weights(w_rec: Tensor, inhibitory: Tensor, kind: str) -> Tensor:
    """``What [post, pre]`` of an MDGL variant (spec D.3).

    Args:
        w_rec: ``[post, pre]`` effective recurrent weights (diagonal zero).
        inhibitory: bool ``[neuron]``.
        kind: ``"exact"`` (mode 2), ``"type"`` (mode 3: block mean of the nonzero entries, on
            existing connections) or ``"nonlocal"`` (mode 5: block mean of all entries, all pairs).
    """
    if kind == "exact":
        return w_rec
    out = torch.zeros_like(w_rec)
    exists = w_rec != 0
    for name, mask in block_masks(inhibitory).items():
        if kind == "nonlocal":
            out[mask] = w_rec[mask].mean() if mask.any() else 0.0
            continue
        count = int((exists & mask).sum())
        if count == 0:
            warnings.warn(
                f"MDGL: cell-type block {name} has no connection; its average is 0",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        out[mask & exists] = w_rec[mask].sum() / count
    return out


def mdgl_signal(fwd: Forward, w_hat: Tensor, alpha: float) -> Tensor:
    """``s(t) = L(t) + (1-alpha) M(t+1)``, ``M(t+1) = (psi L)(t+1) @ What``; shape ``[T, B, N]``.

    The eligibility trace at t pairs with the downstream cell's signal at t+1 (one synaptic delay);
    there is no modulatory term at T-1.
    """
    n = w_hat.shape[0]
    drive = (fwd.traj.psi[1:] * fwd.signal[1:]).reshape(-1, n)
    signal = fwd.signal.clone()
    signal[:-1].view(-1, n).addmm_(drive, w_hat, alpha=1.0 - alpha)
    return signal


def _gradients(
    snap: Snapshot, fwd: Forward, signal: Tensor, w_hat: Tensor | None = None
) -> Gradients:
    """The rule's gradients from its signal; with ``w_hat`` MDGL's modulatory term is added to
    ``signal`` inside the backward pass (:func:`~.adjoint.adjoint`), never as a whole tensor."""
    return adjoint_gradients(fwd, snap.params, signal, w_hat=w_hat, core=snap.core)


def _mdgl_gradients(snap: Snapshot, fwd: Forward, kind: str) -> Gradients:
    w_hat = modulatory_weights(snap.weights.w_rec, snap.inhibitory, kind)
    return _gradients(snap, fwd, fwd.signal, w_hat)


def signal_of(rule: str, snap: Snapshot, fwd: Forward) -> Tensor:
    """The per-neuron signal ``[time, batch, neuron]`` that the named local rule pairs with e."""
    p, w = snap.params, snap.weights
    if rule == "eprop":
        return fwd.signal
    if rule == "eprop_random":
        return random_feedback_signal(snap, fwd)
    if rule == "truncated":
        return truncated_signal(snap, fwd)
    if rule == "mdgl_online":
        w_hat = modulatory_weights(w.w_rec, snap.inhibitory, "type")
        steps = fwd.ro.dy.ne(0).any(-1).any(-1).nonzero().flatten()  # where Lbar can be nonzero
        signal = fwd.signal.clone()
        steps = steps[steps >= 1]
        if steps.numel() == 0:
            return signal
        first = int(steps[0])
        # psibar(t) = (1-kappa) sum_{u<=t} kappa^(t-u) psi(u), needed only up to the last step
        psi_bar = (1.0 - p.kappa) * causal_filter(fwd.traj.psi[: int(steps[-1]) + 1], p.kappa)
        l_bar = fwd.ro.dy[first : int(steps[-1]) + 1] @ w.w_out  # dE/dpsp(t) at each step
        c = (1.0 - p.alpha) * ((psi_bar[first:] * l_bar) @ w_hat)  # c(t), t = first..last
        # s(t) += (1-kappa) sum_{t'>=t} kappa^(t'-t) c(t'+1) for t <= T-2
        back = (1.0 - p.kappa) * anticausal_filter(c, p.kappa)  # at t = first-1 .. last-1
        signal[first - 1 : first - 1 + back.shape[0]] += back
        if first - 1 > 0:  # earlier steps: the filter keeps decaying by kappa per step
            decay = p.kappa ** torch.arange(
                first - 1, 0, -1, device=signal.device, dtype=signal.dtype
            )
            signal[: first - 1] += decay[:, None, None] * back[0]
        return signal
    kind = {"mdgl": "type", "mdgl_exact": "exact", "mdgl_nonlocal": "nonlocal"}[rule]
    return mdgl_signal(fwd, modulatory_weights(w.w_rec, snap.inhibitory, kind), p.alpha)


def eprop(snap: Snapshot, fwd: Forward) -> Gradients:
    """e-prop with symmetric feedback (mode 1, spec D.2)."""
    return _gradients(snap, fwd, signal_of("eprop", snap, fwd))


def mdgl(snap: Snapshot, fwd: Forward) -> Gradients:
    """MDGL (mode 3): cell-type averaged modulatory weights on existing connections."""
    return _mdgl_gradients(snap, fwd, "type")


def mdgl_exact(snap: Snapshot, fwd: Forward) -> Gradients:
    """MDGL with the exact weights (mode 2): the one-connection-step truncation of BPTT."""
    return _mdgl_gradients(snap, fwd, "exact")


def mdgl_nonlocal(snap: Snapshot, fwd: Forward) -> Gradients:
    """Non-local MDGL (mode 5): block means over all pairs, every cell signals every cell."""
    return _mdgl_gradients(snap, fwd, "nonlocal")


def mdgl_online(snap: Snapshot, fwd: Forward) -> Gradients:
    """Online MDGL (mode 7): the modulatory term from causally filtered factors."""
    return _gradients(snap, fwd, signal_of("mdgl_online", snap, fwd))
