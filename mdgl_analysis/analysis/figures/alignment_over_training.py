"""Alignment with BPTT over training: cosine similarity of each rule's gradient with BPTT's.

    python -m mdgl_analysis.analysis.figures.alignment_over_training RUN_OR_FOLDER... --out DIR
        [--trained-with auto]

Panel A: recurrent weights, panel B: input weights. The cosine is the one the trainer logs every
train.compare_every iterations (metrics cos_<rule>_rec and cos_<rule>_in: the rule's raw gradient
and BPTT's on the same weights and the same training batch, existing synapses only); a run without
these metrics but with records uses the recorded gradients instead
(mdgl_analysis.analysis.gradient_alignment). Line: mean over seeds at each compared iteration;
band: ± one standard deviation over seeds (ddof = 1). Where some seeds' runs stopped earlier the
rest of the line is dotted and the legend says how many seeds each stretch is over ("n = 5
seeds; dotted: 3"); markers only on short series (at most 30 points). Runs are grouped by the
rule and seed in their config. Writes alignment_over_training.png/.pdf.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mdgl_analysis.analysis import plotting

NAME = "alignment_over_training"
PARTS = ("rec", "in")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof = 1; 0 for one seed) and n over seeds per rule, part and iteration.

    Runs with the same training rule and seed are averaged first (they are one seed).
    """
    per_seed = (
        table.groupby(["rule", "part", "iteration", "training_rule", "seed"])["value"]
        .mean()
        .reset_index()
    )
    grouped = per_seed.groupby(["rule", "part", "iteration"])["value"]
    out = grouped.agg(
        mean="mean", std=lambda v: v.std(ddof=1) if v.count() > 1 else 0.0, n="count"
    ).reset_index()
    return out


def plot(runs: Sequence[str | Path], trained_with: str = "auto") -> Figure:
    """Two panels (recurrent, input weights), one mean line and ±std band per compared rule."""
    plotting.warn_duplicates(plotting.run_key(r) for r in runs)
    table = plotting.cosine_table(runs)
    trained_with = plotting.resolve_trained_with(table, trained_with) if len(table) else "any"
    table = plotting.select_trained_with(table, trained_with)
    table = table[table["part"].isin(PARTS) & table["rule"].ne("bptt")]
    if table.empty:
        raise plotting.FigureError(
            "no cosines with BPTT for these runs (train with --set train.compare_every=K "
            "or record); with --trained-with own a run counts only if its own rule was compared "
            "(try --trained-with bptt or any)"
        )
    stats = summary(table)
    plotting.setup()
    fig = plotting.new_figure((8.0, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    rules = plotting.rule_order(stats["rule"])
    fewer = False
    for ax, part, letter in zip(axes, PARTS, "AB", strict=True):
        plotting.zero_line(ax)
        for rule in rules:
            s = stats[(stats["rule"] == rule) & (stats["part"] == part)]
            if s.empty:
                continue
            fewer |= plotting.band_by_n(
                ax,
                s,
                rule,
                "seeds",
                gid=f"mean:{rule}:{part}",
                alpha=plotting.band_alpha(len(rules)),
                clip=(-1.0, 1.0),
            )
        ax.set_xlabel("training iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(plotting.PART_LABELS[part].capitalize())
        plotting.panel_label(ax, letter)
    axes[0].set_ylabel("cosine similarity with\nBPTT gradient (−1 to 1)")
    low = float((stats["mean"] - stats["std"]).min())
    axes[0].set_ylim(max(-1.05, min(-0.05, low - 0.05)), 1.05)
    handles, labels = axes[0].get_legend_handles_labels()
    if fewer:
        handles.append(Line2D([], [], color="0.4", linestyle=":"))
        labels.append("dotted: fewer seeds\n(some runs stopped earlier)")
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 3),
        title="rule (n = seeds)",
        alignment="left",
    )
    fig.suptitle(
        "Alignment of each rule's gradient with the BPTT gradient during training\n"
        f"({plotting.trained_with_text(trained_with)}; {plotting.spread_text(stats['n'])})",
        fontsize="medium",
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: find the runs, draw, save (prints the written paths); 0, or 2 with one
    line on stderr when the runs cannot give the figure."""
    ap = plotting.parser(__doc__, NAME)
    ap.add_argument("--trained-with", default="auto", help=plotting.trained_with_help())
    args = ap.parse_args(argv)
    return plotting.draw(
        lambda: plot(plotting.runs_in(args.paths), args.trained_with), args.out, NAME
    )


if __name__ == "__main__":
    raise SystemExit(main())
