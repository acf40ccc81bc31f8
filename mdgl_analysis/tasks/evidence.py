"""The evidence-accumulation task of Fig. 3C (Liu et al. 2021; spec section F).

A trial shows ``n_cues`` cues (``cue_ms`` each, ``gap_ms`` apart), each on the left or the right
population, then a delay, then a recall cue; the target is the side that got more cues
(1 = left majority), read at the last step only (cross-entropy). Inputs are Poisson counts per
step on four populations of ``n_in // 4`` channels: left cues, right cues, recall, background
noise. The cue patterns of a batch are distinct (drawn without replacement from the
``2 ** n_cues`` patterns).

``sampler`` chooses how the counts are drawn (:mod:`mdgl_analysis.tasks.sampling`): ``"events"``
(the default; measured 3.7 ms for a paper-scale batch on one thread) or ``"poisson"`` (one draw
per step and channel, as before the event sampler: 42 ms; what runs saved before the parameter
existed resume with). Both give iid Poisson counts of the same rates; they draw different counts
from the same seed (the cue patterns, drawn first, are the same).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.tasks.base import Task, TaskBatch, TaskError
from mdgl_analysis.tasks.sampling import Stretches, check_sampler, event_counts


class Timeline(NamedTuple):
    """Step windows ``[start, stop)`` of the cues and of the recall, and the trial length."""

    cues: list[tuple[int, int]]
    recall: tuple[int, int]
    n_steps: int


def cue_bits(pattern: Tensor, n_cues: int) -> Tensor:
    """``[batch, n_cues]`` bits of each pattern, most significant first (1 = left cue)."""
    shifts = torch.arange(n_cues - 1, -1, -1)
    return (pattern[:, None] >> shifts) & 1


class EvidenceTask(Task):
    """Evidence accumulation: which side showed more cues? (cross-entropy at the last step)."""

    n_in = 40  # four populations of n_in // 4 channels: left, right, recall, noise
    n_cues = 7
    cue_ms = 100
    gap_ms = 50
    delay_ms = 850  # from the end of the last cue's period to the recall
    recall_ms = 150
    cue_rate_hz = 40.0
    noise_rate_hz = 10.0
    dt = 1.0  # ms per step (must equal network.dt)
    sampler = "events"  # how the Poisson counts are drawn: "events" or "poisson" (see above)

    @classmethod
    def name(cls) -> str:
        return "evidence"

    @property
    def n_out(self) -> int:
        return 2

    @property
    def loss(self) -> str:
        return "cross_entropy"

    @property
    def n_steps(self) -> int:
        ms = self.n_cues * self.cue_ms + (self.n_cues - 1) * self.gap_ms
        return int(round((ms + self.delay_ms + self.recall_ms) / self.dt))

    def check(self) -> None:
        check_sampler(self.sampler)
        for key in ("n_in", "n_cues", "cue_ms", "recall_ms"):
            if getattr(self, key) < 1:
                raise TaskError(f"task.{key} = {getattr(self, key)!r} is not allowed: >= 1")
        for key in ("gap_ms", "delay_ms", "cue_rate_hz", "noise_rate_hz"):
            if getattr(self, key) < 0:
                raise TaskError(f"task.{key} = {getattr(self, key)!r} is not allowed: >= 0")
        if self.n_cues > 30:
            raise TaskError(f"task.n_cues = {self.n_cues} is not allowed: at most 30")
        if self.dt <= 0:
            raise TaskError(f"task.dt = {self.dt!r} is not allowed: a number > 0")
        if self.n_in % 4:
            raise TaskError(
                f"task.n_in = {self.n_in} is not allowed: a multiple of 4 (left, right, recall "
                "and noise populations of equal size)"
            )
        for key in ("cue_rate_hz", "noise_rate_hz"):
            if getattr(self, key) * self.dt / 1000 > 1:
                raise TaskError(
                    f"task.{key} = {getattr(self, key)!r} is not allowed: at most "
                    f"{1000 / self.dt:g} Hz at dt = {self.dt:g} ms"
                )

    def max_batch(self) -> int:
        """Trials per batch are distinct cue patterns: at most ``2 ** n_cues``."""
        return 2**self.n_cues

    def timeline(self) -> Timeline:
        n_steps = self.n_steps
        cue = round(self.cue_ms / self.dt)
        period = round((self.cue_ms + self.gap_ms) / self.dt)
        cues = [(c * period, c * period + cue) for c in range(self.n_cues)]
        return Timeline(cues, (n_steps - round(self.recall_ms / self.dt), n_steps), n_steps)

    def epochs(self) -> list[tuple[str, int, int]]:
        """Named step windows ``(name, start, stop)`` for figures: each cue and the recall."""
        tl = self.timeline()
        cues = [(f"cue {c + 1}", a, b) for c, (a, b) in enumerate(tl.cues)]
        return [*cues, ("recall", *tl.recall)]

    def input_names(self) -> list[str]:
        pop = self.n_in // 4
        names = ["left", "right", "recall", "noise"]
        return [names[min(i // pop, 3)] for i in range(self.n_in)]

    def sample_patterns(self, batch: int, gen: torch.Generator) -> tuple[TaskBatch, Tensor]:
        """A batch and its cue patterns ``[batch]`` (integers whose bits are the cues)."""
        if batch > self.max_batch():
            raise TaskError(
                f"batch of {batch} trials is not allowed for task evidence: at most "
                f"{self.max_batch()} (distinct cue patterns of {self.n_cues} cues)"
            )
        tl = self.timeline()
        pattern = torch.randperm(2**self.n_cues, generator=gen)[:batch]
        bits = cue_bits(pattern, self.n_cues)
        side = (bits.sum(1) > self.n_cues / 2).long()
        if self.sampler == "poisson":
            x = torch.poisson(self._dense_rate(bits), generator=gen)
        else:
            x = event_counts((tl.n_steps, batch, self.n_in), self.stretches(bits), gen)
        target = side.expand(tl.n_steps, batch).contiguous()
        mask = torch.zeros(tl.n_steps, batch, dtype=torch.bool)
        mask[-1] = True
        return TaskBatch(x, target, mask), pattern

    def _probabilities(self) -> tuple[float, float]:
        """Expected counts per step and channel ``(p_cue, p_noise)`` (rate x dt)."""
        return self.cue_rate_hz * self.dt / 1000, self.noise_rate_hz * self.dt / 1000

    def _dense_rate(self, bits: Tensor) -> Tensor:
        """``[time, batch, n_in]`` float64 probabilities of the trials whose cues are ``bits``
        ``[batch, n_cues]``: the ``"poisson"`` sampler's code, unchanged."""
        tl = self.timeline()
        pop = self.n_in // 4
        batch = bits.shape[0]
        p_cue, p_noise = self._probabilities()
        rate = torch.zeros(tl.n_steps, batch, self.n_in, dtype=torch.float64)
        for c, (start, stop) in enumerate(tl.cues):
            left = bits[:, c].bool()
            rate[start:stop, left, 0:pop] = p_cue
            rate[start:stop, ~left, pop : 2 * pop] = p_cue
        rate[tl.recall[0] : tl.recall[1], :, 2 * pop : 3 * pop] = p_cue
        rate[:, :, 3 * pop :] = p_noise
        return rate

    def stretches(self, bits: Tensor) -> Stretches:
        """The stretches of constant rate of the trials whose cues are ``bits`` ``[batch,
        n_cues]``: each cue of each trial on its side's population, the recall of the whole
        batch on the recall population, the noise population throughout (rates are 0 elsewhere).
        """
        tl = self.timeline()
        pop = self.n_in // 4
        batch = bits.shape[0]
        p_cue, p_noise = self._probabilities()
        window = torch.tensor(tl.cues, dtype=torch.int64).reshape(1, -1, 2)  # [1, cue, 2]
        trial = torch.arange(batch)[:, None, None]  # [batch, 1, 1]
        first = torch.where(bits.bool(), 0, pop)[:, :, None]  # [batch, cue, 1] left or right
        shape = (batch, self.n_cues, 2)
        cues = torch.cat(
            [
                window.expand(shape),
                trial.expand(shape) + torch.tensor([0, 1]),
                first + torch.tensor([0, pop]),
            ],
            dim=2,
        ).reshape(-1, 6)
        (r0, r1), t = tl.recall, tl.n_steps
        rest = Stretches.of(
            [(r0, r1, 0, batch, 2 * pop, 3 * pop), (0, t, 0, batch, 3 * pop, self.n_in)],
            [p_cue, p_noise],
        )
        bounds = torch.cat([cues, rest.bounds])
        p = torch.cat([torch.full((len(cues),), p_cue, dtype=torch.float64), rest.p])
        return Stretches(bounds, p)

    def sample(self, batch: int, gen: torch.Generator) -> TaskBatch:
        """Float64 Poisson counts ``[time, batch, n_in]``, the majority side at every step, and
        the last step as the mask."""
        return self.sample_patterns(batch, gen)[0]
