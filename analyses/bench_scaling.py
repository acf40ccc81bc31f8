"""Seconds per training iteration against the scaled axis of ``mdgl bench --scaling``, log-log.

    mdgl bench --scaling n=100,200,400,800 --rules bptt,eprop,mdgl --threads 1 --rounds 3 \\
        --out scaling_n.jsonl
    python analyses/bench_scaling.py scaling_n.jsonl --out scaling_n.png

One line per (rule, core) (and per thread count when the file holds several): the median over
interleaved rounds of each round's median s/iter at each value, the local time exponent of the
last step in the legend; a dashed reference line of slope 1 (time proportional to the axis).
Cases that failed (an ``error`` in their line) are left out with a note. Writes one PNG. Imports
no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes

from mdgl_analysis.analysis import plotting as P

AXIS_LABELS = {
    "n": "network size N (recurrent neurons)",
    "t": "trial length T (time steps)",
    "b": "batch B (trials per iteration)",
}
AXIS_SYMBOLS = {"n": "N", "t": "T", "b": "B"}


def load(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The timed cases of ``mdgl bench --scaling ... --json`` lines (failed cases left out).

    Raises:
        P.FigureError: a file is missing or not JSON lines, holds no scaling case, or mixes axes.
    """
    rows = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise P.FigureError(f"no such file: {path}")
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise P.FigureError(f"{path}, line {k}: not a JSON object") from None
    failed = [r for r in rows if "error" in r]
    for r in failed:
        P.note(f"left out {r.get('rule')} at {r.get('axis')} = {r.get('value')}: {r['error']}")
    rows = [r for r in rows if "error" not in r and r.get("axis")]
    if not rows:
        raise P.FigureError("no timed --scaling case in the file (run mdgl bench --scaling)")
    axes = sorted({r["axis"] for r in rows})
    if len(axes) > 1:
        raise P.FigureError(f"the cases scale several axes ({', '.join(axes)}): give one")
    return rows


def core_of(row: dict[str, Any]) -> str:
    """The core a case ran on: the one the trainer reported, else the configured ``run.core``."""
    return row.get("core_used") or row.get("core") or "torch"


def series(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Rows grouped by (rule, core, threads), each group sorted by the scaled value."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["rule"], core_of(r), r["threads"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["value"]) for k, v in groups.items()}


def label(rule: str, core: str, threads: int | None) -> str:
    """``"BPTT, core numba"``; the autograd reference named as such; threads when they vary."""
    name = "BPTT by autograd (reference)" if rule == "bptt_autograd" else P.rule_label(rule)
    tail = f", {threads} thread{'s' if threads != 1 else ''}" if threads is not None else ""
    return f"{name}, core {core}{tail}"


def plot_scaling(ax: Axes, rows: list[dict[str, Any]]) -> Axes:
    """s/iter against the scaled value on log-log axes, one line per (rule, core[, threads]),
    with a slope-1 reference line through the geometric mean of the smallest value's times."""
    axis = rows[0]["axis"]
    groups = series(rows)
    several_threads = len({k[2] for k in groups}) > 1
    styles = ["-", "--", ":", "-."]
    cores = sorted({k[1] for k in groups})
    for (rule, core, threads), group in groups.items():
        x = [r["value"] for r in group]
        y = [r["s_per_iter_median"] for r in group]
        text = label(rule, core, threads if several_threads else None)
        if len(group) > 1:
            slope = math.log(y[-1] / y[-2]) / math.log(x[-1] / x[-2])
            text += f" (last exponent {slope:.2f})"
        ax.plot(
            x,
            y,
            marker="o",
            linestyle=styles[cores.index(core) % len(styles)],
            color=P.rule_color("bptt" if rule == "bptt_autograd" else rule),
            alpha=0.55 if rule == "bptt_autograd" else 1.0,
            label=text,
        )
    values = sorted({r["value"] for r in rows})
    first = [r["s_per_iter_median"] for r in rows if r["value"] == values[0]]
    y0 = math.exp(sum(map(math.log, first)) / len(first))
    ax.plot(
        [values[0], values[-1]],
        [y0, y0 * values[-1] / values[0]],
        color="#999999",
        linestyle=(0, (4, 3)),
        linewidth=1.0,
        label=f"slope 1 (time ∝ {AXIS_SYMBOLS[axis]})",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel("seconds per training iteration")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def describe(rows: list[dict[str, Any]]) -> str:
    """What every point is (rounds, iterations) and what was held fixed, for the title."""
    rounds = sorted({r["rounds"] for r in rows})
    its = sorted({r["iterations"] for r in rows})
    fixed = []
    axis = rows[0]["axis"]
    for key, name, ax in (("n_rec", "N", "n"), ("n_steps", "T", "t"), ("batch", "B", "b")):
        held = sorted({r[key] for r in rows})
        if ax != axis and len(held) == 1:
            fixed.append(f"{name} = {held[0]}")
    cpu = sorted({f"{r.get('cpu', '?')}" for r in rows})
    device = sorted({r["device"] for r in rows})
    point = f"the median of {P.n_text(its, 'timed iterations')}"
    if rounds != [1]:
        point = f"median over {P.n_text(rounds, 'interleaved rounds')} of {point}"
    return (
        f"{rows[0].get('preset', '?')} preset, {', '.join(fixed)}; {', '.join(device)} "
        f"({'; '.join(cpu)})\neach point: {point} (one process per point and round)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("jsonl", nargs="+", help="JSON lines of mdgl bench --scaling (--out or --json)")
    ap.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write")
    args = ap.parse_args(argv)
    try:
        rows = load(args.jsonl)
    except P.FigureError as err:
        return P.fail(err)
    P.setup()
    fig = P.new_figure((9.0, 4.6))
    ax = plot_scaling(fig.subplots(), rows)
    ax.set_title(describe(rows), fontsize="small", fontweight="normal")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=200)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
