"""One look for every figure: style, fixed colours, saving, and small plot helpers.

The figures of :mod:`mdgl_analysis.analysis.figures` share this module so that a rule, a cell
type or an input population has the same colour and the same name in every figure:

* :func:`setup` sets one seaborn style (call it before creating a figure), :func:`new_figure`
  makes a figure without pyplot (no backend is selected, nothing is kept open);
* :data:`RULE_COLORS` / :data:`RULE_LABELS` (and :func:`rule_color` / :func:`rule_label` for
  rules not listed), :data:`CELL_COLORS`, :data:`INPUT_COLORS`, :data:`BLOCK_LABELS`;
* :func:`save` writes a figure as PNG (200 dpi) and PDF;
* plot helpers take a matplotlib ``Axes``, draw on it and return it;
* what a figure needs to know of the task, read as data and never by building the task (which
  would import torch): :func:`task_info` (run.json's ``task`` entry) and :func:`task_epochs`
  (the named step windows of a trial, from a record's ``task_epochs`` attribute or run.json);
* a few helpers shared by the command lines (finding runs, reading the logged cosines with BPTT,
  :class:`FigureError` for "cannot draw this").

Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from mdgl_analysis.analysis import alignment as analysis

# ------------------------------------------------------------------------------------------------
# colours and names

RULES = (
    "bptt",
    "truncated",
    "eprop",
    "eprop_random",
    "mdgl",
    "mdgl_exact",
    "mdgl_nonlocal",
    "mdgl_online",
)
"""Every learning rule in the order figures list them."""

RULE_COLORS: dict[str, str] = {
    "bptt": "#222222",  # near black: the reference
    "eprop": "#E69F00",  # orange (Okabe-Ito)
    "mdgl": "#009E73",  # bluish green (Okabe-Ito)
    "mdgl_exact": "#56B4E9",  # sky blue (Okabe-Ito)
    "mdgl_nonlocal": "#CC79A7",  # reddish purple (Okabe-Ito)
    "mdgl_online": "#6A3D9A",  # dark violet
    "eprop_random": "#D55E00",  # vermillion (Okabe-Ito)
    "truncated": "#0072B2",  # blue (Okabe-Ito)
}
"""One fixed colour per learning rule (colour-blind safe)."""

RULE_LABELS: dict[str, str] = {
    "bptt": "BPTT",
    "eprop": "e-prop",
    "mdgl": "MDGL",
    "mdgl_exact": "MDGL (exact weights)",
    "mdgl_nonlocal": "MDGL (non-local)",
    "mdgl_online": "MDGL (online)",
    "eprop_random": "e-prop (random feedback)",
    "truncated": "truncated (k hops)",
}
"""Display name of each learning rule."""

CELL_COLORS: dict[str, str] = {
    "E": "#D6604D",  # excitatory: red
    "I": "#4393C3",  # inhibitory: blue
    "E_adaptive": "#67001F",  # adaptive (ALIF) excitatory: dark red
    "I_adaptive": "#053061",  # adaptive (ALIF) inhibitory: dark blue
}
"""Colours of the recurrent cell types; ``<type>_adaptive`` for ALIF cells."""

CELL_LABELS: dict[str, str] = {
    "E": "E (LIF)",
    "E_adaptive": "E (adaptive, ALIF)",
    "I": "I (LIF)",
    "I_adaptive": "I (adaptive, ALIF)",
}
"""Display names of the cell-type groups of :data:`CELL_COLORS`."""

INPUT_COLORS: dict[str, str] = {
    "left": "#4C72B0",
    "right": "#DD8452",
    "recall": "#55A868",
    "noise": "#8C8C8C",
}
"""Colours of the input populations (left cues, right cues, recall cue, background noise)."""

INPUT_LABELS: dict[str, str] = {
    "left": "left cue",
    "right": "right cue",
    "recall": "recall cue",
    "noise": "background noise",
}
"""Display names of the input populations."""

BLOCK_LABELS: dict[str, str] = {
    "rec_EE": "E→E",
    "rec_EI": "E→I",
    "rec_IE": "I→E",
    "rec_II": "I→I",
    "in_E": "input→E",
    "in_I": "input→I",
}
"""Cell-type blocks of the logged metrics (named pre->post: ``rec_EI`` is E→I)."""

PART_LABELS: dict[str, str] = {"rec": "recurrent weights", "in": "input weights", **BLOCK_LABELS}
"""Display names of every compared part (whole matrices and blocks)."""

EPOCH_COLORS: dict[str, str] = {
    "cue": "#BBBBBB",
    "stimulus": "#BBBBBB",
    "delay": "#FFFFFF",
    "fixation": "#FFFFFF",
    "recall": "#55A868",
    "decision": "#55A868",
}
"""Colours of the kinds of task epochs (:attr:`Epoch.kind`) in timeline bars and shading: the
evidence task's cues and recall, NeuroGym's stimulus and decision periods; other kinds get a
stable fallback colour (:func:`epoch_color`)."""

UNSHADED = ("delay", "fixation")
"""Epoch kinds left unshaded behind data (waiting periods)."""

LOSS_LABELS: dict[str, str] = {"cross_entropy": "cross-entropy", "mse": "MSE"}
"""Display names of the readout losses."""

METRIC_LABELS: dict[str, str] = {"accuracy": "accuracy", "nmse": "normalised MSE"}
"""Display names of the task metrics (``nmse``: squared error over the masked steps divided by
the target's spread around its mean)."""

_FALLBACK = sns.color_palette("dark", 10).as_hex()


def rule_color(rule: str) -> str:
    """The colour of ``rule`` (a stable fallback colour for a rule not in :data:`RULE_COLORS`)."""
    if rule in RULE_COLORS:
        return RULE_COLORS[rule]
    return _FALLBACK[sum(map(ord, rule)) % len(_FALLBACK)]


def rule_label(rule: str) -> str:
    """The display name of ``rule`` (the name itself for a rule not in :data:`RULE_LABELS`)."""
    return RULE_LABELS.get(rule, rule)


def rule_n_label(rule: str, n: int | Sequence[int], unit: str = "") -> str:
    """Legend entry of a rule with the number of runs (or seeds, trials...) behind it:
    ``"e-prop, n = 5 seeds"``, ``"e-prop, n = 3–5 seeds"`` when it varies along the curve,
    ``"e-prop, one run"`` for one (``unit`` singular then)."""
    return f"{rule_label(rule)}, {n_text(n, unit)}"


def _singular(unit: str) -> str:
    """``"seeds"`` -> ``"seed"``, ``"recorded iterations"`` -> ``"recorded iteration"``."""
    head, sep, rest = unit.partition(" ")
    if sep:
        return f"{head} {_singular(rest)}"
    return unit[:-1] if unit.endswith("s") else unit


def n_text(n: int | Sequence[int], unit: str = "") -> str:
    """How many a statistic is over: ``"n = 5 seeds"``, ``"n = 3–5 seeds"`` (a range when ``n``
    is several counts that differ), ``"one seed"`` (``unit`` is plural; ``"one"`` without a
    unit)."""
    ns = sorted({int(k) for k in np.atleast_1d(np.asarray(n, dtype=float)) if np.isfinite(k)})
    if not ns:
        return f"n = 0{' ' + unit if unit else ''}"
    if ns == [1]:
        return f"one {_singular(unit)}" if unit else "n = 1"
    count = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"n = {count}{' ' + unit if unit else ''}"


def spread_text(n: int | Sequence[int], unit: str = "seeds", per: str = "rule") -> str:
    """The statistic of a figure with its n, for a title: ``"mean ± std over n = 3–5 seeds per
    rule"``, or ``"one seed per rule: no spread"`` when every curve is a single one."""
    ns = {int(k) for k in np.atleast_1d(np.asarray(n, dtype=float)) if np.isfinite(k)}
    per = f" per {per}" if per else ""
    if ns <= {1}:
        return f"one {_singular(unit)}{per}: no spread"
    return f"mean ± std over {n_text(sorted(ns), unit)}{per}"


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(value: float) -> str:
    """``1e-6`` -> ``"10⁻⁶"`` (the nearest power of ten, for labels)."""
    return f"10{str(round(float(np.log10(value)))).translate(SUPERSCRIPT)}"


DENSE = 30
"""Series with more points than this are drawn without markers (they would hide the bands)."""


def marker_for(n_points: int, marker: str = "o") -> str | None:
    """``marker`` for a series of few points (at most :data:`DENSE`), None for a dense one."""
    return marker if n_points <= DENSE else None


def rule_order(rules: Iterable[str]) -> list[str]:
    """``rules`` without repeats, in the order of :data:`RULES` (unknown rules last, sorted)."""
    rules = set(rules)
    return [r for r in RULES if r in rules] + sorted(rules - set(RULES))


# ------------------------------------------------------------------------------------------------
# style and saving


def setup() -> None:
    """Apply the common style: seaborn ``ticks`` on a white background, paper-sized fonts,
    constrained layout, editable (Type 42) fonts in PDF."""
    sns.set_theme(context="paper", style="ticks", font_scale=1.1)
    mpl.rcParams.update(
        {
            "figure.constrained_layout.use": True,
            "figure.dpi": 100,
            "savefig.dpi": 200,
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titleweight": "bold",
            "axes.titlesize": "medium",
            "axes.titlelocation": "left",
            "legend.frameon": False,
            "lines.linewidth": 1.6,
            "image.cmap": "viridis",
        }
    )


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout, made without pyplot: no backend is selected and
    nothing keeps it alive (draw with ``fig.subplots``, write with :func:`save`)."""
    return Figure(figsize=figsize, layout="constrained")


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.png`` (200 dpi) and ``out_dir/name.pdf``.

    Returns:
        the two paths, PNG first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    return paths


def panel_label(ax: Axes, letter: str) -> Axes:
    """Put a bold panel letter (``A``, ``B``...) at the top left, outside the axes."""
    ax.annotate(
        letter,
        xy=(0, 1),
        xycoords="axes fraction",
        xytext=(-2.2, 0.4),
        textcoords="offset fontsize",
        fontsize="large",
        fontweight="bold",
        va="bottom",
        ha="left",
        annotation_clip=False,
    )
    return ax


# ------------------------------------------------------------------------------------------------
# plot helpers


def mean_band(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray | None,
    color: str,
    label: str | None = None,
    gid: str | None = None,
    marker: str | None = None,
    clip: tuple[float, float] | None = None,
    alpha: float = 0.2,
    linestyle: str = "-",
) -> Axes:
    """A mean line and a shaded ±std band (no band where ``std`` is None or NaN).

    ``gid`` is set on the mean line so that tests can find it (``line.get_gid()``); ``clip``
    bounds the band (e.g. ``(-1, 1)`` for a cosine).
    """
    x = np.asarray(x, dtype=float)
    mean = np.asarray(mean, dtype=float)
    (line,) = ax.plot(
        x, mean, color=color, label=label, marker=marker, markersize=4, linestyle=linestyle
    )
    if gid is not None:
        line.set_gid(gid)
    if std is not None:
        std = np.nan_to_num(np.asarray(std, dtype=float))
        if np.any(std > 0):
            lo, hi = mean - std, mean + std
            if clip is not None:
                lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
            ax.fill_between(x, lo, hi, color=color, alpha=alpha, linewidth=0)
    return ax


def band_by_n(
    ax: Axes,
    rows: pd.DataFrame,
    rule: str,
    unit: str,
    gid: str,
    alpha: float = 0.2,
    clip: tuple[float, float] | None = None,
) -> bool:
    """A rule's mean line and ±std band (``rows``: columns ``iteration``, ``mean``, ``std`` and
    ``n``, the runs or seeds behind each point, which may drop along x), in the rule's colour:
    solid (gid ``gid``) up to the last point with the most, dotted after it (gid
    ``"fewer" + gid[4:]`` for a gid ``mean...``; half the band's opacity). The solid line's
    label says its n and the dotted stretch's (``"BPTT, n = 5 runs; dotted: 3"``), so the
    legend states what every point is over. Markers only on a few points (:func:`marker_for`).

    Returns:
        whether a dotted stretch was drawn.
    """
    rows = rows.sort_values("iteration")
    x, mean, std = (rows[c].to_numpy(dtype=float) for c in ("iteration", "mean", "std"))
    n, color = rows["n"].to_numpy(dtype=int), rule_color(rule)
    full = int(n.max())
    last = int(np.flatnonzero(n == full).max())
    solid, dotted = slice(0, last + 1), slice(last, None)
    dotted_ns = n[last + 1 :]
    label = rule_n_label(rule, n[solid], unit)
    if dotted_ns.size:
        label += f"; dotted: {n_text(dotted_ns).removeprefix('n = ')}"
    mean_band(
        ax,
        x[solid],
        mean[solid],
        std[solid],
        color,
        label=label,
        gid=gid,
        marker=marker_for(last + 1),
        clip=clip,
        alpha=alpha,
    )
    if not dotted_ns.size:
        return False
    mean_band(
        ax,
        x[dotted],
        mean[dotted],
        std[dotted],
        color,
        gid="fewer" + gid[4:] if gid.startswith("mean") else f"fewer:{gid}",
        marker=marker_for(dotted_ns.size + 1),
        clip=clip,
        alpha=alpha / 2,
        linestyle=":",
    )
    return True


def stairs_band(
    ax: Axes,
    edges: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray | None,
    color: str,
    label: str | None = None,
    gid: str | None = None,
    clip: tuple[float, float] | None = None,
    alpha: float = 0.2,
) -> Axes:
    """Piecewise-constant mean (one value per bin between ``edges``) with a ±std band clipped
    to ``clip``."""
    art = ax.stairs(mean, edges, color=color, label=label, linewidth=1.6, baseline=None)
    if gid is not None:
        art.set_gid(gid)
    if std is not None and np.any(np.nan_to_num(std) > 0):
        std = np.nan_to_num(std)
        lo, hi = mean - std, mean + std
        if clip is not None:
            lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        ax.stairs(hi, edges, baseline=lo, fill=True, color=color, alpha=alpha, linewidth=0)
    return ax


def spike_raster(
    ax: Axes,
    times: np.ndarray,
    rows: np.ndarray,
    colors: Sequence[str] | str,
    size: float = 2.0,
) -> Axes:
    """Spikes as short vertical ticks: ``times`` (ms) and ``rows`` (y positions) of each spike."""
    ax.scatter(times, rows, s=size, c=colors, marker="|", linewidths=0.8, rasterized=True)
    return ax


class Epoch(NamedTuple):
    """One named period of a trial, times in ms.

    ``name`` is the task's (``"cue 3"``, ``"recall"``, NeuroGym's ``"decision"``...); its
    :attr:`kind` (the name without a trailing number) picks the colour.
    """

    name: str
    start: float
    stop: float

    @property
    def kind(self) -> str:
        """The name without a trailing number, in lower case: ``"cue 3"`` -> ``"cue"``."""
        return epoch_kind(self.name)


def epoch_kind(name: str) -> str:
    """The kind of an epoch name: ``"cue 3"`` -> ``"cue"``, ``"Stimulus_2"`` -> ``"stimulus"``."""
    return re.sub(r"[\s_-]*\d+$", "", name.strip()).lower() or name


_EPOCH_FALLBACK = sns.color_palette("pastel", 10).as_hex()


def epoch_color(kind: str) -> str:
    """The colour of an epoch kind (:data:`EPOCH_COLORS`, else a stable pastel colour)."""
    if kind in EPOCH_COLORS:
        return EPOCH_COLORS[kind]
    return _EPOCH_FALLBACK[sum(map(ord, kind)) % len(_EPOCH_FALLBACK)]


EVIDENCE_DEFAULTS: dict[str, Any] = {
    "n_in": 40,
    "n_cues": 7,
    "cue_ms": 100,
    "gap_ms": 50,
    "delay_ms": 850,
    "recall_ms": 150,
}
"""The evidence task's defaults, for runs whose run.json has no ``task`` entry (their config's
``[task]`` section holds the evidence task's values; missing ones take these)."""


