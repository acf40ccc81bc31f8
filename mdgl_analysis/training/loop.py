"""The training loop (spec E, F): validation, rule, optimiser, metrics, checkpoints, resume.

One iteration k: validate on a fresh batch when ``k % val_every == 0`` (before the step, as the
original), draw a training batch, pass 1 (:func:`~mdgl_analysis.network.model.forward`), the rule's
gradients, the constrained Adam step, metrics. After the last step a final validation runs on the
final weights. Checkpoints hold the state *after* k steps, taken before any validation of
iteration k, so resuming from one replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mdgl_analysis import runtime
from mdgl_analysis.config import Config, compare_rules, task_of
from mdgl_analysis.network.model import SpikingNetwork, forward, loss_of
from mdgl_analysis.network.readout import METRICS
from mdgl_analysis.plugins import absolute, file_of
from mdgl_analysis.recording.schema import RECORDS, iteration_of
from mdgl_analysis.recording.writer import Recorder
from mdgl_analysis.rules import check_rules, get_rule
from mdgl_analysis.runtime import stream_seed
from mdgl_analysis.tasks import TaskBatch, draw
from mdgl_analysis.training.compare import same_batch
from mdgl_analysis.training.optim import TFAdam, apply_update
from mdgl_analysis.training.runs import (
    RunFolder,
    RunFolderError,
    now,
    pid_alive,
    rule_files,
    sha256_of,
    task_file,
)
from mdgl_analysis.training.tensorboard import Scalars
from mdgl_analysis.training.tensorboard import check_available as check_tensorboard

GENERATORS = ("task", "val", "rewire")


class TrainingError(RuntimeError):
    """A run stopped with an error; the run folder says ``failed`` and keeps its checkpoints."""


def dtype_of(cfg: Config) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[cfg.run.dtype]


class Trainer:
    """Owns the network, optimiser and random streams of one run."""

    def __init__(self, cfg: Config, device: torch.device):
        from mdgl_analysis.training.memory import check_memory

        check_memory(cfg, device)  # sizes that cannot fit are refused before any allocation
        check_rules(cfg)
        self.cfg, self.device = cfg, device
        self.core = runtime.resolve_core(cfg.run.core, device)  # refused here, before any work
        self.task = task_of(cfg)
        self.loss = loss_of(cfg, self.task.loss)
        self.metric = METRICS[self.task.loss]
        self.dtype = dtype_of(cfg)
        self.net = SpikingNetwork(
            cfg, torch.Generator().manual_seed(stream_seed(cfg.run.seed, "init")), self.dtype
        ).to(device)
        t = cfg.train
        self.opt = TFAdam(
            self.net.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps
        )
        self.gens = {
            n: torch.Generator().manual_seed(stream_seed(cfg.run.seed, n)) for n in GENERATORS
        }
        self.rule = get_rule(t.rule)
        self.iteration = 0

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything that determines the rest of the run. Every random draw comes from the run's
        own generators, none from torch's global one, so two runs of one config checkpoint the
        same bytes of state."""
        return {
            "iteration": self.iteration,
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "generators": {n: g.get_state() for n, g in self.gens.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        # checkpoints written before eprop_random lack its feedback weights: they are drawn from
        # the run's seed alone, so the ones this trainer drew are the run's
        self.net.load_state_dict({"feedback": self.net.feedback, **state["net"]})
        self.opt.load_state_dict(state["opt"])
        for n, g in self.gens.items():
            g.set_state(state["generators"][n])

    # -- one iteration -----------------------------------------------------------------------
    def batch(self, stream: str, size: int) -> TaskBatch:
        """A batch of the task from the named random stream, checked, on the model's device."""
        b = draw(self.task, size, self.gens[stream])
        target = b.target.to(self.device)
        if target.is_floating_point():
            target = target.to(self.dtype)
        return TaskBatch(b.x.to(self.device, self.dtype), target, b.mask.to(self.device))

    def probe(self) -> None:
        """Draw and check one batch from a scratch generator (the run's streams stay untouched),
        so that a broken task fails before a run folder exists."""
        gen = torch.Generator().manual_seed(stream_seed(self.cfg.run.seed, "probe"))
        draw(self.task, self.cfg.train.batch, gen)

    def validate(self) -> list[tuple[int, str, str, float]]:
        batch = self.batch("val", self.cfg.train.val_batch)
        fwd = forward(self.net.snapshot(), batch, self.loss, lean=True)
        return self._rows("val", fwd)

    def _rows(self, split: str, fwd) -> list[tuple[int, str, str, float]]:
        ro, k = fwd.ro, self.iteration
        rows = [
            (k, split, "loss", ro.loss.item()),
            (k, split, self.metric, ro.metric.item()),
            (k, split, "rate_hz", ro.rate.mean().item() * 1000.0 / self.cfg.network.dt),
        ]
        if self.cfg.train.reg_rate:
            rows.append((k, split, "reg", ro.reg.item()))
        return rows

    def step(self, recorder: Recorder | None = None) -> list[tuple[int, str, str, float]]:
        """One training step on a fresh batch; returns its metric rows.

        When ``recorder`` schedules this iteration, every recorded rule's gradient is computed on
        the same batch and the record file is written after the update.
        """
        t = self.cfg.train
        k = self.iteration
        if k > 1 and k % t.lr_decay_every == 0:
            for group in self.opt.param_groups:
                group["lr"] *= t.lr_decay
        batch = self.batch("task", t.batch)
        snap = self.net.snapshot()
        recording = recorder is not None and recorder.scheduled(k)
        fwd = forward(snap, batch, self.loss, lean=not recording)
        grads = self.rule(snap, fwd)
        rows = self._rows("train", fwd)
        known = {t.rule: grads}
        if t.compare_every and k % t.compare_every == 0:
            known, cosines = same_batch(snap, fwd, compare_rules(self.cfg), known)
            rows += [(k, "train", f"cos_{name}", value) for name, value in cosines.items()]
        if recording:
            known, _ = same_batch(snap, fwd, recorder.rules, known)
        apply_update(self.net, self.opt, grads, t, self.gens["rewire"])
        if recording:
            after = self.net.snapshot().weights
            info = recorder.write(k, snap, fwd, known, after)
            rows.append((k, "train", "record_mb", info["bytes"] / 2**20))
            rows.append((k, "train", "record_s", info["seconds"]))
        rows += [(k, "train", f"n_conn_{m}", c) for m, c in self.net.connected().items()]
        rows.append((k, "train", "lr", self.opt.param_groups[0]["lr"]))
        self.iteration += 1
        return rows


# ------------------------------------------------------------------------------------------------
# running a folder


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration (then checkpoint)."""

    def __init__(self):
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Divergence:
    """Watches the validation rows for a run leaving a sane range (``train.divergence_*``): the
    loss above ``divergence_loss_ratio`` x the first validation loss, or the mean firing rate
    above ``divergence_rate_hz``, at ``divergence_patience`` validation points in a row; a
    non-finite loss at once. Built from the metrics already written, so a resumed run goes on
    counting where it was."""

    def __init__(self, cfg: Config, rows: list[dict[str, Any]] = ()):
        self.train = cfg.train
        self.first: float | None = None
        self.streak = 0
        for row in rows:
            if row["split"] == "val" and row["name"] in ("loss", "rate_hz"):
                self.update([(row["iteration"], "val", row["name"], row["value"])])

    def update(self, rows: list[tuple[int, str, str, float]]) -> str | None:
        """Feed one iteration's rows; returns why the run diverges, or None."""
        val = {name: value for _, split, name, value in rows if split == "val"}
        if "loss" not in val:
            return None
        loss, rate = val["loss"], val.get("rate_hz", 0.0)
        if not math.isfinite(loss):
            return f"validation loss {loss}"
        if self.first is None:
            self.first = loss
        high_loss = loss > self.train.divergence_loss_ratio * self.first
        high_rate = rate > self.train.divergence_rate_hz
        self.streak = self.streak + 1 if (high_loss or high_rate) else 0
        if self.streak < self.train.divergence_patience:
            return None
        what = (
            f"validation loss {loss:.4g} > {self.train.divergence_loss_ratio:g} x the first "
            f"({self.first:.4g})"
            if high_loss
            else f"mean rate {rate:.1f} Hz > {self.train.divergence_rate_hz:g} Hz"
        )
        return f"{what} at {self.streak} validation points in a row"


def _failed(run: RunFolder, err: Exception) -> TrainingError:
    """Mark ``run`` failed with ``err`` (whatever the disk) and say so in one line."""
    run.mark_failed("".join(traceback.format_exception_only(type(err), err)).strip())
    return TrainingError(f"run {run.path} failed: {err}")


def run_training(run: RunFolder, trainer: Trainer, progress: bool = True) -> str:
    """Train until ``cfg.train.iterations``, writing metrics and checkpoints into ``run``.

    Returns the final status (``completed``, ``interrupted``, or ``diverged`` when
    ``train.stop_on_divergence`` stopped it, its checkpoints intact); raises
    :class:`TrainingError` after marking the run ``failed``.
    """
    cfg = trainer.cfg
    total = cfg.train.iterations
    recorder = Recorder(cfg, trainer.net, run.path / RECORDS, run.path.name, run.publish)
    recorder = recorder if recorder.enabled else None
    bar = tqdm(
        total=total, initial=trainer.iteration, disable=not progress, unit="it", dynamic_ncols=True
    )
    status = "completed"
    watch = Divergence(cfg, run.read_metrics())
    flagged = False
    scalars = Scalars(run.path, trainer.iteration) if cfg.run.tensorboard else None

    def write(rows: list[tuple[int, str, str, float]]) -> None:
        run.append_metrics(rows)
        if scalars is not None:
            scalars.add(rows)

    try:
        with _StopFlag() as flag:
            while trainer.iteration < total:
                rows = []
                if trainer.iteration % cfg.train.val_every == 0:
                    rows += trainer.validate()
                    reason = watch.update(rows)
                    if reason and not flagged:
                        flagged = True
                        stop = cfg.train.stop_on_divergence
                        print(
                            f"mdgl: warning: run {run.path} diverges at iteration "
                            f"{trainer.iteration}: {reason}"
                            + ("; stopped (train.stop_on_divergence)" if stop else ""),
                            file=sys.stderr,
                        )
                        run.update_meta(diverged={"iteration": trainer.iteration, "reason": reason})
                        if stop:
                            write(rows)
                            status = "diverged"
                            break
                rows += trainer.step(recorder)
                write(rows)
                done = trainer.iteration
                if done % cfg.run.checkpoint_every == 0 or done == total or flag.stop:
                    run.save_checkpoint(trainer.state())
                    run.update_meta(iteration=done)
                metric = {(s, n): v for _, s, n, v in rows}
                bar.set_postfix(
                    loss=f"{metric['train', 'loss']:.3f}",
                    **{trainer.metric: f"{metric['train', trainer.metric]:.3f}"},
                    refresh=False,
                )
                bar.update(1)
                if flag.stop and done < total:
                    status = "interrupted"
                    break
            if status == "completed":
                if not run.checkpoint_path(trainer.iteration).exists():
                    run.save_checkpoint(trainer.state())
                write(trainer.validate())
    except Exception as err:
        bar.close()
        raise _failed(run, err) from err
    finally:
        if scalars is not None:
            scalars.close()
    bar.close()
    run.update_meta(status=status, ended=now(), iteration=trainer.iteration)
    return status


def start(
    cfg: Config, out: str | Path, command: list[str], progress: bool = True
) -> tuple[RunFolder, str]:
    """Create a run folder for ``cfg`` at ``out`` and train. The folder must not exist."""
    runtime.configure(cfg.run.threads)
    device = runtime.resolve_device(cfg.run.device)
    check_tensorboard(cfg)
    trainer = Trainer(cfg, device)
    trainer.probe()
    # with its iteration-0 checkpoint: a run killed at any moment after this resumes
    run = RunFolder.create(out, cfg, command, str(device), trainer.state())
    with run.lock():
        return run, run_training(run, trainer, progress)


class ResumeError(RuntimeError):
    """The folder cannot be resumed (not a run, still running, no checkpoint)."""


def resume(
    path: str | Path,
    iterations: int | None = None,
    progress: bool = True,
    task: str | None = None,
    rules: tuple[str, ...] = (),
) -> tuple[RunFolder, str]:
    """Continue a killed, interrupted, failed or finished run from its latest checkpoint.

    Metrics newer than that checkpoint are dropped, so the result is bit-identical to an
    uninterrupted run with the same seed. ``iterations`` extends (or sets) the total. A run whose
    task is a user's ``FILE.py:CLASS`` resumes only when ``task`` names that same file (which is
    then imported, so run folders received from others never run code by themselves) and the
    file is unchanged since training began (its SHA-256 in ``run.json``); likewise a rule from
    a user's file (trained or compared) needs ``rules`` to name it (``"FILE.py:FUNCTION"``).
    """
    run = RunFolder(path)
    if not run.exists():
        raise ResumeError(f"{str(path)!r} is not a run folder (no {run.json_path.name})")
    with run.lock():
        return _resume(run, iterations, progress, task, rules)


def _trusted_task(run: RunFolder, meta: dict[str, Any], task: str | None) -> None:
    """ResumeError unless the run's task is built in, or a file named by ``task`` and unchanged."""
    name = run.config().task.name
    file = task_file(name)
    if file is None:
        if task:
            raise ResumeError(
                f"--task {task!r}: run {str(run.path)!r} trains the built-in task {name!r}; "
                "--task names the file of a run whose task is a user's file"
            )
        return
    named = task_file(task) if task else None
    if named != file or task.rpartition(":")[2] != name.rpartition(":")[2]:
        raise ResumeError(
            f"run {str(run.path)!r} trains the task in the file {str(file)!r}; resuming imports "
            f"and runs that file, so name it to trust it: --task {name}"
        )
    _unchanged(run, file, (meta.get("task") or {}).get("file_sha256"), "task")


def _trusted_rules(run: RunFolder, meta: dict[str, Any], rules: tuple[str, ...]) -> None:
    """ResumeError unless every rule of the run from a user's file is named in ``rules`` (as
    ``FILE.py:FUNCTION``) and its file is unchanged."""
    needed = rule_files(run.config())
    named = {absolute(r) for r in rules}
    for extra in sorted(named - set(needed)):
        raise ResumeError(
            f"--rule {extra!r}: run {str(run.path)!r} has no rule from that file; --rule names "
            "the files of a run's rules from a user's file"
            + (f" ({', '.join(needed)})" if needed else " (it has none)")
        )
    for name in needed:
        if name not in named:
            raise ResumeError(
                f"run {str(run.path)!r} uses the rule {name!r} from a user's file; resuming "
                f"imports and runs that file, so name it to trust it: --rule {name}"
            )
        _unchanged(run, file_of(name), (meta.get("rule_files") or {}).get(name), "rule")


def _unchanged(run: RunFolder, file: Path, recorded: str | None, what: str) -> None:
    if not file.is_file():
        raise ResumeError(f"the {what} file {str(file)!r} of run {str(run.path)!r} does not exist")
    if recorded and sha256_of(file) != recorded:
        raise ResumeError(
            f"the {what} file {str(file)!r} changed since run {str(run.path)!r} was trained "
            f"(its SHA-256 differs from run.json): a resumed run must see the same {what}"
        )


def _latest_intact(run: RunFolder, trainer: Trainer) -> Path | None:
    """Load the newest checkpoint that loads safely into ``trainer``; a damaged newer one is kept
    as ``*.damaged`` and named on stderr. ResumeError when none is intact; None (``trainer``
    untouched, at iteration 0) when the run has no checkpoint at all."""
    problems: list[str] = []
    damaged: list[Path] = []
    for ckpt in reversed(run.checkpoints()):
        try:
            problem = run.check(ckpt)
            if problem:
                raise RunFolderError(f"checkpoint {ckpt.name}: {problem}")
            state = run.load_checkpoint(ckpt, trainer.device)
        except RunFolderError as err:
            problems.append(f"{ckpt.name} ({str(err).split(': ', 1)[-1]})")
            damaged.append(ckpt)
            continue
        try:
            trainer.load_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ResumeError(
                f"checkpoint {ckpt.name} does not fit the run's {run.config_path.name} (was it "
                f"edited?): {type(err).__name__}: {reason[:200]}"
            ) from None
        for (
            bad
        ) in damaged:  # set aside only once the run can go on: a failed resume changes nothing
            bad.rename(bad.with_name(bad.name + ".damaged"))
        if problems:
            print(
                f"mdgl: warning: damaged checkpoint(s) kept as *.damaged: {'; '.join(problems)}; "
                f"resuming from {ckpt.name}",
                file=sys.stderr,
            )
        return ckpt
    if problems:
        raise ResumeError(f"run {str(run.path)!r} has no intact checkpoint: {'; '.join(problems)}")
    if not run.checkpoint_dir.is_dir():
        raise ResumeError(f"run {str(run.path)!r} has no {run.checkpoint_dir.name} folder")
    return None  # no checkpoint at all (deleted?): it starts again from its seed


def _resume(
    run: RunFolder,
    iterations: int | None,
    progress: bool,
    task: str | None,
    rules: tuple[str, ...] = (),
) -> tuple[RunFolder, str]:
    path = run.path
    meta = run.meta()
    run.read_metrics()  # a damaged metrics.csv or manifest is named before anything changes
    run.manifest()
    _trusted_task(run, meta, task)
    _trusted_rules(run, meta, rules)
    if (
        meta["status"] == "running"
        and pid_alive(meta.get("pid"))
        and meta.get("host") == socket.gethostname()
    ):
        raise ResumeError(f"run {str(path)!r} is still running (pid {meta['pid']})")
    cfg = run.config(resolve_task=True)
    for key, recorded, now_set in [
        ("train.rule", meta.get("rule"), cfg.train.rule),
        ("run.seed", meta.get("seed"), cfg.run.seed),
    ]:
        if recorded is not None and recorded != now_set:
            raise ResumeError(
                f"{run.config_path} says {key} = {now_set!r} but the run was trained with "
                f"{recorded!r} (run.json): a resumed run keeps its rule and seed; train a new run"
            )
    if iterations is not None:
        if iterations < 1:
            raise ResumeError(f"--iterations {iterations} is not allowed: an integer >= 1")
        cfg = replace(cfg, train=replace(cfg.train, iterations=iterations))
    runtime.configure(cfg.run.threads)
    device = runtime.resolve_device(cfg.run.device)
    check_tensorboard(cfg)
    trainer = Trainer(cfg, device)
    ckpt = _latest_intact(run, trainer)
    if trainer.iteration > cfg.train.iterations:
        raise ResumeError(
            f"--iterations {cfg.train.iterations} is below the checkpoint's iteration "
            f"{trainer.iteration}"
        )
    run.remove_leftovers()
    run.truncate_metrics(before=trainer.iteration)
    run.forget(
        [newer for newer in run.checkpoints() if ckpt is None or newer.name > ckpt.name]
        + [
            record
            for record in sorted((run.path / RECORDS).glob("iter_*.h5"))
            if iteration_of(record) >= trainer.iteration
        ]
    )
    run.write_config(cfg)
    run.update_meta(
        status="running",
        ended=None,
        error=None,
        pid=os.getpid(),
        host=socket.gethostname(),
        device=str(device),
        iterations=cfg.train.iterations,
        resumed=meta.get("resumed", []) + [{"at": now(), "from_iteration": trainer.iteration}],
    )
    return run, run_training(run, trainer, progress)
