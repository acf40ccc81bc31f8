"""The ``mdgl`` command line: train, resume, info, verify, export, analyze, figures, sweep, bench,
presets.

Bad input (unknown rule, preset or key, out-of-range values, missing config file, existing output
folder, sizes that cannot fit in memory, a damaged run folder) exits with status 2 and one line on
stderr, before anything is created or changed.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

from mdgl_analysis import config as config_mod
from mdgl_analysis.api import RunError
from mdgl_analysis.config import ConfigError
from mdgl_analysis.tasks import TaskError
from mdgl_analysis.training.loop import ResumeError, TrainingError
from mdgl_analysis.training.runs import (
    MANIFEST,
    RunFolder,
    RunFolderError,
    blocking_file,
    command_line,
    pid_alive,
)

EXIT_USAGE = 2
DRY_RUN_HELP = (
    "print the resolved config and what the run would cost (seconds per iteration, measured "
    "here; peak memory; record sizes; total wall-clock) and create nothing"
)
EXIT_OF_STATUS = {"completed": 0, "interrupted": 130, "diverged": 1}
TASK_HELP = (
    "the task (task.name): evidence, pattern, neurogym:ENV or FILE.py:CLASS; its parameters "
    "with --set task.NAME=VALUE"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other bad-input message
        command = " ".join(self.prog.split()[1:2])
        hint = f"mdgl {command} --help" if command else "mdgl --help"
        self.exit(EXIT_USAGE, f"mdgl: error: {message} (see {hint})\n")


def build_parser() -> argparse.ArgumentParser:
    from mdgl_analysis import __version__
    from mdgl_analysis.rules import RULES

    parser = _Parser(
        prog="mdgl",
        description="Train recurrent spiking networks with BPTT, e-prop and MDGL, record full "
        "traces, verify and analyse them, draw the figures.",
    )
    parser.add_argument("--version", action="version", version=f"mdgl-analysis {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a network into a new run folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--config", metavar="FILE", help="a TOML config file, e.g. an edited `mdgl presets NAME`"
    )
    src.add_argument(
        "--preset",
        metavar="NAME",
        help=f"one of {', '.join(config_mod.PRESETS)} (default paper; `mdgl presets` says each)",
    )
    p.add_argument("--task", metavar="NAME", help=TASK_HELP)
    p.add_argument(
        "--rule", help=f"learning rule (train.rule): {', '.join(RULES)} or FILE.py:FUNCTION"
    )
    p.add_argument("--seed", help="random seed (run.seed)")
    p.add_argument("--iterations", help="training iterations (train.iterations)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set network.n_adaptive=30 (repeatable)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="run folder to create (default runs/<time>-<rule>-s<seed>)"
    )
    p.add_argument("--device", help="auto, cpu or cuda (run.device)")
    p.add_argument("--record-every", metavar="K", help="record every K-th iteration (record.every)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)

    p = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    p.add_argument("run", metavar="RUN_DIR", help="the run folder to continue")
    p.add_argument("--iterations", type=int, help="new total number of iterations")
    p.add_argument(
        "--task",
        metavar="FILE.py:CLASS",
        help="the run's task file, named to trust it (runs of a task in a user's file only)",
    )
    p.add_argument(
        "--rule",
        metavar="FILE.py:FUNCTION",
        action="append",
        default=[],
        help="a rule of the run from a user's file, named to trust it (repeat for each)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("info", help="describe a run folder")
    p.add_argument("run", metavar="RUN_DIR", nargs="?", help="the run folder to describe")
    p.add_argument(
        "--hdf5-plugin-path",
        action="store_true",
        help="print the folder of the HDF5 filter plugins that record files need (blosc): "
        "set HDF5_PLUGIN_PATH to it for h5dump, ncdump, HDFView or h5py without hdf5plugin",
    )

    p = sub.add_parser("verify", help="check recorded gradients from the record files alone")
    p.add_argument("run", metavar="RUN_OR_FILE", help="a run folder, or one record file")
    p.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest relative error allowed (1e-5)"
    )

    p = sub.add_parser(
        "export",
        help="a copy of a run whose records any HDF5/netCDF tool reads (no plugin), or NWB",
        description="--format hdf5 (default): write DIR, a copy of the run folder RUN in which "
        "every record is rewritten with --codec gzip (deflate level 1 + shuffle, HDF5's own "
        "filter) or none; values, dimensions, coordinates and attributes are kept exactly, the "
        "manifest gets the new records' checksums, and `mdgl verify DIR` checks the copy. RUN "
        "may also be one record file: --out is then the new record file. --format nwb: write "
        "the recorded trials of RUN (a run folder or a record file) as one NWB file FILE.nwb "
        "(spikes as units, voltages, thresholds and inputs as time series, trials end to end; "
        "needs the extra: pip install 'mdgl-analysis[nwb]'). --out must not exist; it appears "
        "only when complete, and RUN is never changed.",
    )
    p.add_argument("run", metavar="RUN_OR_FILE", help="a run folder, or one record file")
    p.add_argument(
        "--format",
        choices=["hdf5", "nwb"],
        default="hdf5",
        help="hdf5: a portable copy (default); nwb: one Neurodata Without Borders file",
    )
    p.add_argument(
        "--codec",
        choices=["gzip", "none"],
        default="gzip",
        help="compression of the copy's records (and of the NWB file's data): gzip (default) "
        "or none; both need no HDF5 plugin",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="the new folder (a run), new record file (a record) or new FILE.nwb (--format nwb)",
    )

    p = sub.add_parser("analyze", help="gradient alignment of recorded runs with BPTT")
    p.add_argument("what", choices=["alignment"], help="the analysis")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or folders holding runs)")
    p.add_argument(
        "--by",
        choices=["iteration", "block", "time"],
        default="iteration",
        help="per weight matrix and iteration, per cell-type block, or per time window",
    )
    p.add_argument("--window-ms", type=float, default=100.0, help="time window for --by time")
    p.add_argument(
        "--task-mb",
        type=float,
        default=None,
        help="memory budget of one analysis task, MiB (default 128): --by time reads at most "
        "this much per task whatever the number of synapses",
    )
    p.add_argument("--out", metavar="FILE", help="write the tidy result (.csv or .nc)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler")
    p.add_argument("--workers", type=int, help="a local dask cluster of N worker processes")
    p.add_argument("--memory-limit", default=None, help="per local worker, e.g. 1GB")

    p = sub.add_parser(
        "figures", help="draw every figure (mdgl_analysis.analysis.figures) of runs into DIR"
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or folders holding runs)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNG and PDF files go")

    p = sub.add_parser("sweep", help="train every (rule, seed) of a config, resumable")
    p.add_argument("config", metavar="CONFIG", help="a TOML config file or a preset name")
    p.add_argument("--task", metavar="NAME", help=TASK_HELP)
    p.add_argument(
        "--rules", default="bptt,eprop,mdgl", help=f"comma-separated, of {', '.join(RULES)}"
    )
    p.add_argument("--seeds", default="1-5", help="A-B or a,b,c")
    p.add_argument("--iterations", help="training iterations of every run")
    p.add_argument("--record-every", metavar="K", help="record every K-th iteration")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as for mdgl train"
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel on this machine")
    p.add_argument("--scheduler", metavar="ADDRESS", help="submit runs to a dask cluster")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default runs/sweep-<config>)")
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP + " (per rule)")

    p = sub.add_parser("bench", help="seconds per iteration and peak RSS of each rule")
    p.add_argument(
        "--rules",
        default="bptt,bptt_autograd",
        help=f"comma-separated, of the rules ({', '.join(RULES)}), bptt_autograd (the "
        "autograd reference), traces_list, traces_dense (the forward trace iterator) and "
        "record_list, record_dense (one recorded iteration with every quantity)",
    )
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per rule")
    p.add_argument("--preset", default="paper", metavar="NAME", help="the preset to time (paper)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as for mdgl train"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="R",
        help="run the whole list of cases R times, interleaved (fresh process each); report "
        "the median over rounds of each round's median",
    )
    p.add_argument(
        "--scaling",
        metavar="AXIS=V1,V2,...",
        help="time every rule at every value of one axis, with the time exponent between "
        "consecutive values: n=100,200,400 (network size, n_regular = n_adaptive = N/2), "
        "t=500,1000,2000 (trial steps) or b=16,32,64 (batch)",
    )
    p.add_argument(
        "--cores",
        metavar="CORE,...",
        help="time each case on each of these run.core values, interleaved, e.g. torch,numba "
        f"(of {', '.join(config_mod.CORES)}; default: the config's)",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object per case and line, not the table"
    )
    p.add_argument("--out", metavar="FILE.jsonl", help="also write the JSON lines to this file")

    p = sub.add_parser(
        "presets", help="list the presets, or print one resolved as TOML (to edit a copy)"
    )
    p.add_argument(
        "name",
        metavar="NAME",
        nargs="?",
        help=f"the preset to print: {', '.join(config_mod.PRESETS)}",
    )
    return parser


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"mdgl: error: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------------------------
# damaged run folders: info, resume, analyze and figures name the file and what is wrong with it,
# in one line, before reading (or changing) anything else


def _check_config_text(run: RunFolder) -> None:
    """The run's config.toml parses as TOML (analyses read it as data)."""
    import tomllib

    path = str(run.config_path)
    try:
        tomllib.loads(run.config_path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path!r} is missing: a run folder keeps its config there") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path!r} is not valid TOML: {err}") from None
    except OSError as err:
        raise RunFolderError(f"{path!r} cannot be read: {err.strerror or err}") from None


