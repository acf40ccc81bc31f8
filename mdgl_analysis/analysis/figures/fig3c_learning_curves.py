"""Learning curves: validation loss and the task's metric against training iteration, per rule.

    python -m mdgl_analysis.analysis.figures.fig3c_learning_curves RUN_OR_FOLDER... --out DIR
                                                                   [--smooth 5]

Reads each run's metrics.csv, split val (a fresh validation batch every train.val_every
iterations): panel A the loss (cross-entropy or MSE, the task's), panel B the task's metric
(accuracy for a cross-entropy task, chance level dotted; nmse, the normalised MSE, for an MSE
task: squared error over the target's spread, 1 dotted = no better than the target's mean).
The metric is run.json's task.metric, or for runs from before it was written whichever of
accuracy and nmse their metrics have. Each run's curve is smoothed with a 5-point moving average
(the original plot script's smoothing); the line is the mean over the runs of a rule and the
band ± one standard deviation (ddof = 1), both from mdgl_analysis.analysis.learning_curves. Runs
are grouped by the rule in their config, never by folder name; runs of different tasks are
refused. Where some runs of a rule stopped earlier than others, the rest of its curve
is dotted, and its legend entry says how many runs each stretch is over ("n = 5 runs; dotted:
3"); a rule with one run says "one run" and has no band. For the evidence-accumulation task
panel A is the paper's Fig. 3C, and where the curves reach iteration 2000 the paper's values
there are marked (stars). Writes fig3c_learning_curves.png/.pdf.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mdgl_analysis import analysis
from mdgl_analysis.analysis import plotting

NAME = "fig3c_learning_curves"
METRICS = ("accuracy", "nmse")
"""The task metrics a run's metrics.csv may hold (cross-entropy and MSE tasks)."""

PAPER: dict[str, dict[str, float]] = {
    "bptt": {"loss": 0.08, "accuracy": 0.98},
    "mdgl": {"loss": 0.24, "accuracy": 0.90},
    "eprop": {"loss": 0.49, "accuracy": 0.76},
}
"""The paper's Fig. 3C values (spec section G: the saved runs, mean over 5 runs around
iteration :data:`PAPER_ITERATION`), evidence-accumulation task only."""
PAPER_ITERATION = 2000
LOSS_UNITS = {"cross_entropy": ", nats", "mse": ", target units²"}
"""Units of the losses (the mean over the steps that count of the cross-entropy in nats, or of the
squared error in the units of the target)."""
METRIC_UNITS = {"accuracy": "fraction correct", "nmse": "1"}
"""Units of the task metrics (nmse: dimensionless)."""


def curves(runs: Sequence[str | Path], smooth: int = 5, name: str = "loss") -> pd.DataFrame:
    """Mean and std over seeds of the smoothed validation ``name`` per rule and iteration."""
    metrics = analysis.load_metrics(runs)
    return analysis.learning_curves(metrics, name=name, split="val", smooth=smooth)


def task_of(runs: Sequence[str | Path], metrics: pd.DataFrame | None = None) -> dict[str, Any]:
    """The task the runs share: ``name``, ``loss``, ``metric`` and ``n_out`` (None where
    unknown), from run.json (:func:`plotting.task_info`) or, for the metric of older runs, from
    the names in their metrics.

    Raises:
        FigureError: the runs are of different tasks (or metrics): their curves do not compare.
    """
    metrics = analysis.load_metrics(runs) if metrics is None else metrics
    names, losses, kinds, n_outs = set(), set(), set(), set()
    tasks_of: dict[str, set[str]] = {}
    for run in runs:
        info = plotting.task_info(run)
        metric = info.get("metric")
        if metric is None:
            have = set(metrics.loc[metrics["run"] == str(run), "name"])
            metric = next((m for m in METRICS if m in have), None)
        names.add(info.get("name"))
        losses.add(info.get("loss") or {"accuracy": "cross_entropy", "nmse": "mse"}.get(metric))
        kinds.add(metric)
        n_outs.add(info.get("n_out"))
        tasks_of.setdefault(str(metric), set()).add(str(info.get("name")))
    if len(kinds) > 1 or len(losses) > 1:
        have = "; ".join(f"{m}: {', '.join(sorted(t))}" for m, t in sorted(tasks_of.items()))
        raise plotting.FigureError(
            f"the runs are of tasks with different losses or metrics ({have}): draw them apart"
        )
    if len(names) > 1:
        have = ", ".join(sorted(map(str, names)))
        raise plotting.FigureError(f"the runs are of several tasks ({have}): draw them apart")
    return {
        "name": names.pop(),
        "loss": losses.pop(),
        "metric": kinds.pop(),
        "n_out": n_outs.pop() if len(n_outs) == 1 else None,
    }


def _panel(ax: Axes, table: pd.DataFrame, rules: Sequence[str]) -> bool:
    """Mean line (gid ``mean:<rule>``, solid while every run of the rule contributes) and ±std
    band per rule; dotted (gid ``fewer:<rule>``) where some runs had stopped, the legend entry
    saying how many runs each stretch is over. Returns whether any curve is dotted."""
    fewer = False
    for rule in rules:
        t = table[table["rule"] == rule]
        if t.empty:
            continue
        alpha = plotting.band_alpha(len(rules))
        fewer |= plotting.band_by_n(ax, t, rule, "runs", gid=f"mean:{rule}", alpha=alpha)
    ax.set_xlabel("training iteration")
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fewer


