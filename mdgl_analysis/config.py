"""Configuration as frozen dataclasses: presets, TOML files, command-line overrides, validation.

A run's configuration is a :class:`Config` with five sections (``network``, ``task``, ``train``,
``record``, ``run``). Every field has the value of the published script (spec section 0) as its
default, so ``validate(Config())`` *is* the ``paper`` preset. The presets are the TOML files of
``runs/configs/``, shipped in the package as ``mdgl_analysis.presets`` (:data:`PRESETS`,
``mdgl presets``). The ``task`` section names a task
(:mod:`mdgl_analysis.tasks`) and holds its parameters; the network's input and output sizes are
the task's (:attr:`Config.sized_network`). Validation happens in :func:`validate`, and raises
:class:`ConfigError` whose message names the field, the bad value and what is allowed; rule names
are checked by :func:`mdgl_analysis.rules.check_rules` (the registry lives above this module).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from mdgl_analysis.plugins import absolute, is_file_name
from mdgl_analysis.tasks import (
    NEUROGYM_PREFIX,
    Task,
    TaskError,
    is_file_task,
    make_task,
    task_class,
)
from mdgl_analysis.tasks.base import coerce


class ConfigError(ValueError):
    """A configuration value is invalid; the message names field, value and what is allowed."""


@dataclass(frozen=True)
class NetworkConfig:
    """The recurrent network of adaptive spiking neurons (spec sections 0, A, B)."""

    n_in: int = 0  # input channels: the task's (0); a stated value must agree with the task
    n_regular: int = 50
    n_adaptive: int = 50
    n_out: int = 0  # readout outputs: the task's (0); a stated value must agree with the task
    exc_fraction: float = 0.8  # n_exc = int(exc_fraction * n) + 1, for inputs and recurrent cells
    dt: float = 1.0  # ms
    tau_m: float = 20.0  # ms, membrane
    tau_out: float = 20.0  # ms, readout filter (the original ties it to tau_m)
    tau_a: float = 2000.0  # ms, threshold adaptation
    v_th: float = 0.01
    beta: float = 1.8  # adaptation strength of the adaptive neurons
    gamma: float = 0.3  # pseudo-derivative dampening
    n_ref: int = 5  # refractory steps
    p_in: float = 0.1
    p_rec: float = 0.1
    p_out: float = 0.1

    @property
    def n_rec(self) -> int:
        return self.n_regular + self.n_adaptive


@dataclass(frozen=True)
class TaskConfig:
    """The task: a name (see :func:`mdgl_analysis.tasks.make_task`) and its parameters.

    In TOML the parameters stand next to the name (``[task] name = "evidence"  n_cues = 7``); a
    resolved config holds every parameter of the task with its value.
    """

    name: str = "evidence"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """Rule, optimiser, constraints and schedule (spec section E)."""

    rule: str = "bptt"
    iterations: int = 2000
    batch: int = 64
    val_batch: int = 64
    val_every: int = 10
    lr: float = 0.0025
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    l1: float = 0.01
    reconnect_eps: float = 1e-12
    lr_decay: float = 0.8
    lr_decay_every: int = 200000
    reg_rate: float = 0.0  # firing-rate regulariser coefficient (0.1 in the saved Fig. 3C runs)
    reg_target_hz: float = 10.0
    compare_every: int = 0  # same-batch gradient alignment with BPTT every k iterations (0: off)
    compare_rules: str = "eprop,mdgl,mdgl_exact"  # comma-separated rules compared with BPTT
    # divergence: a validation loss above divergence_loss_ratio x the first one, or a mean rate
    # above divergence_rate_hz, at divergence_patience validation points in a row (a non-finite
    # loss at once) flags the run; stop_on_divergence stops it there (status "diverged")
    stop_on_divergence: bool = True
    divergence_loss_ratio: float = 5.0
    divergence_rate_hz: float = 100.0
    divergence_patience: int = 20


@dataclass(frozen=True)
class RulesConfig:
    """Parameters of the learning rules that have any (``docs/rules.md``); the defaults leave
    every rule that existed before this section as it was."""

    hops: int = 1  # truncated: recurrent-synapse traversals kept (0: e-prop; >= T - 1: BPTT)
    # eprop_random: feedback weights B [output, neuron] drawn once per run from the run's
    # "feedback" stream, normal with standard deviation feedback_scale / sqrt(n_rec)
    feedback_scale: float = 1.0


@dataclass(frozen=True)
class RecordConfig:
    """What full-trace recording writes, and when (one HDF5 file per recorded iteration).

    Lists are comma-separated strings so that a config stays flat TOML and ``--set`` works.
    """

    every: int = 0  # record iterations k with k % every == 0 (0: off)
    iterations: str = ""  # more iterations to record: integers, "first", "last"
    trials: str = "all"  # trials of the batch: "all", "0-7", "0,3,5"
    quantities: str = "state,signals,credit,traces"  # also: eligibility; see schema.GROUPS
    t_start_ms: float = 0.0  # time window of the per-step quantities
    t_stop_ms: float = 0.0  # 0: the end of the trial
    layout: str = "list"  # "list": the initially connected synapses; "dense": every pair
    dtype: str = "float32"  # of the per-step quantities: float32 or float16
    rules: str = "all"  # rules whose signals and gradients are recorded ("all"; BPTT always)
    codec: str = "lz4"  # lz4 or zstd (blosc, byte shuffle), gzip, none
    chunk_mb: float = 8.0  # HDF5 chunk size of the per-step quantities


@dataclass(frozen=True)
class RunConfig:
    """Seed, device, precision and bookkeeping."""

    seed: int = 1
    device: str = "auto"
    dtype: str = "float32"
    threads: int = 1
    # the time loops' implementation: auto (numba on CPU when installed, CUDA graphs on CUDA),
    # torch (plain PyTorch, the reference), numba (CPU), cuda_graph (CUDA); runs saved before
    # this option existed resume with torch, their numbers unchanged
    core: str = "auto"
    checkpoint_every: int = 50
    # also write every metric as a TensorBoard scalar under RUN/tensorboard/ (metrics.csv stays
    # the source of truth); needs the [tensorboard] extra
    tensorboard: bool = False


@dataclass(frozen=True)
class Config:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def n_steps(self) -> int:
        """Steps per trial: the task's."""
        return task_of(self).n_steps

    @property
    def sized_network(self) -> NetworkConfig:
        """``network`` with the input and output sizes of the task filled in."""
        task = task_of(self)
        return replace(self.network, n_in=task.n_in, n_out=task.n_out)


SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "task": TaskConfig,
    "train": TrainConfig,
    "rules": RulesConfig,
    "record": RecordConfig,
    "run": RunConfig,
}

DESCRIPTION = "description"  # the one top-level key besides the sections: what a config is for

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
CORES = ("auto", "torch", "numba", "cuda_graph")


# ------------------------------------------------------------------------------------------------
# validation


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: {allowed}")


def validate(cfg: Config, resolve_task: bool = True) -> Config:
    """Check every field and return the resolved config, or raise :class:`ConfigError`.

    With ``resolve_task`` the task is built (:func:`task_of`): its parameters are filled in with
    their values, a network input or output size that is stated (not 0) must equal the task's,
    and the batch sizes and the recording window are checked against the task. Without it (a
    record's config, whose task may live in a file that is not here) the task is not built.
    """
    for section, cls in SECTIONS.items():
        if section == "task":
            continue
        sub = getattr(cfg, section)
        for f in fields(cls):
            value = getattr(sub, f.name)
            key = f"{section}.{f.name}"
            if f.type in ("int", int):
                _check(
                    isinstance(value, int) and not isinstance(value, bool), key, value, "an integer"
                )
            elif f.type in ("float", float):
                _check(
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and math.isfinite(value),
                    key,
                    value,
                    "a finite number",
                )
    net, task, train, run = cfg.network, cfg.task, cfg.train, cfg.run
    positive_int = "an integer >= 1"
    for key, value in [
        ("train.batch", train.batch),
        ("train.val_batch", train.val_batch),
        ("train.val_every", train.val_every),
        ("train.divergence_patience", train.divergence_patience),
        ("train.lr_decay_every", train.lr_decay_every),
        ("run.threads", run.threads),
        ("run.checkpoint_every", run.checkpoint_every),
    ]:
        _check(value >= 1, key, value, positive_int)
    for key, value in [
        ("network.n_regular", net.n_regular),
        ("network.n_adaptive", net.n_adaptive),
        ("network.n_ref", net.n_ref),
        ("network.n_in", net.n_in),
        ("network.n_out", net.n_out),
        ("train.iterations", train.iterations),
        ("train.compare_every", train.compare_every),
        ("rules.hops", cfg.rules.hops),
    ]:
        _check(value >= 0, key, value, "an integer >= 0")
    _check(net.n_rec >= 2, "network.n_regular", net.n_regular, "n_regular + n_adaptive >= 2")
    for key, value in [
        ("network.dt", net.dt),
        ("network.tau_m", net.tau_m),
        ("network.tau_out", net.tau_out),
        ("network.tau_a", net.tau_a),
        ("network.v_th", net.v_th),
        ("train.lr", train.lr),
        ("train.divergence_loss_ratio", train.divergence_loss_ratio),
        ("train.divergence_rate_hz", train.divergence_rate_hz),
        ("train.adam_eps", train.adam_eps),
        ("train.reconnect_eps", train.reconnect_eps),
        ("rules.feedback_scale", cfg.rules.feedback_scale),
    ]:
        _check(value > 0, key, value, "a number > 0")
    for key, value in [
        ("network.beta", net.beta),
        ("network.gamma", net.gamma),
        ("train.l1", train.l1),
        ("train.reg_rate", train.reg_rate),
        ("train.reg_target_hz", train.reg_target_hz),
    ]:
        _check(value >= 0, key, value, "a number >= 0")
    for key, value in [
        ("network.p_in", net.p_in),
        ("network.p_rec", net.p_rec),
        ("network.p_out", net.p_out),
        ("train.adam_beta1", train.adam_beta1),
        ("train.adam_beta2", train.adam_beta2),
        ("train.lr_decay", train.lr_decay),
    ]:
        _check(0 <= value <= 1, key, value, "a number in [0, 1]")
    _check(0 < net.exc_fraction < 1, "network.exc_fraction", net.exc_fraction, "a number in (0, 1)")
    n_exc = int(net.exc_fraction * net.n_rec) + 1
    _check(
        1 <= n_exc < net.n_rec,
        "network.n_regular",
        net.n_regular,
        f"with exc_fraction {net.exc_fraction} the {net.n_rec} recurrent cells need at least one "
        "excitatory and one inhibitory cell",
    )
    _check(
        isinstance(task.name, str) and task.name.strip() != "",
        "task.name",
        task.name,
        "a task name (evidence, pattern, neurogym:ENV or FILE.py:CLASS)",
    )
    if resolve_task:
        cfg = _resolve_task(cfg)
    _validate_record(cfg, resolve_task)
    _check(run.device in DEVICES, "run.device", run.device, f"one of {', '.join(DEVICES)}")
    _check(run.dtype in DTYPES, "run.dtype", run.dtype, f"one of {', '.join(DTYPES)}")
    _check(run.core in CORES, "run.core", run.core, f"one of {', '.join(CORES)}")
    return cfg


