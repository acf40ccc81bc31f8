"""One look for every figure: style, fixed colours, saving, and small plot helpers.

The figure scripts in ``analyses/`` share this module so that a rule, a cell type or an input
population has the same colour and the same name in every figure:

* :func:`setup` sets one seaborn style (call it before creating a figure);
* :data:`RULE_COLORS` / :data:`RULE_LABELS` (and :func:`rule_color` / :func:`rule_label` for
  rules not listed), :data:`CELL_COLORS`, :data:`INPUT_COLORS`, :data:`BLOCK_LABELS`;
* :func:`save` writes a figure as PNG (200 dpi) and PDF;
* plot helpers take a matplotlib ``Axes``, draw on it and return it;
* a few helpers shared by the command lines (finding runs, reading the logged cosines with BPTT,
  the task's epochs from a run's config).

Nothing here selects the matplotlib backend: the scripts call ``matplotlib.use("Agg")`` first.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from mdgl_analysis.analysis import alignment as analysis

# ------------------------------------------------------------------------------------------------
# colours and names

RULES = ("bptt", "eprop", "mdgl", "mdgl_exact", "mdgl_nonlocal", "mdgl_online")
"""Every learning rule in the order figures list them."""

RULE_COLORS: dict[str, str] = {
    "bptt": "#222222",  # near black: the reference
    "eprop": "#E69F00",  # orange (Okabe-Ito)
    "mdgl": "#009E73",  # bluish green (Okabe-Ito)
    "mdgl_exact": "#56B4E9",  # sky blue (Okabe-Ito)
    "mdgl_nonlocal": "#CC79A7",  # reddish purple (Okabe-Ito)
    "mdgl_online": "#6A3D9A",  # dark violet
}
"""One fixed colour per learning rule (colour-blind safe)."""

RULE_LABELS: dict[str, str] = {
    "bptt": "BPTT",
    "eprop": "e-prop",
    "mdgl": "MDGL",
    "mdgl_exact": "MDGL (exact weights)",
    "mdgl_nonlocal": "MDGL (non-local)",
    "mdgl_online": "MDGL (online)",
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

EPOCH_COLORS: dict[str, str] = {"cue": "#BBBBBB", "delay": "#FFFFFF", "recall": "#55A868"}
"""Colours of the task epochs in timeline bars and shading."""

_FALLBACK = sns.color_palette("dark", 10).as_hex()


def rule_color(rule: str) -> str:
    """The colour of ``rule`` (a stable fallback colour for a rule not in :data:`RULE_COLORS`)."""
    if rule in RULE_COLORS:
        return RULE_COLORS[rule]
    return _FALLBACK[sum(map(ord, rule)) % len(_FALLBACK)]


def rule_label(rule: str) -> str:
    """The display name of ``rule`` (the name itself for a rule not in :data:`RULE_LABELS`)."""
    return RULE_LABELS.get(rule, rule)


def rule_n_label(rule: str, n: int, unit: str = "") -> str:
    """Legend entry of a rule with its number of runs, e.g. ``"e-prop, n = 5 seeds"``."""
    unit = f" {unit}" if unit else ""
    return f"{rule_label(rule)}, n = {n}{unit}"


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
    """One period of a trial: ``kind`` is ``cue``, ``delay`` or ``recall``; times in ms."""

    kind: str
    start: float
    stop: float


def task_epochs(cfg: dict[str, Any]) -> list[Epoch]:
    """The cue windows, the delay and the recall of a trial, in ms, from a run's resolved config
    (nested dicts, :func:`mdgl_analysis.analysis.run_config`); computed by the task's own
    :func:`mdgl_analysis.task.timeline`, so they match what the network was shown."""
    from mdgl_analysis.config import TaskConfig
    from mdgl_analysis.tasks.evidence import timeline

    dt = float(cfg["network"]["dt"])
    tl = timeline(TaskConfig(**cfg["task"]), dt)
    epochs = [Epoch("cue", a * dt, b * dt) for a, b in tl.cues]
    last_cue = tl.cues[-1][1] if tl.cues else 0
    if tl.recall[0] > last_cue:
        epochs.append(Epoch("delay", last_cue * dt, tl.recall[0] * dt))
    epochs.append(Epoch("recall", tl.recall[0] * dt, tl.recall[1] * dt))
    return epochs


def shade_epochs(ax: Axes, epochs: Sequence[Epoch], alpha: float = 0.18) -> Axes:
    """Lightly shade the cue windows and the recall behind the data of ``ax``."""
    for ep in epochs:
        if ep.kind != "delay":
            ax.axvspan(
                ep.start, ep.stop, color=EPOCH_COLORS[ep.kind], alpha=alpha, linewidth=0, zorder=0
            )
    return ax


def epoch_bar(ax: Axes, epochs: Sequence[Epoch]) -> Axes:
    """A thin timeline axis: a numbered box per cue window ("cues" written at the left), the
    delay and the recall.

    Meant for a short axes above (and sharing x with) the data axes; hides its y axis.
    """
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    cues = [ep for ep in epochs if ep.kind == "cue"]
    for ep in epochs:
        ax.axvspan(
            ep.start,
            ep.stop,
            ymin=0.15,
            ymax=0.85,
            facecolor=EPOCH_COLORS[ep.kind],
            edgecolor="#555555",
            linewidth=0.6,
            alpha=0.7 if ep.kind != "delay" else 1,
        )
    for k, ep in enumerate(cues, start=1):
        ax.text(
            0.5 * (ep.start + ep.stop),
            0.5,
            str(k),
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
        if ep.kind in ("delay", "recall"):
            ax.text(
                0.5 * (ep.start + ep.stop),
                0.5,
                ep.kind,
                transform=trans,
                ha="center",
                va="center",
                fontsize="small",
            )
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    sns.despine(ax=ax, left=True, bottom=True)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
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


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """The common command line: ``RUN_OR_FOLDER... --out DIR``."""
    ap = argparse.ArgumentParser(
        prog=f"python analyses/{name}.py",
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
    """Every run folder in or under ``paths`` (:func:`mdgl_analysis.analysis.find_runs`); exits
    with a message when there is none."""
    paths = list(paths)
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        sys.exit(f"error: no such file or folder: {', '.join(missing)}")
    runs = analysis.find_runs(paths)
    if not runs:
        sys.exit(f"error: no run folder (with run.json) in {', '.join(map(str, paths))}")
    return runs


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
    """Save ``fig`` as PNG and PDF, close it, print and return the written paths."""
    paths = save(fig, out_dir, name)
    import matplotlib.pyplot as plt  # after the scripts chose their backend

    plt.close(fig)
    for path in paths:
        print(path)
    return paths
