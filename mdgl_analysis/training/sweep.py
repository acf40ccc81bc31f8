"""Sweeps over rules and seeds: one run folder per (rule, seed) under a sweep folder.

Each run is its own ``mdgl train`` process (or ``mdgl resume`` when it was interrupted), so runs
are independent, resumable and can go anywhere: ``jobs`` processes on this machine, or tasks on a
``dask.distributed`` cluster (``address``; dask-jobqueue starts such a cluster on SLURM or PBS).
The manifest ``sweep.json`` records every run's status and is rewritten atomically as runs end.
Running a sweep again skips completed runs and resumes the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as futures_completed
from pathlib import Path
from typing import Any

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import Config, ConfigError
from mdgl_analysis.training.runs import RunFolder, atomic_write, now, rule_files, task_file

MANIFEST = "sweep.json"


def parse_seeds(text: str) -> list[int]:
    """``"1-5"`` or ``"1,3,7"`` -> seeds; raises ConfigError naming the bad value."""
    try:
        seeds: list[int] = []
        for item in text.split(","):
            lo, dash, hi = item.strip().partition("-")
            if dash and (not hi or int(hi) < int(lo)):
                raise ValueError
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not allowed: A-B or a,b,c (integers)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} is not allowed: distinct integers, at least one")
    return seeds


def parse_rules(text: str) -> list[str]:
    from mdgl_analysis.rules import RULES

    rules = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        raise ConfigError(f"--rules {text!r} is not allowed: names among {', '.join(RULES)}")
    return rules


def run_one(folder: str, config_file: str, rule: str, seed: int) -> dict[str, Any]:
    """Train (or resume) one run in a subprocess; returns its manifest entry, ``failed`` with the
    reason when anything goes wrong. Runs anywhere the sweep folder is visible (a dask worker
    included)."""
    try:
        return _run_one(folder, config_file, rule, seed)
    except Exception as err:  # noqa: BLE001 - one broken run must not stop the sweep
        return {"rule": rule, "seed": seed, "path": folder, "status": "failed", "note": str(err)}


def _run_one(folder: str, config_file: str, rule: str, seed: int) -> dict[str, Any]:
    run = RunFolder(folder)
    if run.exists():
        meta = run.meta()
        cfg = config_mod.load(config_file, resolve_task=False)
        target = cfg.train.iterations
        if meta["status"] == "completed" and meta["iteration"] >= target:
            return {
                "rule": rule,
                "seed": seed,
                "path": folder,
                "status": "completed",
                "note": "already completed",
            }
        cmd = ["resume", folder, "--iterations", str(target)]
        if task_file(cfg.task.name):  # the task the sweep's own config names (see resume)
            cmd += ["--task", cfg.task.name]
        for name in rule_files(cfg):  # likewise the compared rules from a user's file
            cmd += ["--rule", name]
    else:
        cmd = [
            "train",
            "--config",
            config_file,
            "--rule",
            rule,
            "--seed",
            str(seed),
            "--out",
            folder,
        ]
    done = subprocess.run(
        [sys.executable, "-m", "mdgl_analysis", *cmd, "--no-progress"],
        capture_output=True,
        text=True,
    )
    lines = done.stderr.strip().splitlines()
    status = RunFolder(folder).meta()["status"] if RunFolder(folder).exists() else "failed"
    if done.returncode != 0 and status == "running":
        status = "failed"
    return {
        "rule": rule,
        "seed": seed,
        "path": folder,
        "status": status,
        "note": lines[-1] if done.returncode != 0 and lines else "",
    }


class Sweep:
    """A sweep folder: resolved config, manifest, one run folder per (rule, seed)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.config_file = self.folder / "config.toml"
        self.manifest = self.folder / MANIFEST

    @classmethod
    def create_or_open(
        cls, folder: str | Path, cfg: Config, rules: list[str], seeds: list[int]
    ) -> Sweep:
        sweep = cls(folder)
        if sweep.manifest.exists():
            old = config_mod.load(sweep.config_file, resolve_task=False)
            if old.train.iterations != cfg.train.iterations:
                old = config_mod.set_value(old, "train.iterations", cfg.train.iterations)
            if config_mod.to_dict(old) != config_mod.to_dict(cfg):
                raise ConfigError(
                    f"sweep {str(folder)!r} exists with another configuration; use a new --out "
                    "(only --iterations may change between runs of a sweep)"
                )
        sweep.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(sweep.config_file, config_mod.dumps(cfg))
        entries = {(e["rule"], e["seed"]): e for e in sweep.read().get("runs", [])}
        for rule in rules:
            for seed in seeds:
                entries.setdefault(
                    (rule, seed),
                    {
                        "rule": rule,
                        "seed": seed,
                        "path": str(sweep.run_path(rule, seed)),
                        "status": "pending",
                        "note": "",
                    },
                )
        sweep.write(
            {
                "created": sweep.read().get("created", now()),
                "updated": now(),
                "config": str(sweep.config_file),
                "rules": rules,
                "seeds": seeds,
                "runs": list(entries.values()),
            }
        )
        return sweep

    def run_path(self, rule: str, seed: int) -> Path:
        return self.folder / f"{rule}-s{seed}"

    def read(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text()) if self.manifest.exists() else {}

    def write(self, data: dict[str, Any]) -> None:
        atomic_write(self.manifest, json.dumps(data, indent=2) + "\n")

    def update(self, entry: dict[str, Any]) -> None:
        data = self.read()
        data["runs"] = [
            entry if (e["rule"], e["seed"]) == (entry["rule"], entry["seed"]) else e
            for e in data["runs"]
        ]
        data["updated"] = now()
        self.write(data)

    def run(
        self, rules: list[str], seeds: list[int], jobs: int = 1, address: str | None = None
    ) -> list[dict[str, Any]]:
        """Run every (rule, seed); returns the manifest entries. Says one line as each run starts
        and as it ends (:class:`Progress`)."""
        todo = [
            (str(self.run_path(r, s)), str(self.config_file), r, s) for s in seeds for r in rules
        ]
        results = []
        with Progress(len(todo)) as progress:

            def finished(entry: dict[str, Any]) -> None:
                self.update(entry)
                results.append(entry)
                progress.ended(entry)

            if address:
                _on_cluster(address, todo, progress, finished)
            else:

                def one(folder: str, config_file: str, rule: str, seed: int) -> dict[str, Any]:
                    progress.started(rule, seed, folder)
                    return run_one(folder, config_file, rule, seed)

                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    for future in futures_completed([pool.submit(one, *a) for a in todo]):
                        finished(future.result())
        return results