_TASKS: dict[tuple[str, tuple[tuple[str, str], ...]], Task] = {}


def task_of(cfg: Config) -> Task:
    """The task of ``cfg`` (built once per name and parameters; ConfigError when it cannot be)."""
    key = (cfg.task.name, tuple(sorted((k, repr(v)) for k, v in cfg.task.params.items())))
    if key not in _TASKS:
        try:
            _TASKS[key] = make_task(cfg.task.name, cfg.task.params)
        except TaskError as err:
            raise ConfigError(str(err)) from None
    return _TASKS[key]


def _resolve_task(cfg: Config) -> Config:
    """Fill in the task's parameters; check the network's stated sizes (0: the task's, which
    :attr:`Config.sized_network` fills in) and what else depends on the task."""
    task = task_of(cfg)
    net, train = cfg.network, cfg.train
    for key, stated, actual in [
        ("network.n_in", net.n_in, task.n_in),
        ("network.n_out", net.n_out, task.n_out),
    ]:
        _check(
            stated in (0, actual),
            key,
            stated,
            f"the task's size ({actual} for task {cfg.task.name}), or 0: the network's input and "
            "output sizes follow the task",
        )
    task_dt = getattr(task, "dt", net.dt)
    if task_dt != net.dt:
        raise ConfigError(
            f"task.dt = {task_dt!r} differs from network.dt = {net.dt!r}: set both to the same "
            "step in ms"
        )
    limit = task.max_batch() if hasattr(task, "max_batch") else None
    for key, value in [("train.batch", train.batch), ("train.val_batch", train.val_batch)]:
        _check(
            limit is None or value <= limit,
            key,
            value,
            f"at most {limit} trials for task {cfg.task.name}",
        )
    params = task.values() if hasattr(task, "values") else dict(cfg.task.params)
    if cfg.task.name.startswith(NEUROGYM_PREFIX):
        params.pop("env", None)  # the name carries it
    return replace(cfg, task=replace(cfg.task, params=params))


