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

import torch
from torch import Tensor

from mdgl_analysis.network.neuron import ALIFParams


def adjoint(
    signal: Tensor, psi: Tensor, p: ALIFParams, w_rec: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Backward recursion; returns ``(lam, total_signal)``.

    Args:
        signal: ``[time, batch, neuron]`` per-neuron learning signal s(t).
        psi: ``[time, batch, neuron]`` dz/dv of the forward pass.
        w_rec: ``[post, pre]`` effective recurrent weights for exact BPTT; ``None`` keeps only
            each neuron's own dynamics (e-prop and the MDGL family).
    Returns:
        lam: ``[time, batch, neuron]``, ``(1-alpha) delta_v(t)`` = dE/dI(t).
        total_signal: for BPTT, ``[time, batch, neuron]``
            L_tot(t) = s(t) + (1-alpha) W^T delta_v(t+1),
            the total derivative through readout and synapses without the own reset/adaptation
            paths (spec I.3); ``None`` otherwise.
    """
    scale = 1.0 - p.alpha
    lam = torch.empty_like(signal)
    total = torch.empty_like(signal) if w_rec is not None else None
    w_back = scale * w_rec if w_rec is not None else None  # [post, pre]: delta_v @ w -> [b, pre]
    dv = torch.zeros_like(signal[0])
    da = torch.zeros_like(signal[0])
    neg_beta = -p.beta
    adaptive = bool(p.beta.any())
    for t in range(signal.shape[0] - 1, -1, -1):
        if w_back is not None:
            dz = torch.addmm(signal[t], dv, w_back, out=total[t])
            dz = torch.add(dz, dv, alpha=-p.v_th)
        else:
            dz = torch.add(signal[t], dv, alpha=-p.v_th)
        if adaptive:
            dz.add_(da, alpha=1.0 - p.rho)
        g = dz.mul_(psi[t])  # dE/dv(t) through this step's spike
        if adaptive:
            da = torch.addcmul(da * p.rho, g, neg_beta)
        dv = torch.add(g, dv, alpha=p.alpha, out=lam[t])
    lam.mul_(scale)
    return lam, total


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
