r"""Gradients of rules of the form sum_t s_p(t) e_pq(t), and exact BPTT, by one backward recursion.

The eligibility recursion (spec C) has coefficients that depend on the postsynaptic cell only, so
``sum_{b,t} s_p(t) e_pq(t)`` is linear in the presynaptic activity and equals
``sum_{b,t} lam_p(t) u_q(t)`` with ``u`` the presynaptic drive (``z(t-1)`` for recurrent,
``x(t)`` for input synapses) and ``lam = (1-alpha) delta_v`` from the per-neuron adjoint

.. math::

    \delta z(t) &= s(t) - v_{th}\,\delta v(t+1) + (1-\rho)\,\delta a(t+1)
                   \;[+\; (1-\alpha)\, W_{rec}^\top \delta v(t+1) \text{ for BPTT}] \\
    \delta v(t) &= \psi(t)\,\delta z(t) + \alpha\,\delta v(t+1) \\
    \delta a(t) &= -\beta\,\psi(t)\,\delta z(t) + \rho\,\delta a(t+1)

(design section 2). Without the bracket it is the adjoint of each neuron's own dynamics (leak,
reset, adaptation: exactly the paths inside the eligibility trace), so the result equals
``sum_t s(t) e(t)``; with it and ``s = L`` it is exact BPTT (spec D.1), and ``lam`` is then the
BPTT credit dE/dI(t) of every neuron's input current at every step. No tensor of synapse size per
step ever exists.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mdgl_analysis.network.cuda_graph import graphed, scalars
from mdgl_analysis.network.model import Forward, Gradients
from mdgl_analysis.network.neuron import ALIFParams
from mdgl_analysis.network.readout import readout_gradients


def adjoint(
    signal: Tensor,
    psi: Tensor,
    p: ALIFParams,
    w_rec: Tensor | None = None,
    w_hat: Tensor | None = None,
    core: str = "torch",
    adaptive: bool | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Backward recursion; returns ``(lam, total_signal)``.

    Args:
        signal: ``[time, batch, neuron]`` per-neuron learning signal s(t).
        psi: ``[time, batch, neuron]`` dz/dv of the forward pass.
        w_rec: ``[post, pre]`` effective recurrent weights for exact BPTT; ``None`` keeps only
            each neuron's own dynamics (e-prop and the MDGL family).
        w_hat: ``[post, pre]`` modulatory weights of MDGL: the signal becomes
            ``s(t) + (1-alpha) (psi s)(t+1) @ w_hat`` for ``t <= T-2``
            (:func:`mdgl_analysis.rules.local.mdgl_signal`), formed step by step.
        core: ``"torch"`` (this loop), ``"numba"`` (:func:`mdgl_analysis.kernels.loops.adjoint`)
            or ``"cuda_graph"`` (:func:`adjoint_graphed`).
        adaptive: whether any ``p.beta`` is nonzero (read from ``p.beta`` when ``None``: one host
            synchronisation on a GPU, which a graph capture must not do).
    Returns:
        lam: ``[time, batch, neuron]``, ``(1-alpha) delta_v(t)`` = dE/dI(t).
        total_signal: for BPTT, ``[time, batch, neuron]``
            L_tot(t) = s(t) + (1-alpha) W^T delta_v(t+1),
            the total derivative through readout and synapses without the own reset/adaptation
            paths (spec I.3); ``None`` otherwise.
    """
    if core == "numba":
        return _adjoint_numba(signal, psi, p, w_rec, w_hat, keep=True)
    if core == "cuda_graph":
        return adjoint_graphed(signal, psi, p, w_rec, w_hat)
    if core != "torch":
        raise ValueError(f"core {core!r} is not allowed: torch, numba or cuda_graph")
    scale = 1.0 - p.alpha
    lam = torch.empty_like(signal)
    total = torch.empty_like(signal) if w_rec is not None else None
    w_back = scale * w_rec if w_rec is not None else None  # [post, pre]: delta_v @ w -> [b, pre]
    dv = torch.zeros_like(signal[0])
    da = torch.zeros_like(signal[0])
    neg_beta = -p.beta
    adaptive = bool(p.beta.any()) if adaptive is None else adaptive
    n_steps = signal.shape[0]
    for t in range(n_steps - 1, -1, -1):
        s = signal[t]
        if w_hat is not None and t < n_steps - 1:
            s = torch.addmm(s, psi[t + 1] * signal[t + 1], w_hat, alpha=scale)
        if w_back is not None:
            dz = torch.addmm(s, dv, w_back, out=total[t])
            dz = torch.add(dz, dv, alpha=-p.v_th)
        else:
            dz = torch.add(s, dv, alpha=-p.v_th)
        if adaptive:
            dz.add_(da, alpha=1.0 - p.rho)
        g = dz.mul_(psi[t])  # dE/dv(t) through this step's spike
        if adaptive:
            da = torch.addcmul(da * p.rho, g, neg_beta)
        dv = torch.add(g, dv, alpha=p.alpha, out=lam[t])
    lam.mul_(scale)
    return lam, total


