"""Any NeuroGym environment as a task (``task.name = "neurogym:ENV"``; extra ``[neurogym]``).

NeuroGym (Molano-Mazon et al., https://github.com/neurogym/neurogym) is the field's library of
cognitive tasks: ``PerceptualDecisionMaking-v0``, ``DelayMatchSample-v0``, ``GoNogo-v0``, ... A
NeuroGym environment is built once (lazily, then cached) at ``dt`` = 1 ms by default
(``neurogym.make(env, dt=1, **kwargs)``) and asked for whole trials (``env.new_trial()``, which
fills ``env.ob [time, obs]``, ``env.gt [time]`` and the step windows of the trial's periods).

**Sequences.** Each of the ``batch`` sequences is exactly ``n_steps`` steps of consecutive trials,
as NeuroGym's own ``neurogym.Dataset`` builds them: trials are concatenated back to back and the
sequence is cut at ``n_steps`` (the last trial is usually cut short). The network runs through a
sequence without a reset between its trials; the fixation input marks where a trial begins.
Sequence ``b`` is drawn from its own seed, one integer drawn from ``gen`` per sequence
(``torch.randint``), which seeds the environment's NumPy generator (``env.seed(seed)``) before its
first trial, so the same generator state gives the same batch and the batch does not depend on
what was sampled before.

**Length.** ``n_steps = 0`` (the default) means *auto*: the longest of 100 trials drawn from a fixed
seed, rounded up to a multiple of 100 steps, so a sequence holds at least one whole trial
(PerceptualDecisionMaking-v0: 2200 steps, DelayMatchSample-v0: 3200 with NeuroGym's default
timing). NeuroGym's default durations are long at 1 ms per step; shorten the trials with
``timing`` (e.g. ``timing = "stimulus=300"``) and set ``n_steps`` to fix the cost of an iteration.
The resolved value is what a run's config stores.

**Inputs** are currents: ``x = input_scale * ob``. NeuroGym observations are of order one (the
fixation channel is 1 while the agent must fixate, a stimulus channel is ``0.5 + coh/200`` or
``cos(theta) / 2 + 1/2`` plus Gaussian noise of s.d. ``sigma / sqrt(dt)``, 1.0 at 1 ms), while
the network's threshold is ``v_th = 0.01`` and the built-in evidence task feeds about 0.04 spikes
per step per channel during its cues. The default ``input_scale = 0.05`` puts one observation unit
at 0.05, the same order as those counts (currents may be negative: the noise is Gaussian).
Measured on freshly initialised networks of the package's default size (50 LIF + 50 ALIF cells,
10 % connectivity, the package's initial weights and neuron dynamics; 20 network seeds, 16
sequences of 1000 steps of shortened trials; an estimate), the mean rate at this scale is 6.5 Hz
on PerceptualDecisionMaking-v0 (2-19 Hz across seeds) and 10 Hz on DelayMatchSample-v0 (3-29 Hz);
0.03 gives about 3 and 5 Hz, 0.1 about 14 and 18 Hz. With ``copies = 10`` (below) the rates are
about 10 and 14 Hz at 0.05.

**Copies.** NeuroGym environments have few observation channels (3 for the two tasks above).
With the network's sparse input connectivity (``network.p_in = 0.1``) most cells would get no
input weight at all. ``copies = k`` repeats every observation channel ``k`` times (channel ``i``
of the observation becomes inputs ``i*k .. i*k + k - 1``, identical currents), so the input layer
has ``n_in = k * obs`` channels and ``p_in`` gives each cell ``p_in * k * obs`` input synapses on
average. The default is 1: ``n_in`` is the environment's observation size.

**Targets and mask.** The target of every step is NeuroGym's ground truth ``gt`` (the class index
of the correct action: 0 = fixate, then the choices); ``n_out`` is the size of the action space
and the loss is cross-entropy. The mask marks the steps of the periods named in ``mask``
(comma-separated NeuroGym period names), by default ``"decision"``: the decision period of every
trial of the sequence, the only period where NeuroGym's performance measure reads the action
(the part of a cut-off last trial's decision period that lies within the sequence counts too).
``mask = "fixation,decision"`` also asks the network to fixate during the fixation period;
``mask = "all"`` counts every step, as NeuroGym's supervised examples train on ``gt`` everywhere.

``sample_trials`` also returns each sequence's seed and its trials (start, stop, the step windows
of its periods, NeuroGym's trial dict); ``epochs()`` lists the periods of every trial within
``n_steps`` when the durations are constant, and ``input_names()`` NeuroGym's channel names.
``n_in``, ``n_out`` and ``loss`` follow from the environment (read-only properties), so the
network's sizes follow the task.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch

from mdgl_analysis.tasks.base import Task, TaskBatch, TaskError

INSTALL_HINT = "pip install mdgl-analysis[neurogym]"
AUTO_TRIALS = 100
"""Trials drawn (from a fixed seed) to find the longest trial for ``n_steps = 0`` (auto)."""
AUTO_SEED = 12345
EXAMPLES = (
    "PerceptualDecisionMaking-v0",
    "DelayMatchSample-v0",
    "ContextDecisionMaking-v0",
    "GoNogo-v0",
    "ReadySetGo-v0",
)
"""Environment ids an unknown-environment error names first (those this NeuroGym has)."""
SEED_LIMIT = 2**31 - 1
"""Sequence seeds are in ``[0, SEED_LIMIT)`` (what ``numpy.random.RandomState`` takes)."""


class Trial(NamedTuple):
    """One NeuroGym trial within a sequence.

    Attributes:
        start: first step of the trial in the sequence.
        stop: one past its last step (may be beyond ``n_steps`` for a cut-off last trial).
        periods: period name -> ``(start, stop)`` steps in the sequence (not clipped).
        info: NeuroGym's trial dict (``ground_truth``, ``coh``, ...).
    """

    start: int
    stop: int
    periods: dict[str, tuple[int, int]]
    info: dict[str, Any]


def _neurogym() -> Any:
    """The ``neurogym`` module; TaskError saying how to install it when it is missing."""
    try:
        import neurogym
    except ImportError:
        raise TaskError(f"task neurogym needs the package neurogym: {INSTALL_HINT}") from None
    return neurogym


def neurogym_envs() -> list[str]:
    """The ids of NeuroGym's native environments (sorted); empty if NeuroGym cannot list them."""
    ngym = _neurogym()
    try:
        return list(ngym.envs.registration.all_envs())
    except Exception:  # noqa: BLE001 - an optional listing: a NeuroGym release may lack it
        return []