def _check_records(run: Path) -> None:
    """Every record file of the run opens as HDF5."""
    import h5py

    from mdgl_analysis.recording.readers import record_files
    from mdgl_analysis.tasks.base import one_line

    for path in record_files(run):
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as err:
            raise RunFolderError(
                f"record {str(path)!r} is not a readable HDF5 file ({one_line(err)}); "
                f"`mdgl verify {run}` checks the run's files"
            ) from None


def _run_folders(roots: list[str]) -> list[Path]:
    """The run folders given, or under the folders given; RunFolderError for a path that does
    not exist."""
    from mdgl_analysis.recording.readers import run_folders

    for text in roots:
        if not Path(text).exists():
            raise RunFolderError(
                f"{text!r} does not exist: give run folders or folders holding run folders"
            )
    return run_folders(roots)


def _check_memory(cfg: config_mod.Config, runs: int = 1) -> None:
    """Refuse a config whose runs cannot fit this machine's memory (before any folder exists)."""
    import torch

    from mdgl_analysis import runtime
    from mdgl_analysis.training.memory import check_memory

    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA device is available; use auto or cpu")
    check_memory(cfg, runtime.resolve_device(cfg.run.device), runs=runs)


def cmd_train(args: argparse.Namespace) -> int:
    from mdgl_analysis import api

    if args.config is not None and args.preset is not None:
        return _fail("give either --config FILE or --preset NAME, not both")
    if args.out is not None and args.out.strip() == "":
        return _fail("--out '' is not allowed: the path of a new run folder")
    # --config is a file, whatever its name ends with ("" and "x" too): read it as one here
    source = (
        config_mod.load(args.config, resolve_task=False) if args.config is not None else args.preset
    )
    options = {
        "task": args.task,
        "rule": args.rule,
        "seed": args.seed,
        "iterations": args.iterations,
        "record_every": args.record_every,
        "device": args.device,
        "set": args.set,
    }
    if args.dry_run:
        return _dry_run(api.configure(source, **options), args.out)
    run = api.train(
        source, out=args.out, progress=not args.no_progress, command=command_line(), **options
    )
    _report(run.folder, run.status)
    return EXIT_OF_STATUS.get(run.status, 1)


