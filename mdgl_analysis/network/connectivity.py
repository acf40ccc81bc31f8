"""Dale's law, sparse masks and the balanced signed initialisation (spec section B).

Everything here is computed in float64 on the CPU from one seeded ``torch.Generator``, so a seed
gives the same network on every device. Matrices are returned in the package's ``[post, pre]``
layout (the spec and the original code store ``[pre, post]``; we build in that order, where the
recipe is stated, and transpose once at the end).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.config import NetworkConfig


def dale_signs(n: int, exc_fraction: float) -> Tensor:
    """Sign vector of a population, inhibitory first: ``[-1] * n_inh + [+1] * n_exc`` (spec B.1).

    ``n_exc = int(exc_fraction * n) + 1`` as in the original (81 of 100, 33 of 40).

    Returns:
        float64 tensor ``[n]`` of -1 and +1.
    """
    n_exc = int(exc_fraction * n) + 1
    return torch.cat([-torch.ones(n - n_exc), torch.ones(n_exc)]).double()


def sparse_mask(n_pre: int, n_post: int, p: float, gen: torch.Generator) -> Tensor:
    """Boolean ``[pre, post]`` mask from ``int(n_pre * n_post * p)`` draws with replacement (B.3).

    Duplicates collapse, so the realised density is about ``1 - exp(-p)``.
    """
    nb = int(n_pre * n_post * p)
    rows = torch.randint(n_pre, (nb,), generator=gen)
    cols = torch.randint(n_post, (nb,), generator=gen)
    mask = torch.zeros(n_pre, n_post, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def balanced_magnitudes(sign: Tensor, n_post: int, gen: torch.Generator) -> Tensor:
    """Dense balanced magnitudes ``theta [pre, post]`` before masking (spec B.4 steps 1-6).

    Args:
        sign: ``[pre]`` presynaptic signs (-1 / +1).
        n_post: number of postsynaptic cells.
    Returns:
        float64 ``[pre, post]`` non-negative magnitudes. The square ``[pre, pre]`` signed matrix
        they come from has every column summing to zero and spectral radius one.
    """
    n = sign.numel()
    theta = torch.randn(n, n, generator=gen, dtype=torch.float64).abs()
    exc, inh = sign > 0, sign < 0
    if inh.any():  # a population without inhibitory cells (a task with few inputs) has no balance
        w = sign[:, None] * theta
        # global balance: inhibitory mass equals excitatory mass
        theta[inh] *= w[exc].sum() / (-w[inh].sum())
        w = sign[:, None] * theta
        # per-column balance: shift E entries up (column sum < 0) or I entries down (sum >= 0)
        col = w.sum(0)
        neg = col < 0
        w[exc] += torch.where(neg, col.abs() / exc.sum(), 0.0)
        w[inh] -= torch.where(neg, 0.0, col.abs() / inh.sum())
        theta = w.abs()
    # spectral radius one
    theta /= torch.linalg.eigvals(sign[:, None] * theta).abs().max()
    # W_in (n < n_post): columns drawn with replacement; otherwise the first n_post columns
    cols = torch.randint(n, (n_post,), generator=gen) if n < n_post else torch.arange(n_post)
    return theta[:, cols]


class Connectivity(NamedTuple):
    """Initial network in ``[post, pre]`` layout, float64.

    Attributes:
        theta_in, theta_rec, theta_out: magnitudes ``[neuron, input]``, ``[neuron, neuron]``,
            ``[output, neuron]``; zero where there is no synapse.
        sign_in, sign_rec, sign_out: signs of the same shapes (sign of the presynaptic cell).
        inhibitory, adaptive: bool ``[neuron]``; input_inhibitory: bool ``[input]``.
    """

    theta_in: Tensor
    theta_rec: Tensor
    theta_out: Tensor
    sign_in: Tensor
    sign_rec: Tensor
    sign_out: Tensor
    inhibitory: Tensor
    adaptive: Tensor
    input_inhibitory: Tensor


def initial_connectivity(cfg: NetworkConfig, gen: torch.Generator) -> Connectivity:
    """Signs, masks and magnitudes of W_in, W_rec, W_out exactly as spec B (draw order too).

    Recurrent cells: inhibitory first, then excitatory (spec B.1); regular (LIF) cells first, then
    adaptive (ALIF). Input signs are shuffled. The W_rec diagonal is masked (no autapses, never a
    connection: the project's decision J.1).
    """
    n_in, n, k = cfg.n_in, cfg.n_rec, cfg.n_out
    sign_rec = dale_signs(n, cfg.exc_fraction)
    sign_in = dale_signs(n_in, cfg.exc_fraction)
    sign_in = sign_in[torch.randperm(n_in, generator=gen)]

    def make(sign: Tensor, n_post: int, p: float) -> Tensor:
        theta = balanced_magnitudes(sign, n_post, gen)
        return theta * sparse_mask(sign.numel(), n_post, p, gen)

    theta_in = make(sign_in, n, cfg.p_in)
    theta_rec = make(sign_rec, n, cfg.p_rec)
    theta_rec.fill_diagonal_(0.0)
    theta_out = make(sign_rec, k, cfg.p_out)
    adaptive = torch.arange(n) >= cfg.n_regular
    return Connectivity(
        theta_in=theta_in.T.contiguous(),
        theta_rec=theta_rec.T.contiguous(),
        theta_out=theta_out.T.contiguous(),
        sign_in=sign_in[None, :].expand(n, n_in).contiguous(),
        sign_rec=sign_rec[None, :].expand(n, n).contiguous(),
        sign_out=sign_rec[None, :].expand(k, n).contiguous(),
        inhibitory=sign_rec < 0,
        adaptive=adaptive,
        input_inhibitory=sign_in < 0,
    )


def random_feedback(n_out: int, n_rec: int, scale: float, gen: torch.Generator) -> Tensor:
    """Fixed random feedback weights ``B [output, neuron]`` of random e-prop, float64: dense,
    normal with standard deviation ``scale / sqrt(n_rec)`` (Bellec et al. 2020)."""
    return torch.randn(n_out, n_rec, generator=gen, dtype=torch.float64) * (scale / n_rec**0.5)


def connection_budget(cfg: NetworkConfig) -> int:
    """Global cap on connected synapses, ``sum(size * p)`` (1420 at paper scale, spec E.2)."""
    n = cfg.n_rec
    return int(cfg.n_in * n * cfg.p_in) + int(n * n * cfg.p_rec) + int(n * cfg.n_out * cfg.p_out)
