"""What a run will cost before it starts: seconds, memory, record sizes (``mdgl train --dry-run``).

:func:`estimate` puts together

* **seconds**: one real training iteration of the configured network, batch and rule (pass 1, the
  rule's gradients, the constrained Adam step), timed on a trial shortened to
  ``min(T, MEASURED_STEPS)`` steps after one warm-up and scaled linearly by the trial length ``T``
  (sampling the task's batch is timed at full length); likewise one validation pass, the
  same-batch comparison rules of ``train.compare_every`` and, on a recorded iteration, the full
  forward pass and every recorded rule's gradient, plus the writing of the record at a measured
  rate per codec (:data:`RECORD_MIB_PER_S`). The schedule of the config says how often each runs.
* **memory**: :func:`mdgl_analysis.training.memory.estimate_bytes` (the estimate that refuses
  sizes that cannot fit) on top of the memory this process already holds (the interpreter, torch).
* **records**: every variable of the record schema (:mod:`mdgl_analysis.recording.schema`) with
  the dims and dtypes the writer gives it, for the resolved schedule (quantities, trials, time
  window, layout, dtype, rules); the synapse lists of the ``list`` layout are counted exactly from
  the masks of the run's seed. On disk: the data times a typical compression ratio of the codec
  (:data:`DISK_RATIO`, measured; the true ratio depends on the activity, so it is approximate).

The record size is a pure function of the config and two counts (:func:`record_size`); only the
seconds need the machine.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mdgl_analysis import runtime
from mdgl_analysis.config import Config, compare_rules, record_iterations, task_of

MEASURED_STEPS = 200
"""Steps of the shortened trial that one iteration is timed on (the whole trial if shorter)."""

RECORD_MIB_PER_S = {"lz4": 235.0, "zstd": 235.0, "gzip": 100.0, "none": 235.0}
"""Uncompressed record data written per second, per ``record.codec`` (the forward trace
recursion, blosc in a background thread, checksums, the disk): lz4 measured at paper scale with
every quantity, the synapse list and all six rules on this project's 2-core machines (README,
recording table); zstd wrote as fast as lz4 and gzip 0.42 x as fast in the same paper-scale
record with the default quantities (12.2 s and 34.1 s against lz4's 14.4 s, on a loaded
machine); without compression the disk sets the pace, taken as lz4's."""

RECORD_OVERHEAD_S = 0.5
"""Seconds a record costs whatever its size (creating the file and its 55 variables, the
coordinates, checksums, renaming): a demo-preset record (64 MiB) took 1.8 s where the rate alone
gives 0.3 s, on a machine running 2.3 x slower than usual at the time."""

DISK_RATIO = {"lz4": 0.57, "zstd": 0.49, "gzip": 0.47, "none": 1.0}
"""Typical size on disk over uncompressed data, per ``record.codec``, measured on paper-scale
records of the evidence task (synapse list, float32, seed 1): lz4 0.53 with the default
quantities (667 of 1254 MiB) and 0.62 with every quantity (1570 of 2551 MiB; dense layout 0.56);
zstd 0.46 and gzip 0.44 with the default quantities, raised here by lz4's factor between the
two. Spikes compress far better than traces, so a record of other quantities or of another task
differs: approximate."""


@dataclass(frozen=True)
class RecordSize:
    """One record (a recorded iteration) and the run's records.

    Attributes:
        data_bytes: uncompressed bytes of every variable of one record (the sum over its
            datasets of elements x item size).
        disk_bytes: expected size of one record file (``data_bytes`` x the codec's ratio).
        iterations: recorded iterations of the run (the record schedule over
            ``train.iterations``).
        synapses_rec, synapses_in: synapses of the ``synapse_rec`` and ``synapse_in`` dims.
        variables: variable name -> uncompressed bytes.
    """

    data_bytes: int
    disk_bytes: int
    ratio: float
    codec: str
    iterations: int
    synapses_rec: int
    synapses_in: int
    variables: tuple[tuple[str, int], ...]

    @property
    def total_data_bytes(self) -> int:
        return self.data_bytes * self.iterations

    @property
    def total_disk_bytes(self) -> int:
        return self.disk_bytes * self.iterations


@dataclass(frozen=True)
class Timing:
    """Measured seconds (full trial length) of the parts of a run, on this machine."""

    iteration: float  # one plain training iteration (sampling, pass 1, rule, Adam step)
    validation: float  # one validation pass
    compare: float  # the comparison rules of one comparison iteration (0 when off)
    record_compute: float  # the full forward pass and recorded rules' gradients, on top
    build: float  # building the network and optimiser
    measured_steps: int  # length of the shortened trial that was timed
    n_steps: int  # the trial's length


