"""The Python API: configure, train, resume and open runs from a script or a notebook.

The ``mdgl`` command line is a thin shell over these functions::

    import mdgl_analysis as m

    cfg = m.configure("demo", task="pattern", rule="eprop", set={"train.iterations": 50})
    run = m.train(cfg, out="runs/pattern-eprop")
    run.metrics()                      # long-format pandas DataFrame
    run.records()                      # lazy xarray Dataset of the recorded iterations
    run = m.resume(run, iterations=100)
    run = m.load_run("runs/pattern-eprop")

Bad input raises :class:`~mdgl_analysis.config.ConfigError` (or :class:`RunError`) with a
one-line message before anything is created.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import Config, ConfigError

__all__ = ["Run", "RunError", "configure", "estimate", "load_run", "resume", "train"]


class RunError(ValueError):
    """A run folder cannot be created, resumed or read; the message says which and why."""


def _overrides(values: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [f"{key}={value}" for key, value in values.items()]
    if isinstance(values, str):
        raise ConfigError(f"set = {values!r}: give a dict {{'section.field': value}} or a list")
    return list(values)


def configure(
    config: Config | str | os.PathLike | None = None,
    *,
    task: str | None = None,
    rule: str | None = None,
    seed: int | None = None,
    iterations: int | None = None,
    record_every: int | None = None,
    device: str | None = None,
    set: Mapping[str, Any] | Iterable[str] | None = None,  # noqa: A002 - the CLI's --set
) -> Config:
    """A validated, resolved :class:`Config`.

    Args:
        config: a :class:`Config`, a preset name (``"paper"``, ``"demo"``) or a TOML file;
            default the ``paper`` preset.
        task: ``task.name`` (a built-in, ``neurogym:ENV`` or ``FILE.py:CLASS``), applied before
            ``set``, so ``set`` may hold the new task's parameters.
        rule: shortcut for ``train.rule``.
        seed: shortcut for ``run.seed``.
        iterations: shortcut for ``train.iterations``.
        record_every: shortcut for ``record.every``.
        device: shortcut for ``run.device`` (``auto``, ``cpu`` or ``cuda``).
        set: overrides ``{"section.field": value}`` (or ``["section.field=value", ...]``).
    """
    shortcuts = {
        "task.name": task,
        "train.rule": rule,
        "run.seed": seed,
        "train.iterations": iterations,
        "record.every": record_every,
        "run.device": device,
    }
    overrides = _overrides(set)
    if isinstance(config, Config):
        cfg = config_mod.resolve(overrides=overrides, shortcuts=shortcuts, base=config)
    else:
        text = None if config is None else str(config)
        is_file = text is not None and (text.endswith(".toml") or Path(text).is_file())
        cfg = config_mod.resolve(
            text if is_file else None, None if is_file else text, overrides, shortcuts
        )
    from mdgl_analysis.rules import check_rules

    check_rules(cfg)
    return cfg


def default_out(cfg: Config) -> Path:
    """``runs/<time>-<rule>-s<seed>`` in the current folder."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.train.rule}-s{cfg.run.seed}"


def _check_out(out: Path) -> None:
    from mdgl_analysis.training.runs import blocking_file

    if str(out).strip() == "":
        raise RunError("out = '' is not allowed: a folder path")
    if out.exists():
        raise RunError(f"output folder {str(out)!r} already exists; choose a new out")
    blocking = blocking_file(out.parent)
    if blocking is not None:
        raise RunError(f"cannot create {str(out)!r}: {str(blocking)!r} is a file, not a folder")


def train(
    config: Config | str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    command: list[str] | None = None,
    **options: Any,
) -> Run:
    """Train a network into a new run folder and return the :class:`Run`.

    Args:
        config: as in :func:`configure`; ``options`` (``task``, ``rule``, ``seed``,
            ``iterations``, ``record_every``, ``device``, ``set``) are passed to it.
        out: the run folder to create (it must not exist); default ``runs/<time>-<rule>-s<seed>``.
        progress: show a progress bar.
        command: the command line recorded in ``run.json`` (default: this API call).
    """
    cfg = configure(config, **options)
    out_path = Path(out) if out is not None else default_out(cfg)
    _check_out(out_path)
    if cfg.run.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "run.device = 'cuda' but no CUDA device is available; use auto or cpu"
            )
    _say_records(cfg, out_path)
    from mdgl_analysis.training.loop import start

    run, _ = start(cfg, out_path, command or ["mdgl_analysis.train"], progress=progress)
    return Run(run.path)


def _say_records(cfg: Config, out: Path) -> None:
    """Before a recording run starts: the size of a record, of all of them, and the free disk
    space, on stderr (sizes that cannot fit in memory are refused first, as training would)."""
    import sys

    from mdgl_analysis import runtime
    from mdgl_analysis.training.estimate import record_lines, record_of, recorded_iterations
    from mdgl_analysis.training.memory import check_memory

    if not recorded_iterations(cfg):
        return
    check_memory(cfg, runtime.resolve_device(cfg.run.device))
    for line in record_lines(record_of(cfg), out.parent):
        print(f"mdgl: {line.strip()}", file=sys.stderr)