def _dry_run(cfg: config_mod.Config, out: str | None) -> int:
    """``train --dry-run``: the resolved config as TOML, then the estimate (creates nothing)."""
    from mdgl_analysis import api
    from mdgl_analysis.training.estimate import lines_of, process_age

    est = api.estimate(cfg, out=out, startup=process_age())
    print(config_mod.dumps(cfg).rstrip())
    print()
    for line in lines_of(est, (Path(out) if out else api.default_out(cfg)).parent):
        print(line)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from mdgl_analysis import api

    run = api.resume(
        args.run, args.iterations, progress=not args.no_progress, task=args.task, rules=args.rule
    )
    _report(run.folder, run.status)
    return EXIT_OF_STATUS.get(run.status, 1)


def _report(run: RunFolder, status: str) -> None:
    print(f"run {status}: {run.path}")
    print(f"  inspect it with: mdgl info {run.path}")
    if (run.path / "records").is_dir():
        print(f"  check its records:  mdgl verify {run.path}")
        print(
            '  open them lazily:   python -c "import mdgl_analysis as m; '
            f"ds = m.open_run('{run.path}'); print(ds)\""
        )


def cmd_info(args: argparse.Namespace) -> int:
    if args.hdf5_plugin_path:
        import hdf5plugin

        print(hdf5plugin.PLUGIN_PATH)
        return 0
    if args.run is None:
        return _fail("info: give RUN_DIR (a run folder), or --hdf5-plugin-path")
    run = RunFolder(args.run)
    if not run.exists():
        return _fail(f"{args.run!r} is not a run folder (no run.json)")
    print(describe(run))
    return 0


