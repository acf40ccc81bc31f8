"""``mdgl bench``: seconds per training iteration and peak RSS of each rule, one process per case.

A case is one (rule, threads) pair, with ``--cores`` one ``run.core`` too, and in ``--scaling``
mode one value of the scaled axis too.
Every case runs in a fresh subprocess, so its peak RSS is its own. An iteration is what training
does: sample a batch, pass 1, the rule's gradients, the constrained Adam step. ``bptt_autograd``
is the reference: plain autograd through the rollout.

With ``--rounds R`` the whole list of cases runs R times in round-robin order (case 1, 2, ..., k,
then 1, 2, ... again), so that a slow minute of the machine spreads over every case instead of
landing on one. A case's ``s_per_iter_median`` is the median over rounds of each round's median
over ``--iterations`` timed iterations, ``s_per_iter_min`` the fastest iteration of all rounds,
``peak_rss_mb`` the largest of the rounds.

``--scaling AXIS=V1,V2,...`` times every rule at every value of one axis:

* ``n``: the network size N, ``network.n_regular = network.n_adaptive = N / 2``;
* ``t``: the trial length T in steps: a task's ``n_steps`` or ``duration_ms`` parameter when it
  has one; the evidence task's periods (``cue_ms``, ``gap_ms``, ``recall_ms``, ``delay_ms``)
  stretched by T / T0 together, so that the trial keeps its cues and its proportions (rounded
  to whole ms, the delay taking the remainder): at T0 it is the preset's task unchanged;
* ``b``: the batch, ``train.batch``.

Between consecutive values v1 < v2 it reports the local time exponent
``log(s2 / s1) / log(v2 / v1)`` (1: time grows in proportion to the axis).

``--json`` prints one JSON object per case and line instead of the table; ``--out FILE.jsonl``
writes the same lines to a file while the table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis import runtime
from mdgl_analysis.rules import RULES
from mdgl_analysis.rules.bptt import bptt_autograd
from mdgl_analysis.tasks import TaskBatch

BASELINES = {"bptt_autograd"}
TRACES = {"traces_list", "traces_dense"}  # the forward trace iterator (recording), not a rule
RECORDS = {"record_list", "record_dense"}  # one recorded iteration with every quantity and rule


def _autograd_rule(trainer):
    def rule(snap, fwd):
        return bptt_autograd(snap, TaskBatch(fwd.x, fwd.target, fwd.mask), trainer.loss)

    return rule


def _traces_rule(trainer, dense: bool):
    """A training step that also runs the forward trace recursion with every rule's signal."""
    from mdgl_analysis.recording.traces import Synapses, eligibility_chunks
    from mdgl_analysis.rules.bptt import bptt_credit
    from mdgl_analysis.rules.local import signal_of

    net = trainer.net
    nc = trainer.net.net_cfg
    syn = (
        Synapses.dense(nc.n_rec, nc.n_in, trainer.device)
        if dense
        else Synapses.from_masks(net.init_rec, net.init_in)
    )
    local = ["eprop", "mdgl", "mdgl_exact", "mdgl_nonlocal", "mdgl_online"]

    def rule(snap, fwd):
        signals = {name: signal_of(name, snap, fwd) for name in local}
        signals["bptt"] = bptt_credit(snap, fwd)[1]
        for _ in eligibility_chunks(snap, fwd, syn, signals, chunk=100):
            pass
        return RULES["mdgl"](snap, fwd)

    return rule


def _core_used(trainer: Any) -> str | None:
    """The implementation the trainer's time loops run on (``numba``, ``torch``, ...), when the
    trainer says (a ``core`` attribute); None when it does not."""
    core = getattr(trainer, "core", None)
    return core if isinstance(core, str) else None


