"""One recorded trial: inputs, spikes, voltages, learning signals and eligibility traces.

    python analyses/recorded_trial.py RUN_OR_FOLDER... [--out DIR] [--iteration N] [--trial K]
        [--rule RULE] [--seed S] [--signals bptt,eprop,mdgl] [--cells 2] [--synapses 4]

Reads one record file (records/iter_NNNNNN.h5, recorded with the state, signals and traces
groups) of one run: the run trained with --rule and --seed when given, else the first recorded
run found (runs are told apart by the rule and seed in their config, never by folder name).
--iteration picks the recorded training iteration (default: the last), --trial the trial of that
batch (default: the first recorded one). Panels, on one time axis in ms:

A  input spikes, one row per channel, coloured by population (left cue, right cue, recall, noise);
B  recurrent spikes sorted by cell type (E/I, adaptive ALIF cells apart); triangles mark output
   cells (cells with a readout weight at this iteration);
C  membrane potential v and adaptive threshold A of a few output cells (in units of v_th);
D  the per-neuron learning signal of those output cells under a few rules (BPTT: the total
   learning signal of the exact gradient; e-prop: the readout error signal; MDGL: readout signal
   plus cell-type-specific local modulatory signal);
E  eligibility traces e(t) of the synapses onto the first of those cells with the largest traces.

The strip on top shows the task's cues, delay and recall, computed from the run's [task] config.
Writes recorded_trial.png/.pdf.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from mdgl_analysis import analysis
from mdgl_analysis.analysis import plotting  # noqa: E402
from mdgl_analysis.recording.readers import open_record, record_files  # noqa: E402
from mdgl_analysis.recording.schema import iteration_of  # noqa: E402

NAME = "recorded_trial"
NEEDED = ("z", "v", "threshold", "learning_signal", "e_rec")
GROUP_ORDER = ("E", "E_adaptive", "I", "I_adaptive")
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def choose_run(runs: Sequence[Path], rule: str | None, seed: int | None) -> Path:
    """The first run with records that matches the training ``rule`` and ``seed`` (if given)."""
    for run in runs:
        run_rule, run_seed = plotting.run_key(run)
        if (
            (rule is None or run_rule == rule)
            and (seed is None or run_seed == seed)
            and record_files(run)
        ):
            return run
    want = ", ".join(f"{k} {v}" for k, v in (("rule", rule), ("seed", seed)) if v is not None)
    raise SystemExit(
        f"error: no recorded run{' with ' + want if want else ''} (train with --set record.every=K)"
    )


def choose_file(run: Path, iteration: int | None) -> Path:
    """The record file of ``iteration`` (default: the last recorded one)."""
    files = record_files(run)
    if iteration is None:
        return files[-1]
    for f in files:
        if iteration_of(f) == iteration:
            return f
    have = ", ".join(str(iteration_of(f)) for f in files)
    raise SystemExit(f"error: iteration {iteration} was not recorded in {run}; recorded: {have}")


def cell_groups(ds: xr.Dataset) -> np.ndarray:
    """``E``, ``E_adaptive``, ``I`` or ``I_adaptive`` for every recurrent cell."""
    types = ds.cell_type.values.astype(str)
    adaptive = ds.adaptive.values.astype(bool)
    return np.where(adaptive, np.char.add(types, "_adaptive"), types)


def pick_cells(ds: xr.Dataset, z: np.ndarray, count: int) -> list[int]:
    """Output cells to show: alternately the most active adaptive and non-adaptive ones."""
    out = np.flatnonzero(ds.readout.values.astype(bool))
    if out.size == 0:
        out = np.arange(ds.sizes["neuron"])
    spikes = z.sum(0)
    adaptive = ds.adaptive.values.astype(bool)
    pools = [
        sorted(out[adaptive[out]], key=lambda n: -spikes[n]),
        sorted(out[~adaptive[out]], key=lambda n: -spikes[n]),
    ]
    chosen: list[int] = []
    while len(chosen) < min(count, out.size):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(int(pool.pop(0)))
    return chosen


def scale_of(values: np.ndarray) -> tuple[float, str]:
    """A power of ten that brings ``values`` near 1, and its label (``"×10⁻⁴"``, or "")."""
    peak = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if peak == 0 or not math.isfinite(peak) or 0.1 <= peak < 100:
        return 1.0, ""
    exp = int(math.floor(math.log10(peak)))
    return 10.0**-exp, f"×10{str(exp).translate(SUPERSCRIPT)}"


def input_raster(ax: Axes, ds: xr.Dataset, trial: int) -> Axes:
    """Input spikes of one trial, channels grouped and coloured by population."""
    x = ds.x.sel(batch=trial).values  # [input_time, input] counts
    pops = ds.input_population.values.astype(str)
    order = np.argsort(
        [
            list(plotting.INPUT_COLORS).index(p)
            if p in plotting.INPUT_COLORS
            else len(plotting.INPUT_COLORS)
            for p in pops
        ],
        kind="stable",
    )
    row_of = np.empty(len(order), int)
    row_of[order] = np.arange(len(order))
    t_idx, ch = np.nonzero(x)
    times = ds.input_time.values[t_idx]
    colors = [plotting.INPUT_COLORS.get(pops[c], "#333333") for c in ch]
    plotting.spike_raster(ax, times, row_of[ch], colors, size=6)
    ticks, labels = [], []
    for pop in dict.fromkeys(pops[order]):
        rows = row_of[pops == pop]
        ticks.append(rows.mean())
        labels.append(plotting.INPUT_LABELS.get(pop, pop))
        ax.axhline(rows.max() + 0.5, color="#DDDDDD", linewidth=0.6, zorder=0)
    ax.set_yticks(ticks, labels, fontsize="small")
    for tick, pop in zip(ax.get_yticklabels(), dict.fromkeys(pops[order]), strict=True):
        tick.set_color(plotting.INPUT_COLORS.get(pop, "#333333"))
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_ylabel("input channel")
    return ax


def recurrent_raster(ax: Axes, ds: xr.Dataset, z: np.ndarray) -> Axes:
    """Recurrent spikes sorted by cell group; output cells marked at the right edge."""
    groups = cell_groups(ds)
    order = np.argsort([GROUP_ORDER.index(g) for g in groups], kind="stable")
    row_of = np.empty(len(order), int)
    row_of[order] = np.arange(len(order))
    t_idx, cell = np.nonzero(z)
    times = ds.time.values[t_idx]
    plotting.spike_raster(
        ax, times, row_of[cell], [plotting.CELL_COLORS[groups[c]] for c in cell], size=4
    )
    ticks, labels, colors = [], [], []
    for g in GROUP_ORDER:
        rows = row_of[groups == g]
        if rows.size:
            ticks.append(rows.mean())
            labels.append(f"{plotting.CELL_LABELS[g]}\n{rows.size} cells")
            colors.append(plotting.CELL_COLORS[g])
            ax.axhline(rows.max() + 0.5, color="#BBBBBB", linewidth=0.6, zorder=0)
    ax.set_yticks(ticks, labels, fontsize="small")
    for tick, color in zip(ax.get_yticklabels(), colors, strict=True):
        tick.set_color(color)
    readout = np.flatnonzero(ds.readout.values.astype(bool))
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    ax.scatter(
        np.full(readout.size, 1.008),
        row_of[readout],
        marker="<",
        s=10,
        color="black",
        transform=trans,
        clip_on=False,
        linewidths=0,
    )
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_ylabel("recurrent cell")
    return ax


def describe(ds: xr.Dataset, n: int) -> str:
    """``"cell 45 (E, adaptive)"``."""
    kind = str(ds.cell_type.values[n])
    return f"cell {n} ({kind}{', adaptive' if ds.adaptive.values[n] else ''})"


def cell_label(ax: Axes, ds: xr.Dataset, n: int) -> Axes:
    """Name the cell of a row in the right margin, in its cell-type colour."""
    kind = str(ds.cell_type.values[n])
    text = f"cell {n}\n{kind}{', ALIF' if ds.adaptive.values[n] else ', LIF'}"
    ax.text(
        1.01,
        0.5,
        text,
        transform=ax.transAxes,
        ha="left",
        va="center",
        fontsize="small",
        color=plotting.CELL_COLORS[cell_groups(ds)[n]],
    )
    return ax


def plot(
    run: str | Path,
    iteration: int | None = None,
    trial: int | None = None,
    signals: Sequence[str] = ("bptt", "eprop", "mdgl"),
    n_cells: int = 2,
    n_synapses: int = 4,
) -> Figure:
    """The figure for one trial of one recorded iteration of ``run``."""
    run = Path(run)
    path = choose_file(run, iteration)
    ds = open_record(path)
    missing = [v for v in NEEDED if v not in ds]
    if missing:
        raise SystemExit(
            f"error: {path} lacks {', '.join(missing)}: record with "
            "--set record.quantities=state,signals,traces"
        )
    trials = [int(t) for t in ds.trial.values]
    trial = trials[0] if trial is None else trial
    if trial not in trials:
        raise SystemExit(f"error: trial {trial} was not recorded; recorded: {trials}")
    cfg = analysis.run_config(run)
    rule, seed = cfg["train"]["rule"], cfg["run"]["seed"]
    v_th = float(cfg["network"]["v_th"])
    epochs = plotting.task_epochs(cfg)
    it = int(ds.iteration)
    signals = [s for s in signals if s in ds.rule.values.astype(str)]

    one = ds.sel(trial=trial)
    z = one.z.values.astype(np.int64)
    t = ds.time.values
    cells = pick_cells(ds, z, n_cells)

    plotting.setup()
    heights = [0.25, 1.3, 2.1] + [0.85] * len(cells) + [0.95] * len(cells) + [1.1]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(7.5, 1.0 + 1.1 * sum(heights)), sharex=True, height_ratios=heights
    )
    top, ax_in, ax_rec = axes[:3]
    ax_v = axes[3 : 3 + len(cells)]
    ax_l = axes[3 + len(cells) : 3 + 2 * len(cells)]
    ax_e = axes[-1]
    plotting.epoch_bar(top, epochs)
    for ax in axes[1:]:
        plotting.shade_epochs(ax, epochs, alpha=0.12)

    input_raster(ax_in, ds, trial)
    ax_in.set_title("Input spikes (by population)")
    plotting.panel_label(ax_in, "A")

    recurrent_raster(ax_rec, ds, z)
    ax_rec.set_title("Recurrent spikes by cell type (◀ marks output cells)")
    plotting.panel_label(ax_rec, "B")

    groups = cell_groups(ds)
    for k, (ax, n) in enumerate(zip(ax_v, cells, strict=True)):
        color = plotting.CELL_COLORS[groups[n]]
        v = one.v.isel(neuron=n).values / v_th
        thr = one.threshold.isel(neuron=n).values / v_th
        ax.plot(t, v, color=color, linewidth=0.9)
        ax.plot(t, thr, color="black", linewidth=1.0, linestyle="--")
        top_value = float(np.nanmax(np.r_[v, thr]))
        bottom = float(np.nanmin(np.r_[v, thr, 0.0]))
        span = top_value - bottom or 1.0
        ax.set_ylim(bottom - 0.05 * span, top_value + 0.3 * span)  # room for the spike ticks
        spikes = t[z[:, n] > 0]
        ax.plot(
            spikes,
            np.full(spikes.size, top_value + 0.17 * span),
            linestyle="none",
            marker="|",
            color=color,
            markersize=5,
        )
        cell_label(ax, ds, n)
        ax.set_ylabel("v / v_th")
        if k == 0:
            ax.set_title("Output cells: voltage v (solid), threshold A (dashed), spikes")
            plotting.panel_label(ax, "C")

    values = one.learning_signal.sel(rule=signals).isel(neuron=cells).values
    factor, unit = scale_of(values)
    for k, (ax, n) in enumerate(zip(ax_l, cells, strict=True)):
        plotting.zero_line(ax)
        for j, r in enumerate(signals):  # dashed lines on top show curves that coincide
            ax.plot(
                t,
                one.learning_signal.sel(rule=r).isel(neuron=n).values * factor,
                color=plotting.rule_color(r),
                linewidth=1.1,
                label=plotting.rule_label(r),
                linestyle="-" if j % 2 == 0 else (0, (3, 1.5)),
                zorder=2 + j % 2,
            )
        cell_label(ax, ds, n)
        ax.set_ylabel(f"L ({unit})" if unit else "L")
        if k == 0:
            ax.set_title("Learning signal L per rule")
            plotting.panel_label(ax, "D")
            ax.legend(
                loc="lower right",
                bbox_to_anchor=(1.0, 1.0),
                ncols=len(signals),
                fontsize="small",
                borderaxespad=0.1,
                handlelength=1.5,
            )

    post = cells[0]
    syn = np.flatnonzero(ds.post_rec.values == post)
    w = ds.w_rec.values[syn]
    syn = syn[w != 0] if np.any(w != 0) else syn
    e = one.e_rec.isel(synapse_rec=syn).values  # [time, synapse]
    best = syn[np.argsort(-np.abs(e).max(0))[:n_synapses]]
    e = one.e_rec.isel(synapse_rec=best).values
    factor, unit = scale_of(e)
    palette = plt.cm.viridis(np.linspace(0.0, 0.85, len(best)))  # apart from the rule colours
    types = ds.cell_type.values.astype(str)
    for s, color, trace in zip(best, palette, e.T, strict=True):
        pre = int(ds.pre_rec.values[s])
        ax_e.plot(t, trace * factor, color=color, linewidth=1.0, label=f"{pre} ({types[pre]})")
    ax_e.set_ylabel(f"e ({unit})" if unit else "e")
    ax_e.set_title(f"Eligibility traces e of synapses onto {describe(ds, post)}")
    plotting.panel_label(ax_e, "E")
    if len(best):
        ax_e.legend(
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize="small",
            title="presynaptic\ncell",
            title_fontsize="small",
            borderaxespad=0.3,
            handlelength=1.2,
            alignment="left",
        )
    ax_e.set_xlabel("time in trial (ms)")
    ax_e.set_xlim(
        min(float(ds.input_time.values[0]), epochs[0].start),
        max(float(ds.input_time.values[-1]) + 1.0, epochs[-1].stop),
    )
    fig.align_ylabels(axes[1:])

    target = int(ds.target.sel(batch=trial))
    side = "left" if target == 1 else "right"
    fig.suptitle(
        f"One recorded trial: {plotting.rule_label(rule)} run, seed {seed}, training iteration "
        f"{it}, trial {trial} (target: {side} majority)",
        fontsize="medium",
    )
    return fig


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command line: pick the run and record, draw, save; prints and returns the written paths."""
    ap = plotting.parser(__doc__, NAME)
    ap.add_argument("--iteration", type=int, help="recorded training iteration (default: last)")
    ap.add_argument("--trial", type=int, help="trial of the batch (default: first recorded)")
    ap.add_argument("--rule", help="training rule of the run to show (default: any)")
    ap.add_argument("--seed", type=int, help="seed of the run to show (default: any)")
    ap.add_argument(
        "--signals",
        default="bptt,eprop,mdgl",
        help="rules whose learning signals are drawn (default bptt,eprop,mdgl)",
    )
    ap.add_argument("--cells", type=int, default=2, help="output cells shown (default 2)")
    ap.add_argument("--synapses", type=int, default=4, help="eligibility traces (default 4)")
    args = ap.parse_args(argv)
    run = choose_run(plotting.runs_in(args.paths), args.rule, args.seed)
    fig = plot(
        run,
        args.iteration,
        args.trial,
        [s for s in args.signals.split(",") if s],
        args.cells,
        args.synapses,
    )
    return plotting.finish(fig, args.out, NAME)


if __name__ == "__main__":
    main(sys.argv[1:])