def describe(run: RunFolder) -> str:
    meta = run.meta()
    status = meta["status"]
    if status == "running" and not pid_alive(meta.get("pid")):
        status = "running (no such process: killed? `mdgl resume` continues it)"
    lines = [
        f"run       {run.path}",
        f"status    {status}",
        f"rule      {meta['rule']}   seed {meta['seed']}   device {meta.get('device')}",
        *_describe_task(meta),
        f"progress  {meta['iteration']} / {meta['iterations']} iterations",
        f"started   {meta['started']}   ended {meta['ended']}",
        *_describe_source(meta),
    ]
    if meta.get("error"):
        lines.append(f"error     {meta['error']}")
    if meta.get("diverged"):
        d = meta["diverged"]
        lines.append(f"diverged  at iteration {d.get('iteration')}: {d.get('reason')}")
    rows = run.read_metrics()
    for split in ("val", "train"):
        last: dict[str, tuple[int, float]] = {}
        for r in rows:
            if r["split"] == split:
                last[r["name"]] = (r["iteration"], r["value"])
        if last:
            it = max(i for i, _ in last.values())
            text = "  ".join(f"{n}={v:.4g}" for n, (i, v) in last.items() if i == it)
            lines.append(f"{split:<9} iteration {it}: {text}")
    lines += _describe_records(run)
    ckpts = run.checkpoints()
    lines.append(f"checkpoints {len(ckpts)}" + (f", latest {ckpts[-1].name}" if ckpts else ""))
    lines.append(f"metrics   {run.metrics_path} ({len(rows)} rows)")
    return "\n".join(lines)


def _describe_source(meta: dict) -> list[str]:
    """The code that ran: git commit and dirty flag, and how mdgl-analysis was installed (runs
    made before the installation was recorded have only the commit)."""
    git, install = meta["git"], meta.get("install")
    commit = git["commit"] or "none (not run from a git checkout)"
    lines = [f"git       {commit}{' (dirty)' if git['dirty'] else ''}"]
    if install:
        kind = {
            "editable": "editable install of the source tree",
            "installed": "installed distribution in",
            "source": "source tree, not installed:",
        }[install["kind"]]
        lines.append(f"package   mdgl-analysis {install['version']}, {kind} {install.get('path')}")
    return lines


def _describe_task(meta: dict) -> list[str]:
    task = meta.get("task")
    if not isinstance(task, dict):
        return []
    return [
        f"task      {task.get('name')}   loss {task.get('loss')} (metric {task.get('metric')})   "
        f"{task.get('n_in')} inputs, {task.get('n_out')} outputs, {task.get('n_steps')} steps"
    ]


