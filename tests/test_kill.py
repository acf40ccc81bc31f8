"""SIGKILL at random moments over a recording run (issue 11): a run killed at least 20 times,
and resumed after each kill, ends with every record, checkpoint and metric of an uninterrupted
run, and every complete record seen after any kill equals the uninterrupted run's.

The kills fall in every phase of a run: while a process starts (imports; reading the run,
loading its checkpoint and cleaning up what the killed one left), during a forward and backward
pass, inside a record write (an ``iter_NNNNNN.h5.tmp`` is left), between a record's rename and
the checkpoint that follows it, and inside a checkpoint write. Run with ``-s`` to see how many
landed where.

A fresh interpreter spends about 3 s importing torch and torch._dynamo (which torch.optim pulls
in) before it touches a run folder, so most killed processes are forked from a "zygote" that has
imported them once: each child runs the ``mdgl`` command line (``cli.main``) exactly as
``python -m mdgl_analysis`` does and is killed as any process. The first ``train`` and about
one resume in ten are fresh interpreters, killed while they start; the last resume and the
reference are fresh interpreters too.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the blosc filter the records are written with
import numpy as np
import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.recording.schema import iteration_of

ITERATIONS = 30
CHECKPOINT_EVERY = 2
KILLS = 24  # kills of a live process aimed at
MIN_KILLS = 20  # the issue's: when the run completes before KILLS, at least these
SEED = 11  # of the kill moments: the test is reproducible up to the machine's timing
FRESH = 0.1  # the share of killed processes that are fresh interpreters (besides the first)
OVERRIDES = {  # the demo preset, made tiny: 16 cells, 180-step trials, every iteration recorded
    "network.n_regular": 8,
    "network.n_adaptive": 8,
    "task.n_cues": 3,
    "task.cue_ms": 20,
    "task.gap_ms": 10,
    "task.delay_ms": 50,
    "task.recall_ms": 50,
    "train.iterations": ITERATIONS,
    "train.batch": 4,
    "train.val_batch": 4,
    "train.val_every": 5,
    "train.compare_every": 3,
    "record.every": 1,
    "record.trials": "0-1",
    "record.quantities": "state,signals,credit,traces,eligibility",
    "record.chunk_mb": 0.01,  # several time chunks per variable: a write takes many steps
    "run.checkpoint_every": CHECKPOINT_EVERY,
    "run.device": "cpu",
}
# single-threaded numpy BLAS, so that the zygote holds no thread when it forks (torch starts
# its own pool lazily); the reference runs with the same environment
ENV = os.environ | {"OPENBLAS_NUM_THREADS": "1"}
TIMING_METRICS = {"record_s"}  # a wall time
# a record file's size: its HDF5 layout (not its content) varies by some bytes between two
# identical runs with the timing of the background writer thread, so compared to 0.1 %
LAYOUT_METRICS = {"record_mb"}
VOLATILE_ATTRS = {"created", "DIMENSION_LIST", "REFERENCE_LIST"}  # a time; object references

ZYGOTE = r"""
import json, os, sys, traceback
import torch, torch._dynamo
import mdgl_analysis.api, mdgl_analysis.recording.writer, mdgl_analysis.training.loop
from mdgl_analysis import cli

print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = ["mdgl", *argv]
            code = cli.main(argv)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}), flush=True)
"""


class Zygote:
    """A Python process that imports torch and mdgl_analysis once, then forks one child per
    command; a child runs ``cli.main(argv)`` with its output in a log file."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV
        )
        self.buffer = b""
        self.child: Forked | None = None

    def message(self, timeout: float | None = None) -> dict | None:
        """The zygote's next message; None when none comes within ``timeout`` seconds."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, f"the zygote ended with {self.proc.wait()}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, argv: list[str], log: Path) -> Forked:
        self.stop()
        self.proc.stdin.write((json.dumps([argv, str(log)]) + "\n").encode())
        self.proc.stdin.flush()
        self.child = Forked(self, self.message()["pid"])
        return self.child

    def stop(self) -> None:
        """Kill the current child if it still runs (a test that failed left it)."""
        if self.child is not None and self.child.poll() is None:
            os.kill(self.child.pid, signal.SIGKILL)
            self.child.wait()

    def close(self) -> None:
        self.stop()
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Forked:
    """A child of the zygote, with the part of Popen's interface that the test uses."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid, self.returncode = zygote, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            msg = self.zygote.message(timeout=0)
            if msg is not None:
                self.returncode = msg["exit"]
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.message()["exit"]
        return self.returncode


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    assert z.message(timeout=120) is not None, "the zygote did not start"
    yield z
    z.close()