def adjoint_graphed(
    signal: Tensor,
    psi: Tensor,
    p: ALIFParams,
    w_rec: Tensor | None = None,
    w_hat: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`adjoint` (its torch loop) captured as a CUDA graph and replayed
    (:func:`mdgl_analysis.network.cuda_graph.graphed`); the same arguments and results, every
    tensor on one CUDA device, the results freshly allocated."""
    adaptive = bool(p.beta.any())  # decided before capture: a graph cannot read it

    def make_body(signal_s, psi_s, beta_s, w_rec_s, w_hat_s):
        q = p._replace(beta=beta_s)
        return lambda: adjoint(signal_s, psi_s, q, w_rec_s, w_hat_s, adaptive=adaptive)

    values = {"signal": signal, "psi": psi, "beta": p.beta, "w_rec": w_rec, "w_hat": w_hat}
    lam, total = graphed("adjoint_graphed", (scalars(p), adaptive), values, make_body)
    return lam, total


def adjoint_gradients(
    fwd: Forward,
    p: ALIFParams,
    signal: Tensor,
    w_rec: Tensor | None = None,
    w_hat: Tensor | None = None,
    core: str = "torch",
) -> Gradients:
    """Every weight's gradient of a rule ``sum_t s(t) e(t)`` (or BPTT, with ``w_rec``): the
    :func:`adjoint` recursion contracted with the presynaptic activity (:func:`gradients`).

    With ``core = "numba"`` the contractions run inside the compiled backward loop, a step at a
    time over nonzero inputs and spikes, and ``lam`` is never stored.
    """
    if core != "numba":
        lam, _ = adjoint(signal, fwd.traj.psi, p, w_rec, w_hat, core)
        return gradients(lam, fwd)
    n_in, n, k = fwd.x.shape[-1], signal.shape[-1], fwd.ro.dy.shape[-1]
    parts = _adjoint_numba(signal, fwd.traj.psi, p, w_rec, w_hat, False, fwd, (n_in, n, k))
    g_in, g_rec, g_out = (torch.from_numpy(part.sum(0)).T.contiguous() for part in parts)
    g_rec.fill_diagonal_(0.0)
    return Gradients(g_in, g_rec, g_out, fwd.ro.dy.sum((0, 1)))


def _adjoint_numba(
    signal: Tensor,
    psi: Tensor,
    p: ALIFParams,
    w_rec: Tensor | None,
    w_hat: Tensor | None,
    keep: bool,
    fwd: Forward | None = None,
    sizes: tuple[int, int, int] = (0, 0, 0),
):
    """Run :func:`mdgl_analysis.kernels.loops.adjoint`: ``(lam, total)`` when ``keep``, else the
    per-chunk transposed gradients ``(g_in, g_rec, g_out)`` of ``fwd`` (``sizes``: inputs,
    neurons, outputs)."""
    from mdgl_analysis.kernels import threads
    from mdgl_analysis.kernels.loops import adjoint as kernel
    from mdgl_analysis.kernels.loops import rows

    scale = 1.0 - p.alpha
    n_steps, batch, _ = signal.shape
    chunks = max(1, min(threads(), batch))
    c = torch.tensor([p.alpha, p.rho, 1.0 - p.rho, -p.v_th, scale], dtype=signal.dtype).numpy()
    empty = signal.new_zeros(0, 0, 0)
    none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), empty.numpy().ravel())
    lam = torch.empty_like(signal) if keep else empty
    total = torch.empty_like(signal) if keep and w_rec is not None else empty
    n_in, n, k = sizes
    parts = [np.zeros((chunks, a, b), dtype=c.dtype) for a, b in ((n_in, n), (n, n), (n, k))]
    kernel(
        signal.contiguous().numpy(),
        psi.contiguous().numpy(),
        p.beta.to(signal.dtype).numpy(),
        c,
        *(rows((scale * w_rec).numpy()) if w_rec is not None else none),
        *(rows((scale * w_hat).numpy()) if w_hat is not None else none),
        lam.numpy(),
        total.numpy(),
        *(
            (fwd.x.contiguous().numpy(), fwd.traj.z.numpy(), fwd.ro.dy_bar.contiguous().numpy())
            if fwd is not None
            else (empty.numpy(),) * 3
        ),
        *parts,
        bool(p.beta.any()),
    )
    if keep:
        return lam, (total if w_rec is not None else None)
    return parts


def synaptic_gradients(lam: Tensor, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Contract ``lam`` with the presynaptic activity.

    Args:
        lam: ``[time, batch, neuron]``; x: ``[time, batch, input]``; z: ``[time, batch, neuron]``.
    Returns:
        ``g_in [neuron, input] = sum lam(t) x(t)`` and
        ``g_rec [neuron, neuron] = sum lam(t) z(t-1)`` with the diagonal zeroed (no autapses).
    """
    n = lam.shape[-1]
    lam_flat = lam.reshape(-1, n)
    g_in = lam_flat.T @ x.reshape(-1, x.shape[-1])
    g_rec = lam[1:].reshape(-1, n).T @ z[:-1].reshape(-1, n)
    g_rec.fill_diagonal_(0.0)
    return g_in, g_rec


def gradients(lam: Tensor, fwd: Forward) -> Gradients:
    """Every weight's gradient from ``lam`` (:func:`adjoint`) and the forward pass: the synaptic
    contractions of :func:`synaptic_gradients` and the readout's exact gradients
    (:func:`~mdgl_analysis.network.readout.readout_gradients`)."""
    g_in, g_rec = synaptic_gradients(lam, fwd.x, fwd.traj.z)
    g_out, g_b = readout_gradients(fwd.ro, fwd.traj.z)
    return Gradients(g_in, g_rec, g_out, g_b)