def _describe_records(run: RunFolder) -> list[str]:
    from mdgl_analysis.recording.readers import record_files, storage
    from mdgl_analysis.recording.schema import iteration_of

    files = record_files(run.path)
    if not files:
        return ["records   none"]
    its = [iteration_of(f) for f in files]
    shown = ", ".join(map(str, its[:12])) + (f", ... ({len(its)} in all)" if len(its) > 12 else "")
    total = sum(f.stat().st_size for f in files)
    lines = [f"records   {len(files)} iterations: {shown}; {total / 2**20:.1f} MiB on disk"]
    lines.append(f"          variables of {files[-1].name} (size on disk):")
    from mdgl_analysis.recording.schema import VARIABLES

    _check_records(run.path)
    for name, dims, shape, nbytes, dtype in storage(files[-1]):
        if name not in VARIABLES:
            continue
        shape_text = ", ".join(f"{d}={s}" for d, s in zip(dims, shape, strict=True))
        lines.append(f"            {name:<16} {dtype:<8} ({shape_text})  {nbytes / 2**20:.2f} MiB")
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a run's files against their checksums, read every chunk of every record, recompute
    what each record holds and contract signals with traces; exit 1 on any failure."""
    from mdgl_analysis.recording.readers import record_files
    from mdgl_analysis.recording.verify import verify_file

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        return _fail(f"--tolerance {args.tolerance!r} is not allowed: a finite number >= 0")
    path = Path(args.run)
    files = [path] if path.is_file() else record_files(path)
    failures: list[str] = []
    if path.is_dir() and RunFolder(path).exists():
        problems, notes = RunFolder(path).check_files()
        print(f"{path.name}: files against {MANIFEST}: {len(problems)} problem(s)")
        for line in notes:
            print(f"  note: {line}")
        failures += problems
    if not files:
        if failures:
            return _report_failures(failures)
        return _fail(f"no record files in {args.run!r} (train with --record-every K)")
    worst, contracted = 0.0, 0
    for f in files:
        report = verify_file(f)
        if report.problems:
            line = f"{f.name}: DAMAGED, {len(report.problems)} problem(s)"
        else:
            line = (
                f"{f.name}: every chunk read, checksums match; recomputed {len(report.errors)} "
                f"quantities, max rel. error {report.recomputed:.2e}"
            )
            if report.contract is None:
                line += f" (no contraction check: {report.why})"
            else:
                line += f"; signal x trace ({report.scope}) max rel. error {report.contract:.2e}"
                contracted += 1
            worst = max(worst, report.recomputed, report.contract or 0.0)
        print(line, flush=True)
        failures += [f"{f.name}: {problem}" for problem in report.failures(args.tolerance)]
    if failures:
        return _report_failures(failures)
    print(
        f"OK: worst relative error {worst:.2e} (tolerance {args.tolerance:g}); "
        f"signal x trace checked in {contracted} of {len(files)} record(s)"
    )
    return 0


def _report_failures(failures: list[str]) -> int:
    for line in failures:
        print(f"  FAILED {line}")
    print(f"MISMATCH: {len(failures)} failed check(s)")
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    """A portable copy of a run or record (plugin-free codec), or an NWB file of its trials."""
    import time

    from mdgl_analysis.recording.export import ExportError, export

    if Path(args.run).is_dir():  # an unreadable record named in one line, before anything
        _check_records(Path(args.run))
    start = time.perf_counter()
    try:
        if args.format == "nwb":
            from mdgl_analysis.recording.nwb import export_nwb

            out = export_nwb(args.run, args.out, args.codec)
        else:
            out = export(args.run, args.out, args.codec)
    except ExportError as err:
        return _fail(str(err))
    seconds = time.perf_counter() - start
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 2**20
    if args.format == "nwb":
        print(f"wrote {out}: NWB, {size:.1f} MiB in {seconds:.1f} s")
        print(f"  check it with: nwbinspector {out}")
    else:
        print(f"wrote {out}: records with codec {args.codec}, {size:.1f} MiB in {seconds:.1f} s")
        print(f"  check it with: mdgl verify {out}   (h5dump, ncdump, h5py read it as it is)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import pandas as pd

    from mdgl_analysis.analysis import alignment as analysis
    from mdgl_analysis.recording.readers import open_run, record_files

    if args.out and Path(args.out).suffix not in (".csv", ".nc"):
        return _fail(f"--out {args.out!r}: the file must end in .csv or .nc")
    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers {args.workers}: an integer >= 1")
    if not (math.isfinite(args.window_ms) and args.window_ms > 0):
        return _fail(f"--window-ms {args.window_ms!r} is not allowed: a finite number > 0")
    if args.task_mb is not None and not (math.isfinite(args.task_mb) and args.task_mb > 0):
        return _fail(f"--task-mb {args.task_mb!r} is not allowed: a finite number of MiB > 0")
    if args.out and (blocking := blocking_file(Path(args.out).parent)) is not None:
        return _fail(f"--out {args.out!r}: {str(blocking)!r} is a file, not a folder")
    for run in _run_folders(args.runs):  # damage named in one line, before any computation
        _check_config_text(RunFolder(run))
        _check_records(run)
    runs = analysis.find_runs(args.runs)
    runs = [r for r in runs if record_files(r)]
    if not runs:
        return _fail(f"no recorded runs in {' '.join(args.runs)} (train with --record-every K)")
    results, tables = [], []
    if args.by == "time":
        alignment = functools.partial(
            analysis.time_alignments, window_ms=args.window_ms, task_mb=args.task_mb
        )
    else:
        by = "matrix" if args.by == "iteration" else "block"
        alignment = functools.partial(analysis.gradient_alignment, by=by)
    with analysis.scheduler(args.scheduler, args.workers, args.memory_limit) as client:
        for run in runs:
            cfg = analysis.run_config(run)
            # on a cluster one task per record file moves no chunks between workers (faster
            # there, README: analysis benchmark); threads share one graph over the whole run
            try:
                if client is not None:
                    res = analysis.by_record(alignment, run)
                else:
                    res = alignment(open_run(run)).compute()
            except analysis.BudgetError as err:  # --task-mb below what one task must hold
                return _fail(str(err))
            if args.by == "time":  # a cosine of negligible contributions is noise: no value
                res["negligible"] = analysis.negligible(res)
                res["cosine"] = res.cosine.where(~res.negligible)
            results.append(res.expand_dims(run=[str(run)]))
            table = analysis.tidy(res)
            table.insert(0, "seed", cfg["run"]["seed"])
            table.insert(0, "training_rule", cfg["train"]["rule"])
            table.insert(0, "run", str(run))
            tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    column = "window" if args.by == "time" else "part"
    summary = table.pivot_table(index="rule", columns=column, values="cosine", aggfunc="mean")
    print(f"cosine similarity with BPTT, mean over {len(runs)} run(s) and recorded iterations:")
    if args.by == "time":
        print(
            f"(windows where a rule's contribution is below {analysis.NEGLIGIBLE:g} of BPTT's "
            "are left out: NaN where every one is)"
        )
    print(summary.round(3).to_string())
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".csv":
            table.to_csv(out, index=False)
        else:
            import xarray as xr

            xr.concat(results, dim="run", join="outer").to_netcdf(out, engine="h5netcdf")
        print(f"wrote {out}")
    return 0


FIGURE_SCRIPTS = (
    "fig3c_learning_curves",
    "alignment_over_training",
    "alignment_by_block",
    "alignment_over_time",
    "recorded_trial",
)


def cmd_figures(args: argparse.Namespace) -> int:
    """Draw each figure of FIGURE_SCRIPTS in its own process (one failure stops no other),
    importing the same mdgl_analysis as this process."""
    import os
    import subprocess

    runs = _run_folders(args.runs)
    if not runs:
        return _fail(f"no run folder (with run.json) in {' '.join(args.runs)}")
    for run in runs:  # damage named in one line, before any figure is drawn
        folder = RunFolder(run)
        folder.meta()
        folder.read_metrics()
        _check_config_text(folder)
        _check_records(run)
    blocking = blocking_file(Path(args.out))
    if blocking is not None:
        return _fail(f"--out {args.out!r}: {str(blocking)!r} is a file, not a folder")
    root = str(Path(__file__).resolve().parent.parent)  # the folder holding this package
    env = dict(os.environ, PYTHONSAFEPATH="1")  # not the cwd's mdgl_analysis, if any
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    drawn, failed = [], []
    for name in FIGURE_SCRIPTS:
        done = subprocess.run(
            [sys.executable, "-m", f"mdgl_analysis.analysis.figures.{name}", *args.runs]
            + ["--out", args.out],
            capture_output=True,
            text=True,
            env=env,
        )
        print(done.stdout, end="")
        lines = done.stderr.strip().splitlines()
        why = (lines[-1] if lines else str(done.returncode)).removeprefix("error: ")
        if done.returncode == 0:
            drawn.append(name)
        elif done.returncode == EXIT_USAGE:  # plotting.CANNOT_DRAW: these runs cannot give it
            print(f"{name}: skipped: {why}", file=sys.stderr)
        else:
            failed.append(name)
            print(f"{name}: failed: {why}", file=sys.stderr)
    if failed:
        return 1
    return 0 if drawn else EXIT_USAGE


def cmd_sweep(args: argparse.Namespace) -> int:
    from mdgl_analysis.training.sweep import Sweep, parse_rules, parse_seeds

    rules, seeds = parse_rules(args.rules), parse_seeds(args.seeds)
    if args.jobs < 1:
        return _fail(f"--jobs {args.jobs} is not allowed: an integer >= 1")
    is_file = args.config.endswith(".toml") or Path(args.config).exists()
    cfg = config_mod.resolve(
        args.config if is_file else None,
        None if is_file else args.config,
        args.set,
        {
            "task.name": args.task,
            "train.iterations": args.iterations,
            "record.every": args.record_every,
        },
    )
    name = Path(args.config).stem if is_file else args.config
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{name}"
    blocking = blocking_file(out)
    if blocking is not None:
        return _fail(f"--out {str(out)!r}: {str(blocking)!r} is a file, not a folder")
    if not args.scheduler:  # (a cluster's workers have their own memory)
        at_once = min(args.jobs, len(rules) * len(seeds))
        for rule in rules:
            ruled = config_mod.set_value(cfg, "train.rule", rule)
            _check_memory(ruled, runs=at_once)
    if args.dry_run:
        return _dry_run_sweep(cfg, out, rules, seeds, args.jobs)
    sweep = Sweep.create_or_open(out, cfg, rules, seeds)
    print(
        f"sweep {out}: {len(rules)} rules x {len(seeds)} seeds, "
        f"{cfg.train.iterations} iterations each, manifest {sweep.manifest}"
    )
    entries = sweep.run(rules, seeds, args.jobs, args.scheduler)
    failed = [e for e in entries if e["status"] != "completed"]
    print(f"{len(entries) - len(failed)} completed, {len(failed)} not completed")
    return 1 if failed else 0


def _dry_run_sweep(
    cfg: config_mod.Config, out: Path, rules: list[str], seeds: list[int], jobs: int
) -> int:
    """``sweep --dry-run``: the config, then each rule's estimate and the sweep's wall-clock."""
    from mdgl_analysis import api
    from mdgl_analysis.training.estimate import duration, lines_of, process_age

    print(config_mod.dumps(cfg).rstrip())
    work, startup = 0.0, process_age()
    for rule in rules:
        est = api.estimate(config_mod.set_value(cfg, "train.rule", rule), startup=startup)
        print(f"\nrule {rule} (each of {len(seeds)} seed(s)):")
        for line in lines_of(est, out):
            print(f"  {line}")
        work += est.total_seconds * len(seeds)
    runs = len(rules) * len(seeds)
    print(
        f"\nsweep: {runs} runs, {min(jobs, runs)} at a time: about "
        f"{duration(work / min(jobs, runs))} of wall-clock if each keeps its own core"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mdgl_analysis.training.bench import plan, run_benchmark

    cases = plan(args)  # every check first: a bad argument prints nothing but its error
    for cfg in {case.overrides: case.cfg for case in cases}.values():
        _check_memory(cfg)
    return run_benchmark(args, cases)


def cmd_presets(args: argparse.Namespace) -> int:
    """``mdgl presets``: each preset with its description; ``mdgl presets NAME``: that preset,
    every field resolved, as TOML that ``--config`` reads back."""
    if args.name is None:
        width = max(map(len, config_mod.PRESETS))
        for name in config_mod.PRESETS:
            print(f"{name:<{width}}  {config_mod.preset_description(name)}")
        print("\nmdgl train --preset NAME     trains one")
        print("mdgl presets NAME > my.toml  prints one as TOML: edit it, train it with --config")
        return 0
    cfg = config_mod.preset(args.name)
    print(f"# preset {args.name}, every field resolved: mdgl train --config FILE reads it back")
    print(config_mod.dumps(cfg, config_mod.preset_description(args.name)).rstrip())
    return 0


COMMANDS = {
    "train": cmd_train,
    "resume": cmd_resume,
    "info": cmd_info,
    "verify": cmd_verify,
    "export": cmd_export,
    "analyze": cmd_analyze,
    "figures": cmd_figures,
    "sweep": cmd_sweep,
    "bench": cmd_bench,
    "presets": cmd_presets,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ResumeError, RunFolderError, RunError, TaskError) as err:
        return _fail(str(err))
    except TrainingError as err:
        return _fail(str(err), code=1)
    except OSError as err:  # unwritable folder, full disk: say so in one line
        return _fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "), code=1)
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
