"""The Fig. 3C results table: validation loss and accuracy per rule at checkpoints, over seeds.

    python analyses/fig3c_table.py RUN_OR_FOLDER... [--checkpoints 100,200,300] [--out DIR]
                                   [--prefix NAME]

Any task's sweep works: the metric is the task's (``accuracy`` for cross-entropy, ``nmse`` for
MSE tasks, as in the runs' metrics), and the paper's values appear for the evidence task only.

For each rule (from each run's config) and checkpoint k: the mean over the last five validation
points up to k (k-40, ..., k, i.e. the paper's 5-point smoothing ending at k) of every run that
reached k (an interrupted run counts up to where it got; n is shown when not every run did), then
the mean and std (ddof = 1) over runs. Also the wall-clock seconds per training iteration of each
rule (median over its runs of the last stretch each trained, from run.json), and the paper's values
at iteration 2000 (spec section G). Writes fig3c_table.csv, fig3c_table.md and the metrics behind
them, fig3c_metrics.csv.gz, into DIR (default analyses/results); ``--prefix`` renames them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pandas as pd

from mdgl_analysis.analysis import alignment as A
from mdgl_analysis.analysis.figures.fig3c_learning_curves import PAPER  # spec section G

LABELS = {"bptt": "BPTT", "eprop": "e-prop", "mdgl": "MDGL"}


def seconds_per_iteration(run: Path) -> float:
    """Wall-clock seconds per iteration of a run's last stretch (from its start, or its last
    resume, to its end; run.json): NaN while it has not ended."""
    meta = json.loads((run / "run.json").read_text())
    if not meta.get("ended") or meta["status"] != "completed":
        return float("nan")
    last = (meta.get("resumed") or [{"at": meta["started"], "from_iteration": 0}])[-1]
    start = dt.datetime.fromisoformat(last["at"])
    end = dt.datetime.fromisoformat(meta["ended"])
    return (end - start).total_seconds() / max(1, meta["iteration"] - last["from_iteration"])


def metric_of(metrics: pd.DataFrame) -> str:
    """The task's metric in these runs' metrics: ``nmse`` (MSE tasks) or ``accuracy``."""
    return "nmse" if (metrics.name == "nmse").any() else "accuracy"


def is_evidence(runs: list[Path]) -> bool:
    """Every run trained the paper's task (run.json's task, or no task entry: older runs)."""
    names = {
        json.loads((r / "run.json").read_text()).get("task", {}).get("name", "evidence")
        for r in runs
    }
    return names == {"evidence"}


def table(runs: list[Path], checkpoints: list[int]) -> pd.DataFrame:
    """Per rule and checkpoint k, over the runs that reached k (validated at k)."""
    metrics = A.load_metrics(runs)
    metric = metric_of(metrics)
    paper = PAPER if is_evidence(runs) else {}
    val = metrics[metrics.split == "val"]
    rows = []
    for rule, by_rule in val.groupby("rule", sort=False):
        rule_runs = sorted(by_rule.run.unique())
        row = {"rule": rule, "runs": len(rule_runs)}
        for k in checkpoints:
            reached = by_rule[(by_rule.name == "loss") & (by_rule.iteration == k)].run.unique()
            row[f"n@{k}"] = len(reached)
            for name in ("loss", metric):
                sel = by_rule[
                    (by_rule.name == name)
                    & (by_rule.iteration > k - 50)
                    & (by_rule.iteration <= k)
                    & by_rule.run.isin(reached)
                ]
                per_run = sel.groupby("run")["value"].mean()
                if len(per_run) == 0:
                    continue
                row[f"{name}@{k} mean"] = per_run.mean()
                row[f"{name}@{k} std"] = per_run.std(ddof=1) if len(per_run) > 1 else 0.0
        # the median over runs: robust to a run slowed by whatever else shared the machine
        row["s/iteration"] = pd.Series([seconds_per_iteration(Path(r)) for r in rule_runs]).median()
        for name in ("loss", "accuracy"):
            row[f"paper {name}@2000"] = paper.get(rule, {}).get(name)
        rows.append(row)
    order = {r: i for i, r in enumerate(["bptt", "mdgl", "eprop"])}
    return pd.DataFrame(rows).sort_values("rule", key=lambda s: s.map(order)).reset_index(drop=True)


def metrics_table(runs: list[Path]) -> pd.DataFrame:
    """The runs' metrics behind the table and figures, small enough to keep in the repository:
    validation metrics, training loss and accuracy every ``val_every`` iterations, and the cosines
    with BPTT. Columns run (folder name), rule, seed, iteration, split, name, value."""
    metrics = A.load_metrics(runs)
    every = metrics.loc[metrics.split == "val", "iteration"].diff().dropna()
    step = int(every[every > 0].min()) if (every > 0).any() else 1
    keep = (
        (metrics.split == "val")
        | metrics.name.str.startswith("cos_")
        | (metrics.name.isin(["loss", metric_of(metrics)]) & (metrics.iteration % step == 0))
    )
    out = metrics[keep].copy()
    out["run"] = [Path(r).name for r in out["run"]]
    return out[["run", "rule", "seed", "iteration", "split", "name", "value"]]


def markdown(df: pd.DataFrame, checkpoints: list[int]) -> str:
    metric = "nmse" if any(c.startswith("nmse@") for c in df.columns) else "accuracy"
    paper = df["paper loss@2000"].notna().any()
    head = (
        ["rule", "runs"]
        + [f"val loss @{k}" for k in checkpoints]
        + [f"val {metric} @{k}" for k in checkpoints]
        + (["paper loss / accuracy @2000"] if paper else [])
        + ["s / iteration"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [LABELS.get(r["rule"], r["rule"]), str(r["runs"])]
        for name in ("loss", metric):
            for k in checkpoints:
                m, s = r.get(f"{name}@{k} mean"), r.get(f"{name}@{k} std")
                n = r.get(f"n@{k}")
                runs = "" if n == r["runs"] else f" (n={n})"
                cells.append("" if pd.isna(m) else f"{m:.3f} ± {s:.3f}{runs}")
        if paper:
            p_loss, p_acc = r["paper loss@2000"], r["paper accuracy@2000"]
            cells.append("" if pd.isna(p_loss) else f"{p_loss:.2f} / {p_acc:.2f}")
        cells.append("—" if pd.isna(r["s/iteration"]) else f"{r['s/iteration']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--checkpoints", default="100,200,300")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--prefix", default="fig3c", help="file names PREFIX_table.csv, ...")
    args = ap.parse_args(argv)
    checkpoints = [int(k) for k in args.checkpoints.split(",")]
    runs = A.find_runs(args.runs)
    for r in runs:
        meta = json.loads((r / "run.json").read_text())
        if meta["status"] != "completed":
            print(f"{r}: {meta['status']} at iteration {meta['iteration']} (counted where reached)")
    df = table(runs, checkpoints)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.prefix
    df.to_csv(out / f"{name}_table.csv", index=False)
    metrics_table(runs).to_csv(out / f"{name}_metrics.csv.gz", index=False)
    md = markdown(df, checkpoints)
    (out / f"{name}_table.md").write_text(md)
    print(md)
    print(f"wrote {name}_table.csv, {name}_table.md and {name}_metrics.csv.gz into {out}")


if __name__ == "__main__":
    main()