RECORD_LAYOUTS = ("list", "dense")
RECORD_DTYPES = ("float32", "float16")
RECORD_CODECS = ("lz4", "zstd", "gzip", "none")


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_trials(text: str, batch: int) -> list[int]:
    """Trial indices from "all", "A-B" (inclusive) or "i,j,k"; raises ConfigError."""
    key = "record.trials"
    if text.strip() == "all":
        return list(range(batch))
    out: list[int] = []
    try:
        for item in _items(text):
            lo, _, hi = item.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f"{key} = {text!r} is not allowed: all, A-B or i,j,k") from None
    _check(bool(out), key, text, "at least one trial")
    _check(len(set(out)) == len(out), key, text, "each trial once")
    _check(all(0 <= i < batch for i in out), key, text, f"trial indices in 0..{batch - 1}")
    return sorted(out)


def record_iterations(cfg: Config) -> tuple[int, set[int]]:
    """``(every, explicit)``: the recording schedule with "first"/"last" resolved."""
    explicit: set[int] = set()
    for item in _items(cfg.record.iterations):
        if item == "first":
            explicit.add(0)
        elif item == "last":
            explicit.add(cfg.train.iterations - 1)
        else:
            try:
                explicit.add(int(item))
            except ValueError:
                raise ConfigError(
                    f"record.iterations = {cfg.record.iterations!r} is not allowed: "
                    "comma-separated integers >= 0, first or last"
                ) from None
    _check(
        all(i >= 0 for i in explicit),
        "record.iterations",
        cfg.record.iterations,
        "integers >= 0, first or last",
    )
    return cfg.record.every, explicit


def _validate_record(cfg: Config, with_task: bool) -> None:
    from mdgl_analysis.recording.schema import GROUPS, OPTIONAL_GROUPS

    rec = cfg.record
    _check(rec.every >= 0, "record.every", rec.every, "an integer >= 0 (0: off)")
    record_iterations(cfg)
    parse_trials(rec.trials, cfg.train.batch)
    groups = _items(rec.quantities)
    _check(
        all(g in OPTIONAL_GROUPS for g in groups) and len(groups) > 0,
        "record.quantities",
        rec.quantities,
        f"comma-separated groups among {', '.join(OPTIONAL_GROUPS)} "
        f"({', '.join(g for g in GROUPS if g not in OPTIONAL_GROUPS)} are always recorded)",
    )
    if with_task:
        n_ms = cfg.n_steps * cfg.network.dt
        stop = rec.t_stop_ms or n_ms
        _check(
            0 <= rec.t_stop_ms <= n_ms,
            "record.t_stop_ms",
            rec.t_stop_ms,
            f"0 <= t_stop_ms <= {n_ms:g}, the trial's length (0: the end)",
        )
        _check(
            0 <= rec.t_start_ms < stop,
            "record.t_start_ms",
            rec.t_start_ms,
            f"0 <= t_start_ms < t_stop_ms (here {stop:g} ms)",
        )
    _check(rec.layout in RECORD_LAYOUTS, "record.layout", rec.layout, " or ".join(RECORD_LAYOUTS))
    _check(rec.dtype in RECORD_DTYPES, "record.dtype", rec.dtype, " or ".join(RECORD_DTYPES))
    _check(rec.codec in RECORD_CODECS, "record.codec", rec.codec, ", ".join(RECORD_CODECS))
    _check(rec.chunk_mb > 0, "record.chunk_mb", rec.chunk_mb, "a number > 0")
    _check(
        rec.rules.strip() == "all" or bool(_items(rec.rules)),
        "record.rules",
        rec.rules,
        "all, or comma-separated rule names",
    )