def _on_cluster(address: str, todo: list[tuple], progress: Progress, finished) -> None:
    """Submit every run to the dask scheduler at ``address``; a run is said to start when the
    scheduler reports its task processing on a worker (polled every second)."""
    from distributed import Client, wait

    with Client(address) as client:
        futures = {client.submit(run_one, *args, pure=False): args for args in todo}
        pending, started = set(futures), set()

        def start(future) -> None:
            if future not in started:
                started.add(future)
                folder, _, rule, seed = futures[future]
                progress.started(rule, seed, folder)

        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            running = {key for keys in client.processing().values() for key in keys}
            for future in pending:
                if future.key in running:
                    start(future)
            for future in done:
                start(future)
                folder, _, rule, seed = futures[future]
                try:
                    entry = future.result()
                except Exception as err:  # noqa: BLE001 - a lost worker: the run failed
                    entry = {
                        "rule": rule,
                        "seed": seed,
                        "path": folder,
                        "status": "failed",
                        "note": f"{type(err).__name__}: {err}",
                    }
                finished(entry)


class Progress:
    """The sweep's progress: a bar over runs on stderr when it is a terminal, and one line on
    stdout as each run starts and as it ends (its status, rule, seed and folder). When stderr is
    not a terminal (a pipe, a log file) there is no bar, only the lines."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.total, self.done = total, 0
        self.counts: dict[str, int] = {}
        self.bar = tqdm(
            total=total,
            unit="run",
            desc="sweep",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def _say(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()

    def started(self, rule: str, seed: int, folder: str) -> None:
        self._say(f"{'started':<11} {rule:<14} seed {seed:<4} {folder}")

    def ended(self, entry: dict[str, Any]) -> None:
        self.done += 1
        status = entry["status"]
        self.counts[status] = self.counts.get(status, 0) + 1
        note = f" ({entry['note']})" if entry.get("note") else ""
        self._say(
            f"{status:<11} {entry['rule']:<14} seed {entry['seed']:<4} {entry['path']}{note}"
            f"  [{self.done}/{self.total}]"
        )
        self.bar.set_postfix(self.counts, refresh=False)
        self.bar.update(1)
