"""Alignment with BPTT per cell-type block: E→E, E→I, I→E, I→I, input→E, input→I, per rule.

    python -m mdgl_analysis.analysis.figures.alignment_by_block RUN_OR_FOLDER... --out DIR
        [--trained-with auto] [--min-iteration N] [--max-iteration N]

The cosine similarity of a rule's gradient with BPTT's, restricted to the existing synapses of one
block (pre→post), as logged by the trainer every train.compare_every iterations (metrics
cos_<rule>_rec_XX and cos_<rule>_in_X; rec_EI is E→I); a run without these metrics but with records
uses the recorded gradients (mdgl_analysis.analysis.gradient_alignment, by="block"). Each seed's
cosines are averaged over its compared iterations (NaN, i.e. an empty block, skipped); the bar is
the mean over seeds, the error bar ± one standard deviation over seeds (ddof = 1), the dots the
seeds. Runs are grouped by the rule and seed in their config. Writes alignment_by_block.png/.pdf.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mdgl_analysis.analysis import plotting

NAME = "alignment_by_block"
BLOCKS = ("rec_EE", "rec_EI", "rec_IE", "rec_II", "in_E", "in_I")


def per_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over iterations (and over runs of the same rule and seed) per rule, block, seed."""
    keys = ["rule", "part", "training_rule", "seed"]
    return table.groupby(keys)["value"].mean().reset_index()


def summary(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof = 1; 0 for one seed) and n over seeds per rule and block."""
    grouped = seeds.dropna(subset=["value"]).groupby(["rule", "part"])["value"]
    return grouped.agg(
        mean="mean", std=lambda v: v.std(ddof=1) if v.count() > 1 else 0.0, n="count"
    ).reset_index()


def plot(
    runs: Sequence[str | Path],
    trained_with: str = "auto",
    min_iteration: int | None = None,
    max_iteration: int | None = None,
) -> Figure:
    """Grouped bars: blocks along x, one bar per compared rule, seeds as dots."""
    plotting.warn_duplicates(plotting.run_key(r) for r in runs)
    table = plotting.cosine_table(runs)
    trained_with = plotting.resolve_trained_with(table, trained_with) if len(table) else "any"
    table = plotting.select_trained_with(table, trained_with)
    table = table[table["part"].isin(BLOCKS) & table["rule"].ne("bptt")]
    if min_iteration is not None:
        table = table[table["iteration"] >= min_iteration]
    if max_iteration is not None:
        table = table[table["iteration"] <= max_iteration]
    if table.empty:
        raise plotting.FigureError(
            "no per-block cosines with BPTT for these runs and iterations (train with "
            "--set train.compare_every=K or record); with --trained-with own a run counts only "
            "if its own rule was compared (try --trained-with bptt or any)"
        )
    seeds = per_seed(table)
    stats = summary(seeds)
    rules = plotting.rule_order(stats["rule"])
    iterations = sorted(table["iteration"].unique())

    plotting.setup()
    fig = plotting.new_figure((max(5.5, 1.2 * len(BLOCKS) * (0.5 + 0.25 * len(rules))), 3.8))
    ax = fig.subplots()
    plotting.zero_line(ax)
    width = 0.8 / len(rules)
    rng = np.random.default_rng(0)  # horizontal jitter of the seed dots only
    for k, rule in enumerate(rules):
        offset = (k - (len(rules) - 1) / 2) * width
        s = stats[stats["rule"] == rule].set_index("part").reindex(BLOCKS)
        x = np.arange(len(BLOCKS)) + offset
        n = int(s["n"].max())
        color = plotting.rule_color(rule)
        bars = ax.bar(
            x,
            s["mean"],
            width=width * 0.9,
            color=color,
            alpha=0.85,
            label=plotting.rule_n_label(rule, n),
        )
        for bar in bars:
            bar.set_gid(f"bar:{rule}")
        std = s["std"].where(s["n"] > 1).to_numpy()
        lo = s["mean"].to_numpy() - np.clip(s["mean"].to_numpy() - std, -1.0, 1.0)
        hi = np.clip(s["mean"].to_numpy() + std, -1.0, 1.0) - s["mean"].to_numpy()
        ax.errorbar(
            x,
            s["mean"],
            yerr=np.vstack([lo, hi]),
            fmt="none",
            ecolor="#333333",
            elinewidth=1,
            capsize=2.5,
        )
        for xi, ni in zip(x, s["n"], strict=True):  # blocks with fewer seeds (empty block)
            if np.isfinite(ni) and ni < n:
                ax.annotate(
                    f"n={int(ni)}",
                    (xi, 0.01),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                )
        pts = seeds[seeds["rule"] == rule]
        px = np.array([BLOCKS.index(p) for p in pts["part"]]) + offset
        px = px + rng.uniform(-0.2, 0.2, len(px)) * width
        ax.scatter(
            px, pts["value"], s=9, color="white", edgecolor="#333333", linewidth=0.6, zorder=3
        )
    ax.set_xticks(np.arange(len(BLOCKS)), [plotting.BLOCK_LABELS[b] for b in BLOCKS])
    ax.set_xlabel("synapse block (presynaptic → postsynaptic cell type)")
    ax.set_ylabel("cosine similarity with BPTT gradient")
    low = float(np.nanmin(np.r_[seeds["value"].to_numpy(), 0.0]))
    ax.set_ylim(max(-1.05, low - 0.1), 1.05)
    span = (
        f"iteration {iterations[0]}"
        if len(iterations) == 1
        else f"iterations {iterations[0]}–{iterations[-1]} ({len(iterations)} comparisons)"
    )
    fig.suptitle(
        "Gradient alignment with BPTT by cell-type block", fontweight="bold", fontsize="medium"
    )
    ax.set_title(
        f"{plotting.trained_with_text(trained_with).capitalize()};\nper seed, mean over {span}",
        fontweight="normal",
        fontsize="small",
    )
    handles, labels = ax.get_legend_handles_labels()
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            linestyle="none",
            markerfacecolor="white",
            markeredgecolor="#333333",
            markersize=4,
        )
    )
    labels.append("one seed")
    fig.legend(
        handles,
        labels,
        loc="outside right center",
        title="rule (n = seeds);\nbar: mean over seeds,\nerror bar: ± std",
        alignment="left",
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: find the runs, draw, save (prints the written paths); 0, or 2 with one
    line on stderr when the runs cannot give the figure."""
    ap = plotting.parser(__doc__, NAME)
    ap.add_argument("--trained-with", default="auto", help=plotting.trained_with_help())
    ap.add_argument("--min-iteration", type=int, help="average only from this iteration on")
    ap.add_argument("--max-iteration", type=int, help="average only up to this iteration")
    args = ap.parse_args(argv)
    return plotting.draw(
        lambda: plot(
            plotting.runs_in(args.paths), args.trained_with, args.min_iteration, args.max_iteration
        ),
        args.out,
        NAME,
    )


if __name__ == "__main__":
    raise SystemExit(main())