def evidence_info(cfg: dict[str, Any]) -> dict[str, Any]:
    """What run.json's ``task`` entry would say of the evidence task of a run's resolved config
    (nested dicts, :func:`mdgl_analysis.analysis.run_config`), computed here as the task does
    (:meth:`mdgl_analysis.tasks.evidence.EvidenceTask.epochs`) without building it.

    A config whose ``[task]`` names another task gives that name, no loss, metric or epochs.
    """
    section = dict(cfg.get("task") or {})
    name = str(section.get("name", "evidence"))
    network = cfg.get("network") or {}
    dt = float(section.get("dt", network.get("dt", 1.0)))
    if name != "evidence":
        return {"name": name, "loss": None, "metric": None, "dt_ms": dt, "epochs": []}
    t = {**EVIDENCE_DEFAULTS, **section}
    if "n_in" not in section and network.get("n_in"):  # configs before tasks were plug-ins
        t["n_in"] = network["n_in"]
    n_cues, n_in = int(t["n_cues"]), int(t["n_in"])
    cue, period = round(t["cue_ms"] / dt), round((t["cue_ms"] + t["gap_ms"]) / dt)
    ms = n_cues * t["cue_ms"] + (n_cues - 1) * t["gap_ms"] + t["delay_ms"] + t["recall_ms"]
    n_steps = int(round(ms / dt))
    epochs = [[f"cue {c + 1}", c * period, c * period + cue] for c in range(n_cues)]
    epochs.append(["recall", n_steps - round(t["recall_ms"] / dt), n_steps])
    pop = max(1, n_in // 4)
    names = ["left", "right", "recall", "noise"]
    return {
        "name": "evidence",
        "loss": "cross_entropy",
        "metric": "accuracy",
        "n_in": n_in,
        "n_out": 2,
        "n_steps": n_steps,
        "dt_ms": dt,
        "epochs": epochs,
        "input_names": [names[min(i // pop, 3)] for i in range(n_in)],
    }


def task_info(run: str | Path) -> dict[str, Any]:
    """run.json's ``task`` entry of a run folder (name, loss, metric, n_in, n_out, n_steps,
    dt_ms, epochs in steps, input_names); for a run from before it existed, the evidence task
    of the run's config (:func:`evidence_info`)."""
    meta = json.loads((Path(run) / "run.json").read_text())
    task = meta.get("task")
    if isinstance(task, dict) and "loss" in task:
        return task
    return evidence_info(analysis.run_config(run))


def task_epochs(source: str | Path | dict[str, Any] | xr.Dataset) -> list[Epoch]:
    """The named periods of a trial, in ms, in time order.

    Args:
        source: a record (its ``task_epochs`` and ``dt_ms`` attributes; a record of schema 1,
            which has neither, the evidence task of its ``config`` attribute), a run folder
            (:func:`task_info`), a ``task`` entry of run.json, or a run's resolved config
            (:func:`evidence_info`).

    Returns:
        one :class:`Epoch` per period; a ``delay`` is added between the last cue and a recall
        that starts later. Empty for a task without epochs (nothing to shade).
    """
    if isinstance(source, xr.Dataset):
        attrs = source.attrs
        if "task_epochs" in attrs:
            steps, dt = json.loads(attrs["task_epochs"]), float(attrs.get("dt_ms", 1.0))
        elif "config" in attrs:
            info = evidence_info(json.loads(attrs["config"]))
            steps, dt = info["epochs"], info["dt_ms"]
        else:
            return []
    elif isinstance(source, dict):
        info = source if "epochs" in source else evidence_info(source)
        steps, dt = info.get("epochs") or [], float(info.get("dt_ms", 1.0))
    else:
        info = task_info(source)
        steps, dt = info.get("epochs") or [], float(info.get("dt_ms", 1.0))
    epochs = sorted(
        (Epoch(str(name), float(a) * dt, float(b) * dt) for name, a, b in steps),
        key=lambda ep: (ep.start, ep.stop),
    )
    cues = [ep for ep in epochs if ep.kind == "cue"]
    recall = [ep for ep in epochs if ep.kind == "recall"]
    if cues and recall and recall[0].start > cues[-1].stop:
        epochs.insert(epochs.index(recall[0]), Epoch("delay", cues[-1].stop, recall[0].start))
    return epochs


def shade_epochs(ax: Axes, epochs: Sequence[Epoch], alpha: float = 0.18) -> Axes:
    """Lightly shade the periods of ``epochs`` (not the waiting ones, :data:`UNSHADED`) behind
    the data of ``ax``."""
    for ep in epochs:
        if ep.kind not in UNSHADED:
            ax.axvspan(
                ep.start, ep.stop, color=epoch_color(ep.kind), alpha=alpha, linewidth=0, zorder=0
            )
    return ax


def _fits(ax: Axes, text: str, width: float, span: float, fontsize: float = 8.0) -> bool:
    """Whether ``text`` fits in ``width`` of ``span`` data units along the width of ``ax``."""
    fig = ax.get_figure()
    axes_in = ax.get_position().width * fig.get_figwidth()
    return span > 0 and len(text) * 0.6 * fontsize / 72 < 0.95 * axes_in * width / span


def epoch_bar(ax: Axes, epochs: Sequence[Epoch]) -> Axes:
    """A thin timeline axis: a numbered box per cue ("cues" written at the left), the other
    periods as boxes named where the name fits (a key in the margin for the others).

    Meant for a short axes above (and sharing x with) the data axes; hides its y axis.
    """
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    span = max((ep.stop for ep in epochs), default=0.0) - min(
        (ep.start for ep in epochs), default=0.0
    )
    cues = [ep for ep in epochs if ep.kind == "cue"]
    unnamed: dict[str, str] = {}
    named: set[str] = set()
    for ep in epochs:
        ax.axvspan(
            ep.start,
            ep.stop,
            ymin=0.15,
            ymax=0.85,
            facecolor=epoch_color(ep.kind),
            edgecolor="#555555",
            linewidth=0.6,
            alpha=0.7 if ep.kind not in UNSHADED else 1,
        )
    for k, ep in enumerate(cues, start=1):
        number = re.search(r"(\d+)$", ep.name)
        text = number.group(1) if number else str(k)
        if _fits(ax, text, ep.stop - ep.start, span, 6.5):
            ax.text(
                0.5 * (ep.start + ep.stop),
                0.5,
                text,
                transform=trans,
                ha="center",
                va="center",
                fontsize="x-small",
            )
    if cues:
        ax.text(
            -0.01, 0.5, "cues", transform=ax.transAxes, ha="right", va="center", fontsize="small"
        )
    for ep in epochs:
        if ep.kind == "cue":
            continue
        if _fits(ax, ep.kind, ep.stop - ep.start, span):
            named.add(ep.kind)
            ax.text(
                0.5 * (ep.start + ep.stop),
                0.5,
                ep.kind,
                transform=trans,
                ha="center",
                va="center",
                fontsize="small",
            )
        else:
            unnamed[ep.kind] = epoch_color(ep.kind)
    key = {kind: color for kind, color in unnamed.items() if kind not in named}
    if key:
        from matplotlib.patches import Patch

        ax.legend(
            [Patch(facecolor=c, edgecolor="#555555", linewidth=0.6) for c in key.values()],
            list(key),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            ncols=len(key),
            fontsize="x-small",
            handlelength=1.0,
            columnspacing=0.8,
            borderaxespad=0.2,
        )
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    sns.despine(ax=ax, left=True, bottom=True)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    return ax


def loss_steps(ax: Axes, times: np.ndarray, mask: np.ndarray, color: str = "#808080") -> Axes:
    """Mark the steps whose loss counts (``mask`` true) along the bottom of ``ax``: a bar per
    stretch of steps, with a triangle over a stretch too short to see. Labelled ``"loss
    counts"`` once (on a triangle when every stretch is short) for a legend."""
    times, mask = np.asarray(times, dtype=float), np.asarray(mask).astype(bool)
    if not mask.any():
        return ax
    dt = float(np.median(np.diff(times))) if times.size > 1 else 1.0
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    stretches = [
        (times[a], times[b - 1] + dt) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]
    span = float(times[-1] - times[0] + dt) or 1.0
    short = [(t1 - t0) / span < 0.01 for t0, t1 in stretches]
    label = "loss counts"
    bar_label = None if all(short) else label
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for (t0, t1), tiny in zip(stretches, short, strict=True):
        ax.plot(
            [t0, t1],
            [0.03, 0.03],
            transform=trans,
            color=color,
            linewidth=2.5,
            label=bar_label,
            solid_capstyle="butt",
            clip_on=False,
        )
        bar_label = None
        if tiny:
            ax.plot(
                [0.5 * (t0 + t1)],
                [0.09],
                transform=trans,
                color=color,
                marker="^",
                markersize=4,
                linestyle="none",
                clip_on=False,
                label=label if all(short) else None,
            )
            label = None if all(short) else label
    return ax


def band_alpha(n_lines: int) -> float:
    """Opacity of ±std bands: lighter when many bands overlap."""
    return 0.22 if n_lines <= 2 else 0.14 if n_lines <= 4 else 0.1


def zero_line(ax: Axes) -> Axes:
    """A thin grey horizontal line at y = 0."""
    ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=0)
    return ax


# ------------------------------------------------------------------------------------------------
# shared command-line and data helpers


class FigureError(Exception):
    """These runs cannot give this figure; the message says why, in one line."""


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """The common command line of figure ``name``: ``RUN_OR_FOLDER... --out DIR``."""
    ap = argparse.ArgumentParser(
        prog=f"python -m mdgl_analysis.analysis.figures.{name}",
        description=(doc or "").strip().splitlines()[0] if doc else None,
        epilog=(doc or "").strip().split("\n", 1)[-1] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_FOLDER",
        help="run folders, or folders searched for run folders",
    )
    ap.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help=f"folder where {name}.png and {name}.pdf are written (created)",
    )
    return ap


def runs_in(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder in or under ``paths`` (:func:`mdgl_analysis.analysis.find_runs`).

    Raises:
        FigureError: a path does not exist, or there is no run folder.
    """
    paths = list(paths)
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FigureError(f"no such file or folder: {', '.join(missing)}")
    runs = analysis.find_runs(paths)
    if not runs:
        raise FigureError(f"no run folder (with run.json) in {', '.join(map(str, paths))}")
    return runs


def note(message: str) -> None:
    """Tell the user, in one line on stderr, what a figure left out and why."""
    print(f"note: {message}", file=sys.stderr)


def fail(err: FigureError) -> int:
    """Print ``error: <message>`` on stderr; returns :data:`CANNOT_DRAW`."""
    print(f"error: {err}", file=sys.stderr)
    return CANNOT_DRAW


CANNOT_DRAW = 2
"""Exit status of a figure script whose inputs cannot give its figure (one line on stderr says
why); ``mdgl figures`` reports such a figure as skipped, any other failure as failed."""


def draw(make: Callable[[], Figure], out_dir: str | Path, name: str) -> int:
    """A figure script's ending: ``make()`` the figure and :func:`finish` it (status 0), or
    :func:`fail` in one line when the runs cannot give it (:data:`CANNOT_DRAW`)."""
    try:
        fig = make()
    except FigureError as err:
        return fail(err)
    finish(fig, out_dir, name)
    return 0


def run_key(run: str | Path) -> tuple[str, int]:
    """(training rule, seed) of a run folder, from its config."""
    cfg = analysis.run_config(run)
    return cfg["train"]["rule"], int(cfg["run"]["seed"])


def warn_duplicates(keys: Iterable[tuple[str, int]]) -> None:
    """Warn when two runs share a training rule and a seed (they are then not independent)."""
    seen: dict[tuple[str, int], int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
    dup = [f"{rule} seed {seed} (x{n})" for (rule, seed), n in seen.items() if n > 1]
    if dup:
        warnings.warn(f"runs with the same rule and seed: {', '.join(dup)}", stacklevel=2)


_PARTS = tuple(sorted(PART_LABELS, key=len, reverse=True))  # longest suffix first


def split_cosine_name(name: str) -> tuple[str, str] | None:
    """``cos_<rule>_<part>`` -> (rule, part); None for another metric name."""
    if not name.startswith("cos_"):
        return None
    body = name[4:]
    for part in _PARTS:
        if body.endswith(f"_{part}"):
            return body[: -len(part) - 1], part
    return None


def cosine_table(runs: Sequence[str | Path], use_records: bool = True) -> pd.DataFrame:
    """Every logged cosine with BPTT of every run, as one tidy table.

    From the ``cos_<rule>_<part>`` metrics (``train.compare_every > 0``); for a run without them,
    from its records with :func:`mdgl_analysis.analysis.gradient_alignment` when ``use_records``.

    Returns:
        columns ``run``, ``training_rule``, ``seed``, ``rule`` (the compared rule),
        ``iteration``, ``part`` (``rec``, ``in``, ``rec_EE``, ..., ``in_I``), ``value``,
        ``source`` (``metrics`` or ``records``).
    """
    frames = []
    metrics = analysis.load_metrics(runs)
    for run, df in metrics.groupby("run", sort=False):
        parsed = df["name"].map(split_cosine_name)
        df = df[parsed.notna() & (df["split"] == "train")]
        if len(df):
            rule_part = pd.DataFrame(
                parsed[df.index].tolist(), index=df.index, columns=["compared", "part"]
            )
            frames.append(
                pd.DataFrame(
                    {
                        "run": run,
                        "training_rule": df["rule"],
                        "seed": df["seed"],
                        "rule": rule_part["compared"],
                        "iteration": df["iteration"],
                        "part": rule_part["part"],
                        "value": df["value"],
                        "source": "metrics",
                    }
                )
            )
        elif use_records and list(Path(run).glob("records/iter_*.h5")):
            frames.append(_record_cosines(run))
    columns = ["run", "training_rule", "seed", "rule", "iteration", "part", "value", "source"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _record_cosines(run: str | Path) -> pd.DataFrame:
    from mdgl_analysis.recording.readers import open_run

    ds = open_run(run)
    rule, seed = run_key(run)
    rows = []
    for by in ("matrix", "block"):
        cos = analysis.gradient_alignment(ds, by=by).cosine.compute()
        df = cos.to_dataframe().reset_index()
        for rec in df.itertuples():
            rows.append(
                {
                    "run": str(run),
                    "training_rule": rule,
                    "seed": seed,
                    "rule": rec.rule,
                    "iteration": int(rec.iteration),
                    "part": rec.part,
                    "value": rec.cosine,
                    "source": "records",
                }
            )
    return pd.DataFrame(rows)


def resolve_trained_with(table: pd.DataFrame, trained_with: str) -> str:
    """``auto`` is ``own`` when some run compared its own training rule, else ``any`` (e.g.
    runs trained with BPTT, whose comparisons are all of other rules)."""
    if trained_with != "auto":
        return trained_with
    own = (table["rule"] == table["training_rule"]) & table["rule"].ne("bptt")
    return "own" if own.any() else "any"


def select_trained_with(table: pd.DataFrame, trained_with: str) -> pd.DataFrame:
    """Rows of a :func:`cosine_table` by the rule the run was trained with.

    ``own``: each run's own training rule only (the gradient that run followed); ``any``: every
    compared rule of every run; a rule name: every compared rule, from runs trained with it;
    ``auto``: see :func:`resolve_trained_with`.
    """
    trained_with = resolve_trained_with(table, trained_with)
    if trained_with == "own":
        return table[table["rule"] == table["training_rule"]]
    if trained_with == "any":
        return table
    return table[table["training_rule"] == trained_with]


def trained_with_help() -> str:
    """Help text of the ``--trained-with`` option shared by the alignment figures."""
    return (
        "which runs a rule's cosines come from: 'own' (runs trained with that rule, i.e. the "
        "gradient each run followed), a rule name (every compared rule along the weights of "
        "runs trained with it), 'any' (pool every run), or 'auto' (default: own when the runs "
        "compared their own rules, else any)"
    )


def trained_with_text(trained_with: str) -> str:
    """A short phrase for titles: where the compared weights came from."""
    if trained_with == "auto":
        return "each rule along its own training runs, or pooled over all runs"
    if trained_with == "own":
        return "each rule along its own training runs"
    if trained_with == "any":
        return "pooled over runs of every training rule"
    return f"along runs trained with {rule_label(trained_with)}"


def finish(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as PNG and PDF, close it (if pyplot holds it), print and return the
    written paths."""
    paths = save(fig, out_dir, name)
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    for path in paths:
        print(path)
    return paths