def compare_rules(cfg: Config) -> list[str]:
    """The rules compared with BPTT, in order, without duplicates or BPTT itself."""
    names = [n.strip() for n in cfg.train.compare_rules.split(",") if n.strip()]
    return [n for i, n in enumerate(names) if n != "bptt" and n not in names[:i]]


# ------------------------------------------------------------------------------------------------
# dicts, TOML, overrides


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Nested dicts of the sections; the task's parameters stand next to its name."""
    out = dataclasses.asdict(cfg)
    task = out.pop("task")
    out = {"network": out.pop("network"), "task": {"name": task["name"], **task["params"]}, **out}
    return out


def from_dict(
    data: dict[str, Any],
    base: Config | None = None,
    source: str = "config",
    resolve_task: bool = True,
) -> Config:
    """Build a validated config from nested dicts; unknown sections or keys are errors.

    ``[task]``: ``name`` first (a new name starts from no parameters), then the parameters. A
    top-level ``description`` (one line saying what the config is for, as the presets have) is
    allowed and is not part of the config.
    """
    cfg = base or Config()
    for section, values in data.items():
        if section == DESCRIPTION:
            if not isinstance(values, str):
                raise ConfigError(
                    f"{source}: description = {values!r} is not allowed: a string (one line "
                    "saying what the config is for)"
                )
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section {section!r}; allowed: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of key = value pairs")
        if section == "task" and "name" in values:
            values = {"name": values["name"], **{k: v for k, v in values.items() if k != "name"}}
        for key, value in values.items():
            cfg = set_value(cfg, f"{section}.{key}", value)
    return validate(cfg, resolve_task)


