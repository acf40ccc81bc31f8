"""Optimiser and constraints of one training step (spec section E).

Order (spec E, REW): gradients times the sign matrix -> budget check -> finite check -> Adam ->
disconnection guard -> l1 shrinkage -> reconnection of initially connected synapses at epsilon.
"""

from __future__ import annotations

import math

import torch

from mdgl_analysis.config import TrainConfig
from mdgl_analysis.network.model import MATRICES, Gradients, SpikingNetwork


class TFAdam(torch.optim.Optimizer):
    """Adam exactly as TensorFlow 1's ``AdamOptimizer`` (the original's optimiser).

    ``theta -= lr_t * m / (sqrt(v) + eps)`` with ``lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)``:
    epsilon is applied to the uncorrected second moment (torch's Adam applies it after the bias
    correction, which differs while ``sqrt(v)`` is comparable to epsilon).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["m"], state["v"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)


class ConstraintError(RuntimeError):
    """A training invariant broke (non-finite gradient, connection budget exceeded)."""


def apply_update(
    net: SpikingNetwork,
    opt: TFAdam,
    grads: Gradients,
    cfg: TrainConfig,
    gen: torch.Generator,
) -> None:
    """One optimiser step with every constraint of spec E, in place on ``net``.

    Args:
        grads: dE/dW of the effective weights (the rule's output).
        gen: CPU generator for the reconnection draws.
    """
    thetas = [net.theta_in, net.theta_rec, net.theta_out]
    g_w = [grads.w_in, grads.w_rec, grads.w_out]
    for name, g in zip((*MATRICES, "b_out"), (*g_w, grads.b_out), strict=True):
        if not torch.isfinite(g).all():
            raise ConstraintError(f"non-finite gradient for {name}: the run is stopped (spec E.3)")
    with torch.no_grad():
        n_conn = sum(int((t > 0).sum()) for t in thetas)
        if n_conn > net.budget:
            raise ConstraintError(f"{n_conn} connections exceed the budget of {net.budget}")
        for theta, sign, g in zip(
            thetas, (net.sign_in, net.sign_rec, net.sign_out), g_w, strict=True
        ):
            theta.grad = sign * g
        net.b_out.grad = grads.b_out.clone()
        disconnected = [t <= 0 for t in thetas]
    opt.step()
    lr = opt.param_groups[0]["lr"]
    with torch.no_grad():
        for theta, off in zip(thetas, disconnected, strict=True):
            theta.masked_fill_(off, 0.0)  # guard: Adam momentum must not revive a synapse
            theta.sub_(lr * cfg.l1 * (theta > 0))  # l1 shrinkage of connected magnitudes
        reconnect(net, cfg.reconnect_eps, gen)


def reconnect(net: SpikingNetwork, eps: float, gen: torch.Generator) -> None:
    """Revive up to ``budget - connected`` initially connected synapses at ``eps`` (spec E.7).

    The free slots are split among the matrices by categorical draws with probabilities
    proportional to ``size * p``; within a matrix candidates are chosen uniformly.
    """
    thetas = [net.theta_in, net.theta_rec, net.theta_out]
    inits = [net.init_in, net.init_rec, net.init_out]
    free = net.budget - sum(int((t > 0).sum()) for t in thetas)
    if free <= 0:
        return
    nc = net.net_cfg
    n = nc.n_rec
    weights = torch.tensor(
        [nc.n_in * n * nc.p_in, n * n * nc.p_rec, n * nc.n_out * nc.p_out], dtype=torch.float64
    )
    if weights.sum() <= 0:
        return
    draws = torch.multinomial(weights, free, replacement=True, generator=gen)
    counts = torch.bincount(draws, minlength=3).tolist()
    for theta, init, count in zip(thetas, inits, counts, strict=True):
        candidates = ((theta <= 0) & init).flatten().nonzero().flatten().cpu()
        if count == 0 or candidates.numel() == 0:
            continue
        pick = candidates[torch.randperm(candidates.numel(), generator=gen)[:count]]
        theta.view(-1)[pick.to(theta.device)] = eps