def record_worker(layout: str, threads: int, preset: str, overrides: list[str], device: str):
    """Time one recorded iteration against a plain one and a raw write of the same bytes."""
    import os
    import tempfile
    from pathlib import Path

    from mdgl_analysis.recording.writer import Recorder
    from mdgl_analysis.training.loop import Trainer

    cfg = config_mod.resolve(
        None,
        preset,
        [
            *overrides,
            "record.every=1",
            f"record.layout={layout}",
            "record.quantities=state,signals,credit,traces,eligibility",
        ],
        {"run.device": device},
    )
    runtime.configure(threads)
    trainer = Trainer(cfg, runtime.resolve_device(cfg.run.device))
    folder = Path(tempfile.mkdtemp(prefix="mdgl-bench-", dir=os.environ.get("MDGL_BENCH_DIR")))
    recorder = Recorder(cfg, trainer.net, folder, "bench")
    trainer.step()
    t0 = time.perf_counter()
    trainer.step()
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = trainer.step(recorder)
    recorded = time.perf_counter() - t0
    info = {name: value for _, _, name, value in rows}
    (path,) = folder.glob("iter_*.h5")
    size = path.stat().st_size
    batch = trainer.batch("task", cfg.train.batch)  # only for the size estimate's shapes
    from mdgl_analysis.network.model import forward

    logical = recorder.estimate_bytes(forward(trainer.net.snapshot(), batch, trainer.loss))
    path.unlink()
    # a raw sequential write of the same number of (uncompressed) bytes, 16 MiB at a time
    block = os.urandom(16 << 20)
    raw = folder / "raw.bin"
    t0 = time.perf_counter()
    with open(raw, "wb") as f:
        for _ in range(logical // len(block) + 1):
            f.write(block)
    raw_s = time.perf_counter() - t0
    raw.unlink()
    folder.rmdir()
    return {
        "rule": f"record_{layout}",
        "threads": threads,
        "device": str(trainer.device),
        "core_used": _core_used(trainer),
        "plain_step_s": plain,
        "recorded_step_s": recorded,
        "record_write_s": info["record_s"],
        "record_mb_on_disk": size / 2**20,
        "record_mb_logical": logical / 2**20,
        "write_mb_per_s": logical / 2**20 / info["record_s"],
        "raw_write_mb_per_s": (logical // len(block) + 1) * 16 / raw_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "s_per_iter_median": recorded,
        "s_per_iter_min": recorded,
    }


def worker(
    rule: str, threads: int, iterations: int, preset: str, overrides: list[str], device: str
) -> dict[str, Any]:
    """Time ``iterations`` training iterations of ``rule`` after one warm-up (in this process).

    Returns:
        ``s_per_iter_median``, ``s_per_iter_min`` (seconds), ``peak_rss_mb`` (this process's
        maximum resident set), the device and core the trainer used, and the sizes.
    """
    from mdgl_analysis.training.loop import Trainer

    if rule in RECORDS:
        return record_worker(rule.split("_")[1], threads, preset, overrides, device)
    cfg = config_mod.resolve(None, preset, overrides, {"run.device": device})
    runtime.configure(threads)
    trainer = Trainer(cfg, runtime.resolve_device(cfg.run.device))
    if rule in BASELINES:
        trainer.rule = _autograd_rule(trainer)
    elif rule in TRACES:
        trainer.rule = _traces_rule(trainer, dense=rule == "traces_dense")
    else:
        trainer.rule = RULES[rule]
    trainer.step()  # warm-up: first-touch allocations, lazy initialisation, compilation
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        trainer.step()
        sync()
        times.append(time.perf_counter() - t0)
    return {
        "rule": rule,
        "threads": threads,
        "device": str(trainer.device),
        "core_used": _core_used(trainer),
        "s_per_iter_median": statistics.median(times),
        "s_per_iter_min": min(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch": cfg.train.batch,
        "n_steps": cfg.n_steps,
        "n_rec": cfg.network.n_rec,
    }


# ------------------------------------------------------------------------------------------------
# planning: every check before anything runs or is printed

AXES = {"n": "N", "t": "T", "b": "B"}
"""Scaling axes and their table headers: network size, trial steps, batch."""

AXIS_HELP = (
    "n (network size N: network.n_regular = network.n_adaptive = N/2), t (trial length T in "
    "steps), b (batch B: train.batch)"
)

EVIDENCE_PERIODS = ("cue_ms", "gap_ms", "recall_ms", "delay_ms")


@dataclass(frozen=True)
class Case:
    """One timed configuration: a rule, a thread count, the ``--set`` overrides (the user's, then
    the scaling's) and, in ``--scaling`` mode, the axis and its value."""

    rule: str
    threads: int
    overrides: tuple[str, ...]
    cfg: config_mod.Config = field(compare=False, repr=False)
    axis: str | None = None
    value: int | None = None

    @property
    def group(self) -> tuple[str, int, str]:
        """Cases of one group differ only by the scaled value (the exponent's pairs)."""
        return (self.rule, self.threads, self.cfg.run.core)


def parse_scaling(text: str) -> tuple[str, list[int]]:
    """``"n=100,200,400"`` -> ``("n", [100, 200, 400])`` (values sorted, at least two distinct)."""
    axis, sep, values = text.partition("=")
    axis = axis.strip().lower()
    if not sep or axis not in AXES:
        raise config_mod.ConfigError(
            f"--scaling {text!r} is not allowed: AXIS=V1,V2,... with AXIS one of {AXIS_HELP}, "
            "e.g. n=100,200,400"
        )
    items = [v.strip() for v in values.split(",")]
    if not all(v.isdigit() and int(v) >= 1 for v in items):
        raise config_mod.ConfigError(
            f"--scaling {text!r} is not allowed: the values are comma-separated integers >= 1"
        )
    out = sorted({int(v) for v in items})
    if len(out) < 2:
        raise config_mod.ConfigError(
            f"--scaling {text!r} is not allowed: at least two different values (the exponent "
            "compares consecutive ones)"
        )
    if axis == "n" and any(v % 2 or v < 2 for v in out):
        raise config_mod.ConfigError(
            f"--scaling {text!r} is not allowed: N must be even (network.n_regular = "
            "network.n_adaptive = N/2)"
        )
    return axis, out


def trial_length_overrides(cfg: config_mod.Config, n_steps: int) -> list[str]:
    """``--set`` overrides that give the task of ``cfg`` trials of ``n_steps`` steps.

    A task parameter ``n_steps`` or ``duration_ms`` is set directly. The evidence task's periods
    are stretched by ``n_steps / T0`` together (cues, gaps and recall rounded to whole ms, at
    least 1 ms for a cue and the recall; the delay takes the remainder), which keeps its cues
    and their share of the trial.
    """
    params = cfg.task.params
    dt = cfg.network.dt
    ms = n_steps * dt
    if "n_steps" in params:
        return [f"task.n_steps={n_steps}"]
    if "duration_ms" in params:
        return [f"task.duration_ms={ms:g}"]
    if not all(key in params for key in (*EVIDENCE_PERIODS, "n_cues")):
        raise config_mod.ConfigError(
            f"--scaling t: task {cfg.task.name!r} has no trial-length parameter (n_steps, "
            "duration_ms, or the evidence task's periods); scale n or b, or use a task with one"
        )
    f = n_steps / cfg.n_steps
    n_cues = int(params["n_cues"])
    cue = max(1, round(params["cue_ms"] * f))
    gap = round(params["gap_ms"] * f)
    recall = max(1, round(params["recall_ms"] * f))
    delay = round(ms) - n_cues * cue - (n_cues - 1) * gap - recall
    if delay < 0:
        shortest = math.ceil((n_cues * cue + (n_cues - 1) * gap + recall) / dt)
        raise config_mod.ConfigError(
            f"--scaling t={n_steps} is not allowed for task {cfg.task.name!r}: its {n_cues} cues "
            f"stretched to this length need about {shortest} steps; use longer trials"
        )
    periods = {"cue_ms": cue, "gap_ms": gap, "recall_ms": recall, "delay_ms": delay}
    return [f"task.{key}={value}" for key, value in periods.items()]


def scaling_overrides(cfg: config_mod.Config, axis: str, value: int) -> list[str]:
    """``--set`` overrides that put ``value`` on ``axis`` (see :data:`AXES`) of ``cfg``."""
    if axis == "n":
        return [f"network.n_regular={value // 2}", f"network.n_adaptive={value // 2}"]
    if axis == "b":
        return [f"train.batch={value}"]
    return trial_length_overrides(cfg, value)


def _key(override: str) -> str:
    return override.partition("=")[0].strip()


def plan(args: argparse.Namespace) -> list[Case]:
    """The cases of ``mdgl bench ARGS`` in their run order, every config resolved and checked.

    Raises:
        ConfigError: a bad rule, thread count, iteration or round count, scaling axis or
            value, or a config that does not resolve (one line naming the value).
    """
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    known = [*RULES, *sorted(BASELINES | TRACES | RECORDS)]
    for r in rules:
        if r not in known:
            raise config_mod.ConfigError(f"--rules: unknown rule {r!r}; rules: {', '.join(known)}")
    if not rules:
        raise config_mod.ConfigError(f"--rules {args.rules!r}: name at least one of {known}")
    items = [t.strip() for t in args.threads.split(",")]
    if not all(t.isdigit() and int(t) >= 1 for t in items):
        raise config_mod.ConfigError(
            f"--threads {args.threads!r} is not allowed: comma-separated integers >= 1"
        )
    threads = list(dict.fromkeys(int(t) for t in items))
    for name in ("iterations", "rounds"):
        value = getattr(args, name)
        if value < 1:
            raise config_mod.ConfigError(f"--{name} {value} is not allowed: an integer >= 1")
    if args.out is not None and (args.out.strip() == "" or Path(args.out).is_dir()):
        raise config_mod.ConfigError(
            f"--out {args.out!r} is not allowed: the path of a file for the JSON lines"
        )
    cores: list[str | None] = [None]  # None: the config's run.core
    if getattr(args, "cores", None) is not None:
        cores = list(dict.fromkeys(c.strip() for c in args.cores.split(",")))
        if not all(c in config_mod.CORES for c in cores):
            raise config_mod.ConfigError(
                f"--cores {args.cores!r} is not allowed: comma-separated, of "
                f"{', '.join(config_mod.CORES)}"
            )
        clash = [o for o in args.set if _key(o) == "run.core"]
        if clash:
            raise config_mod.ConfigError(
                f"--set {clash[0]!r} conflicts with --cores {args.cores!r}"
            )
    base = config_mod.resolve(None, args.preset, args.set, {"run.device": args.device})
    if args.scaling is None:
        points: list[tuple[str | None, int | None, list[str]]] = [(None, None, [])]
    else:
        axis, values = parse_scaling(args.scaling)
        points = [(axis, v, scaling_overrides(base, axis, v)) for v in values]
        scaled = {_key(o) for _, _, extra in points for o in extra}
        clash = [o for o in args.set if _key(o) in scaled]
        if clash:
            raise config_mod.ConfigError(
                f"--set {clash[0]!r} conflicts with --scaling {args.scaling!r}, which sets "
                f"{', '.join(sorted(scaled))}"
            )
    cases = []
    for axis, value, extra in points:
        for core in cores:
            overrides = (*args.set, *extra, *([f"run.core={core}"] if core else []))
            shortcuts = {"run.device": args.device}
            cfg = config_mod.resolve(None, args.preset, list(overrides), shortcuts)
            if axis == "t" and cfg.n_steps != value:
                raise config_mod.ConfigError(
                    f"--scaling t={value} is not allowed for task {cfg.task.name!r}: its "
                    f"parameters give {cfg.n_steps} steps at dt = {cfg.network.dt:g} ms"
                )
            cases += [Case(r, t, overrides, cfg, axis, value) for t in threads for r in rules]
    return cases


# ------------------------------------------------------------------------------------------------
# running, aggregating, reporting


def machine() -> dict[str, Any]:
    """The CPU model and logical CPU count, the git commit and dirty flag of this checkout."""
    from mdgl_analysis.training.runs import git_info

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), **git_info()}


def run_case(case: Case, iterations: int, preset: str, device: str) -> dict[str, Any]:
    """One round of ``case`` in a fresh subprocess: the worker's object, or ``{"error": ...}``
    with the last line of its stderr."""
    cmd = [
        sys.executable,
        "-m",
        "mdgl_analysis.training.bench",
        case.rule,
        str(case.threads),
        str(iterations),
        preset,
        device,
        *case.overrides,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        return {"error": lines[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


ROUND_FIELDS = ("s_per_iter_median", "s_per_iter_min", "peak_rss_mb", "started_unix", "ended_unix")


def aggregate(
    case: Case, rounds: list[dict[str, Any]], order: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """One case over its rounds: the case's settings, then the median over rounds of each
    round's median (``s_per_iter_median``), the fastest iteration (``s_per_iter_min``), the
    largest peak RSS, each round's median and start time, and the worker's other fields (the
    median over rounds of a number, the first round's value otherwise)."""
    cfg = case.cfg
    out: dict[str, Any] = {
        "rule": case.rule,
        "threads": case.threads,
        "device": rounds[0]["device"],
        "core": cfg.run.core,
        "core_used": rounds[0].get("core_used"),
        "preset": args.preset,
        "overrides": list(case.overrides),
        "batch": cfg.train.batch,
        "n_steps": cfg.n_steps,
        "n_rec": cfg.network.n_rec,
        "iterations": args.iterations,
        "rounds": len(rounds),
        "s_per_iter_median": statistics.median(r["s_per_iter_median"] for r in rounds),
        "s_per_iter_min": min(r["s_per_iter_min"] for r in rounds),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
        "s_per_iter_rounds": [r["s_per_iter_median"] for r in rounds],
        "run_order": order,
        "started_unix": [r.get("started_unix") for r in rounds],
    }
    if case.axis is not None:
        out["axis"] = case.axis
        out["value"] = case.value
    for key, value in rounds[0].items():
        if key in out or key in ROUND_FIELDS:
            continue
        numbers = [r.get(key) for r in rounds]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            out[key] = statistics.median(numbers)
        else:
            out[key] = value
    return out


def exponent(s1: float, s2: float, v1: int, v2: int) -> float:
    """The local time exponent between values ``v1`` and ``v2`` of the scaled axis, timed at
    ``s1`` and ``s2`` seconds: ``log(s2/s1) / log(v2/v1)``."""
    return math.log(s2 / s1) / math.log(v2 / v1)


class Report:
    """The table (or JSON lines) on stdout, and the JSON lines in ``--out``'s file."""

    def __init__(self, args: argparse.Namespace, cases: list[Case], file: TextIO | None):
        self.args = args
        self.file = file
        self.axis = cases[0].axis
        self.done: dict[tuple[str, int, str], dict[str, Any]] = {}  # group -> last value's
        self.extra = machine()

    def header(self) -> None:
        if self.args.json:
            return
        axis = f"{AXES[self.axis]:>7}" if self.axis else ""
        tail = f"{'exponent':>10}" if self.axis else ""
        print(
            f"{'rule':<16}{'threads':>8}  {'core':<10}{axis}{'s/iter':>10}{'min':>10}"
            f"{'peak RSS MB':>13}{tail}  device",
            flush=True,
        )

    def _emit(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj)
        if self.args.json:
            print(line, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def failed(self, case: Case, error: str) -> None:
        self._emit(
            {
                "rule": case.rule,
                "threads": case.threads,
                "core": case.cfg.run.core,
                "overrides": list(case.overrides),
                **({"axis": case.axis, "value": case.value} if case.axis else {}),
                "error": error,
            }
        )
        self.done.pop(case.group, None)
        if not self.args.json:
            print(f"{case.rule:<16}{case.threads:>8}  failed: {error}", flush=True)

    def result(self, case: Case, res: dict[str, Any]) -> None:
        if case.axis is not None:
            prev = self.done.get(case.group)
            res["exponent"] = (
                exponent(
                    prev["s_per_iter_median"], res["s_per_iter_median"], prev["value"], case.value
                )
                if prev is not None
                else None
            )
            self.done[case.group] = res
        self._emit({**res, **self.extra})
        if self.args.json:
            return
        core = res["core_used"] or res["core"]
        axis = f"{case.value:>7}" if case.axis else ""
        tail = ""
        if case.axis:
            tail = f"{res['exponent']:>10.2f}" if res["exponent"] is not None else f"{'':>10}"
        print(
            f"{case.rule:<16}{case.threads:>8}  {core:<10}{axis}{res['s_per_iter_median']:>10.3f}"
            f"{res['s_per_iter_min']:>10.3f}{res['peak_rss_mb']:>13.0f}{tail}  {res['device']}",
            flush=True,
        )
        if case.rule in RECORDS:
            print(
                f"    plain step {res['plain_step_s']:.2f} s, recorded step "
                f"{res['recorded_step_s']:.2f} s (writing {res['record_write_s']:.2f} s); "
                f"{res['record_mb_logical']:.0f} MiB of data, "
                f"{res['record_mb_on_disk']:.0f} MiB on disk; "
                f"{res['write_mb_per_s']:.0f} MiB/s vs raw sequential write "
                f"{res['raw_write_mb_per_s']:.0f} MiB/s",
                flush=True,
            )


def run_benchmark(args: argparse.Namespace, cases: list[Case] | None = None) -> int:
    """Run ``cases`` (default: :func:`plan` of ``args``) ``args.rounds`` times, interleaved, and
    report each case once its last round is done. Returns 0, or 1 when a case failed."""
    cases = plan(args) if cases is None else cases
    runs: list[list[dict[str, Any]]] = [[] for _ in cases]
    orders: list[list[int]] = [[] for _ in cases]
    failed: set[int] = set()
    if args.out is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") if args.out is not None else contextlib.nullcontext() as file:
        report = Report(args, cases, file)
        report.header()
        seq = 0
        for rnd in range(args.rounds):
            last = rnd == args.rounds - 1
            for i, case in enumerate(cases):
                if i in failed:
                    continue
                res = run_case(case, args.iterations, args.preset, args.device)
                orders[i].append(seq)
                seq += 1
                if "error" in res:
                    failed.add(i)
                    report.failed(case, res["error"])
                elif last:
                    runs[i].append(res)
                    report.result(case, aggregate(case, runs[i], orders[i], args))
                else:
                    runs[i].append(res)
                    print(
                        f"round {rnd + 1}/{args.rounds}: {case.rule}, {case.threads} thread(s)"
                        + (f", {case.axis} = {case.value}" if case.axis else "")
                        + f": {res['s_per_iter_median']:.3f} s/iter",
                        file=sys.stderr,
                        flush=True,
                    )
    return 1 if failed else 0


if __name__ == "__main__":
    rule, threads, iterations, preset, device, *overrides = sys.argv[1:]
    started = time.time()
    result = worker(rule, int(threads), int(iterations), preset, overrides, device)
    result["started_unix"] = started
    result["ended_unix"] = time.time()
    print(json.dumps(result))