def set_value(cfg: Config, key: str, value: Any) -> Config:
    """Return ``cfg`` with ``section.field`` set; a string ``value`` is parsed to the field type."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(
            f"unknown config key {key!r}; keys are SECTION.FIELD with SECTION one of "
            f"{', '.join(SECTIONS)}"
        )
    if section == "task":
        return _set_task(cfg, name, value)
    cls = SECTIONS[section]
    types = {f.name: f.type for f in fields(cls)}
    if name not in types:
        raise ConfigError(f"unknown config key {key!r}; fields of [{section}]: {', '.join(types)}")
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(types[name])]
    try:
        value = coerce(key, value, kind)
    except TaskError as err:  # the shared parser of config fields and task parameters
        raise ConfigError(str(err)) from None
    if key in ("train.rule", "train.compare_rules") and any(map(is_file_name, _items(value))):
        value = ",".join(absolute(item) for item in _items(value))  # resumes from any folder
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})


def _set_task(cfg: Config, name: str, value: Any) -> Config:
    """``task.name`` (another name drops the old task's parameters; a file path is made
    absolute, so the run resumes from any folder) or a task parameter (checked by the task)."""
    if name == "name":
        _check(isinstance(value, str), "task.name", value, "a string")
        if is_file_task(value):
            path, _, cls = value.rpartition(":")
            value = f"{Path(path).expanduser().resolve()}:{cls}"
        params = cfg.task.params if value == cfg.task.name else {}
        return replace(cfg, task=TaskConfig(value, dict(params)))
    if name == "params" or not name.isidentifier():
        raise ConfigError(f"unknown config key 'task.{name}': task parameters are identifiers")
    return replace(cfg, task=replace(cfg.task, params={**cfg.task.params, name: value}))


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. network.n_adaptive=30")
    return key.strip(), value


def load(path: str | Path, base: Config | None = None, resolve_task: bool = True) -> Config:
    """Read a TOML config file (sections as in :class:`Config`; missing fields keep ``base``).

    ``resolve_task=False`` leaves the task unresolved (more changes are coming)."""
    data = _config_file(path)
    return from_dict(data, base, source=str(path), resolve_task=resolve_task)


def _config_file(path: str | Path) -> dict[str, Any]:
    """The TOML document of the config file ``path``; ConfigError when there is none."""
    if str(path).strip() == "":
        raise ConfigError("config file '' is not allowed: the path of a TOML file")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder, not a TOML file")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    return _read_toml(path, f"config file {str(path)!r}")


LEGACY: dict[str, Any] = {"run.core": "torch", "task.sampler": "poisson"}
"""Keys a run's saved config may lack, with the value the run was made with: a config saved before
the key existed ran as this value, whatever the key's default is now. :func:`load_saved` fills
them in (a task key only when the run's task has that parameter); a new config file without the
key gets the default, and a new run's config.toml states every key."""


def with_legacy(data: dict[str, Any], resolve_task: bool = False) -> dict[str, Any]:
    """``data`` (a saved config's nested dicts) with every :data:`LEGACY` key it lacks added.

    Whether the task has a parameter is read from its class: a built-in or NeuroGym task's
    always, a task in a user's file only with ``resolve_task`` (which imports the file anyway);
    otherwise its legacy keys are left out. ``data`` itself is not changed.
    """
    out = {
        section: dict(values) if isinstance(values, dict) else values
        for section, values in data.items()
    }
    task_params: set[str] | None = None
    for key, value in LEGACY.items():
        section, _, name = key.partition(".")
        values = out.setdefault(section, {})
        if not isinstance(values, dict) or name in values:
            continue
        if section == "task":
            if task_params is None:
                task_params = _task_parameters(values.get("name", TaskConfig().name), resolve_task)
            if name not in task_params:
                continue
        values[name] = value
    return out


def _task_parameters(name: Any, resolve_task: bool) -> set[str]:
    """The parameter names of the task ``name``; empty when it is not known without importing a
    user's file (``resolve_task`` False) or cannot be found (validation says why later)."""
    if not isinstance(name, str) or (is_file_task(name) and not resolve_task):
        return set()
    try:
        cls = task_class(name)
    except TaskError:
        return set()
    parameters = getattr(cls, "parameters", None)
    return set(parameters()) if callable(parameters) else set()


def load_saved(path: str | Path, resolve_task: bool = False) -> Config:
    """The config a run saved (its ``config.toml``), as :func:`load` reads it, with the
    :data:`LEGACY` values of the keys it lacks: a run resumes, and reads, as it was made."""
    data = with_legacy(_config_file(path), resolve_task)
    return from_dict(data, source=str(path), resolve_task=resolve_task)


def _read_toml(path: Path | Traversable, what: str) -> dict[str, Any]:
    """The TOML document of ``path``; ConfigError naming ``what`` when it cannot be read."""
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} is not valid TOML: {err}") from None
    except OSError as err:  # unreadable: permissions, a device, ...
        raise ConfigError(f"{what} cannot be read: {err.strerror or err}") from None