@dataclass(frozen=True)
class Estimate:
    """What training a config costs (:func:`estimate`)."""

    timing: Timing
    iterations: int
    validations: int
    comparisons: int
    record: RecordSize | None
    record_seconds: float  # per recorded iteration (computing and writing)
    startup_seconds: float  # starting the process (imports) and building the network
    total_seconds: float
    memory_bytes: int  # memory.py's upper estimate of what training allocates
    baseline_bytes: int  # what this process held before (interpreter, torch)
    device: str

    @property
    def peak_bytes(self) -> int:
        return self.baseline_bytes + self.memory_bytes


# ------------------------------------------------------------------------------------------------
# schedules


def recorded_iterations(cfg: Config) -> list[int]:
    """The iterations ``k < train.iterations`` whose record the run writes."""
    every, explicit = record_iterations(cfg)
    n = cfg.train.iterations
    out = {k for k in explicit if k < n}
    if every > 0:
        out.update(range(0, n, every))
    return sorted(out)


def validations(cfg: Config) -> int:
    """Validation passes of a run: every ``val_every`` iterations, and once on the final weights."""
    return math.ceil(cfg.train.iterations / cfg.train.val_every) + 1


def comparisons(cfg: Config) -> int:
    """Iterations on which the comparison rules run (``compare_every``; 0 when off)."""
    every = cfg.train.compare_every
    return math.ceil(cfg.train.iterations / every) if every and compare_rules(cfg) else 0


# ------------------------------------------------------------------------------------------------
# record size


def synapse_counts(cfg: Config) -> tuple[int, int]:
    """``(recurrent, input)`` synapses a record lists: every pair (dense layout), or those of the
    initial masks of the run's seed (built here exactly as the run builds them; cheap)."""
    from mdgl_analysis.network.connectivity import initial_connectivity
    from mdgl_analysis.runtime import stream_seed

    net = cfg.sized_network
    if cfg.record.layout == "dense":
        return net.n_rec * (net.n_rec - 1), net.n_rec * net.n_in
    conn = initial_connectivity(
        net, torch.Generator().manual_seed(stream_seed(cfg.run.seed, "init"))
    )
    rec = conn.theta_rec > 0
    rec.fill_diagonal_(False)
    return int(rec.sum()), int((conn.theta_in > 0).sum())


def inputs_are_counts(cfg: Config) -> bool:
    """Whether a batch of the task holds counts (stored as uint8), from one probe batch."""
    from mdgl_analysis.recording.writer import Recorder
    from mdgl_analysis.runtime import stream_seed
    from mdgl_analysis.tasks import draw
    from mdgl_analysis.training.loop import dtype_of

    gen = torch.Generator().manual_seed(stream_seed(cfg.run.seed, "probe"))
    x = draw(task_of(cfg), cfg.train.batch, gen).x.to(dtype_of(cfg))
    return Recorder.x_kind(x) == "count"


def record_size(
    cfg: Config, synapses_rec: int, synapses_in: int, x_counts: bool = True
) -> RecordSize:
    """The size of one record of ``cfg`` and of the run's records (pure): every coordinate and
    variable the writer creates (:func:`mdgl_analysis.recording.writer.variable_bytes`, which the
    writer's own free-space check uses too), and on disk at the codec's typical ratio.

    Args:
        synapses_rec, synapses_in: lengths of the ``synapse_rec`` and ``synapse_in`` dims.
    """
    from mdgl_analysis.recording.writer import variable_bytes

    rec = cfg.record
    variables = variable_bytes(cfg, synapses_rec, synapses_in, x_counts)
    data = sum(b for _, b in variables)
    ratio = DISK_RATIO[rec.codec]
    return RecordSize(
        data_bytes=data,
        disk_bytes=int(data * ratio),
        ratio=ratio,
        codec=rec.codec,
        iterations=len(recorded_iterations(cfg)),
        synapses_rec=synapses_rec,
        synapses_in=synapses_in,
        variables=variables,
    )


def record_of(cfg: Config) -> RecordSize | None:
    """:func:`record_size` of ``cfg`` with its exact synapse counts; None when nothing is
    recorded."""
    if not recorded_iterations(cfg):
        return None
    return record_size(cfg, *synapse_counts(cfg), x_counts=inputs_are_counts(cfg))


# ------------------------------------------------------------------------------------------------
# seconds


def _short(batch, steps: int):
    """The first ``steps`` steps of a batch; a mask with no step there gets its last step."""
    from mdgl_analysis.tasks import TaskBatch

    mask = batch.mask[:steps]
    if not bool(mask.any()):
        mask = mask.clone()
        mask[-1] = True
    return TaskBatch(batch.x[:steps].contiguous(), batch.target[:steps].contiguous(), mask)


