"""Autograd oracles written from spec section I, independently of the package's dynamics code.

The network is re-implemented here with a refractory history list (the package uses a counter),
its own surrogate spike function and its own readout, so a shared bug cannot hide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, refractory, gamma):
        ctx.save_for_backward(s, refractory)
        ctx.gamma = gamma
        return ((s > 0) & ~refractory).to(s.dtype)

    @staticmethod
    def backward(ctx, g):
        s, refractory = ctx.saved_tensors
        d = ctx.gamma * torch.clamp(1 - s.abs(), min=0) * (~refractory).to(s.dtype)
        return g * d, None, None


def loss_of(
    snap,
    x,
    target,
    mask,
    kind="cross_entropy",
    *,
    stop_recurrent=False,
    truncated_readout=False,
    local_copy=False,
    feedback=None,
):
    """Autograd loss E(w_in, w_rec) with the stop-gradients of spec I.

    The readout is y(t) = psp(t) w_out^T + b at every step; the loss is the mean over the masked
    steps and trials of the cross-entropy, or the mean over masked steps, trials and outputs of
    the squared error (kind "mse").

    stop_recurrent: I.1, stop z(t-1) in the recurrent input only (reset and adaptation kept).
    truncated_readout: I.2, the readout sees zhat carrying the single step z_p(t-1) -> z_j(t).
    local_copy: I.3, returns also the spike tensors that feed readout and synapses, with reset,
        adaptation and refractoriness driven by a separate local copy.
    feedback: ``[output, neuron]`` weights through which the loss's derivative reaches the
        spikes in place of W_out (random e-prop): the readout's value is unchanged.
    Returns (loss, w_in, w_rec, z_list).
    """
    p, w = snap.params, snap.weights
    w_in = w.w_in.clone().requires_grad_(True)
    w_rec = w.w_rec.clone().requires_grad_(True)
    eye = torch.eye(w_rec.shape[0], dtype=w_rec.dtype)
    w_rec_eff = w_rec * (1 - eye)
    n_steps, batch, _ = x.shape
    n = w_rec.shape[0]
    v = torch.zeros(batch, n, dtype=x.dtype)
    a = torch.zeros_like(v)
    z_prev = torch.zeros_like(v)
    z_prev_local = torch.zeros_like(v)
    history = []
    psp = torch.zeros_like(v)
    spikes = []
    outputs = []
    for t in range(n_steps):
        own = z_prev_local if local_copy else z_prev
        a = p.rho * a + (1 - p.rho) * own
        thr = p.v_th + p.beta * a
        z_rec = z_prev.detach() if stop_recurrent else z_prev
        i_t = x[t] @ w_in.T + z_rec @ w_rec_eff.T
        v = p.alpha * v + (1 - p.alpha) * i_t - p.v_th * own
        recent = history[-p.n_ref :] if p.n_ref else []
        refractory = torch.stack(recent).amax(0) > 0 if recent else torch.zeros_like(v).bool()
        z = _Spike.apply((v - thr) / p.v_th, refractory, p.gamma)
        z_out = z
        if truncated_readout:
            v_hat = v + (1 - p.alpha) * ((z_prev - z_prev.detach()) @ w_rec_eff.T)
            z_out = _Spike.apply((v_hat - thr) / p.v_th, refractory, p.gamma)
        if local_copy:
            # the spikes feeding readout and synapses: z plus a zero leaf whose gradient is the
            # total derivative dE/dz(t) along every path that leaves the cell through them
            probe = torch.zeros_like(z, requires_grad=True)
            z_global = z + probe
            spikes.append((probe, z))
            z_out = z_global
            z_prev_local = z
            z_prev = z_global
        else:
            z_prev = z
        psp = p.kappa * psp + (1 - p.kappa) * z_out
        outputs.append(_read(psp, w.w_out, w.b_out, feedback))
        history.append(z.detach())
    return _loss(outputs, target, mask, kind), w_in, w_rec, spikes


def _read(psp, w_out, b_out, feedback=None):
    """``psp @ w_out^T + b``; with ``feedback`` B the same value, whose derivative with respect to
    ``psp`` goes through B instead of W_out."""
    if feedback is None:
        return psp @ w_out.T + b_out
    through_b = psp @ feedback.T
    return psp.detach() @ w_out.T + b_out + through_b - through_b.detach()


def _loss(outputs, target, mask, kind):
    y = torch.stack(outputs)[mask]
    if kind == "cross_entropy":
        loss = F.cross_entropy(y, target[mask])
    else:
        loss = ((y - target[mask]) ** 2).mean()
    return loss


def loss_hops(snap, x, target, mask, kind, hops):
    """Autograd loss that reaches the weights only through paths crossing at most ``hops``
    recurrent synapses: ``hops + 1`` copies of the network run side by side, copy m's recurrent
    input is copy m-1's spikes of the previous step (copy 0's: its own, detached), each copy's
    leak, reset, adaptation and refractoriness are its own, and the readout reads copy ``hops``.
    Every copy has the values of the real network. Returns (loss, w_in, w_rec)."""
    p, w = snap.params, snap.weights
    w_in = w.w_in.clone().requires_grad_(True)
    w_rec = w.w_rec.clone().requires_grad_(True)
    w_rec_eff = w_rec * (1 - torch.eye(w_rec.shape[0], dtype=w_rec.dtype))
    n_steps, batch, _ = x.shape
    zero = torch.zeros(batch, w_rec.shape[0], dtype=x.dtype)
    v, a, z = [zero] * (hops + 1), [zero] * (hops + 1), [zero] * (hops + 1)
    history, outputs, psp = [], [], zero
    for t in range(n_steps):
        recent = history[-p.n_ref :] if p.n_ref else []
        refractory = torch.stack(recent).amax(0) > 0 if recent else zero.bool()
        before = list(z)
        for m in range(hops + 1):
            a[m] = p.rho * a[m] + (1 - p.rho) * before[m]
            incoming = before[m - 1] if m else before[0].detach()
            i_t = x[t] @ w_in.T + incoming @ w_rec_eff.T
            v[m] = p.alpha * v[m] + (1 - p.alpha) * i_t - p.v_th * before[m]
            threshold = p.v_th + p.beta * a[m]
            z[m] = _Spike.apply((v[m] - threshold) / p.v_th, refractory, p.gamma)
        psp = p.kappa * psp + (1 - p.kappa) * z[hops]
        outputs.append(_read(psp, w.w_out, w.b_out))
        history.append(z[0].detach())
    return _loss(outputs, target, mask, kind), w_in, w_rec
