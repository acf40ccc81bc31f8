"""Fig. 3C: validation loss against training iteration, mean ± std over seeds, per learning rule.

    python analyses/fig3c_learning_curves.py RUN_OR_FOLDER... [--out DIR] [--smooth 5]

Reads each run's metrics.csv (split val, name loss: cross-entropy on a fresh validation batch,
every train.val_every iterations). Each run's curve is smoothed with a 5-point moving average
(the original plot script's smoothing); the line is the mean over the runs of a rule and the band
± one standard deviation (ddof = 1), both from mdgl_analysis.analysis.learning_curves. Runs are
grouped by the rule in their config, never by folder name. Where some runs of a rule stopped
earlier than others, the rest of its curve is dotted. Writes fig3c_learning_curves.png/.pdf.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mdgl_analysis import analysis
from mdgl_analysis.analysis import plotting  # noqa: E402

NAME = "fig3c_learning_curves"


def curves(runs: Sequence[str | Path], smooth: int = 5) -> pd.DataFrame:
    """Mean and std over seeds of the smoothed validation loss per rule and iteration."""
    metrics = analysis.load_metrics(runs)
    return analysis.learning_curves(metrics, name="loss", split="val", smooth=smooth)


def plot(runs: Sequence[str | Path], smooth: int = 5) -> Figure:
    """The figure: one mean line and ±std band per rule (line gid ``mean:<rule>``)."""
    plotting.warn_duplicates(plotting.run_key(r) for r in runs)
    table = curves(runs, smooth)
    if table.empty:
        raise SystemExit("error: no validation loss in these runs' metrics.csv")
    plotting.setup()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    rules = plotting.rule_order(table["rule"])
    fewer = False
    for rule in rules:
        t = table[table["rule"] == rule].sort_values("iteration")
        n = int(t["n"].max())
        label = plotting.rule_n_label(rule, n, "runs" if n != 1 else "run")
        # solid while every run of the rule contributes; dotted where some stopped earlier
        last_full = t.loc[t["n"] == n, "iteration"].max()
        for part, style in ((t[t.iteration <= last_full], "-"), (t[t.iteration >= last_full], ":")):
            if style == ":" and len(part) < 2:
                continue
            fewer |= style == ":"
            plotting.mean_band(
                ax,
                part["iteration"],
                part["mean"],
                part["std"],
                plotting.rule_color(rule),
                label=label if style == "-" else None,
                gid=f"mean:{rule}" if style == "-" else f"fewer:{rule}",
                alpha=plotting.band_alpha(len(rules)) / (1 if style == "-" else 2),
                linestyle=style,
            )
    if fewer:
        ax.plot([], [], color="0.4", linestyle=":", label="fewer runs (some stopped earlier)")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("validation loss (cross-entropy)")
    smooth_text = f"{smooth}-point moving average, " if smooth > 1 else ""
    ax.set_title(f"Evidence accumulation: validation loss\n({smooth_text}mean ± std over seeds)")
    ax.set_xlim(left=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: the curves fill the axes
    return fig


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command line: find the runs, draw, save; prints and returns the written paths."""
    ap = plotting.parser(__doc__, NAME)
    ap.add_argument(
        "--smooth",
        type=int,
        default=5,
        help="moving-average width in validation points (default 5; 1 = none)",
    )
    args = ap.parse_args(argv)
    fig = plot(plotting.runs_in(args.paths), args.smooth)
    return plotting.finish(fig, args.out, NAME)


if __name__ == "__main__":
    main(sys.argv[1:])