def _config_file(tmp_path: Path, **more) -> Path:
    cfg = config_mod.PRESETS["demo"]
    for key, value in (OVERRIDES | more).items():
        cfg = config_mod.set_value(cfg, key, value)
    path = tmp_path / "cfg.toml"
    path.write_text(config_mod.dumps(config_mod.validate(cfg)))
    return path


def _train_argv(cfg_file: Path, out: Path) -> list[str]:
    return ["train", "--config", str(cfg_file), "--out", str(out), "--no-progress"]


def _resume_argv(out: Path) -> list[str]:
    return ["resume", str(out), "--no-progress"]


def _popen(argv: list[str], log: Path) -> subprocess.Popen:
    """``python -m mdgl_analysis ARGV`` in a fresh interpreter, its stderr into ``log``."""
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mdgl_analysis", *argv],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=ENV,
        )


def _resumable(out: Path) -> bool:
    return (out / "run.json").is_file() and any((out / "checkpoints").glob("ckpt_*.pt"))


def _records(out: Path) -> dict[int, Path]:
    return {iteration_of(f): f for f in sorted((out / "records").glob("iter_*.h5"))}


def _checkpoints(out: Path) -> dict[str, Path]:
    return {f.name: f for f in sorted((out / "checkpoints").glob("ckpt_*.pt"))}


def _latest_checkpoint(out: Path) -> int:
    names = sorted(_checkpoints(out))
    return int(names[-1][5:11]) if names else -1


def _training(out: Path, pid: int) -> bool:
    """Whether process ``pid`` trains the run: it holds a checkpoint and run.json names it
    (``resume`` writes its pid just before it trains on)."""
    if not _resumable(out):
        return False
    return json.loads((out / "run.json").read_text()).get("pid") == pid


def _phase(out: Path, pid: int, fresh: bool) -> str:
    """Where a kill landed, told from what the killed process left in its run folder."""
    if not out.exists():
        return "startup of `train`, before its run folder is complete"
    if not _training(out, pid):
        if fresh:
            return "startup of a fresh interpreter (imports, reading the run, cleaning up)"
        return "startup (reading the run, loading its checkpoint, cleaning up)"
    if list((out / "records").glob("*.tmp")):
        return "inside a record write"
    if list((out / "checkpoints").glob("*.tmp")):
        return "inside a checkpoint write"
    if list(out.glob("*.tmp")):
        return "inside a run.json or metrics.csv write"
    done = _latest_checkpoint(out)
    if done == ITERATIONS:
        return "final validation"
    newest = max(_records(out), default=-1)
    if newest >= done and (newest + 1) % CHECKPOINT_EVERY == 0:
        return "after a record's rename, before its checkpoint"
    return "forward/backward pass, validation or metrics"


def _attrs_equal(a: h5py.AttributeManager, b: h5py.AttributeManager, where: str) -> None:
    assert set(a) == set(b), where
    for key in set(a) - VOLATILE_ATTRS:
        va, vb = a[key], b[key]
        assert np.array_equal(np.asarray(va), np.asarray(vb)), f"{where}: attribute {key}"


def _same_record(a: Path, b: Path) -> None:
    """Every dataset of two record files equal (values and dtypes), and every attribute but the
    creation time and HDF5's object references."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b), a.name
        _attrs_equal(fa.attrs, fb.attrs, a.name)
        for name in names_a:
            da, db = fa[name], fb[name]
            _attrs_equal(da.attrs, db.attrs, f"{a.name}:{name}")
            if isinstance(da, h5py.Dataset):
                assert da.dtype == db.dtype and da.shape == db.shape, f"{a.name}:{name}"
                assert np.array_equal(da[()], db[()]), f"{a.name}:{name}"


def _same_state(a, b, where: str = "state") -> None:
    """Two checkpoint states equal: every tensor with torch.equal, everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _metric_rows(out: Path, names: set[str] | None = None) -> list[str]:
    """The lines of metrics.csv, without timings and record sizes (or only the metrics
    ``names``)."""
    lines = (out / "metrics.csv").read_text().splitlines()
    if names is not None:
        return [line for line in lines if line.split(",")[2] in names]
    return [line for line in lines if line.split(",")[2] not in TIMING_METRICS | LAYOUT_METRICS]


