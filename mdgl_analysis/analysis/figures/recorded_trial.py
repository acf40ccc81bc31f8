"""One recorded trial: inputs, spikes, readout against target, voltages, signals and traces.

    python -m mdgl_analysis.analysis.figures.recorded_trial RUN_OR_FOLDER... --out DIR
        [--iteration N] [--trial K] [--rule RULE] [--seed S] [--signals bptt,eprop,mdgl]
        [--cells 2] [--synapses 4] [--outputs 3]

Reads one record file (records/iter_NNNNNN.h5, recorded with the state, signals and traces
groups) of one run: the run trained with --rule and --seed when given, else the first recorded
run found (runs are told apart by the rule and seed in their config, never by folder name).
--iteration picks the recorded training iteration (default: the last), --trial the trial of that
batch (default: the first recorded one). Panels, on one time axis in ms:

A  the inputs, one row per channel, grouped and named by the task's channel names (the record's
   input_population: left cue, right cue, recall, noise for the evidence task): spikes for
   count inputs, the currents (one line per channel name) for real-valued inputs (NeuroGym);
B  recurrent spikes sorted by cell type (E/I, adaptive ALIF cells apart); triangles mark output
   cells (cells with a readout weight at this iteration);
C  the readout against the target. MSE task (pattern generation): one row per output unit (the
   first --outputs), the output y and the target y*. Cross-entropy task: the softmax
   probability of the target class at each step, chance level dotted. The grey bar along the
   bottom marks the steps whose loss counts (the record's mask; a triangle over a stretch too
   short to see, e.g. the evidence task's last step; no bar when every step counts, as the title
   then says). Left out for a record without y (schema 1);
D  membrane potential v and adaptive threshold A of a few output cells (in units of v_th);
E  the per-neuron learning signal L = dE/dz (loss per spike) of those output cells under a few
   rules (BPTT: the total learning signal of the exact gradient; e-prop: the readout error
   signal; MDGL: readout signal plus cell-type-specific local modulatory signal);
F  eligibility traces e(t) = dz/dW (dimensionless, as every model quantity: the record schema's
   unit "1") of the synapses onto the first of those cells with the largest traces.

The strip on top shows the task's named epochs (the record's task_epochs attribute; for a record
of schema 1 the evidence task of its config), shaded behind every panel; a task without epochs
(pattern generation) has neither. Writes recorded_trial.png/.pdf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from mdgl_analysis import analysis
from mdgl_analysis.analysis import plotting
from mdgl_analysis.recording.readers import open_record, record_files
from mdgl_analysis.recording.schema import iteration_of

NAME = "recorded_trial"
NEEDED = ("z", "v", "threshold", "learning_signal", "e_rec")
GROUP_ORDER = ("E", "E_adaptive", "I", "I_adaptive")
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
OUTPUT_COLOR = "#0072B2"  # blue (Okabe-Ito): the readout output, apart from the rule colours
TARGET_COLOR = "#222222"
EVIDENCE_CLASSES = {0: "right", 1: "left"}
"""The evidence task's classes: the side with more cues (1 = left majority)."""
_CHANNEL_FALLBACK = sns.color_palette("deep", 10).as_hex()


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
    raise plotting.FigureError(
        f"no recorded run{' with ' + want if want else ''} (train with --set record.every=K)"
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
    raise plotting.FigureError(f"iteration {iteration} was not recorded in {run}; recorded: {have}")


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


def channel_groups(names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The input channels by name: (name, channel indices), the evidence task's populations
    first (in :data:`plotting.INPUT_COLORS` order), then the others as they first appear."""
    names = [str(n) for n in names]
    order = list(dict.fromkeys(names))
    known = [n for n in plotting.INPUT_COLORS if n in order]
    order = known + [n for n in order if n not in known]
    return [(n, np.flatnonzero(np.asarray(names) == n)) for n in order]


def channel_color(name: str, k: int) -> str:
    """The colour of channel name ``name`` (the ``k``-th name of the figure)."""
    if name in plotting.INPUT_COLORS:
        return plotting.INPUT_COLORS[name]
    return "#333333" if not name else _CHANNEL_FALLBACK[k % len(_CHANNEL_FALLBACK)]


def channel_label(name: str) -> str:
    """Display name of a channel name (:data:`plotting.INPUT_LABELS`; ``"unnamed"`` for "")."""
    return plotting.INPUT_LABELS.get(name, name) or "unnamed"


def input_raster(ax: Axes, ds: xr.Dataset, trial: int) -> Axes:
    """Input spikes (counts) of one trial, channels grouped and coloured by name."""
    x = ds.x.sel(batch=trial).values  # [input_time, input] counts
    groups = channel_groups(ds.input_population.values.astype(str))
    order = np.concatenate([idx for _, idx in groups])
    row_of = np.empty(len(order), int)
    row_of[order] = np.arange(len(order))
    color_of = np.empty(len(order), dtype=object)
    for k, (name, idx) in enumerate(groups):
        color_of[idx] = channel_color(name, k)
    t_idx, ch = np.nonzero(x)
    plotting.spike_raster(ax, ds.input_time.values[t_idx], row_of[ch], list(color_of[ch]), size=6)
    if len(groups) == 1 and not groups[0][0]:  # no names: number the channels
        ax.set_ylabel("input channel")
    else:
        for _, idx in groups:
            ax.axhline(row_of[idx].max() + 0.5, color="#DDDDDD", linewidth=0.6, zorder=0)
        ax.set_yticks(
            [row_of[idx].mean() for _, idx in groups],
            [channel_label(name) for name, _ in groups],
            fontsize="small",
        )
        for k, (tick, (name, _)) in enumerate(zip(ax.get_yticklabels(), groups, strict=True)):
            tick.set_color(channel_color(name, k))
        ax.set_ylabel(f"input channel\n({len(order)} channels)")
    ax.set_ylim(len(order) - 0.5, -0.5)
    return ax


def input_currents(ax: Axes, ds: xr.Dataset, trial: int) -> Axes:
    """Real-valued inputs of one trial: one line per channel name (the mean of its channels,
    which are copies for a NeuroGym task), or an image of every channel when there are many."""
    x = np.asarray(ds.x.sel(batch=trial).values, dtype=float)  # [input_time, input]
    t = ds.input_time.values
    groups = channel_groups(ds.input_population.values.astype(str))
    if len(groups) > 8 or (len(groups) == 1 and not groups[0][0]):
        dt = float(t[1] - t[0]) if t.size > 1 else 1.0
        ax.imshow(
            x.T,
            aspect="auto",
            interpolation="nearest",
            extent=(t[0], t[-1] + dt, x.shape[1] - 0.5, -0.5),
            cmap="viridis",
        )
        ax.set_ylabel("input channel\n(colour: current, 1)")
        return ax
    for k, (name, idx) in enumerate(groups):
        ax.plot(
            t,
            x[:, idx].mean(1),
            color=channel_color(name, k),
            linewidth=1.0,
            label=channel_label(name),
        )
    ax.set_ylabel("input current (1)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", handlelength=1.2)
    return ax


def _window(ds: xr.Dataset) -> np.ndarray:
    """Indices along ``input_time`` of the recorded steps (``time``)."""
    return np.clip(
        np.searchsorted(ds.input_time.values, ds.time.values), 0, ds.sizes["input_time"] - 1
    )


def _mask(ds: xr.Dataset, trial: int) -> np.ndarray | None:
    """Where the loss counts at the recorded steps of ``trial`` (None without a mask)."""
    if "mask" not in ds:
        return None
    return ds.mask.sel(batch=trial).values[_window(ds)].astype(bool)


def _targets(ds: xr.Dataset, trial: int) -> np.ndarray:
    """The target class at every recorded step of ``trial`` (schema 1: one per trial)."""
    target = ds.target.sel(batch=trial).values
    if target.ndim == 0:
        return np.full(ds.sizes["time"], int(target))
    return target[_window(ds)].astype(int)


def readout_mse(axes: Sequence[Axes], ds: xr.Dataset, trial: int) -> list[int]:
    """Output y (gid ``output:<k>``) and target y* (gid ``target:<k>``) of the first output
    units, one per axes; the steps whose loss counts marked. Returns the units drawn."""
    t = ds.time.values
    y = ds.y.sel(trial=trial).values  # [time, output]
    target = ds.target_value.sel(batch=trial).values[_window(ds)]
    mask = _mask(ds, trial)
    units = list(range(min(len(axes), y.shape[1])))
    for ax, k in zip(axes, units, strict=False):
        (line,) = ax.plot(
            t, target[:, k], color=TARGET_COLOR, linewidth=1.2, linestyle="--", label="target y*"
        )
        line.set_gid(f"target:{k}")
        (line,) = ax.plot(t, y[:, k], color=OUTPUT_COLOR, linewidth=1.2, label="output y")
        line.set_gid(f"output:{k}")
        lo = float(np.nanmin(np.r_[y[:, k], target[:, k]]))
        hi = float(np.nanmax(np.r_[y[:, k], target[:, k]]))
        pad = 0.08 * ((hi - lo) or 1.0)
        ax.set_ylim(lo - 2.2 * pad, hi + pad)  # room at the bottom for the loss marks
        if mask is not None and not mask.all():
            plotting.loss_steps(ax, t, mask)
        ax.set_ylabel(f"output {k}\n(target units)")
    return units


def readout_ce(ax: Axes, ds: xr.Dataset, trial: int) -> Axes:
    """Softmax probability of the target class at each step (gid ``p_target``), chance level,
    and the steps whose loss counts."""
    t = ds.time.values
    logits = np.asarray(ds.y.sel(trial=trial).values, dtype=float)  # [time, output]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    target = _targets(ds, trial)
    (line,) = ax.plot(
        t, p[np.arange(len(t)), target], color=OUTPUT_COLOR, linewidth=1.2, label="p(target class)"
    )
    line.set_gid("p_target")
    chance = 1.0 / p.shape[1]
    ax.axhline(
        chance, color="#888888", linewidth=0.9, linestyle=":", label=f"chance (1/{p.shape[1]})"
    )
    mask = _mask(ds, trial)
    if mask is not None and not mask.all():
        plotting.loss_steps(ax, t, mask)
    ax.set_ylim(-0.16, 1.05)
    ax.set_yticks([0, 0.5, 1])
    ax.set_ylabel("p(target)\n(probability)")
    return ax


def _task(ds: xr.Dataset) -> tuple[str, str]:
    """(task name, loss) of a record; a record of schema 1 is the evidence task's."""
    loss = ds.attrs.get("loss") or ("mse" if "target_value" in ds else "cross_entropy")
    return str(ds.attrs.get("task", "evidence")), str(loss)


def plot(
    run: str | Path,
    iteration: int | None = None,
    trial: int | None = None,
    signals: Sequence[str] = ("bptt", "eprop", "mdgl"),
    n_cells: int = 2,
    n_synapses: int = 4,
    n_outputs: int = 3,
) -> Figure:
    """The figure for one trial of one recorded iteration of ``run``."""
    run = Path(run)
    path = choose_file(run, iteration)
    ds = open_record(path)
    missing = [v for v in NEEDED if v not in ds]
    if missing:
        raise plotting.FigureError(
            f"{path} lacks {', '.join(missing)}: record with "
            "--set record.quantities=state,signals,traces"
        )
    trials = [int(t) for t in ds.trial.values]
    trial = trials[0] if trial is None else trial
    if trial not in trials:
        raise plotting.FigureError(f"trial {trial} was not recorded; recorded: {trials}")
    cfg = analysis.run_config(run)
    rule, seed = cfg["train"]["rule"], cfg["run"]["seed"]
    v_th = float(cfg["network"]["v_th"])
    task, loss = _task(ds)
    epochs = plotting.task_epochs(ds)
    it = int(ds.iteration)
    signals = [s for s in signals if s in ds.rule.values.astype(str)]
    has_y = "y" in ds and ("target_value" in ds if loss == "mse" else "target" in ds)
    if not has_y:
        plotting.note(f"{NAME}: {path.name} has no readout output y (schema 1): no panel C")
    n_out = min(max(1, n_outputs), ds.sizes["output"]) if has_y and loss == "mse" else 1

    one = ds.sel(trial=trial)
    z = one.z.values.astype(np.int64)
    t = ds.time.values
    cells = pick_cells(ds, z, n_cells)

    plotting.setup()
    heights = [0.25] if epochs else []
    heights += [1.3, 2.1]
    heights += ([0.8] * n_out if loss == "mse" else [1.0]) if has_y else []
    heights += [0.85] * len(cells) + [0.95] * len(cells) + [1.1]
    fig = plotting.new_figure((7.5, 1.0 + 1.1 * sum(heights)))
    axes = list(fig.subplots(len(heights), 1, sharex=True, height_ratios=heights))
    top = axes.pop(0) if epochs else None
    ax_in, ax_rec = axes[:2]
    ax_out = axes[2 : 2 + n_out] if has_y else []
    rest = axes[2 + len(ax_out) :]
    ax_v, ax_l, ax_e = rest[: len(cells)], rest[len(cells) : 2 * len(cells)], rest[-1]
    if top is not None:
        plotting.epoch_bar(top, epochs)
        for ax in axes:
            plotting.shade_epochs(ax, epochs, alpha=0.12)
    letters = iter("ABCDEF")

    if np.issubdtype(ds.x.dtype, np.integer):
        input_raster(ax_in, ds, trial)
        ax_in.set_title("Input spikes (by channel name)")
    else:
        input_currents(ax_in, ds, trial)
        ax_in.set_title("Input currents (by channel name)")
    plotting.panel_label(ax_in, next(letters))

    recurrent_raster(ax_rec, ds, z)
    ax_rec.set_title("Recurrent spikes by cell type (◀ marks output cells)")
    plotting.panel_label(ax_rec, next(letters))

    if has_y:
        letter = next(letters)
        if loss == "mse":
            units = readout_mse(ax_out, ds, trial)
            shown = (
                f"outputs 0–{units[-1]} of {ds.sizes['output']}"
                if len(units) < ds.sizes["output"]
                else "per output unit"
            )
            ax_out[0].set_title(f"Readout: output y against the target y* ({shown}, MSE)")
        else:
            readout_ce(ax_out[0], ds, trial)
            ax_out[0].set_title("Readout: probability of the target class (softmax, cross-entropy)")
        mask = _mask(ds, trial)
        if mask is not None and mask.all():
            ax_out[0].set_title(
                ax_out[0].get_title(loc="left") + ";\nthe loss counts at every step"
            )
        ax_out[0].legend(
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            fontsize="small",
            borderaxespad=0.3,
            handlelength=1.5,
        )
        plotting.panel_label(ax_out[0], letter)

    groups = cell_groups(ds)
    letter = next(letters)
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
            plotting.panel_label(ax, letter)

    values = one.learning_signal.sel(rule=signals).isel(neuron=cells).values
    factor, unit = scale_of(values)
    letter = next(letters)
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
        ax.set_ylabel(f"L\n({unit}/spike)" if unit else "L\n(/spike)", fontsize="small")
        if k == 0:
            ax.set_title("Learning signal L = ∂E/∂z")
            plotting.panel_label(ax, letter)
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
    palette = mpl.colormaps["viridis"](np.linspace(0.0, 0.85, len(best)))  # not rule colours
    types = ds.cell_type.values.astype(str)
    for s, color, trace in zip(best, palette, e.T, strict=True):
        pre = int(ds.pre_rec.values[s])
        ax_e.plot(t, trace * factor, color=color, linewidth=1.0, label=f"{pre} ({types[pre]})")
    ax_e.set_ylabel(f"e\n({unit}, dimensionless)" if unit else "e\n(dimensionless)")
    ax_e.set_title(f"Eligibility traces e = ∂z/∂W, synapses onto {describe(ds, post)}")
    plotting.panel_label(ax_e, next(letters))
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
    dt = float(ds.attrs.get("dt_ms", 1.0))
    ax_e.set_xlim(
        min([float(ds.input_time.values[0]), *(ep.start for ep in epochs)]),
        max([float(ds.input_time.values[-1]) + dt, *(ep.stop for ep in epochs)]),
    )
    fig.align_ylabels(axes)

    about = [f"task {task}"]
    if task == "evidence" and "target" in ds:
        mask = _mask(ds, trial)
        classes = _targets(ds, trial)
        target = int(classes[mask][-1] if mask is not None and mask.any() else classes[-1])
        about.append(f"target: {EVIDENCE_CLASSES.get(target, target)} majority")
    metric = ds.attrs.get("metric") or ("nmse" if loss == "mse" else "accuracy")
    if metric in ds:
        value = float(ds[metric].values)
        about.append(
            f"{plotting.METRIC_LABELS.get(metric, metric)} of the batch "
            f"(n = {ds.sizes['batch']} trials) {value:.2f}"
        )
    fig.suptitle(
        f"One recorded trial: {plotting.rule_label(rule)} run, seed {seed}, training iteration "
        f"{it}, trial {trial}\n({'; '.join(about)})",
        fontsize="medium",
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: pick the run and record, draw, save (prints the written paths); 0, or 2
    with one line on stderr when the runs cannot give the figure."""
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
    ap.add_argument(
        "--outputs", type=int, default=3, help="readout outputs shown for an MSE task (default 3)"
    )
    args = ap.parse_args(argv)
    signals = [s for s in args.signals.split(",") if s]

    def make():
        run = choose_run(plotting.runs_in(args.paths), args.rule, args.seed)
        return plot(
            run, args.iteration, args.trial, signals, args.cells, args.synapses, args.outputs
        )

    return plotting.draw(make, args.out, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