def _reference(ax: Axes, y: float, text: str) -> None:
    """A dotted grey horizontal line at ``y`` named at its right end."""
    ax.axhline(y, color="#888888", linewidth=0.9, linestyle=":", zorder=1)
    ax.annotate(
        text,
        (1.0, y),
        xycoords=("axes fraction", "data"),
        xytext=(-2, 2),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize="x-small",
        color="#666666",
    )


def _paper(ax: Axes, key: str, rules: Sequence[str]) -> bool:
    """Stars at the paper's values at iteration 2000 for the rules it has; whether any."""
    drawn = False
    for rule in rules:
        if rule in PAPER and key in PAPER[rule]:
            ax.scatter(
                [PAPER_ITERATION],
                [PAPER[rule][key]],
                marker="*",
                s=70,
                color=plotting.rule_color(rule),
                edgecolor="black",
                linewidth=0.5,
                zorder=4,
                gid=f"paper:{rule}",
            )
            drawn = True
    return drawn


def _smoothing(metrics: pd.DataFrame, smooth: int) -> str:
    """The smoothing for the title: runs with fewer validation points than ``smooth`` are
    drawn unsmoothed (:func:`mdgl_analysis.analysis.moving_average`)."""
    if smooth <= 1:
        return ""
    val = metrics[(metrics["split"] == "val") & (metrics["name"] == "loss")]
    points = val.groupby("run")["iteration"].nunique()
    if (points < smooth).all():
        return f"unsmoothed: fewer than {smooth} validation points, "
    if (points < smooth).any():
        return f"{smooth}-point moving average (runs with fewer points unsmoothed), "
    return f"{smooth}-point moving average, "


def plot(runs: Sequence[str | Path], smooth: int = 5) -> Figure:
    """The figure: A validation loss, B the task's metric (if logged); one mean line and ±std
    band per rule in each (line gid ``mean:<rule>``)."""
    metrics = analysis.load_metrics(runs)
    task = task_of(runs, metrics)
    plotting.warn_duplicates(plotting.run_key(r) for r in runs)
    loss_table = analysis.learning_curves(metrics, name="loss", split="val", smooth=smooth)
    if loss_table.empty:
        raise plotting.FigureError("no validation loss in these runs' metrics.csv")
    metric = task["metric"]
    metric_table = (
        analysis.learning_curves(metrics, name=metric, split="val", smooth=smooth)
        if metric
        else pd.DataFrame()
    )
    if metric and metric_table.empty:
        plotting.note(f"{NAME}: no validation {metric} in these runs' metrics.csv: loss only")
    evidence = task["name"] == "evidence"
    loss_label = plotting.LOSS_LABELS.get(task["loss"], task["loss"] or "loss")
    metric_label = plotting.METRIC_LABELS.get(metric, metric)

    plotting.setup()
    panels = 2 if len(metric_table) else 1
    fig = plotting.new_figure((4.1 * panels + 2.2, 3.6))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    rules = plotting.rule_order(loss_table["rule"])
    reach = float(loss_table["iteration"].max())
    paper = evidence and reach >= PAPER_ITERATION

    fewer = _panel(axes[0], loss_table, rules)
    axes[0].set_ylabel(f"validation loss ({loss_label}{LOSS_UNITS.get(task['loss'], '')})")
    axes[0].set_title(f"Validation loss ({loss_label})")
    stars = paper and _paper(axes[0], "loss", rules)
    if panels == 2:
        ax = axes[1]
        fewer |= _panel(ax, metric_table, rules)
        ax.set_ylabel(f"validation {metric_label} ({METRIC_UNITS.get(metric, '1')})")
        ax.set_title(f"Validation {metric_label}")
        if metric == "accuracy":
            if task["n_out"]:
                _reference(ax, 1.0 / task["n_out"], "chance")
            ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
        elif metric == "nmse":
            _reference(ax, 1.0, "1: no better than the target's mean")
            ax.set_ylim(bottom=0.0)
        stars |= paper and _paper(ax, metric, rules)
        for ax, letter in zip(axes, "AB", strict=True):
            plotting.panel_label(ax, letter)

    handles, labels = axes[0].get_legend_handles_labels()
    if fewer:
        handles.append(Line2D([], [], color="0.4", linestyle=":"))
        labels.append("dotted: fewer runs\n(some stopped earlier)")
    if stars:
        handles.append(
            Line2D([], [], marker="*", color="0.5", markeredgecolor="black", linestyle="none")
        )
        labels.append(f"paper (Liu et al. 2021),\niteration {PAPER_ITERATION}, mean of 5 runs")
    fig.legend(
        handles, labels, loc="outside right upper", title="rule (n = runs)", alignment="left"
    )
    smooth_text = _smoothing(metrics, smooth)
    spread = plotting.spread_text(loss_table["n"], "runs")
    what = (
        "Evidence accumulation (the paper's Fig. 3C)"
        if evidence
        else f"Task {task['name']} ({loss_label} loss)"
    )
    fig.suptitle(f"{what}: learning curves\n({smooth_text}{spread})", fontsize="medium")
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: find the runs, draw, save (prints the written paths); 0, or 2 with one
    line on stderr when the runs cannot give the figure."""
    ap = plotting.parser(__doc__, NAME)
    ap.add_argument(
        "--smooth",
        type=int,
        default=5,
        help="moving-average width in validation points (default 5; 1 = none)",
    )
    args = ap.parse_args(argv)
    return plotting.draw(lambda: plot(plotting.runs_in(args.paths), args.smooth), args.out, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