def estimate(
    config: Config | str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    startup: float = 0.0,
    **options: Any,
):
    """What training ``config`` would cost here, without creating anything: an
    :class:`~mdgl_analysis.training.estimate.Estimate` (seconds per iteration measured on this
    machine and the whole run's wall-clock, peak memory, record sizes).

    Args:
        config: as in :func:`train`.
        out: the run folder :func:`train` would create: checked as it would be (it must not
            exist), and the records' free disk space is that of its filesystem.
        startup: seconds a new process takes to start, added to the total.
        **options: as in :func:`train` (``task``, ``rule``, ``seed``, ``iterations``,
            ``record_every``, ``device``, ``set``).
    """
    from mdgl_analysis.training.estimate import estimate as _estimate

    cfg = configure(config, **options)
    if out is not None:
        _check_out(Path(out))
    if cfg.run.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "run.device = 'cuda' but no CUDA device is available; use auto or cpu"
            )
    return _estimate(cfg, startup=startup)


def resume(
    run: Run | str | os.PathLike,
    iterations: int | None = None,
    progress: bool = False,
    task: str | None = None,
    rules: tuple[str, ...] = (),
) -> Run:
    """Continue a run from its latest checkpoint (bit-identical to an uninterrupted run);
    ``iterations`` sets a new total. A run of a task in a user's file needs ``task`` to name
    that file (``"FILE.py:CLASS"``), and a run with rules from a user's file needs ``rules`` to
    name each (``"FILE.py:FUNCTION"``): resuming imports them, and a run folder never runs code
    unless its user says so."""
    from mdgl_analysis.training.loop import resume as _resume

    path = Path(run.path if isinstance(run, Run) else run)
    folder, _ = _resume(path, iterations, progress, task, tuple(rules))
    return Run(folder.path)


def load_run(path: str | os.PathLike) -> Run:
    """An existing run folder as a :class:`Run`; RunError when it is not one."""
    run = Run(path)
    if not run.folder.exists():
        raise RunError(f"{str(path)!r} is not a run folder (no run.json and config.toml)")
    return run


class Run:
    """A run folder: its config, status, metrics, checkpoints and records."""

    def __init__(self, path: str | os.PathLike):
        from mdgl_analysis.training.runs import RunFolder

        self.path = Path(path)
        self.folder = RunFolder(self.path)

    def __repr__(self) -> str:
        meta = self.meta
        return (
            f"Run({str(self.path)!r}: {meta['status']}, rule {meta['rule']}, seed {meta['seed']},"
            f" {meta['iteration']}/{meta['iterations']} iterations)"
        )

    @property
    def meta(self) -> dict[str, Any]:
        """``run.json``: status, progress, git commit, versions, host, device, times."""
        return self.folder.meta()

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def config(self) -> Config:
        """The resolved configuration the run trains with (its task named, not imported)."""
        return self.folder.config()

    def metrics(self):
        """Every metric row (iteration, split, name, value) as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(
            self.folder.read_metrics(), columns=["iteration", "split", "name", "value"]
        )

    def curve(self, name: str = "loss", split: str = "val"):
        """One metric over iterations as a pandas Series indexed by iteration."""
        table = self.metrics()
        rows = table[(table["name"] == name) & (table["split"] == split)]
        return rows.set_index("iteration")["value"].rename(f"{split} {name}")

    def record_files(self) -> list[Path]:
        from mdgl_analysis.recording.readers import record_files

        return record_files(self.path)

    def records(self, **kwargs: Any):
        """Every recorded iteration as one lazy xarray Dataset (dims ``iteration``, ...)."""
        from mdgl_analysis.recording.readers import open_run

        return open_run(self.path, **kwargs)

    def record(self, iteration: int):
        """One recorded iteration as a lazy xarray Dataset."""
        from mdgl_analysis.recording.readers import open_record
        from mdgl_analysis.recording.writer import record_path

        path = record_path(self.path / "records", iteration)
        if not path.is_file():
            raise RunError(f"run {str(self.path)!r} has no record of iteration {iteration}")
        return open_record(path)

    def verify(self) -> dict[str, Any]:
        """``mdgl verify`` of every record file: file name -> its
        :class:`~mdgl_analysis.recording.verify.Report` (``.problems`` of integrity,
        ``.recomputed`` and ``.contract`` errors, ``.ok(tolerance)``)."""
        from mdgl_analysis.recording.verify import verify_file

        return {f.name: verify_file(f) for f in self.record_files()}

    def export(
        self,
        out: str | os.PathLike,
        format: str = "hdf5",  # noqa: A002 - the CLI's --format
        codec: str = "gzip",
    ) -> Path:
        """``mdgl export``: a copy of the run at ``out`` whose records need no HDF5 plugin
        (``format="hdf5"``, ``codec`` ``"gzip"`` or ``"none"``), or its recorded trials as one
        NWB file ``out`` ending in ``.nwb`` (``format="nwb"``, extra ``[nwb]``). Returns ``out``;
        :class:`~mdgl_analysis.recording.export.ExportError` (a ValueError) for bad input."""
        from mdgl_analysis.recording.export import ExportError, export

        if format == "nwb":
            from mdgl_analysis.recording.nwb import export_nwb

            return export_nwb(self.path, out, codec)
        if format != "hdf5":
            raise ExportError(f"format {format!r} is not allowed: hdf5 or nwb")
        return export(self.path, out, codec)