def dumps(cfg: Config, description: str | None = None) -> str:
    """The config as TOML (flat sections of scalars), readable back by :func:`load`; with
    ``description`` its first line is ``description = "..."``."""
    lines: list[str] = []
    if description is not None:
        lines += [f"{DESCRIPTION} = {_toml_scalar(description)}", ""]
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if section == "network" and key in ("n_in", "n_out") and value == 0:
                lines.append(
                    f"# {key}: the task's (the network's input and output sizes follow it)"
                )
                continue
            lines.append(f"{key} = {_toml_scalar(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def resolve(
    config_file: str | None = None,
    preset_name: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    shortcuts: dict[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Preset, file or ``base`` config, then ``task.name`` (a shortcut), then ``--set``
    overrides, then the other CLI shortcuts (``train.rule=...``)."""
    if sum(x is not None and x != "" for x in (config_file, preset_name, base)) > 1:
        raise ConfigError("give either --config FILE or --preset NAME, not both")
    if base is not None:
        cfg = base
    else:
        # "" is a bad name or path, not a missing one: only None means the default preset
        cfg = (
            load(config_file, resolve_task=False)
            if config_file is not None
            else _load_preset("paper" if preset_name is None else preset_name, False)
        )
    shortcuts = dict(shortcuts or {})
    task_name = shortcuts.pop("task.name", None)
    if task_name is not None:  # before the overrides, which may set the new task's parameters
        cfg = set_value(cfg, "task.name", task_name)
    for text in overrides:
        key, value = parse_override(text)
        cfg = set_value(cfg, key, value)
    for key, value in shortcuts.items():
        if value is not None:
            cfg = set_value(cfg, key, value)
    return validate(cfg)


# ------------------------------------------------------------------------------------------------
# presets: the experiment configs of runs/configs/, shipped as the package mdgl_analysis.presets

PRESET_PACKAGE = "mdgl_analysis.presets"
DEFAULT_PRESET = "paper"


@functools.cache
def _preset_files() -> dict[str, Traversable]:
    """Preset name -> its TOML file: every ``NAME.toml`` of :data:`PRESET_PACKAGE` (the folder
    ``runs/configs/`` of a checkout, mapped to that package by pyproject.toml; inside the
    installed package for a wheel). The default preset first, then the others by name."""
    folder = importlib.resources.files(PRESET_PACKAGE)
    found = {
        f.name.removesuffix(".toml"): f
        for f in folder.iterdir()
        if f.name.endswith(".toml") and f.is_file()
    }
    order = sorted(found, key=lambda name: (name != DEFAULT_PRESET, name))
    return {name: found[name] for name in order}


def _preset_data(name: str) -> dict[str, Any]:
    """The TOML document of preset ``name``; ConfigError listing the presets when unknown."""
    files = _preset_files()
    if name not in files:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(files)}")
    return _read_toml(files[name], f"preset {name!r}")


def _load_preset(name: str, resolve_task: bool = True) -> Config:
    """The preset ``name`` read from its TOML file (ConfigError listing the presets if unknown);
    ``resolve_task=False`` leaves its task unresolved (more changes are coming)."""
    return from_dict(_preset_data(name), source=f"preset {name!r}", resolve_task=resolve_task)


def preset(name: str) -> Config:
    """The resolved preset ``name``; ConfigError listing the presets when there is none."""
    if name not in PRESETS:
        _preset_data(name)  # raises the error that lists the presets
    return PRESETS[name]


def preset_description(name: str) -> str:
    """The one-line ``description`` of preset ``name`` ("" when its file has none)."""
    description = _preset_data(name).get(DESCRIPTION, "")
    return description if isinstance(description, str) else ""


class _Presets(Mapping[str, Config]):
    """The presets by name, each read and resolved on first use (every task parameter and the
    network's sizes filled in): listing them reads no file, so ``mdgl --help`` stays fast and a
    preset whose task needs an extra (``neurogym``) costs nothing until it is used."""

    def __init__(self) -> None:
        self._resolved: dict[str, Config] = {}

    def __getitem__(self, name: str) -> Config:
        if name not in _preset_files():
            raise KeyError(name)
        if name not in self._resolved:
            self._resolved[name] = _load_preset(name)
        return self._resolved[name]

    def __contains__(self, name: object) -> bool:
        return name in _preset_files()

    def __iter__(self) -> Iterator[str]:
        return iter(_preset_files())

    def __len__(self) -> int:
        return len(_preset_files())

    def __repr__(self) -> str:
        return f"<presets {', '.join(self)}>"


PRESETS: Mapping[str, Config] = _Presets()
"""The presets: every TOML file of ``runs/configs/`` (shipped as ``mdgl_analysis.presets``),
resolved on first use."""