def _timing(proc: subprocess.Popen, out: Path) -> tuple[float, float]:
    """Seconds from the start of ``proc`` (a fresh ``train``) to its iteration-0 checkpoint, and
    per recorded iteration (from its first two)."""
    t0 = time.monotonic()
    start = None
    while proc.poll() is None:
        if start is None and (out / "checkpoints" / "ckpt_000000.pt").exists():
            start = time.monotonic() - t0
        if start is not None and len(_records(out)) >= 2:
            return start, (time.monotonic() - t0 - start) / 2
        time.sleep(0.005)
    raise AssertionError(f"the reference run ended with {proc.returncode} before its 2nd record")


# how a kill's moment is chosen, and how often: at a random moment of the start-up; at a random
# moment of the first iterations it trains; as soon as the record that one of the next
# checkpoints follows is renamed (the moment between the two, which a timer rarely hits); inside
# that checkpoint's write. How far a process may go is paced to spread the kills over the run.
MODES = {"startup": 0.25, "timed": 0.45, "renamed": 0.15, "checkpoint": 0.15}


class Killer:
    """Starts ``train`` or ``resume`` and SIGKILLs it at a random moment (see MODES)."""

    def __init__(self, zygote, out: Path, logs: Path, startup: float, per_iteration: float):
        self.zygote, self.out, self.logs = zygote, out, logs
        self.rng = random.Random(SEED)
        self.startup = {True: startup, False: 0.5}  # fresh / forked, until one is measured
        self.per_iteration = per_iteration
        self.attempts = 0

    def once(self, argv: list[str], fresh: bool, kills_left: int) -> str | None:
        """Where the kill landed, or None when the process ended before it."""
        out, rng = self.out, self.rng
        log = self.logs / f"attempt{self.attempts:02d}.log"
        self.attempts += 1
        proc = _popen(argv, log) if fresh else self.zygote.start(argv, log)
        t0 = time.monotonic()
        limit = t0 + 3 * self.startup[fresh] + 20 * self.per_iteration

        def wait(done, poll=0.002) -> None:
            while proc.poll() is None and time.monotonic() < limit and not done():
                time.sleep(poll)

        # a fresh interpreter is killed while it starts (its 3 s of imports are not worth
        # waiting for again), a forked one at any moment
        mode = "startup" if fresh else rng.choices(list(MODES), list(MODES.values()))[0]
        if mode == "startup":
            moment = t0 + rng.uniform(0.1, 1.0) * self.startup[fresh]
            wait(lambda: time.monotonic() >= moment)
            return self._kill(proc, argv, log, fresh)
        wait(lambda: _training(out, proc.pid), 0.005)
        if proc.poll() is None and not fresh:
            self.startup[False] = time.monotonic() - t0
        first = _latest_checkpoint(out)  # where it starts
        # iterations to checkpoint per kill, on average, that spread the kills over the run
        pace = max(1.0, (ITERATIONS - first) / (kills_left + 2))
        target = first + CHECKPOINT_EVERY * rng.randint(1, round(pace) + 1)
        if mode == "timed" or target > ITERATIONS:
            moment = time.monotonic() + rng.uniform(0.0, 2 * pace + 2) * self.per_iteration
            wait(lambda: time.monotonic() >= moment)
            return self._kill(proc, argv, log, fresh)
        record = out / "records" / f"iter_{target - 1:06d}.h5"
        wait(record.exists, 0.001)
        if mode == "checkpoint":
            tmp = out / "checkpoints" / f"ckpt_{target:06d}.pt.tmp"
            until = time.monotonic() + self.per_iteration
            wait(lambda: tmp.exists() or time.monotonic() > until, 0.0002)
        return self._kill(proc, argv, log, fresh)

    def _kill(self, proc, argv: list[str], log: Path, fresh: bool) -> str | None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            return _phase(self.out, proc.pid, fresh)
        assert proc.returncode == 0, f"mdgl {' '.join(argv)} failed:\n{log.read_text()[-3000:]}"
        return None


