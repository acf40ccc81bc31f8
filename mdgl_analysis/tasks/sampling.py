"""Poisson inputs drawn as events: the built-in tasks' ``sampler`` parameter.

A task's Poisson input is a count per step and channel, ``x[t, b, c] ~ Poisson(p)``, where the
probability ``p`` (rate x dt) is constant over *stretches*: boxes of steps, trials and channels
(a cue's window on its population, for one trial). Two samplers draw the same distribution:

* ``"events"`` (the default): for every stretch of ``M`` cells, the total count
  ``N ~ Poisson(p M)`` (one ``torch.poisson`` call over all stretches), then the ``N`` events at
  independent uniform cells of the stretch (one ``torch.randint`` per distinct stretch size),
  accumulated into ``x``. By the Poisson-process property the cells' counts are then exactly iid
  ``Poisson(p)``. The work grows with the number of events (about 35 000 in a paper-scale
  evidence batch of 5.1 million cells), not with the number of cells.
* ``"poisson"``: ``torch.poisson`` on the dense ``[time, batch, channel]`` rate tensor, one
  draw per cell: the code path before the event sampler existed, kept bit for bit so that runs
  made with it resume with exactly their numbers (a run folder's config saved before this
  parameter existed reads as ``"poisson"``; see :data:`mdgl_analysis.config.LEGACY`).

The two samplers draw different counts from the same generator state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.tasks.base import TaskError

SAMPLERS = ("events", "poisson")
"""The samplers of Poisson inputs: draw events (the default), or one Poisson draw per cell."""


def check_sampler(value: str) -> None:
    """TaskError naming ``task.sampler`` unless ``value`` is one of :data:`SAMPLERS`."""
    if value not in SAMPLERS:
        raise TaskError(f"task.sampler = {value!r} is not allowed: one of {', '.join(SAMPLERS)}")


class Stretches(NamedTuple):
    """Boxes of constant probability per step and channel.

    Attributes:
        bounds: ``[stretch, 6]`` int64 ``(t0, t1, b0, b1, c0, c1)``: steps ``[t0, t1)`` of trials
            ``[b0, b1)`` on channels ``[c0, c1)``; boxes do not overlap.
        p: ``[stretch]`` float64 expected count per step and channel (rate x dt), >= 0.
    """

    bounds: Tensor
    p: Tensor

    @classmethod
    def of(cls, rows: list[tuple[int, int, int, int, int, int]], p: list[float]) -> Stretches:
        """Stretches from a list of ``(t0, t1, b0, b1, c0, c1)`` and their probabilities."""
        bounds = torch.tensor(rows, dtype=torch.int64).reshape(-1, 6)
        return cls(bounds, torch.tensor(p, dtype=torch.float64).reshape(-1))


def _check(shape: tuple[int, int, int], parts: Stretches) -> None:
    """TaskError when a stretch lies outside ``shape`` or a probability is negative."""
    bounds, p = parts
    if bounds.ndim != 2 or bounds.shape[1] != 6 or p.shape != (bounds.shape[0],):
        raise TaskError(
            f"stretches of shape {tuple(bounds.shape)} with p of shape {tuple(p.shape)} are not "
            "allowed: bounds [stretch, 6] and p [stretch]"
        )
    if not bool((p >= 0).all()) or not bool(torch.isfinite(p).all()):
        raise TaskError(f"stretch probabilities {p.tolist()} are not allowed: finite and >= 0")
    lo, hi = bounds[:, 0::2], bounds[:, 1::2]
    limit = torch.tensor(shape)
    if not bool(((lo >= 0) & (lo <= hi) & (hi <= limit)).all()):
        bad = bounds[~((lo >= 0) & (lo <= hi) & (hi <= limit)).all(1)][0].tolist()
        raise TaskError(
            f"stretch {bad} is not allowed: 0 <= start <= stop <= {list(shape)} on each axis"
        )


def dense_rate(shape: tuple[int, int, int], parts: Stretches) -> Tensor:
    """The float64 probability per cell ``[time, batch, channel]``: ``p`` in each stretch, 0
    elsewhere (what the ``"poisson"`` sampler draws from; for tests and figures)."""
    _check(shape, parts)
    rate = torch.zeros(shape, dtype=torch.float64)
    for (t0, t1, b0, b1, c0, c1), p in zip(parts.bounds.tolist(), parts.p.tolist(), strict=True):
        rate[t0:t1, b0:b1, c0:c1] = p
    return rate


def event_counts(
    shape: tuple[int, int, int],
    parts: Stretches,
    gen: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Poisson counts ``[time, batch, channel]`` drawn as events (the ``"events"`` sampler).

    Each stretch's total ``N ~ Poisson(p * cells)`` is drawn (in the order of ``parts``), then
    its events' cells uniformly (stretches grouped by size, one ``torch.randint`` per size, in
    increasing size), then the events are added into a zero tensor: every cell of a stretch gets
    an independent ``Poisson(p)`` count, every cell outside the stretches 0.

    Args:
        shape: ``(time, batch, channel)`` of the result.
        parts: the stretches (non-overlapping boxes) and their probabilities.
        gen: the CPU generator every draw comes from.
        dtype: floating dtype of the counts.

    Returns:
        ``[time, batch, channel]`` counts of dtype ``dtype``.
    """
    _check(shape, parts)
    n_t, n_b, n_c = shape
    x = torch.zeros(n_t * n_b * n_c, dtype=dtype)
    bounds = parts.bounds
    steps, trials, channels = (bounds[:, 1::2] - bounds[:, 0::2]).unbind(1)
    size = steps * trials * channels
    n = torch.poisson(parts.p * size, generator=gen).long()  # [stretch] events per stretch
    if not bool(n.any()):
        return x.view(shape)
    order = torch.argsort(size, stable=True)  # events grouped by stretch size
    n, size = n[order], size[order]
    owner = torch.repeat_interleave(order, n)  # [event] its stretch
    sizes, group = torch.unique_consecutive(size, return_inverse=True)
    per_size = torch.zeros(len(sizes), dtype=torch.int64).index_add_(0, group, n)
    cell = torch.cat(
        [
            torch.randint(int(s), (int(m),), generator=gen)
            for s, m in zip(sizes.tolist(), per_size.tolist(), strict=True)
            if m > 0
        ]
    )  # [event] cell index within its stretch, time-major
    base = (bounds[:, 0] * n_b + bounds[:, 2]) * n_c + bounds[:, 4]  # [stretch] first cell
    plane, width = (trials * channels)[owner], channels[owner]  # [event]
    row, within = cell.div(plane, rounding_mode="floor"), cell.remainder(plane)
    column, channel = within.div(width, rounding_mode="floor"), within.remainder(width)
    flat = base[owner] + row * (n_b * n_c) + column * n_c + channel  # [event] index into x
    x.index_add_(0, flat, torch.ones(len(flat), dtype=dtype))
    return x.view(shape)