def _new_torch_cache() -> Path | None:
    """The compiler cache folder that torch creates (empty) when ``torch._dynamo`` is first
    imported, which every ``torch.optim`` optimiser does: its path when that import is still to
    come in this process and the folder does not exist yet, so that a dry run can leave nothing
    behind; else None."""
    import getpass
    import os
    import re
    import sys
    import tempfile

    if "torch._dynamo" in sys.modules:
        return None
    # torch's default (torch/_inductor/runtime/cache_dir_utils.py, which cannot be imported
    # without creating the folder); should torch change it, the folder is merely left there
    try:
        user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
    except (KeyError, ModuleNotFoundError, OSError):
        return None
    default = Path(tempfile.gettempdir()) / f"torchinductor_{user}"
    path = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default).absolute()
    return None if path.exists() else path


def measure(cfg: Config, steps: int = MEASURED_STEPS) -> Timing:
    """Time the parts of a run of ``cfg`` on this machine (its device and ``run.threads``).

    Builds the run's network and optimiser (as :class:`~mdgl_analysis.training.loop.Trainer`
    does, memory check included), then times on a trial shortened to ``min(T, steps)`` steps,
    after one warm-up: a training iteration (pass 1, the rule, the constrained Adam step), a
    validation pass, the comparison rules and a recorded iteration's extra computation; each is
    scaled by ``T / steps``. Sampling a batch is timed at full length. Writes nothing.
    """
    from mdgl_analysis.network.model import forward
    from mdgl_analysis.training.compare import same_batch
    from mdgl_analysis.training.loop import Trainer
    from mdgl_analysis.training.optim import apply_update

    runtime.configure(cfg.run.threads)
    device = runtime.resolve_device(cfg.run.device)
    start = time.perf_counter()
    created = _new_torch_cache()
    trainer = Trainer(cfg, device)
    build = time.perf_counter() - start
    if created is not None and created.is_dir() and not any(created.iterdir()):
        created.rmdir()  # torch made it, empty, when the optimiser imported torch._dynamo
    train = cfg.train
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n_steps = task_of(cfg).n_steps
    steps = max(1, min(steps, n_steps))
    scale = n_steps / steps

    def timed(fn, repeat: int = 1) -> float:
        fn()  # warm-up: first-touch allocations, lazy initialisation
        sync()
        best = math.inf
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        return best

    sample = timed(lambda: trainer.batch("task", train.batch))
    short = _short(trainer.batch("task", train.batch), steps)
    state = {}

    def step() -> None:
        snap = trainer.net.snapshot()
        fwd = forward(snap, short, trainer.loss, lean=True)
        grads = trainer.rule(snap, fwd)
        trainer._rows("train", fwd)
        apply_update(trainer.net, trainer.opt, grads, train, trainer.gens["rewire"])
        state.update(snap=snap, fwd=fwd, grads=grads)

    iteration = sample + scale * timed(step, repeat=3)
    known = {train.rule: state["grads"]}
    compare = 0.0
    if comparisons(cfg):
        rules = compare_rules(cfg)
        compare = scale * timed(lambda: same_batch(state["snap"], state["fwd"], rules, known))
    val_sample = (
        sample
        if train.val_batch == train.batch
        else timed(lambda: trainer.batch("val", train.val_batch))
    )
    val_short = _short(trainer.batch("val", train.val_batch), steps)

    def validate() -> None:
        trainer._rows("val", forward(trainer.net.snapshot(), val_short, trainer.loss, lean=True))

    validation = val_sample + scale * timed(validate, repeat=2)
    record_compute = 0.0
    if recorded_iterations(cfg):
        from mdgl_analysis.rules import record_rules

        rules = record_rules(cfg)

        def recorded() -> None:
            snap = trainer.net.snapshot()
            fwd = forward(snap, short, trainer.loss, lean=False)
            same_batch(snap, fwd, rules, {train.rule: trainer.rule(snap, fwd)})

        def plain() -> None:
            snap = trainer.net.snapshot()
            trainer.rule(snap, forward(snap, short, trainer.loss, lean=True))

        record_compute = max(0.0, scale * (timed(recorded) - timed(plain)))
    return Timing(iteration, validation, compare, record_compute, build, steps, n_steps)


# ------------------------------------------------------------------------------------------------
# the estimate


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def process_age() -> float:
    """Seconds since this process started (its imports, for a command line just started)."""
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())


