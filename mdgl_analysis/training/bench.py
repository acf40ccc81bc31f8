"""``mdgl bench``: seconds per training iteration and peak RSS of each rule, one process per case.

Every (rule, threads) case runs in a fresh subprocess, so its peak RSS is its own. An iteration is
what training does: sample a batch, pass 1, the rule's gradients, the constrained Adam step.
``bptt_autograd`` is the reference: plain autograd through the rollout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

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
) -> dict:
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
    trainer.step()  # warm-up: first-touch allocations, lazy initialisation
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        trainer.step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "rule": rule,
        "threads": threads,
        "device": str(trainer.device),
        "s_per_iter_median": times[len(times) // 2],
        "s_per_iter_min": times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch": cfg.train.batch,
        "n_steps": cfg.n_steps,
        "n_rec": cfg.network.n_rec,
    }


def run_benchmark(args: argparse.Namespace) -> int:
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    for r in rules:
        if r not in RULES and r not in BASELINES | TRACES | RECORDS:
            known = ", ".join([*RULES, *sorted(BASELINES | TRACES | RECORDS)])
            raise config_mod.ConfigError(f"--rules: unknown rule {r!r}; rules: {known}")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise config_mod.ConfigError(
            f"--threads {args.threads!r}: comma-separated integers"
        ) from None
    if any(t < 1 for t in threads) or args.iterations < 1:
        raise config_mod.ConfigError("--threads and --iterations must be >= 1")
    config_mod.resolve(None, args.preset, args.set, {"run.device": args.device})  # validate early
    print(f"{'rule':<16}{'threads':>8}{'s/iter':>10}{'min':>10}{'peak RSS MB':>13}  device")
    results = []
    for t in threads:
        for r in rules:
            cmd = [
                sys.executable,
                "-m",
                "mdgl_analysis.training.bench",
                r,
                str(t),
                str(args.iterations),
                args.preset,
                args.device,
                *args.set,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{r:<16}{t:>8}  failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(res)
            print(
                f"{r:<16}{t:>8}{res['s_per_iter_median']:>10.3f}{res['s_per_iter_min']:>10.3f}"
                f"{res['peak_rss_mb']:>13.0f}  {res['device']}",
                flush=True,
            )
            if r in RECORDS:
                print(
                    f"    plain step {res['plain_step_s']:.2f} s, recorded step "
                    f"{res['recorded_step_s']:.2f} s (writing {res['record_write_s']:.2f} s); "
                    f"{res['record_mb_logical']:.0f} MiB of data, "
                    f"{res['record_mb_on_disk']:.0f} MiB on disk; "
                    f"{res['write_mb_per_s']:.0f} MiB/s vs raw sequential write "
                    f"{res['raw_write_mb_per_s']:.0f} MiB/s",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    rule, threads, iterations, preset, device, *overrides = sys.argv[1:]
    print(json.dumps(worker(rule, int(threads), int(iterations), preset, overrides, device)))
