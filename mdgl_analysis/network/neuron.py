r"""The LIF/ALIF neuron as a pure step function, and the rollout over a trial (spec section A).

Per neuron j, at step t (spec A.2):

.. math::

    a_j(t) &= \rho a_j(t-1) + (1-\rho) z_j(t-1) \\
    A_j(t) &= v_{th} + \beta_j a_j(t) \\
    v_j(t) &= \alpha v_j(t-1) + (1-\alpha)\big(\textstyle\sum_i W^{in}_{ji} x_i(t)
              + \sum_q W^{rec}_{jq} z_q(t-1)\big) - v_{th} z_j(t-1) \\
    s_j(t) &= (v_j(t) - A_j(t)) / v_{th} \\
    z_j(t) &= (1 - r_j(t))\,H(s_j(t)),\qquad
    r_j(t) = 1 \text{ if } z_j \text{ spiked in } t-n_{ref}..t-1

with :math:`H(s) = 1` for :math:`s > 0` (strict) and the pseudo-derivative
:math:`dz/ds = \gamma \max(0, 1-|s|)`, hence :math:`\psi_j(t) = \partial z_j(t)/\partial v_j(t)
= (1-r_j(t))\,(\gamma / v_{th}) \max(0, 1-|s_j(t)|)` (spec A.3).

Axis order everywhere: ``[time, batch, neuron]``; weights ``[post, pre]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.config import NetworkConfig


class ALIFParams(NamedTuple):
    """Constants of the neuron model; ``beta`` is a ``[neuron]`` tensor (0 for LIF cells)."""

    alpha: float  # membrane decay exp(-dt / tau_m)
    rho: float  # adaptation decay exp(-dt / tau_a)
    kappa: float  # readout filter decay exp(-dt / tau_out)
    v_th: float
    gamma: float
    n_ref: int
    beta: Tensor  # [neuron]

    @classmethod
    def from_config(cls, cfg: NetworkConfig, adaptive: Tensor) -> ALIFParams:
        return cls(
            alpha=math.exp(-cfg.dt / cfg.tau_m),
            rho=math.exp(-cfg.dt / cfg.tau_a),
            kappa=math.exp(-cfg.dt / cfg.tau_out),
            v_th=cfg.v_th,
            gamma=cfg.gamma,
            n_ref=cfg.n_ref,
            beta=adaptive.double() * cfg.beta,
        )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ALIFParams:
        return self._replace(beta=self.beta.to(device=device, dtype=dtype))


class ALIFState(NamedTuple):
    """State after a step, each ``[batch, neuron]``.

    ``ref`` counts the refractory steps still ahead: the cell is refractory at the next step when
    ``ref > 0`` (set to ``n_ref`` on a spike, else decremented down to 0; spec A.2 item 6).
    """

    v: Tensor
    a: Tensor
    z: Tensor
    ref: Tensor

    @classmethod
    def zeros(cls, batch: int, n: int, device: torch.device | str, dtype: torch.dtype) -> ALIFState:
        z = torch.zeros(batch, n, device=device, dtype=dtype)
        return cls(z, z.clone(), z.clone(), z.clone())


def pseudo_derivative(s: Tensor, gamma: float) -> Tensor:
    """dz/ds = gamma * max(0, 1 - |s|), the one surrogate used by BPTT and every explicit rule."""
    return gamma * torch.clamp(1.0 - s.abs(), min=0.0)


def psi(
    v: Tensor, threshold: Tensor, refractory: Tensor, p: ALIFParams, out: Tensor | None = None
) -> Tensor:
    """psi = dz/dv = (1 - r) (gamma / v_th) max(0, 1 - |s|), s = (v - A) / v_th (spec A.3).

    Computed in place in ``out`` (or one new tensor): no temporaries of the inputs' size.
    """
    with torch.no_grad():
        out = torch.sub(v, threshold, out=out).div_(p.v_th).abs_().neg_().add_(1.0)
        return out.clamp_(min=0.0).mul_(p.gamma).div_(p.v_th).masked_fill_(refractory, 0.0)


class SpikeFunction(torch.autograd.Function):
    """Heaviside of the scaled distance ``s`` with the pseudo-derivative as its gradient.

    Refractory entries spike never and pass zero gradient (the original's ``tf.where``).
    """

    @staticmethod
    def forward(ctx, s: Tensor, refractory: Tensor, gamma: float) -> Tensor:  # noqa: D102
        ctx.save_for_backward(s, refractory)
        ctx.gamma = gamma
        return (s > 0).logical_and_(~refractory).to(s.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102
        s, refractory = ctx.saved_tensors
        return (grad * pseudo_derivative(s, ctx.gamma)).masked_fill_(refractory, 0.0), None, None


def spike(s: Tensor, refractory: Tensor, gamma: float, out: Tensor | None = None) -> Tensor:
    """z = (1 - r) H(s); differentiable through :class:`SpikeFunction` when grad is enabled.

    ``out`` (no-grad only) receives the spikes.
    """
    if torch.is_grad_enabled() and s.requires_grad:
        return SpikeFunction.apply(s, refractory, gamma)
    fired = torch.gt(s, 0.0).logical_and_(torch.logical_not(refractory))
    return fired.to(s.dtype) if out is None else out.copy_(fired)


def alif_step(
    i_in: Tensor,
    state: ALIFState,
    w_rec_scaled: Tensor,
    p: ALIFParams,
    out: ALIFState | None = None,
    out_threshold: Tensor | None = None,
    out_refractory: Tensor | None = None,
) -> tuple[ALIFState, Tensor, Tensor]:
    """One time step of the network (spec A.2), pure: ``state`` is never modified.

    Args:
        i_in: ``[batch, neuron]`` feed-forward drive of this step already scaled,
            ``(1 - alpha) * x(t) @ w_in.T``.
        state: the state after step t-1.
        w_rec_scaled: ``[pre, post]`` equal to ``(1 - alpha) * w_rec.T`` (diagonal zero).
        out: optional preallocated ``[batch, neuron]`` buffers for the new state (the no-grad
            fast path); fresh tensors when ``None`` (autograd).
        out_threshold: optional ``[batch, neuron]`` buffer for the threshold, as ``out``.
        out_refractory: optional ``[batch, neuron]`` bool buffer for the refractory mask, as
            ``out``.
    Returns:
        ``(state, threshold, refractory)``: the new state (``state.z`` are the spikes of this step),
        the adaptive threshold ``A(t)`` and the bool refractory mask ``r(t)``, each
        ``[batch, neuron]``.
    """
    o = out or ALIFState(None, None, None, None)
    v = torch.addmm(i_in, state.z, w_rec_scaled, out=o.v)  # first: out_threshold may alias i_in
    v.add_(state.v, alpha=p.alpha).sub_(state.z, alpha=p.v_th)
    a = torch.lerp(state.a, state.z, 1.0 - p.rho, out=o.a)
    threshold = torch.mul(a, p.beta, out=out_threshold).add_(p.v_th)
    refractory = torch.gt(state.ref, 0.0, out=out_refractory)
    z = spike((v - threshold).div_(p.v_th), refractory, p.gamma, out=o.z)
    ref = torch.maximum(torch.sub(state.ref, 1.0, out=o.ref), z * float(p.n_ref), out=o.ref)
    return ALIFState(v, a, z, ref), threshold, refractory


class Trajectory(NamedTuple):
    """A network rollout, every field ``[time, batch, neuron]``.

    ``psi`` is dz/dv (spec A.3); ``bpsi = -beta * psi`` is dz/da and is computed where needed.
    A lean rollout leaves ``v``, ``a`` and ``threshold`` as ``None``.
    """

    z: Tensor
    v: Tensor | None
    a: Tensor | None
    threshold: Tensor | None
    refractory: Tensor  # bool
    psi: Tensor


def rollout(
    x: Tensor,
    w_in: Tensor,
    w_rec: Tensor,
    p: ALIFParams,
    state: ALIFState | None = None,
    lean: bool = False,
    core: str = "torch",
) -> Trajectory:
    """Run the network over a trial from the zero state (or ``state``).

    Differentiable when grad is enabled and a weight requires grad (the autograd BPTT reference);
    otherwise a forward pass that writes every step into preallocated ``[time, batch, neuron]``
    buffers (pass 1 of the explicit rules). Both paths run :func:`alif_step`.

    Args:
        x: ``[time, batch, input]`` input spike counts.
        w_in: ``[neuron, input]`` effective input weights.
        w_rec: ``[neuron, neuron]`` effective recurrent weights ``[post, pre]``, diagonal zero.
        lean: keep only what the learning rules need (``z``, ``refractory``, ``psi``; ``v``, ``a``
            and ``threshold`` are ``None``): three trial-sized buffers fewer (no-grad path only).
        core: ``"torch"`` (this function's loop) or ``"numba"`` (the compiled loop of
            :func:`mdgl_analysis.kernels.loops.rollout`, for the no-grad path from the zero
            state); the CUDA-graph form is :func:`mdgl_analysis.network.cuda_graph.rollout_graphed`.
    Returns:
        the :class:`Trajectory`.
    """
    if core == "numba" and state is None and not torch.is_grad_enabled():
        return _rollout_numba(x, w_in, w_rec, p, lean)
    if core not in ("torch", "numba"):
        raise ValueError(f"core {core!r} is not allowed here: torch or numba")
    n_steps, batch, _ = x.shape
    n = w_rec.shape[0]
    if state is None:
        state = ALIFState.zeros(batch, n, x.device, x.dtype)
    scale = 1.0 - p.alpha
    i_in = (x.reshape(n_steps * batch, -1) @ (scale * w_in).T).reshape(n_steps, batch, n)
    w_rec_scaled = (scale * w_rec).T.contiguous()
    if torch.is_grad_enabled() and (w_in.requires_grad or w_rec.requires_grad):
        steps = []
        for i_t in i_in.unbind(0):
            state, threshold, refractory = alif_step(i_t, state, w_rec_scaled, p)
            steps.append((state.z, state.v, state.a, threshold, refractory))
        z, v, a, threshold, refractory = (torch.stack(s) for s in zip(*steps, strict=True))
        return Trajectory(z, v, a, threshold, refractory, psi(v, threshold, refractory, p))

    z, v = x.new_empty(n_steps, batch, n), x.new_empty(n_steps, batch, n)
    refractory = torch.empty(n_steps, batch, n, dtype=torch.bool, device=x.device)
    # lean: the adaptation alternates between two slots, the threshold overwrites the consumed drive
    a = x.new_empty(2 if lean else n_steps, batch, n)
    threshold = i_in if lean else torch.empty_like(v)
    refs = (state.ref.clone(), torch.empty_like(state.ref))
    for t in range(n_steps):
        out = ALIFState(v[t], a[t % 2 if lean else t], z[t], refs[t % 2])
        state, _, _ = alif_step(i_in[t], state, w_rec_scaled, p, out, threshold[t], refractory[t])
    if lean:
        return Trajectory(z, None, None, None, refractory, psi(v, threshold, refractory, p, out=v))
    return Trajectory(z, v, a, threshold, refractory, psi(v, threshold, refractory, p))


def _rollout_numba(x: Tensor, w_in: Tensor, w_rec: Tensor, p: ALIFParams, lean: bool) -> Trajectory:
    """:func:`rollout` by the compiled kernel (CPU tensors; float32 or float64)."""
    from mdgl_analysis.kernels import threads
    from mdgl_analysis.kernels.loops import rollout as kernel
    from mdgl_analysis.kernels.loops import rows

    n_steps, batch, _ = x.shape
    n = w_rec.shape[0]
    scale = 1.0 - p.alpha
    np_dtype = x.new_empty(0).numpy().dtype
    c = torch.tensor([p.alpha, 1.0 - p.rho, p.v_th, p.gamma, p.n_ref], dtype=x.dtype).numpy()
    w_in_t = (scale * w_in).T.contiguous().numpy()
    w_rec_t = (scale * w_rec).T.contiguous().numpy()
    z = x.new_empty(n_steps, batch, n)
    psi_ = x.new_empty(n_steps, batch, n)
    refractory = torch.empty(n_steps, batch, n, dtype=torch.bool)
    full = [x.new_empty((0, 0, 0) if lean else (n_steps, batch, n)) for _ in range(3)]
    kernel(
        x.contiguous().numpy(),
        *rows(w_in_t),
        *rows(w_rec_t),
        p.beta.numpy().astype(np_dtype),
        c,
        z.numpy(),
        refractory.numpy(),
        psi_.numpy(),
        *(f.numpy() for f in full),
        max(1, min(threads(), batch)),
    )
    if lean:
        return Trajectory(z, None, None, None, refractory, psi_)
    return Trajectory(z, *full, refractory, psi_)