def combine(
    cfg: Config,
    timing: Timing,
    record: RecordSize | None,
    memory_bytes: int,
    baseline: int,
    device: str = "cpu",
    startup: float = 0.0,
) -> Estimate:
    """The :class:`Estimate` of ``cfg`` from measured parts (pure): every part times how often
    the schedule runs it, a recorded iteration costing its extra computation,
    :data:`RECORD_OVERHEAD_S` and the writing of its uncompressed data at
    :data:`RECORD_MIB_PER_S`; ``startup`` (the process's imports) and building the network come
    first."""
    n = cfg.train.iterations
    n_val, n_cmp = validations(cfg), comparisons(cfg)
    per_record = 0.0
    if record is not None:
        rate = RECORD_MIB_PER_S[record.codec] * 2**20
        per_record = timing.record_compute + RECORD_OVERHEAD_S + record.data_bytes / rate
    total = (
        startup
        + timing.build
        + n * timing.iteration
        + n_val * timing.validation
        + n_cmp * timing.compare
        + (record.iterations * per_record if record is not None else 0.0)
    )
    return Estimate(
        timing=timing,
        iterations=n,
        validations=n_val,
        comparisons=n_cmp,
        record=record,
        record_seconds=per_record,
        startup_seconds=startup + timing.build,
        total_seconds=total,
        memory_bytes=memory_bytes,
        baseline_bytes=baseline,
        device=device,
    )


def estimate(cfg: Config, steps: int = MEASURED_STEPS, startup: float = 0.0) -> Estimate:
    """Seconds, memory and record sizes of training ``cfg`` here; creates no file.

    ``startup``: seconds a new process takes to start (imports) before it builds the network;
    the command line passes its own.

    Raises what training would raise for a config that cannot run (ConfigError for sizes that
    cannot fit in memory, TaskError for a broken task), before anything is timed.
    """
    from mdgl_analysis.training.memory import estimate_bytes

    baseline = _rss()
    device = runtime.resolve_device(cfg.run.device)
    memory_bytes = estimate_bytes(cfg, device)
    timing = measure(cfg, steps)
    return combine(cfg, timing, record_of(cfg), memory_bytes, baseline, str(device), startup)


# ------------------------------------------------------------------------------------------------
# what the command line prints


def mib(value: float) -> str:
    """Bytes in MiB (or GiB above 10 GiB), as the README's tables write them."""
    if value >= 10 * 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.1f} MiB"


def duration(seconds: float) -> str:
    """``2 h 05 min``, ``3 min 20 s`` or ``4.2 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(round(seconds)) // 60
    if minutes < 60:
        return f"{minutes} min {int(round(seconds)) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def free_space(folder: str | Path) -> int:
    """Free bytes on the filesystem that would hold ``folder`` (its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def record_lines(record: RecordSize, folder: str | Path) -> list[str]:
    """The record part of an estimate: per recorded iteration, in total, the disk's free space."""
    free = free_space(folder)
    lines = [
        f"records:   {record.iterations} recorded iteration(s); each {mib(record.data_bytes)} of "
        f"data, about {mib(record.disk_bytes)} on disk ({record.codec}, ratio ~{record.ratio:.2f}"
        f"; {record.synapses_rec} + {record.synapses_in} synapses)",
        f"           in total {mib(record.total_data_bytes)} of data, about "
        f"{mib(record.total_disk_bytes)} on disk; {mib(free)} free there",
    ]
    if record.total_disk_bytes > free:
        lines.append("           warning: the records will not fit the free disk space")
    return lines


def lines_of(est: Estimate, folder: str | Path) -> list[str]:
    """The estimate as the lines ``mdgl train --dry-run`` prints."""
    t = est.timing
    how = (
        f"timed on {t.measured_steps} of {t.n_steps} steps, scaled by the trial length"
        if t.measured_steps < t.n_steps
        else f"timed on the whole trial of {t.n_steps} steps"
    )
    lines = [
        f"seconds:   {t.iteration:.3f} s per training iteration on {est.device} ({how})",
        f"           + {t.validation:.3f} s per validation ({est.validations})"
        + (f", {t.compare:.3f} s per comparison ({est.comparisons})" if est.comparisons else "")
        + (
            f", {est.record_seconds:.2f} s per recorded iteration ({est.record.iterations})"
            if est.record is not None
            else ""
        ),
        f"memory:    peak about {mib(est.peak_bytes)} for the process: "
        f"{mib(est.baseline_bytes)} held now + at most {mib(est.memory_bytes)} for training "
        "(training/memory.py's upper estimate)",
    ]
    if est.record is not None:
        lines += record_lines(est.record, folder)
    else:
        lines.append("records:   none (record.every = 0, record.iterations empty)")
    lines.append(
        f"total:     about {duration(est.total_seconds)} of wall-clock for "
        f"{est.iterations} iterations (start-up {est.startup_seconds:.1f} s included)"
    )
    return lines


__all__ = [
    "Estimate",
    "RecordSize",
    "Timing",
    "combine",
    "estimate",
    "lines_of",
    "measure",
    "record_lines",
    "record_of",
    "record_size",
    "recorded_iterations",
]
