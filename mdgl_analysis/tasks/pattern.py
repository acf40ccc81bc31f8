"""Pattern generation (Bellec et al. 2020, Nat. Commun., Fig. 2): a frozen input, sinusoid targets.

Every trial is the same: ``n_in`` channels of Poisson counts at ``input_rate_hz``, drawn once
from ``pattern_seed`` (a *frozen* pattern), and ``n_out`` target curves, each a sum of sinusoids
at the fixed ``frequencies`` with random amplitudes and phases drawn from the same seed::

    y_k(t) = sum_f A[k, f] * sin(2 pi f t + phi[k, f]),   A ~ U[amplitude_min, amplitude_max],
                                                           phi ~ U[0, 2 pi),   t = step * dt

The loss is the squared error at every step (``mse``, mask all true). With ``normalise`` (the
default) each target curve is shifted to start at 0 and scaled to a peak ``|y|`` of 1, as in the
published code (``sum_of_sines_target(..., normalize=True)`` of the e-prop repository): the
readout starts at 0, so a target that starts at 0 asks for no jump at the first step.

The amplitudes and phases are drawn first, then the input, so a change of ``n_in``,
``input_rate_hz`` or ``duration_ms`` leaves the amplitudes and phases as they were. ``sample``
ignores its generator: the pattern is a property of the task, not of the batch.

``sampler`` chooses how the frozen input's counts are drawn (:mod:`mdgl_analysis.tasks.sampling`):
``"events"`` (the default) or ``"poisson"`` (one draw per step and channel, as before the event
sampler; what runs saved before the parameter existed resume with). Both give iid Poisson counts
at ``input_rate_hz``, but different patterns from the same ``pattern_seed`` (the amplitudes and
phases, drawn first, are the same).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mdgl_analysis.tasks.base import Task, TaskBatch, TaskError
from mdgl_analysis.tasks.sampling import Stretches, check_sampler, event_counts

SEED_LIMIT = 2**63
"""``pattern_seed`` is in ``[0, SEED_LIMIT)`` (what ``torch.Generator.manual_seed`` takes)."""


def parse_frequencies(text: str) -> tuple[float, ...]:
    """``"1,2,3,5"`` -> ``(1.0, 2.0, 3.0, 5.0)``; TaskError naming ``task.frequencies`` when an
    item is not a positive finite number or there is none."""
    allowed = 'comma-separated positive numbers in Hz, e.g. "1,2,3,5"'
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise TaskError(f"task.frequencies = {text!r} is not allowed: {allowed}")
    out: list[float] = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise TaskError(
                f"task.frequencies = {text!r} is not allowed: {item!r} is not a positive "
                f"number; {allowed}"
            )
        out.append(value)
    return tuple(out)


class PatternTask(Task):
    """Pattern generation: reproduce fixed sums of sinusoids from a frozen Poisson input (MSE)."""

    # Input channels. The paper has 100; 40 (as the evidence task) keeps the input layer of the
    # network, its sparse input weights (network.p_in) and the recordings at their usual size;
    # 40 channels at 50 Hz still give about 2 input spikes per ms, a dense enough basis for a
    # 1-s pattern.
    n_in = 40
    # Target curves (readout outputs): 3, as in Fig. 2 (the published tutorial has 1).
    n_out = 3
    # Trial length in ms: 1000, as in the paper and the published tutorial (seq_len = 1000).
    duration_ms = 1000
    # Rate of the frozen Poisson input: 50 Hz, the published tutorial's f0.
    input_rate_hz = 50.0
    # Frequencies of the summed sinusoids, in Hz: 1, 2, 3 and 5 Hz, as in the published e-prop
    # code (sum_of_sines_target: periods of 1000, 500, 333 and 200 ms), so that every sinusoid
    # completes a whole number of cycles in the 1-s trial.
    frequencies = "1,2,3,5"
    # Amplitude of each sinusoid ~ U[amplitude_min, amplitude_max]: [0.5, 2], as in the published
    # code (phases ~ U[0, 2 pi) there and here).
    amplitude_min = 0.5
    amplitude_max = 2.0
    # Shift each target to start at 0 and scale it to a peak |y| of 1 (the published code).
    normalise = True
    # Seed of the frozen input and of the amplitudes and phases (phases ~ U[0, 2 pi)); separate
    # from run.seed, so runs with different network seeds learn the same pattern.
    pattern_seed = 1
    # How the frozen input's Poisson counts are drawn: "events" or "poisson" (see above).
    sampler = "events"
    dt = 1.0  # ms per step (must equal network.dt)
    loss = "mse"  # squared error at every step (fixed)

    @classmethod
    def name(cls) -> str:
        return "pattern"

    # -- derived values -------------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return int(round(self.duration_ms / self.dt))

    @property
    def frequency_list(self) -> tuple[float, ...]:
        """The parsed ``frequencies``, in Hz."""
        return parse_frequencies(self.frequencies)

    @property
    def amplitudes(self) -> Tensor:
        """``[n_out, n_freq]`` float64 amplitudes A of the sinusoids (before ``normalise``)."""
        return self._pattern()[0].clone()

    @property
    def phases(self) -> Tensor:
        """``[n_out, n_freq]`` float64 phases phi of the sinusoids, in radians, in [0, 2 pi)."""
        return self._pattern()[1].clone()

    @property
    def times_s(self) -> Tensor:
        """``[time]`` float64 time of each step in seconds: ``step * dt / 1000``."""
        return torch.arange(self.n_steps, dtype=torch.float64) * (self.dt / 1000)

    def check(self) -> None:
        check_sampler(self.sampler)
        for key in ("n_in", "n_out", "duration_ms"):
            if getattr(self, key) < 1:
                raise TaskError(f"task.{key} = {getattr(self, key)!r} is not allowed: >= 1")
        if self.dt <= 0:
            raise TaskError(f"task.dt = {self.dt!r} is not allowed: a number > 0")
        if self.n_steps < 2:
            raise TaskError(
                f"task.duration_ms = {self.duration_ms!r} is not allowed: at least 2 steps of "
                f"dt = {self.dt:g} ms, so that the target varies"
            )
        if self.input_rate_hz < 0:
            raise TaskError(f"task.input_rate_hz = {self.input_rate_hz!r} is not allowed: >= 0")
        if self.input_rate_hz * self.dt / 1000 > 1:
            raise TaskError(
                f"task.input_rate_hz = {self.input_rate_hz!r} is not allowed: at most "
                f"{1000 / self.dt:g} Hz at dt = {self.dt:g} ms"
            )
        nyquist = 500 / self.dt
        for f in parse_frequencies(self.frequencies):
            if f >= nyquist:
                raise TaskError(
                    f"task.frequencies = {self.frequencies!r} is not allowed: {f:g} Hz is not "
                    f"below the Nyquist frequency {nyquist:g} Hz of dt = {self.dt:g} ms"
                )
        if self.amplitude_min < 0:
            raise TaskError(f"task.amplitude_min = {self.amplitude_min!r} is not allowed: >= 0")
        if self.amplitude_max < self.amplitude_min or self.amplitude_max <= 0:
            raise TaskError(
                f"task.amplitude_max = {self.amplitude_max!r} is not allowed: > 0 and >= "
                f"task.amplitude_min = {self.amplitude_min!r}"
            )
        if self.loss != "mse":
            raise TaskError(
                f"task.loss = {self.loss!r} is not allowed: task pattern has loss = mse, always"
            )
        if not 0 <= self.pattern_seed < SEED_LIMIT:
            raise TaskError(
                f"task.pattern_seed = {self.pattern_seed!r} is not allowed: an integer in "
                f"[0, 2**63)"
            )

    def input_names(self) -> list[str]:
        """Every channel belongs to the one frozen pattern."""
        return ["pattern"] * self.n_in

    # -- the pattern ----------------------------------------------------------------------------
    def _pattern(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Cached ``(amplitudes [n_out, n_freq], phases [n_out, n_freq], x [time, n_in],
        target [time, n_out])``, all float64, rebuilt when a parameter has changed."""
        key = tuple(self.values().items())
        cache = getattr(self, "_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        gen = torch.Generator().manual_seed(self.pattern_seed)
        freqs = torch.tensor(self.frequency_list, dtype=torch.float64)
        shape = (self.n_out, len(freqs))
        span = self.amplitude_max - self.amplitude_min
        amplitudes = self.amplitude_min + span * torch.rand(
            shape, generator=gen, dtype=torch.float64
        )
        phases = 2 * math.pi * torch.rand(shape, generator=gen, dtype=torch.float64)
        if self.sampler == "poisson":
            rate = torch.full((self.n_steps, self.n_in), self.input_rate_hz * self.dt / 1000)
            x = torch.poisson(rate.double(), generator=gen)
        else:
            p = self.input_rate_hz * self.dt / 1000
            whole = Stretches.of([(0, self.n_steps, 0, 1, 0, self.n_in)], [p])
            x = event_counts((self.n_steps, 1, self.n_in), whole, gen)[:, 0]
        angle = 2 * math.pi * self.times_s[:, None, None] * freqs + phases  # [time, out, freq]
        target = (amplitudes * torch.sin(angle)).sum(-1)
        if self.normalise:
            target = target - target[:1]
            scale = target.abs().amax(0)
            target = target / torch.where(scale > 0, scale, torch.ones_like(scale))
        built = (amplitudes, phases, x, target)
        self._cache = (key, built)
        return built

    def pattern(self) -> tuple[Tensor, Tensor]:
        """Copies of the frozen input ``[time, n_in]`` (Poisson counts) and of the target
        ``[time, n_out]``, float64."""
        _, _, x, target = self._pattern()
        return x.clone(), target.clone()

    def sample(self, batch: int, gen: torch.Generator) -> TaskBatch:
        """The same trial ``batch`` times: float64 Poisson counts ``[time, batch, n_in]``, the
        float64 target ``[time, batch, n_out]`` and an all-true mask ``[time, batch]`` (copies,
        never views of the cached pattern). ``gen`` is not used: the pattern is frozen."""
        del gen
        _, _, x, target = self._pattern()
        return TaskBatch(
            x.unsqueeze(1).repeat(1, batch, 1),
            target.unsqueeze(1).repeat(1, batch, 1),
            torch.ones(self.n_steps, batch, dtype=torch.bool),
        )