def parse_timing(text: str) -> dict[str, int]:
    """``"fixation=100, stimulus=500"`` -> ``{"fixation": 100, "stimulus": 500}`` (ms, constant).

    TaskError naming ``task.timing`` when an item is not ``NAME=MS`` with ``MS >= 0``.
    """
    allowed = 'comma-separated PERIOD=MS items with MS >= 0, e.g. "stimulus=500,decision=100"'
    out: dict[str, int] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if not sep or not name.strip() or not (math.isfinite(ms) and ms >= 0):
            raise TaskError(f"task.timing = {text!r} is not allowed: {allowed}")
        out[name.strip()] = int(ms) if ms.is_integer() else ms
    return out


def parse_env_kwargs(text: str) -> dict[str, Any]:
    """A JSON object of extra constructor arguments, e.g. ``'{"sigma": 0.5}'``; ``""`` -> ``{}``."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskError(
            f"task.env_kwargs = {text!r} is not allowed: a JSON object ({err.msg})"
        ) from None
    if not isinstance(value, dict):
        raise TaskError(f"task.env_kwargs = {text!r} is not allowed: a JSON object")
    return value


def _channel_names(space: Any, size: int) -> list[str]:
    """Names of the observation channels from NeuroGym's ``space.name`` dict, else ``input i``."""
    names = [f"input {i}" for i in range(size)]
    table = getattr(space, "name", None)
    if not isinstance(table, dict):
        return names
    for key, where in table.items():
        index = [where] if isinstance(where, int | np.integer) else list(where)
        for k, i in enumerate(index):
            if 0 <= int(i) < size:
                names[int(i)] = str(key) if len(index) == 1 else f"{key} {k + 1}"
    return names