@pytest.mark.slow
def test_recording_run_killed_20_times_at_random_moments_equals_an_uninterrupted_run(
    tmp_path, zygote
):
    wall = time.monotonic()
    cfg_file = _config_file(tmp_path)
    # the same folder name: records carry the run's id (its folder's name)
    ref, out = tmp_path / "reference" / "run", tmp_path / "killed" / "run"
    ref_proc = _popen(_train_argv(cfg_file, ref), tmp_path / "reference.log")
    try:
        # the reference's timing sets the kill moments; it trains on meanwhile
        startup, per_iteration = _timing(ref_proc, ref)
        killer = Killer(zygote, out, tmp_path, startup, per_iteration)
        snapshots = tmp_path / "seen"  # each complete record after each kill, by hard link
        snapshots.mkdir()
        phases: Counter[str] = Counter()
        reached = []  # the run's latest checkpoint after each kill
        missed = 0
        while phases.total() < KILLS and _latest_checkpoint(out) < ITERATIONS:
            assert killer.attempts < 2 * KILLS, f"{missed} processes ended before their kill"
            # a run folder appears complete (renamed into place with its first checkpoint)
            assert not out.exists() or _resumable(out)
            argv = _resume_argv(out) if out.exists() else _train_argv(cfg_file, out)
            fresh = killer.attempts == 0 or killer.rng.random() < FRESH
            phase = killer.once(argv, fresh, KILLS - phases.total())
            if phase is None:
                missed += 1
                continue
            phases[phase] += 1
            reached.append(_latest_checkpoint(out))
            if out.exists():
                assert len(list((out / "records").glob("*.tmp"))) <= 1
                for iteration, record in _records(out).items():
                    os.link(record, snapshots / f"{killer.attempts:03d}_{iteration:06d}.h5")
        assert phases.total() >= MIN_KILLS, f"the run completed after {phases.total()} kills"
        killing = time.monotonic() - wall
        final = _popen(_resume_argv(out), tmp_path / "final.log")
        assert final.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()[-3000:]
        assert ref_proc.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        if ref_proc.poll() is None:
            ref_proc.kill()
            ref_proc.wait()
    finishing = time.monotonic() - wall - killing

    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "completed" and meta["iteration"] == ITERATIONS
    assert not list(out.rglob("*.tmp"))
    ref_records, records = _records(ref), _records(out)
    assert sorted(records) == sorted(ref_records) == list(range(ITERATIONS))
    for iteration, record in records.items():
        _same_record(record, ref_records[iteration])
    seen = {}  # one of each file (inode) seen after a kill: records a resume replaced too
    for snap in sorted(snapshots.iterdir()):
        seen.setdefault(snap.stat().st_ino, snap)
    for snap in seen.values():
        _same_record(snap, ref_records[int(snap.stem.split("_")[1])])
    ref_ckpts, ckpts = _checkpoints(ref), _checkpoints(out)
    assert sorted(ckpts) == sorted(ref_ckpts)
    assert max(ckpts) == f"ckpt_{ITERATIONS:06d}.pt"
    states = {name: torch.load(path, weights_only=True) for name, path in ckpts.items()}
    for name, state in states.items():
        _same_state(state, torch.load(ref_ckpts[name], weights_only=True), name)
    assert _metric_rows(out) == _metric_rows(ref)
    sizes, ref_sizes = _metric_rows(out, LAYOUT_METRICS), _metric_rows(ref, LAYOUT_METRICS)
    assert [line.rsplit(",", 1)[0] for line in sizes] == [
        line.rsplit(",", 1)[0] for line in ref_sizes
    ]
    np.testing.assert_allclose(
        [float(line.rsplit(",", 1)[1]) for line in sizes],
        [float(line.rsplit(",", 1)[1]) for line in ref_sizes],
        rtol=1e-3,
    )

    print(
        f"\n{phases.total()} kills of a live process in {killer.attempts} starts ({missed} "
        f"ended before their kill); {len(meta['resumed'])} resumes got as far as training; "
        f"{len(seen)} distinct records checked after kills; {time.monotonic() - wall:.0f} s "
        f"(killing {killing:.0f} s, the last resume {finishing:.0f} s)"
    )
    for phase, count in phases.most_common():
        print(f"  {count:3d}  {phase}")
    print(f"  the run's latest checkpoint after each kill: {reached}")


@pytest.mark.slow
def test_train_killed_while_creating_its_run_folder_can_be_recovered(tmp_path, zygote):
    cfg_file = _config_file(tmp_path, **{"train.iterations": 2, "record.every": 0})
    out = tmp_path / "run"
    proc = zygote.start(_train_argv(cfg_file, out), tmp_path / "train.log")
    # the folder is built under a temporary name (metrics.csv comes just before run.json, whose
    # provenance takes a while) and renamed when complete
    building = out.with_name(f".{out.name}.creating")
    while proc.poll() is None and not (building / "metrics.csv").exists():
        time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not out.exists()  # a killed creation leaves no run folder behind ...
    argv = _train_argv(cfg_file, out)  # ... so the same train command simply runs again
    done = zygote.start(argv, tmp_path / "again.log")
    assert done.wait() == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
