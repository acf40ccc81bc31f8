r"""The forward eligibility recursion of spec C over a list of synapses, in time chunks.

For synapse s from presynaptic q (a recurrent cell or an input) to postsynaptic p, with
coefficients built from the previous step's psi of the *postsynaptic* cell,

.. math::

    \epsilon^v_s(t) &= c_{11}\epsilon^v_s(t-1) + c_{12}\epsilon^a_s(t-1) + (1-\alpha) u_q(t) \\
    \epsilon^a_s(t) &= c_{21}\epsilon^v_s(t-1) + c_{22}\epsilon^a_s(t-1) \\
    e_s(t) &= \psi_p(t)\,(\epsilon^v_s(t) - \beta_p \epsilon^a_s(t))

with ``c11 = alpha - v_th psi_p(t-1)``, ``c12 = v_th beta_p psi_p(t-1)``,
``c21 = (1-rho) psi_p(t-1)``, ``c22 = rho - (1-rho) beta_p psi_p(t-1)`` (c12, c21, c22 are 0 for
LIF cells), and ``u_q(t) = z_q(t-1)`` for recurrent, ``x_q(t)`` for input synapses.

:func:`eligibility_chunks` yields the traces chunk by chunk, so memory is bounded by one chunk
whatever the trial length; each chunk also carries every requested rule's per-step gradient
contribution ``sum_b s_p(t) e_s(t)``. Summed over time these equal the adjoint gradients of
:mod:`mdgl_analysis.rules` (tested to 1e-12 in float64). Training never needs this module; the
recorder and the tests do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.network.model import Forward, Snapshot


class Synapses(NamedTuple):
    """Synapse lists ``(post, pre)`` of the recurrent and the input weights (``[synapse]`` long)."""

    rec_post: Tensor
    rec_pre: Tensor
    in_post: Tensor
    in_pre: Tensor

    @classmethod
    def from_masks(cls, rec: Tensor, inp: Tensor) -> Synapses:
        """From bool masks ``rec [post, pre]`` (diagonal ignored) and ``inp [post, input]``."""
        rec = rec.clone()
        rec.fill_diagonal_(False)
        rp, rq = rec.nonzero(as_tuple=True)
        ip, iq = inp.nonzero(as_tuple=True)
        return cls(rp, rq, ip, iq)

    @classmethod
    def dense(cls, n: int, n_in: int, device: torch.device | str = "cpu") -> Synapses:
        """Every off-diagonal recurrent pair and every input pair."""
        rec = torch.ones(n, n, dtype=torch.bool, device=device)
        return cls.from_masks(rec, torch.ones(n, n_in, dtype=torch.bool, device=device))

    @property
    def n_rec(self) -> int:
        return self.rec_post.numel()

    def scatter(self, rec_values: Tensor, in_values: Tensor, n: int, n_in: int):
        """Dense ``[post, pre]`` matrices from per-synapse values (zero elsewhere)."""
        g_rec = rec_values.new_zeros(n, n)
        g_in = in_values.new_zeros(n, n_in)
        g_rec[self.rec_post, self.rec_pre] = rec_values
        g_in[self.in_post, self.in_pre] = in_values
        return g_in, g_rec


class TraceChunk(NamedTuple):
    """Steps ``[start, stop)`` of the recursion; synapse axis = recurrent synapses then inputs.

    Attributes:
        eps_v, eps_a, e: ``[time, batch, synapse]`` eligibility vector and trace.
        contributions: rule name -> ``[time, synapse]`` ``sum_b s_p(t) e_s(t)``.
    """

    start: int
    stop: int
    eps_v: Tensor
    eps_a: Tensor
    e: Tensor
    contributions: dict[str, Tensor]


def default_chunk(batch: int, n_synapses: int, elements: int = 1 << 22) -> int:
    """Steps per chunk so that one ``[time, batch, synapse]`` array holds about 4M values."""
    return max(1, elements // max(1, batch * n_synapses))


def eligibility_chunks(
    snap: Snapshot,
    fwd: Forward,
    synapses: Synapses,
    signals: Mapping[str, Tensor] | None = None,
    chunk: int | None = None,
) -> Iterator[TraceChunk]:
    """Run the recursion forward in time, yielding one :class:`TraceChunk` per ``chunk`` steps.

    Needs the full trajectory (``traj.psi``, ``traj.z``), not a lean one. Memory is a few
    ``[chunk, batch, synapse]`` arrays whatever the trial length.

    Args:
        signals: rule name -> ``[time, batch, neuron]`` per-neuron signal paired with e
            (e.g. :func:`mdgl_analysis.rules.local.signal_of`, or L_tot for exact BPTT).
        chunk: steps per chunk; by default about 4M values per array (:func:`default_chunk`).
    """
    p = snap.params
    traj, x = fwd.traj, fwd.x
    n_steps, batch, _ = traj.z.shape
    post = torch.cat([synapses.rec_post, synapses.in_post])
    n_syn = post.numel()
    chunk = chunk or default_chunk(batch, n_syn)
    if chunk < 1:
        raise ValueError(f"chunk = {chunk} is not allowed: an integer >= 1")
    beta = p.beta[post]
    adaptive = (beta != 0).to(x.dtype)
    scale = 1.0 - p.alpha
    eps_v = x.new_zeros(batch, n_syn)
    eps_a = x.new_zeros(batch, n_syn)
    h = x.new_zeros(batch, n_syn)  # eps_v - beta eps_a: what psi multiplies in e
    drive = x.new_empty(batch, n_syn)
    n_rec = synapses.n_rec
    for start in range(0, n_steps, chunk):
        stop = min(start + chunk, n_steps)
        out_v = x.new_empty(stop - start, batch, n_syn)
        out_a = torch.empty_like(out_v)
        e = torch.empty_like(out_v)
        for i, t in enumerate(range(start, stop)):
            # presynaptic drive (1 - alpha) u(t): z(t-1) for recurrent, x(t) for input synapses
            if t > 0:
                torch.index_select(traj.z[t - 1], 1, synapses.rec_pre, out=drive[:, :n_rec])
            else:
                drive[:, :n_rec] = 0.0
            torch.index_select(x[t], 1, synapses.in_pre, out=drive[:, n_rec:])
            drive.mul_(scale)
            if t > 0:  # coefficients from psi_p(t-1); h(t-1) = eps_v(t-1) - beta eps_a(t-1)
                ph = traj.psi[t - 1].index_select(1, post).mul_(h)
                new_v = torch.add(drive, eps_v, alpha=p.alpha, out=out_v[i]).sub_(ph, alpha=p.v_th)
                new_a = torch.mul(eps_a, p.rho, out=out_a[i]).add_(ph, alpha=1.0 - p.rho)
                new_a.mul_(adaptive)
            else:
                new_v = out_v[i].copy_(drive)
                new_a = out_a[i].zero_()
            eps_v, eps_a = new_v, new_a
            h = torch.addcmul(eps_v, beta, eps_a, value=-1.0)
            torch.mul(traj.psi[t].index_select(1, post), h, out=e[i])
        contributions = {
            name: sig[start:stop].index_select(2, post).mul_(e).sum(1)
            for name, sig in (signals or {}).items()
        }
        yield TraceChunk(start, stop, out_v, out_a, e, contributions)


def gradients_from_traces(
    snap: Snapshot,
    fwd: Forward,
    synapses: Synapses,
    signals: Mapping[str, Tensor],
    chunk: int = 100,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Sum the per-step contributions over time: rule -> ``(g_in, g_rec)`` dense ``[post, pre]``."""
    totals: dict[str, Tensor] = {}
    for c in eligibility_chunks(snap, fwd, synapses, signals, chunk):
        for name, contrib in c.contributions.items():
            totals[name] = totals.get(name, 0) + contrib.sum(0)
    n, n_in = fwd.traj.z.shape[-1], fwd.x.shape[-1]
    return {
        name: synapses.scatter(v[: synapses.n_rec], v[synapses.n_rec :], n, n_in)
        for name, v in totals.items()
    }
