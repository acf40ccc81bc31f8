"""Rebuild metrics-only run folders from a committed metrics table, to redraw its figures.

    python analyses/runs_from_metrics.py METRICS.csv[.gz] --config CONFIG --out DIR

The tables in results/ (``*_metrics.csv.gz``: columns run, rule, seed, iteration, split, name,
value) hold every metric the metrics-only figures read (fig3c_learning_curves,
alignment_over_training, alignment_by_block), but not the run folders they came from. This
writes one folder per run of the table, ``DIR/<run>/`` with

* ``metrics.csv``: that run's rows, as the trainer writes them (iteration, split, name, value);
* ``config.toml``: CONFIG resolved with the run's rule and seed (``--rule``/``--seed``), the
  config the sweep ran;
* ``run.json``: the task entry the figures read (name, loss, metric, sizes, epochs; computed
  from the config as ``mdgl train`` does, so this script builds the task and imports torch),
  status ``completed`` and a ``rebuilt_from`` note naming the table.

No checkpoints and no records: only the metrics-only figures can be drawn from these folders
(``mdgl figures`` says so for the others). Refuses a DIR that already holds files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from mdgl_analysis import config as config_mod
from mdgl_analysis.training.runs import task_info

COLUMNS = ["run", "rule", "seed", "iteration", "split", "name", "value"]


def rebuild(metrics: Path, config: Path, out: Path) -> list[Path]:
    """Write a metrics-only run folder per run of the table ``metrics`` under ``out``.

    Returns:
        the run folders written, in the table's order.
    """
    table = pd.read_csv(metrics)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{metrics} lacks the columns {', '.join(missing)}")
    folders = []
    for (run, rule, seed), rows in table.groupby(["run", "rule", "seed"], sort=False):
        cfg = config_mod.resolve(
            str(config), shortcuts={"train.rule": str(rule), "run.seed": int(seed)}
        )
        folder = out / str(run)
        folder.mkdir(parents=True)
        (folder / "config.toml").write_text(config_mod.dumps(cfg))
        rows[["iteration", "split", "name", "value"]].to_csv(folder / "metrics.csv", index=False)
        meta = {
            "id": str(run),
            "status": "completed",
            "rule": str(rule),
            "seed": int(seed),
            "iteration": int(rows["iteration"].max()),
            "task": task_info(cfg),
            "rebuilt_from": f"{metrics} (metrics only: no checkpoints, no records)",
        }
        (folder / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    """Command line: rebuild the folders and print them; 2 with one line for bad input."""
    ap = argparse.ArgumentParser(
        prog="python analyses/runs_from_metrics.py",
        description=__doc__.strip().splitlines()[0],
    )
    ap.add_argument("metrics", type=Path, help="a metrics table (CSV, may be gzipped)")
    ap.add_argument("--config", type=Path, required=True, help="the config the sweep ran")
    ap.add_argument("--out", type=Path, required=True, help="folder for the run folders")
    args = ap.parse_args(argv)
    for path in (args.metrics, args.config):
        if not path.is_file():
            print(f"error: no such file: {path}", file=sys.stderr)
            return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty: give a new folder", file=sys.stderr)
        return 2
    try:
        folders = rebuild(args.metrics, args.config, args.out)
    except (ValueError, config_mod.ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for folder in folders:
        print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