class NeuroGymTask(Task):
    """A NeuroGym environment at 1 ms per step: observations as input currents, ``gt`` as
    cross-entropy targets on the decision period (see the module docstring)."""

    env = "PerceptualDecisionMaking-v0"  # NeuroGym environment id (the name's ENV)
    n_steps = 0  # steps per sequence; 0 = auto: the longest of 100 trials, rounded up to 100
    input_scale = 0.05  # x = input_scale * observation (currents; ~10 Hz at the default size)
    copies = 1  # each observation channel repeated this many times (n_in = copies * obs)
    mask = "decision"  # comma-separated NeuroGym periods whose steps count, or "all"
    timing = ""  # constant period durations in ms overriding the env's, "stimulus=500,..."
    env_kwargs = ""  # other constructor arguments as a JSON object, '{"sigma": 0.5}'
    dt = 1.0  # ms per step, passed to the environment (must equal network.dt)

    @classmethod
    def name(cls) -> str:
        return "neurogym"

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """As :meth:`Task.parameters`, less the protocol attributes this class computes
        (``loss``, ``n_in``, ``n_out`` are properties here)."""
        return {
            k: v
            for k, v in super().parameters().items()
            if not isinstance(getattr(cls, k, None), property)
        }

    # -- the environment --------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        kwargs = parse_env_kwargs(self.env_kwargs)
        timing = parse_timing(self.timing)
        if timing:
            kwargs["timing"] = {**dict(kwargs.get("timing") or {}), **timing}
        kwargs["dt"] = int(self.dt) if float(self.dt).is_integer() else self.dt
        return kwargs

    def environment(self) -> Any:
        """The NeuroGym environment (unwrapped ``TrialEnv``), built once per parameter set."""
        key = (self.env, self.env_kwargs, self.timing, self.dt)
        cached = self.__dict__.get("_env_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        env = self._make(self._kwargs())
        self.__dict__["_env_cache"] = (key, env)
        return env

    def _make(self, kwargs: dict[str, Any]) -> Any:
        ngym = _neurogym()
        import gymnasium

        where = f"task.env = {self.env!r}"
        spec = gymnasium.envs.registry.get(self.env)
        entry = getattr(spec, "entry_point", None)
        if isinstance(entry, str) and not entry.startswith("neurogym"):
            raise TaskError(f"{where} is not a NeuroGym trial environment (it is {entry})")
        try:
            with warnings.catch_warnings():
                # gymnasium warns that NeuroGym's metadata has no render_modes; irrelevant here
                warnings.simplefilter("ignore", UserWarning)
                wrapped = ngym.make(self.env, **kwargs)
        except gymnasium.error.Error:  # unregistered, bad version or malformed id
            known = neurogym_envs()
            close = difflib.get_close_matches(self.env, known, n=3, cutoff=0.8)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            some = [e for e in EXAMPLES if e in known] or known[:5]
            some = ", ".join(some) + (", ..." if len(known) > len(some) else "")
            raise TaskError(
                f"{where} is not a NeuroGym environment: {hint}NeuroGym has {len(known)}, "
                f"e.g. {some} (neurogym.envs.registration.all_envs())"
            ) from None
        except Exception as err:  # noqa: BLE001 - the environment's constructor
            text = " ".join(str(err).split())
            raise TaskError(
                f"{where} could not be made with {kwargs}: {type(err).__name__}: {text}"
            ) from None
        env = wrapped.unwrapped
        from neurogym.core import TrialEnv

        if not isinstance(env, TrialEnv):
            raise TaskError(f"{where} is not a NeuroGym trial environment (neurogym.TrialEnv)")
        if float(env.dt) != float(self.dt):
            raise TaskError(f"{where} runs at dt = {env.dt} ms, not task.dt = {self.dt} ms")
        obs, act = env.observation_space, env.action_space
        if obs.shape is None or len(obs.shape) != 1:
            raise TaskError(
                f"{where} has observations of shape {obs.shape}, expected one dimension"
            )
        if not isinstance(act, gymnasium.spaces.Discrete) or act.n < 2:
            raise TaskError(
                f"{where} has action space {act}, expected a discrete one of at least 2 actions "
                "(the targets are class indices)"
            )
        return env

    # -- sizes ------------------------------------------------------------------------------
    @property
    def n_obs(self) -> int:
        """Observation channels of the environment (``n_in = copies * n_obs``)."""
        return int(self.environment().observation_space.shape[0])

    @property
    def n_in(self) -> int:  # type: ignore[override]
        return self.copies * self.n_obs

    @property
    def n_out(self) -> int:  # type: ignore[override]
        return int(self.environment().action_space.n)

    @property
    def loss(self) -> str:  # type: ignore[override]
        return "cross_entropy"

    def input_names(self) -> list[str]:
        """``[n_in]`` channel names from NeuroGym's observation names (``fixation``,
        ``stimulus 1``, ...); copies share their channel's name."""
        env = self.environment()
        names = _channel_names(env.observation_space, self.n_obs)
        return [name for name in names for _ in range(self.copies)]

    def periods(self) -> list[str]:
        """The period names of the environment's trials (the first trial of the auto seed)."""
        return list(self._trials(AUTO_SEED, 1)[0].periods)

    def mask_periods(self) -> list[str] | None:
        """The periods that count, or None for every step (``mask = "all"``)."""
        items = [t.strip() for t in self.mask.split(",") if t.strip()]
        return None if items == ["all"] else items

    # -- checks -----------------------------------------------------------------------------
    def check(self) -> None:
        if not self.env.strip():
            raise TaskError("task.env = '' is not allowed: a NeuroGym environment id")
        if not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise TaskError(
                f"task.input_scale = {self.input_scale!r} is not allowed: a finite number > 0"
            )
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise TaskError(f"task.dt = {self.dt!r} is not allowed: a number > 0 (ms)")
        if self.n_steps < 0:
            raise TaskError(
                f"task.n_steps = {self.n_steps!r} is not allowed: an integer >= 1, or 0 for auto"
            )
        if self.copies < 1:
            raise TaskError(f"task.copies = {self.copies!r} is not allowed: an integer >= 1")
        chosen = self.mask_periods()
        if chosen is not None and (not chosen or "all" in chosen):
            raise TaskError(
                f"task.mask = {self.mask!r} is not allowed: comma-separated period names, or all"
            )
        parse_timing(self.timing)
        if "dt" in parse_env_kwargs(self.env_kwargs):
            raise TaskError("task.env_kwargs may not set dt: use task.dt (equal to network.dt)")
        trials = self._trials(AUTO_SEED, AUTO_TRIALS)  # builds the environment: name, spaces
        known = list(trials[0].periods)
        timing = parse_timing(self.timing)
        if timing:  # NeuroGym ignores a duration of no period: a typo would pass unnoticed
            plain = {k: v for k, v in self._kwargs().items() if k != "timing"}
            names = set(known) | set(self._make(plain).timing)  # periods, and the env's own keys
            for period in timing:
                if period not in names:
                    raise TaskError(
                        f"task.timing = {self.timing!r} is not allowed: {self.env} has no period "
                        f"{period!r}; its periods: {', '.join(known)}"
                    )
        for period in chosen or []:
            if period not in known:
                raise TaskError(
                    f"task.mask = {self.mask!r} is not allowed: {self.env} has no period "
                    f"{period!r}; its periods: {', '.join(known)}, or all"
                )
        if self.n_steps == 0:
            longest = max(t.stop - t.start for t in trials)
            self.n_steps = max(100, 100 * math.ceil(longest / 100))
        if chosen is not None:
            # a sequence starts with a whole trial: its first counted step must lie within it
            first = min(min(t.periods[p][0] for p in chosen) - t.start for t in trials)
            if first >= self.n_steps:
                raise TaskError(
                    f"task.n_steps = {self.n_steps} is not allowed for {self.env}: its "
                    f"{self.mask} period(s) start at step {first} of a trial or later; use "
                    f"n_steps > {first}, 0 (auto), or a shorter task.timing"
                )

    # -- sampling ---------------------------------------------------------------------------
    def _trials(self, seed: int, count: int) -> list[Trial]:
        """``count`` consecutive trials of the environment seeded with ``seed`` (no arrays)."""
        return self._sequence(seed, None, count)[1]

    def _sequence(
        self, seed: int, length: int | None, count: int | None = None
    ) -> tuple[tuple[np.ndarray, np.ndarray], list[Trial]]:
        """Consecutive trials from seed ``seed`` until ``length`` steps (or ``count`` trials).

        Returns ``((ob [length, n_obs] float32, gt [length] int64), trials)``; the arrays are
        empty when ``length`` is None.
        """
        env = self.environment()
        env.seed(seed)
        if isinstance(getattr(env, "_rng", None), np.random.Generator):
            env._rng = np.random.default_rng(seed)  # a few envs keep a second generator
        size = 0 if length is None else length
        ob = np.zeros((size, self.n_obs), dtype=np.float32)
        gt = np.zeros(size, dtype=np.int64)
        trials: list[Trial] = []
        start = 0

        def more() -> bool:
            return start < length if length is not None else len(trials) < (count or 0)

        while more():
            for table in (env.start_t, env.end_t, env.start_ind, env.end_ind):
                table.clear()  # only this trial's periods (add_period fills them anew)
            info = env.new_trial()
            if not hasattr(env, "ob"):  # a step-by-step environment (DawTwoStep-v0, ...)
                raise TaskError(
                    f"task.env = {self.env!r} is not allowed: it makes no whole trials (no env.ob "
                    "after new_trial()); a supervised NeuroGym task, e.g. "
                    "PerceptualDecisionMaking-v0"
                )
            n = int(env.ob.shape[0])
            if n < 1:
                raise TaskError(f"task.env = {self.env!r} made a trial of no steps")
            if not getattr(env, "_has_gt", True):
                raise TaskError(
                    f"task.env = {self.env!r} has no ground truth (gt): not a supervised task"
                )
            stop = min(start + n, size)
            if stop > start:
                ob[start:stop] = env.ob[: stop - start].reshape(stop - start, -1)
                gt[start:stop] = np.asarray(env.gt[: stop - start]).reshape(stop - start)
            periods = {
                p: (start + int(env.start_ind[p]), start + int(env.end_ind[p]))
                for p in env.start_ind
            }
            trials.append(Trial(start, start + n, periods, dict(info or {})))
            start += n
        return (ob, gt), trials

    def sample_trials(
        self, batch: int, gen: torch.Generator
    ) -> tuple[TaskBatch, list[tuple[int, list[Trial]]]]:
        """A batch and, per sequence, ``(seed, trials)``: the seed of the environment and the
        list of :class:`Trial` it holds (the last one usually cut off at ``n_steps``)."""
        if batch < 1:
            raise TaskError(f"batch of {batch} trials is not allowed for task neurogym: >= 1")
        t, k = self.n_steps, self.copies
        seeds = torch.randint(SEED_LIMIT, (batch,), generator=gen).tolist()
        ob = np.zeros((t, batch, self.n_obs), dtype=np.float32)
        gt = np.zeros((t, batch), dtype=np.int64)
        mask = np.zeros((t, batch), dtype=bool)
        chosen = self.mask_periods()
        layout: list[tuple[int, list[Trial]]] = []
        for b, seed in enumerate(seeds):
            (ob[:, b], gt[:, b]), trials = self._sequence(int(seed), t)
            if chosen is None:
                mask[:, b] = True
            else:
                for trial in trials:
                    for p in chosen:
                        a, z = trial.periods.get(p, (0, 0))
                        mask[a:z, b] = True
            layout.append((int(seed), trials))
        x = torch.from_numpy(ob).mul_(self.input_scale)
        if k > 1:
            x = x.repeat_interleave(k, dim=2)
        target = torch.from_numpy(gt)
        if not mask.any():
            raise TaskError(
                f"task neurogym {self.env}: no step of the {self.mask} period(s) lies within "
                f"n_steps = {t}; use a larger task.n_steps (0 = auto) or a shorter task.timing"
            )
        return TaskBatch(x, target, torch.from_numpy(mask)), layout

    def sample(self, batch: int, gen: torch.Generator) -> TaskBatch:
        """Float32 input currents ``x [n_steps, batch, n_in]``, int64 ground truth
        ``target [n_steps, batch]`` and bool ``mask [n_steps, batch]`` (the ``mask`` periods)."""
        return self.sample_trials(batch, gen)[0]

    def epochs(self) -> list[tuple[str, int, int]]:
        """NeuroGym's periods ``(name, start, stop)`` of every trial within ``n_steps``, when every
        trial has the same timing (constant durations); ``[]`` when durations are random."""
        env = self.environment()
        if not all(isinstance(v, int | float) for v in env.timing.values()):
            return []
        out = []
        for trial in self._sequence(AUTO_SEED, self.n_steps)[1]:
            for p, (a, z) in trial.periods.items():
                if a < min(z, self.n_steps):
                    out.append((p, a, min(z, self.n_steps)))
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_env_cache", None)  # environments need not pickle; rebuilt on demand
        return state
