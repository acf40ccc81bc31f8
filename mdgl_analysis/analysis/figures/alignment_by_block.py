"""Alignment with BPTT per cell-type block: E→E, E→I, I→E, I→I, input→E, input→I, per rule.

    python -m mdgl_analysis.analysis.figures.alignment_by_block RUN_OR_FOLDER... --out DIR
        [--trained-with auto] [--min-iteration N] [--max-iteration N]

The cosine similarity of a rule's gradient with BPTT's, restricted to the existing synapses of one
block (pre→post), as logged by the trainer every train.compare_every iterations (metrics
cos_<rule>_rec_XX and cos_<rule>_in_X; rec_EI is E→I); a run without these metrics but with records
uses the recorded gradients (mdgl_analysis.analysis.gradient_alignment, by="block"). Each seed's
cosines are averaged over its compared iterations (NaN, i.e. an empty block, skipped); the bar is
the mean over seeds, the error bar ± one standard deviation over seeds (ddof = 1), the dots the
seeds; "k of n seeds" under a bar: the other seeds have no cosine in that block (a zero gradient
there in every compared iteration, e.g. e-prop's onto I cells when no I cell has a readout weight).
The title says which iterations each seed's mean is over (runs that reached different iterations:
the range). Runs are grouped by the rule and seed in their config. Writes
alignment_by_block.png/.pdf.
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

    plotting.setup()
    fig = plotting.new_figure((max(5.5, 1.2 * len(BLOCKS) * (0.5 + 0.25 * len(rules))), 3.8))
    ax = fig.subplots()
    plotting.zero_line(ax)
    width = 0.8 / len(rules)
    rng = np.random.default_rng(0)  # horizontal jitter of the seed dots only
    fewer = False
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
            label=plotting.rule_n_label(rule, s["n"].dropna(), "seeds"),
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
        for xi, ni in zip(x, s["n"], strict=True):  # blocks with fewer seeds (no cosine)
            if np.isfinite(ni) and ni < n:
                fewer = True
                ax.annotate(
                    f"{int(ni)} of {n}\nseeds",
                    (xi, 0.01),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="bottom",
                    fontsize="xx-small",
                    gid=f"fewer:{rule}",
                )
        pts = seeds[seeds["rule"] == rule]
        px = np.array([BLOCKS.index(p) for p in pts["part"]]) + offset
        px = px + rng.uniform(-0.2, 0.2, len(px)) * width
        ax.scatter(
            px, pts["value"], s=9, color="white", edgecolor="#333333", linewidth=0.6, zorder=3
        )
    ax.set_xticks(np.arange(len(BLOCKS)), [plotting.BLOCK_LABELS[b] for b in BLOCKS])
    ax.set_xlabel("synapse block (presynaptic → postsynaptic cell type)")
    ax.set_ylabel("cosine similarity with\nBPTT gradient (−1 to 1)")
    low = float(np.nanmin(np.r_[seeds["value"].to_numpy(), 0.0]))
    ax.set_ylim(max(-1.05, low - 0.1), 1.05)
    fig.suptitle(
        "Gradient alignment with BPTT by cell-type block", fontweight="bold", fontsize="medium"
    )
    ax.set_title(
        f"{plotting.trained_with_text(trained_with).capitalize()};\n"
        f"per seed, mean over {_span(table)}",
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
    one = int(stats["n"].max()) <= 1
    title = (
        "rule (n = seeds);\nbar: one seed, no error bar"
        if one
        else "rule (n = seeds);\nbar: mean over seeds,\nerror bar: ± std over seeds"
    )
    legend = fig.legend(handles, labels, loc="outside right center", title=title, alignment="left")
    if fewer:
        legend.set_title(
            title + ";\n'k of n seeds' under a bar:\nthe others have a zero\n"
            "gradient in that block\n(no cosine)"
        )
    return fig


def _span(table: pd.DataFrame) -> str:
    """The compared iterations behind each seed's value, e.g. ``"iterations 0–1990 (200
    comparisons)"``, or ``"iterations 0–990 to 0–1990 (100–200 comparisons per seed)"`` when
    the seeds' runs reached different iterations."""
    per_seed = table.groupby(["training_rule", "seed", "rule"])["iteration"].agg(
        ["min", "max", "nunique"]
    )
    ends = zip(per_seed["min"], per_seed["max"], strict=True)
    spans = sorted({(int(a), int(b)) for a, b in ends})
    counts = sorted(set(per_seed["nunique"].astype(int)))

    def one(a: int, b: int) -> str:
        return f"{a}" if a == b else f"{a}–{b}"

    if len(spans) == 1 and len(counts) == 1:
        a, b = spans[0]
        word = "iteration" if a == b else "iterations"
        return f"{word} {one(a, b)} ({plotting.n_text(counts, 'comparisons')})"
    lo, hi = spans[0], spans[-1]
    return (
        f"its iterations ({one(*lo)} to {one(*hi)}: "
        f"{plotting.n_text(counts, 'comparisons')} per seed)"
    )


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
