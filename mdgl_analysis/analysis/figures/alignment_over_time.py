"""Alignment with BPTT within a trial: when does each rule assign credit like BPTT?

    python -m mdgl_analysis.analysis.figures.alignment_over_time RUN_OR_FOLDER... --out DIR
        [--window-ms 50] [--trained-with auto] [--matrix rec,in]

From recorded runs (records/iter_*.h5 with the signals and traces groups): each rule's gradient
contribution learning_signal x eligibility trace, summed over the recorded trials and over a time
window of the trial, is compared with BPTT's by cosine similarity over the existing synapses
(mdgl_analysis.analysis.time_alignment). Each run's cosines are averaged over its recorded
iterations; each step of the line is the mean over seeds for one window (from its start to its
end), the band ± one standard deviation over seeds (ddof = 1). Windows where a rule's contribution
is negligible (below 1e-6 of BPTT's in the same window, or BPTT's own about zero:
mdgl_analysis.analysis.negligible) are masked: not plotted (a gap) and marked by a hatched strip in
the rule's colour along the bottom; their cosine would compare rounding residues (e-prop's readout
signal leaks into the cues only through the readout filter, ~1e-14 of BPTT's). The strip above each
panel shows the task's named epochs (the evidence task's cues, delay and recall; NeuroGym's
periods), from run.json's task.epochs (or, for runs from before it was written, the evidence task
of their [task] config); a task without epochs (pattern generation) has no strip and no shading.
Runs are grouped by the rule and seed in their config. Writes alignment_over_time.png/.pdf.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from mdgl_analysis import analysis
from mdgl_analysis.analysis import plotting
from mdgl_analysis.recording.readers import open_run, record_files

NAME = "alignment_over_time"


def run_table(
    run: str | Path, window_ms: float, matrices: Sequence[str], rules: Sequence[str] | None = None
) -> pd.DataFrame:
    """One run's cosines with BPTT per compared rule, matrix and window, averaged over its
    recorded iterations (only ``rules`` when given), negligible windows left out.

    A window whose contribution is negligible in an iteration
    (:func:`mdgl_analysis.analysis.negligible`: below 1e-6 of BPTT's in the same window, or
    BPTT's own about zero) does not count in that iteration's place of the mean; a window
    negligible in every recorded iteration has no value (NaN) and ``masked`` true.

    Returns:
        columns ``rule``, ``matrix``, ``window`` (start, ms), ``value``, ``masked``,
        ``iterations`` (how many were recorded), ``trials``.
    """
    ds = open_run(run)
    if "learning_signal" not in ds or "e_rec" not in ds:
        return pd.DataFrame()
    recorded = [str(r) for r in ds.rule.values]
    keep = [r for r in recorded if r == "bptt" or rules is None or r in rules]
    if "bptt" not in keep or len(keep) < 2:
        return pd.DataFrame()
    ds = ds.sel(rule=keep)
    frames = []
    for matrix in matrices:
        if f"e_{matrix}" not in ds:
            continue
        res = analysis.time_alignment(ds, window_ms, matrix=matrix).compute()
        frames.append(masked_table(res).assign(matrix=matrix))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    table["iterations"] = ds.sizes["iteration"]
    table["trials"] = ds.sizes["trial"]
    return table


def masked_table(res: xr.Dataset, rel: float = analysis.alignment.NEGLIGIBLE) -> pd.DataFrame:
    """A computed :func:`mdgl_analysis.analysis.time_alignment` result (dims ``iteration``,
    ``rule``, ``window``) as a table: per rule and window the mean cosine over the iterations
    where the window is not negligible (:func:`mdgl_analysis.analysis.negligible` at ``rel``),
    and ``masked``: negligible in every iteration (then ``value`` is NaN).

    Returns:
        columns ``rule``, ``window``, ``value``, ``masked``.
    """
    small = analysis.negligible(res, rel)
    value = res.cosine.where(~small).mean("iteration", skipna=True)
    masked = small.all("iteration")
    table = xr.Dataset({"value": value, "masked": masked}).to_dataframe().reset_index()
    return table[["rule", "window", "value", "masked"]]


def collect(
    runs: Sequence[str | Path], window_ms: float, matrices: Sequence[str], trained_with: str
) -> tuple[pd.DataFrame, list[plotting.Epoch]]:
    """Cosine tables of every recorded run (with ``training_rule`` and ``seed``), filtered by
    ``trained_with`` (see plotting.select_trained_with), and the task epochs of the first such
    run (a one-line note when other runs' epochs differ)."""
    frames: list[pd.DataFrame] = []
    epochs: list[plotting.Epoch] | None = None
    for run in runs:
        if not record_files(run):
            continue
        rule, seed = plotting.run_key(run)
        if trained_with not in ("own", "any", "auto") and rule != trained_with:
            continue
        df = run_table(run, window_ms, matrices, [rule] if trained_with == "own" else None)
        if df.empty:
            continue
        df["training_rule"], df["seed"], df["run"] = rule, seed, str(run)
        if trained_with != "auto":
            df = plotting.select_trained_with(df, trained_with)
        if len(df):
            frames.append(df)
            these = plotting.task_epochs(run)
            if epochs is None:
                epochs, first = these, run
            elif these != epochs:
                plotting.note(f"{run} has other task epochs than {first}: showing {first}'s")
    if not frames:
        raise plotting.FigureError(
            "no recorded run with learning signals and eligibility traces matches (record "
            "with --set record.every=K and quantities state,signals,traces; with --trained-with "
            "own a run counts only if its own rule was recorded; try --trained-with bptt or any)"
        )
    table = pd.concat(frames, ignore_index=True)
    return plotting.select_trained_with(table, trained_with), epochs or []


def plot(
    runs: Sequence[str | Path],
    window_ms: float = 50.0,
    trained_with: str = "auto",
    matrices: Sequence[str] = ("rec", "in"),
) -> Figure:
    """One column per weight matrix: the task's epochs on top (if it has any), cosine per window
    below."""
    plotting.warn_duplicates(plotting.run_key(r) for r in runs)
    table, epochs = collect(runs, window_ms, matrices, trained_with)
    per_seed = (
        table.groupby(["rule", "matrix", "window", "training_rule", "seed"])
        .agg(value=("value", "mean"), masked=("masked", "all"))
        .reset_index()
    )
    stats = (
        per_seed.groupby(["rule", "matrix", "window"])
        .agg(
            mean=("value", "mean"),
            std=("value", lambda v: v.std(ddof=1) if v.count() > 1 else 0.0),
            n=("value", "count"),
            masked=("masked", "all"),
        )
        .reset_index()
    )
    matrices = [m for m in matrices if m in set(stats["matrix"])]
    rules = plotting.rule_order(stats["rule"])
    windows = np.sort(stats["window"].unique())
    shown = stats[~stats["masked"]]
    low = float((shown["mean"] - shown["std"].fillna(0)).min()) if len(shown) else 0.0
    low = max(-1.05, min(-0.1, (low if np.isfinite(low) else 0.0) - 0.05))

    plotting.setup()
    width = max(7.5, 4.2 * len(matrices) + 1.8)
    fig = plotting.new_figure((width, 3.9 if epochs else 3.6))
    if epochs:
        axes = fig.subplots(2, len(matrices), height_ratios=[0.12, 1], sharex=True, squeeze=False)
    else:  # no strip: the titles and panel letters go on the data axes
        axes = fig.subplots(1, len(matrices), sharex=True, squeeze=False)
        axes = np.vstack([axes, axes])
    start = min([windows[0], *(ep.start for ep in epochs)])
    stop = max([windows[-1] + window_ms, *(ep.stop for ep in epochs)])
    any_masked = False
    for col, matrix in enumerate(matrices):
        top, ax = axes[0, col], axes[1, col]
        if epochs:
            plotting.epoch_bar(top, epochs)
            plotting.shade_epochs(ax, epochs)
        plotting.zero_line(ax)
        edges = np.r_[windows, windows[-1] + window_ms]
        for k, rule in enumerate(rules):
            s = stats[(stats["rule"] == rule) & (stats["matrix"] == matrix)]
            s = s.set_index("window").reindex(windows)
            masked = s["masked"].fillna(False).to_numpy(bool)
            ns = s["n"].to_numpy()
            plotting.stairs_band(
                ax,
                edges,
                s["mean"].to_numpy(),
                s["std"].to_numpy(),
                plotting.rule_color(rule),
                label=plotting.rule_n_label(rule, ns[ns > 0], "seeds")
                + ("; every window masked" if masked.all() else ""),
                gid=f"mean:{rule}:{matrix}",
                clip=(-1.0, 1.0),
                alpha=plotting.band_alpha(len(rules)),
            )
            any_masked |= masked.any()
            mask_strips(ax, edges, masked, plotting.rule_color(rule), k, f"masked:{rule}:{matrix}")
        ax.set_xlabel("time in trial (ms)")
        ax.set_xlim(start, stop)
        ax.set_ylim(low, 1.05)
        top.set_title(plotting.PART_LABELS[matrix].capitalize())
        if len(matrices) > 1:
            plotting.panel_label(top, chr(ord("A") + col))
    axes[1, 0].set_ylabel(
        f"cosine with BPTT (−1 to 1)\n(contributions per {window_ms:g} ms window)"
    )
    for ax in axes[1, 1:]:
        ax.tick_params(labelleft=False)
    details = (
        f"({plotting.trained_with_text(trained_with)}; "
        f"mean over {_count(table, 'iterations', 'recorded iteration')} of "
        f"{_count(table, 'trials', 'trial')}; {plotting.spread_text(per_seed_counts(table))})"
    )
    fig.suptitle(
        "Alignment with BPTT within the trial: each rule's learning signal × eligibility trace\n"
        + textwrap.fill(details, int(fig.get_figwidth() * 11)),
        fontsize="medium",
    )
    handles, labels = axes[1, 0].get_legend_handles_labels()
    if any_masked:
        handles.append(Patch(facecolor="none", edgecolor="#777777", hatch="////", linewidth=0))
        labels.append(
            "masked: negligible contribution\n"
            f"(< {plotting.power_of_ten(analysis.alignment.NEGLIGIBLE)} × BPTT's in the\n"
            "window, or BPTT's ≈ 0): not\nplotted; a strip per rule"
        )
    fig.legend(
        handles, labels, loc="outside right center", title="rule (n = seeds)", alignment="left"
    )
    return fig


STRIP = 0.035
"""Height of a rule's masked-window strip, in axes fraction."""


def mask_strips(
    ax: Axes, edges: np.ndarray, masked: np.ndarray, color: str, row: int, gid: str
) -> None:
    """Hatched strips along the bottom of ``ax`` (row ``row`` from the bottom, in ``color``)
    over each stretch of masked windows (``masked[k]``: the window from ``edges[k]`` to
    ``edges[k + 1]``); every strip gets ``gid``."""
    if not masked.any():
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    bounds = np.flatnonzero(np.diff(np.r_[0, masked.astype(np.int8), 0]))
    y0, y1 = row * STRIP, (row + 0.8) * STRIP
    for a, b in zip(bounds[::2], bounds[1::2], strict=True):
        art = ax.fill_between(
            [edges[a], edges[b]],
            [y0, y0],
            [y1, y1],
            transform=trans,
            facecolor="white",
            edgecolor=color,
            hatch="////",
            linewidth=0.6,
            zorder=3,
        )
        art.set_gid(gid)


def per_seed_counts(table: pd.DataFrame) -> list[int]:
    """How many seeds each (rule, matrix) curve of ``table`` is over."""
    return (
        table.groupby(["rule", "matrix"])[["training_rule", "seed"]]
        .apply(lambda d: len(d.drop_duplicates()))
        .tolist()
    )


def _count(table: pd.DataFrame, column: str, noun: str) -> str:
    """``"2 recorded iterations"`` or ``"1-3 recorded iterations"`` over the runs of ``table``."""
    per_run = table.groupby("run")[column].first()
    lo, hi = int(per_run.min()), int(per_run.max())
    return f"{lo if lo == hi else f'{lo}–{hi}'} {noun}{'' if hi == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    """Command line: find the runs, draw, save (prints the written paths); 0, or 2 with one
    line on stderr when the runs cannot give the figure."""
    ap = plotting.parser(__doc__, NAME)
    ap.add_argument(
        "--window-ms", type=float, default=50.0, help="width of the time windows in ms (default 50)"
    )
    ap.add_argument("--trained-with", default="auto", help=plotting.trained_with_help())
    ap.add_argument(
        "--matrix",
        default="rec,in",
        help="weight matrices, comma-separated: rec, in (default both)",
    )
    args = ap.parse_args(argv)
    matrices = [m for m in args.matrix.split(",") if m]
    bad = [m for m in matrices if m not in ("rec", "in")]
    if bad or not matrices:
        ap.error(f"--matrix {args.matrix!r}: allowed rec, in")
    return plotting.draw(
        lambda: plot(plotting.runs_in(args.paths), args.window_ms, args.trained_with, matrices),
        args.out,
        NAME,
    )


if __name__ == "__main__":
    raise SystemExit(main())
