"""The evidence-accumulation task (spec section F).

A trial shows ``n_cues`` cues (100 ms each, 50 ms gaps), each on the left or the right population,
then a delay, then a recall cue; the target is the side that got more cues (1 = left majority).
Inputs are Poisson counts per step on four populations of equal size: left cues, right cues,
recall, background noise.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .config import TaskConfig


class Batch(NamedTuple):
    """x: ``[time, batch, input]`` spike counts; target: ``[batch]`` (int64); pattern: ``[batch]``
    the cue pattern as an integer whose bits, most significant first, are the cues (1 = left)."""

    x: Tensor
    target: Tensor
    pattern: Tensor


class Timeline(NamedTuple):
    """Step windows ``[start, stop)`` of the cues and of the recall, and the trial length."""

    cues: list[tuple[int, int]]
    recall: tuple[int, int]
    n_steps: int


def timeline(cfg: TaskConfig, dt: float = 1.0) -> Timeline:
    n_steps = cfg.n_steps(dt)
    cue, period = round(cfg.cue_ms / dt), round((cfg.cue_ms + cfg.gap_ms) / dt)
    cues = [(c * period, c * period + cue) for c in range(cfg.n_cues)]
    return Timeline(cues, (n_steps - round(cfg.recall_ms / dt), n_steps), n_steps)


def cue_bits(pattern: Tensor, n_cues: int) -> Tensor:
    """``[batch, n_cues]`` bits of each pattern, most significant first (1 = left cue)."""
    shifts = torch.arange(n_cues - 1, -1, -1)
    return (pattern[:, None] >> shifts) & 1


def sample(cfg: TaskConfig, n_in: int, batch: int, gen: torch.Generator, dt: float = 1.0) -> Batch:
    """Draw one batch on the CPU from ``gen``: distinct cue patterns, Poisson inputs.

    Args:
        n_in: input channels, four populations of ``n_in // 4`` (left, right, recall, noise).
    Returns:
        a :class:`Batch` in float64 (cast it to the model's dtype and device).
    """
    tl = timeline(cfg, dt)
    pop = n_in // 4
    pattern = torch.randperm(2**cfg.n_cues, generator=gen)[:batch]
    bits = cue_bits(pattern, cfg.n_cues)
    target = (bits.sum(1) > cfg.n_cues / 2).long()
    p_cue, p_noise = cfg.cue_rate_hz * dt / 1000, cfg.noise_rate_hz * dt / 1000
    rate = torch.zeros(tl.n_steps, batch, n_in, dtype=torch.float64)
    for c, (start, stop) in enumerate(tl.cues):
        left = bits[:, c].bool()
        rate[start:stop, left, 0:pop] = p_cue
        rate[start:stop, ~left, pop : 2 * pop] = p_cue
    rate[tl.recall[0] : tl.recall[1], :, 2 * pop : 3 * pop] = p_cue
    rate[:, :, 3 * pop :] = p_noise
    x = torch.poisson(rate, generator=gen)
    return Batch(x, target, pattern)
