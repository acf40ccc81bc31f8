"""Gradient-alignment analyses: pure functions on xarray objects, lazy and out of core.

Every function takes and returns xarray objects (or a pandas table for metrics) and reduces over
named dimensions (``dim=``). Nothing is computed until the caller asks (``.compute()``,
``.values``, ``dask.compute``), so the same code runs on one machine with the threaded scheduler or
on a ``dask.distributed`` cluster, with memory bounded by a few chunks; :func:`by_record` runs any
of them one record file per task (on a cluster, nothing but results moves between workers).

Vocabulary: the dims of :mod:`mdgl_analysis.recording.schema`; parts are named as in the
training metrics (``cos_<rule>_<part>``): matrices ``rec``, ``in``; cell-type blocks ``rec_EE``,
``rec_EI``, ``rec_IE``, ``rec_II`` (pre->post: ``rec_EI`` = E -> I) and ``in_E``, ``in_I`` (input
synapses onto E or I cells).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import xarray as xr
from dask._task_spec import Task, TaskRef
from dask.highlevelgraph import HighLevelGraph

from mdgl_analysis.recording.readers import open_record, open_run, record_files, run_folders

REFERENCE = "bptt"
BLOCKS_REC = ("rec_EE", "rec_EI", "rec_IE", "rec_II")
BLOCKS_IN = ("in_E", "in_I")


# ------------------------------------------------------------------------------------------------
# elementary measures


def cosine(a: xr.DataArray, b: xr.DataArray, dim: str | Sequence[str]) -> xr.DataArray:
    """Cosine similarity of ``a`` and ``b`` along ``dim`` (NaN where either norm is zero)."""
    dot = (a * b).sum(dim)
    norm = np.sqrt((a * a).sum(dim) * (b * b).sum(dim))
    return (dot / norm.where(norm > 0)).rename("cosine")


def angle(a: xr.DataArray, b: xr.DataArray, dim: str | Sequence[str]) -> xr.DataArray:
    """Angle in degrees between ``a`` and ``b`` along ``dim``."""
    return np.degrees(np.arccos(cosine(a, b, dim).clip(-1.0, 1.0))).rename("angle")


def norm_ratio(a: xr.DataArray, b: xr.DataArray, dim: str | Sequence[str]) -> xr.DataArray:
    """``|a| / |b|`` along ``dim``."""
    nb = np.sqrt((b * b).sum(dim))
    return (np.sqrt((a * a).sum(dim)) / nb.where(nb > 0)).rename("norm_ratio")


def compare_with(
    values: xr.DataArray, dim: str | Sequence[str], reference: str = REFERENCE
) -> xr.Dataset:
    """Cosine, angle and norm ratio of every ``rule`` of ``values`` against ``reference``."""
    values = values.drop_attrs()
    ref = values.sel(rule=reference)
    others = values.sel(rule=[r for r in values.rule.values if r != reference])
    cos = cosine(others, ref, dim)  # once: the angle derives from it, no second pass over data
    return xr.Dataset(
        {
            "cosine": cos,
            "angle": np.degrees(np.arccos(cos.clip(-1.0, 1.0))).rename("angle"),
            "norm_ratio": norm_ratio(others, ref, dim),
        }
    )


# ------------------------------------------------------------------------------------------------
# cell types


def synapse_blocks(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Block label of every recurrent (``rec_EE``, ``rec_EI``, ``rec_IE``, ``rec_II``) and input
    synapse (``in_E``, ``in_I``), from the ``cell_type``, ``post_*`` and ``pre_*`` coordinates."""
    types = np.asarray(ds.cell_type.values).astype(str)
    post_rec = np.asarray(ds.post_rec.values, dtype=int)
    pre_rec = np.asarray(ds.pre_rec.values, dtype=int)
    post_in = np.asarray(ds.post_in.values, dtype=int)
    rec = np.char.add("rec_", np.char.add(types[pre_rec], types[post_rec]))
    inp = np.char.add("in_", types[post_in])
    return (
        xr.DataArray(rec, dims="synapse_rec", name="block"),
        xr.DataArray(inp, dims="synapse_in", name="block"),
    )


def neuron_groups(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """Boolean ``[neuron]`` masks of the groups that receive credit: output cells (a readout
    weight), E, I, adaptive (ALIF), and all cells."""
    ctype = ds.cell_type.astype(str)
    readout = ds.readout
    if "iteration" in readout.dims:  # the readout set may change with training: use the first
        readout = readout.isel(iteration=0)
    return {
        "output": readout.astype(bool),
        "E": ctype == "E",
        "I": ctype == "I",
        "adaptive": ds.adaptive.astype(bool),
        "all": xr.ones_like(ds.adaptive, dtype=bool),
    }


# ------------------------------------------------------------------------------------------------
# alignment of recorded gradients


def gradient_alignment(ds: xr.Dataset, by: str = "matrix") -> xr.Dataset:
    """Alignment of each rule's recorded gradient with BPTT's, per iteration.

    Only synapses that exist at that iteration (nonzero weight) are compared.

    Args:
        ds: records (:func:`~mdgl_analysis.recording.readers.open_run`), dims ``iteration``,
            ``rule``, ...
        by: ``"matrix"`` (``part`` = rec, in) or ``"block"`` (``part`` = rec_EE, rec_EI,
            rec_IE, rec_II, in_E, in_I).
    Returns:
        Dataset with ``cosine``, ``angle``, ``norm_ratio`` over (..., ``rule``, ``part``).
    """
    if by not in ("matrix", "block"):
        raise ValueError(f"by = {by!r} is not allowed: matrix or block")
    parts: dict[str, tuple[xr.DataArray, str]] = {}
    exist_rec = ds.w_rec != 0
    exist_in = ds.w_in != 0
    if by == "matrix":
        parts["rec"] = (ds.grad_rec.where(exist_rec, 0.0), "synapse_rec")
        parts["in"] = (ds.grad_in.where(exist_in, 0.0), "synapse_in")
    else:
        block_rec, block_in = synapse_blocks(ds)
        for b in BLOCKS_REC:
            parts[b] = (ds.grad_rec.where(exist_rec & (block_rec == b), 0.0), "synapse_rec")
        for b in BLOCKS_IN:
            parts[b] = (ds.grad_in.where(exist_in & (block_in == b), 0.0), "synapse_in")
    out = [compare_with(g, dim).expand_dims(part=[name]) for name, (g, dim) in parts.items()]
    return xr.concat(out, dim="part")


def _cell_runs(post: np.ndarray) -> tuple[np.ndarray | None, list[tuple[int, int, int]]]:
    """Synapses grouped by postsynaptic cell: the order that sorts them (None when they are
    sorted already, as the recorder writes them) and ``(cell, start, stop)`` runs of the sorted
    list."""
    order = np.argsort(post, kind="stable")
    cells, starts = np.unique(post[order], return_index=True)
    stops = np.append(starts[1:], len(post))
    runs = list(zip(cells.tolist(), starts.tolist(), stops.tolist(), strict=True))
    return (None if (order == np.arange(len(post))).all() else order), runs


def _contract(
    signal: np.ndarray, trace: np.ndarray, group: int, order: np.ndarray | None, runs
) -> np.ndarray:
    """``signal[post] * trace`` summed over trials and over each run of ``group`` steps.

    Args:
        signal: [neuron, rule, time, trial] (trial contiguous); trace: [time, trial, synapse];
            ``time`` a multiple of ``group``; ``order``, ``runs``: :func:`_cell_runs` of the
            synapses' ``post``.
    Returns:
        [rule, time // group, synapse].

    For the synapses onto cell p it is one matrix product per group of steps,
    ``[rule, group*trial] @ [group*trial, synapses onto p]``, batched over the groups: with whole
    windows in one group the inner dimension is long and BLAS efficient. Both operands are
    strided views, no copies, when the synapses are sorted by postsynaptic cell.
    """
    n_n, n_rule, n_t, n_b = signal.shape
    n_g, k = n_t // group, group * n_b
    tr = trace.reshape(n_g, k, -1)
    if order is not None:
        tr = tr[..., order]
    part = np.empty((n_g, n_rule, tr.shape[-1]), dtype=np.result_type(signal, tr))
    for cell, a, b in runs:  # [g, rule, k] @ [g, k, synapses onto the cell]
        sig = signal[cell].reshape(n_rule, n_g, k).transpose(1, 0, 2)
        np.matmul(sig, tr[..., a:b], out=part[..., a:b])
    out = part.transpose(1, 0, 2)
    if order is not None:
        out = np.empty_like(out)
        out[..., order] = part.transpose(1, 0, 2)
    return out


TASK_MB = 128.0
"""Default memory budget (MiB) of one contraction task of :func:`contributions`: the signal and
trace pieces it reads. Time blocks and synapse groups are sized from it, whatever the layout, the
number of synapses, the trial length or the number of rules (a task can only be smaller than this
if the record's HDF5 chunks are: each is read whole once, ``record.chunk_mb``)."""


class BudgetError(ValueError):
    """A task budget that is not a number > 0, or too small for a record (one line)."""


def task_bytes(task_mb: float | None = None) -> int:
    """The task budget in bytes (``task_mb`` MiB, default :data:`TASK_MB`); a ValueError names a
    budget that is not a finite number > 0."""
    mb = TASK_MB if task_mb is None else task_mb
    if isinstance(mb, bool) or not isinstance(mb, int | float) or not np.isfinite(mb) or mb <= 0:
        raise BudgetError(f"task_mb = {task_mb!r} is not allowed: a finite number of MiB > 0")
    return max(1, int(mb * 2**20))


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.cumsum((0, *chunks))


def _refine(x: da.Array, cuts: dict[int, Iterable[int]]) -> da.Array:
    """``x`` with its chunks along each axis of ``cuts`` also cut at those positions: every new
    chunk is a view of one old chunk (no copy, no merge), each old chunk still read once."""
    chunks = list(x.chunks)
    for axis, where in cuts.items():
        old = _bounds(x.chunks[axis])
        new = np.union1d(old, [c for c in where if 0 < c < old[-1]])
        chunks[axis] = tuple(np.diff(new).tolist())
    if tuple(chunks) == x.chunks:
        return x
    name = "refine-" + dask.base.tokenize(x, chunks)
    old_b = [_bounds(c) for c in x.chunks]
    new_b = [_bounds(c) for c in chunks]
    dsk: dict = {}
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        src, sl = [], []
        for axis, i in enumerate(index):
            lo, hi = int(new_b[axis][i]), int(new_b[axis][i + 1])
            j = int(np.searchsorted(old_b[axis], lo, side="right")) - 1
            src.append(j)
            sl.append(slice(lo - int(old_b[axis][j]), hi - int(old_b[axis][j])))
        dsk[(name, *index)] = (operator.getitem, (x.name, *src), tuple(sl))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, tuple(chunks), dtype=x.dtype, meta=x._meta)


def _inline(x: da.Array, key: tuple) -> Any:
    """What a contraction task gives for trace chunk ``key`` of ``x``: the record chunk's read
    and the :func:`_refine` slice of it, computed inside the task (:func:`_expression`). As
    tasks of their own, reads and slices were computed far ahead of the tasks that consume
    them, each keeping a whole record chunk alive: 620 MiB of them at once on one paper-scale
    record, whatever the task budget. (Signal chunks stay shared tasks: several blocks read
    each.)"""
    if not x.name.startswith("refine-"):
        return _expression(x.dask, key)
    func, source, index = x.dask.layers[x.name][key]
    return (func, _expression(x.dask, source), index)


def _expression(graph: Any, key: tuple, depth: int = 0) -> Any:
    """A task expression that computes chunk ``key`` of ``graph`` inline: it follows aliases
    (the record concatenation) and tasks of plain arguments (a record chunk's read and the
    slice that adds ``iteration``); anything else stays the key, a dependency as before."""
    task = graph.get(key) if depth < 8 else None
    if _is_key(graph, task):  # an alias
        return _expression(graph, task, depth + 1)
    if isinstance(task, tuple) and task and callable(task[0]):  # a task of the reader
        if any(_is_key(graph, a) for a in task[1:]):
            return key
        return task
    if isinstance(task, Task) and not task.kwargs:
        args = []
        for a in task.args:
            if isinstance(a, TaskRef):
                a = _expression(graph, a.key, depth + 1)
                if a == key or _is_key(graph, a):
                    return key
            elif isinstance(a, Task | TaskRef) or _is_key(graph, a):
                return key
            args.append(a)
        return (task.func, *args)
    return key


def _is_key(graph: Any, value: Any) -> bool:
    """Whether ``value`` is a key of ``graph`` (slices and other unhashables are not)."""
    if not (isinstance(value, tuple) and value and isinstance(value[0], str)):
        return False
    try:
        return value in graph
    except TypeError:
        return False


def _worst_task(
    blocks: list[tuple[int, int, int, int]],
    groups: list[tuple[int, int]],
    traces: list[da.Array],
    starts: list[int],
    nl: int,
    per_cell: int,
) -> int:
    """An upper bound of the trace bytes one task holds: per matrix, the whole record chunks
    that the largest overlap of a time block and a synapse group touches (``per_cell``: the
    lead and trial elements per step and synapse)."""
    total = 0
    for t, o in zip(traces, starts, strict=True):
        tb, cb = _bounds(t.chunks[nl]), _bounds(t.chunks[nl + 2])
        rows = (
            max(
                (
                    int(
                        tb[np.searchsorted(tb, b, "left")] - tb[np.searchsorted(tb, a, "right") - 1]
                    )
                    for a, b, *_ in blocks
                    if b > a
                ),
                default=0,
            )
            if tb[-1]
            else 0
        )
        cols = 0
        for g0, g1 in groups:
            lo, hi = max(g0 - o, 0), min(g1 - o, int(cb[-1]))
            if hi > lo:
                right = cb[min(np.searchsorted(cb, hi, "left"), len(cb) - 1)]
                cols = max(cols, int(right - cb[np.searchsorted(cb, lo, "right") - 1]))
        total += rows * cols * per_cell * t.dtype.itemsize
    return total


def _changes(post: np.ndarray) -> np.ndarray:
    """Positions in a synapse list where the postsynaptic cell changes."""
    return np.flatnonzero(np.diff(post)) + 1


def _groups(edges: np.ndarray, cells: np.ndarray, n_syn: int, width: int) -> list[tuple[int, int]]:
    """Contiguous synapse groups ``[a, b)`` of at most ``width`` synapses that never cut a chunk
    of the record (``edges``: its boundaries along the synapse axis) except where one is wider than
    ``width``, and then preferably where a postsynaptic cell's synapses end (``cells``)."""
    atoms = []
    for a, b in itertools.pairwise(edges.tolist()):
        while b - a > width:  # a chunk wider than a task: cut it, at a cell boundary if any
            inside = cells[(cells > a) & (cells <= a + width)]
            cut = int(inside[-1]) if len(inside) else a + width
            atoms.append((a, cut))
            a = cut
        atoms.append((a, b))
    groups: list[tuple[int, int]] = []
    for a, b in atoms:
        if groups and b - groups[-1][0] <= width:
            groups[-1] = (groups[-1][0], b)
        else:
            groups.append((a, b))
    return groups or [(0, n_syn)]


def _plan(
    n_t: int,
    window: int | None,
    n_window: int,
    step_signal: int,
    step_synapse: int,
    n_syn: int,
    widest_cell: int,
    trace_steps: int,
    budget: int,
    widest: int | None = None,
) -> tuple[int, int]:
    """Steps per task and synapses per group such that ``steps * (step_signal + synapses *
    step_synapse) <= budget`` (bytes): every synapse in a task when one step of them fits, as many
    steps as fit (whole record chunks of ``trace_steps`` when more than one fits); else synapse
    groups of at least the widest cell's synapses with up to ``trace_steps`` steps. Groups are at
    most ``widest`` synapses (what the task's output per step allows)."""
    full = step_signal + n_syn * step_synapse
    widest = n_syn if widest is None else max(1, widest)
    if full <= budget and n_syn <= widest:
        steps = min(max(1, n_t), budget // full)
        if steps >= trace_steps:
            steps = steps // trace_steps * trace_steps
        return steps, n_syn
    steps = max(1, min(trace_steps, n_t, window or n_t))
    want = min(n_syn, widest_cell)
    while steps > 1 and (budget // steps - step_signal) // step_synapse < want:
        steps = max(1, steps // 2)
    width = (budget // steps - step_signal) // step_synapse
    if width < 1:
        raise ValueError(
            f"task_mb = {budget / 2**20:g} is too small: one step of the learning signal alone "
            f"takes {step_signal / 2**20:.3g} MiB"
        )
    return steps, int(min(width, n_syn, widest))


def _blocks(
    n_t: int, window: int | None, n_window: int, steps: int
) -> tuple[list[tuple[int, int, int, int]], int, tuple[int, ...]]:
    """The tasks' time blocks ``(t0, t1, part, window chunk)``; with windows, the number of
    parts a window is cut into and the windows per window chunk (each block lies in one chunk).

    Per step: blocks of ``steps`` steps. Per window: whole windows per block when a window fits
    in ``steps``, else each window cut into ``parts`` nearly equal blocks of at most ``steps``
    steps (their partial sums are added by a tree reduction)."""
    if window is None:
        starts = list(range(0, n_t, steps)) or [0]
        blocks = [(t, min(t + steps, n_t), 0, i) for i, t in enumerate(starts)]
        return blocks, 1, tuple(b - a for a, b, *_ in blocks)
    if n_window == 0:
        return [(0, 0, 0, 0)], 1, (0,)
    if steps >= window:
        per = steps // window
        firsts = range(0, n_window, per)
        blocks = [(w * window, min(w + per, n_window) * window, 0, i) for i, w in enumerate(firsts)]
        return blocks, 1, tuple(min(per, n_window - w) for w in firsts)
    parts = -(-window // steps)
    blocks = []
    for w in range(n_window):
        cuts = [w * window + (s * window) // parts for s in range(parts + 1)]
        blocks += [(a, b, s, w) for s, (a, b) in enumerate(itertools.pairwise(cuts))]
    return blocks, parts, (1,) * n_window


_SCRATCH = threading.local()


def _neuron_major(
    signal: list[list[np.ndarray]],
    firsts: list[int],
    t0: int,
    n_t: int,
    n_lead: int,
    n_rule: int,
    dtype,
) -> np.ndarray:
    """The signal pieces ([*lead, rules, steps, trial, neuron], per rule chunk and per time piece
    starting at ``firsts``) of the steps ``[t0, t0 + n_t)`` as one [lead, neuron, rule, time,
    trial] array, the layout the products read. Written into a buffer kept per thread (a fresh
    one would page-fault in each time) and transposed a slab of rows at a time (cache friendly:
    about 3x faster than one strided copy)."""
    n_b, n_n = signal[0][0].shape[-2:]
    shape = (n_lead, n_n, n_rule, n_t * n_b)
    size = int(np.prod(shape))
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = _SCRATCH.buffer = np.empty(size, dtype=dtype)
    sig = buffer[:size].reshape(shape)
    r = 0
    for pieces in signal:
        n_r = pieces[0].shape[-4]
        for first, block in zip(firsts, pieces, strict=True):
            rows = block.reshape(n_lead, n_r, -1, n_n)
            c0 = (first - t0) * n_b
            for a in range(0, rows.shape[2], 1024):
                part = rows[:, :, a : a + 1024].transpose(0, 3, 1, 2)
                sig[:, :, r : r + n_r, c0 + a : c0 + a + part.shape[-1]] = part
        r += n_r
    return sig.reshape(n_lead, n_n, n_rule, n_t, n_b)


def _contract_block(
    window: int | None,
    t0: int,
    t1: int,
    w0: int,
    n_w: int,
    width: int,
    sig_firsts: list[int],
    meta: list[tuple[int, int, np.ndarray | None, list]],
    signal: list[list[np.ndarray]],
    traces: list[np.ndarray],
) -> np.ndarray:
    """One task of :func:`_contributions`: the steps ``[t0, t1)`` of one group of ``width``
    synapses.

    Args:
        signal: per rule chunk, the pieces [*lead, rules, steps, trial, neuron] of the block,
            starting at the steps ``sig_firsts`` (used in place: no concatenation).
        traces: the trace pieces [*lead, steps, trial, synapses] of the block and group; per
            piece, ``meta`` holds its first step, its first column in the group and
            :func:`_cell_runs` of its synapses.
    Returns:
        per step [*lead, rule, t1 - t0, width] when ``window`` is None, else [*lead, rule, 1,
        n_w, width]: the block's part of the sums over the windows ``w0 .. w0 + n_w`` of
        ``window`` steps.
    """
    lead = signal[0][0].shape[:-4]
    n_lead, n_rule = int(np.prod(lead, dtype=int)), sum(p[0].shape[-4] for p in signal)
    dtype = np.result_type(*(b for p in signal for b in p), *traces)
    sig = _neuron_major(signal, sig_firsts, t0, t1 - t0, n_lead, n_rule, dtype)
    if window is None:
        out = np.empty((n_lead, n_rule, t1 - t0, width), dtype=dtype)
    else:
        out = np.zeros((n_lead, n_rule, 1, n_w, width), dtype=dtype)
    for (first, col, order, runs), piece in zip(meta, traces, strict=True):
        piece = piece.reshape(n_lead, *piece.shape[-3:])
        cols = slice(col, col + piece.shape[-1])
        lo, hi = first, first + piece.shape[1]
        # the steps [lo, hi) of this piece, cut where windows end (complete windows only)
        ends = range((lo // window + 1) * window, hi, window) if window else []
        for a, b in itertools.pairwise([lo, *ends, hi]):
            w = None if window is None else a // window - w0
            if w is not None and not 0 <= w < n_w:
                continue
            for i in range(n_lead):
                s_ab = sig[i, :, :, a - t0 : b - t0]
                e_ab = piece[i, a - first : b - first]
                if w is None:
                    out[i, :, a - t0 : b - t0, cols] = _contract(s_ab, e_ab, 1, order, runs)
                else:
                    out[i, :, 0, w, cols] += _contract(s_ab, e_ab, b - a, order, runs)[:, 0]
    return out.reshape(*lead, *out.shape[1:])


def _contributions(
    ds: xr.Dataset,
    matrices: Sequence[str],
    window_ms: float | None,
    task_mb: float | None = None,
) -> dict[str, xr.DataArray]:
    """Per-step (``window_ms`` None) or per-window contributions of every rule, all matrices in
    one lazy pass.

    One task per time block and synapse group, sized by the budget ``task_mb``
    (:func:`task_bytes`): the signal and trace pieces it reads stay below it whatever the layout,
    the number of synapses, rules or steps. Every synapse is in one group while one step of them
    fits; else groups of consecutive synapses (cut at the record's chunks, and where a
    postsynaptic cell's synapses end). Record chunks are cut into views where a block or group
    ends, never merged (each is read once); per window, the parts of a window cut into several
    blocks are added by a tree reduction.
    """
    budget = task_bytes(task_mb)
    signal = ds.learning_signal.reset_coords(drop=True)
    lead = [d for d in signal.dims if d not in ("rule", "time", "trial", "neuron")]
    nl = len(lead)
    signal = signal.transpose(*lead, "rule", "time", "trial", "neuron")
    signal = signal.chunk({"trial": -1, "neuron": -1}).data
    lead_chunks = signal.chunks[:nl]
    traces = [
        ds[f"e_{m}"]
        .reset_coords(drop=True)
        .transpose(*lead, "time", "trial", f"synapse_{m}")
        .chunk(dict(zip(lead, lead_chunks, strict=True)) | {"trial": -1})
        .data
        for m in matrices
    ]
    posts = [np.asarray(ds[f"post_{m}"].values, dtype=np.intp) for m in matrices]
    offsets = _bounds([len(p) for p in posts])
    n_syn = int(offsets[-1])
    n_rule, n_t, n_b, n_n = signal.shape[nl:]
    window = None if window_ms is None else _window_steps(ds, window_ms)
    n_window = 0 if window is None else n_t // window
    dtype = np.result_type(signal.dtype, *[t.dtype for t in traces])

    # the plan: steps per task and synapses per group from the budget and the bytes per step
    n_lead = max((int(np.prod(c)) for c in itertools.product(*lead_chunks)), default=1)
    itemsize = max([signal.dtype.itemsize, *(t.dtype.itemsize for t in traces)])
    starts = offsets[:-1].tolist()
    edges = np.union1d(
        offsets, [o + e for o, t in zip(starts, traces, strict=True) for e in _bounds(t.chunks[-1])]
    ).astype(int)
    cells = np.union1d(  # where a postsynaptic cell's synapses end
        offsets, [o + c for o, p in zip(starts, posts, strict=True) for c in _changes(p)]
    ).astype(int)
    widest = int(np.diff(cells).max()) if n_syn else 1
    trace_steps = min((t.chunks[nl][0] for t in traces if t.chunks[nl]), default=1)
    # a task reads its trace chunks whole, however little of one it keeps: plan, measure what
    # the worst task holds (its signal slices and the whole trace chunks it reads), and plan
    # again on a smaller budget until that fits
    step_signal = n_lead * n_rule * n_b * n_n * signal.dtype.itemsize
    # per synapse and step: its traces in, or twice its contributions out (so that the tasks
    # that read them, with a mask or the reference rule, stay within the budget too)
    step_synapse = n_lead * max(n_b, 2 * n_rule if window is None else -(-2 * n_rule // window))
    step_synapse *= itemsize
    plan = budget
    while True:
        try:
            steps, width = _plan(
                n_t,
                window,
                n_window,
                step_signal,
                step_synapse,
                n_syn,
                widest,
                trace_steps,
                plan,
                # one window's sums (the parts of a window are added two at a time): half
                None if window is None else plan // (2 * n_lead * n_rule * itemsize),
            )
        except ValueError:
            raise BudgetError(
                f"task_mb = {TASK_MB if task_mb is None else task_mb:g} is too small for this "
                "record: a task must hold one step of the learning signal and whole record "
                "chunks of traces"
            ) from None
        blocks, parts, window_chunks = _blocks(n_t, window, n_window, steps)
        groups = _groups(edges, cells, n_syn, width)
        held = _worst_task(blocks, groups, traces, starts, nl, n_lead * n_b) + step_signal * max(
            (b[1] - b[0] for b in blocks), default=0
        )
        if held <= budget:
            break
        plan = int(plan * 0.8)
    time_cuts = [t for block in blocks for t in block[:2]]
    group_cuts = [g for g, _ in groups]
    unrefined = traces  # the record's chunks, read inside the tasks
    signal = _refine(signal, {nl + 1: time_cuts})
    traces = [
        _refine(t, {nl: time_cuts, nl + 2: [g - o for g in group_cuts]})
        for o, t in zip(starts, traces, strict=True)
    ]

    name = "contributions-" + dask.base.tokenize(signal, *traces, window, matrices, budget)
    sig_b = _bounds(signal.chunks[nl + 1])
    time_b = [_bounds(t.chunks[nl]) for t in traces]
    syn_b = [_bounds(t.chunks[nl + 2]) for t in traces]
    wiring = [
        [_cell_runs(p[a:b]) for a, b in itertools.pairwise(sb.tolist())]
        for p, sb in zip(posts, syn_b, strict=True)
    ]
    window_starts = _bounds(window_chunks)
    if window is not None and n_window == 0:  # the trial is shorter than one window
        shape = (*signal.shape[:nl], n_rule, 0, n_syn)
        empty = da.zeros(shape, chunks=(*lead_chunks, (n_rule,), (0,), (n_syn,)), dtype=dtype)
        return _named(ds, matrices, offsets, empty, [*lead, "rule", "window"], {"window": []})
    dsk: dict = {}
    for index in itertools.product(*(range(len(c)) for c in lead_chunks)):
        for bi, (t0, t1, part, wc) in enumerate(blocks):
            inside = np.flatnonzero(
                (sig_b[:-1] >= t0) & (sig_b[1:] <= t1) & (sig_b[:-1] < sig_b[1:])
            ).tolist()
            sig = [
                [(signal.name, *index, r, j, 0, 0) for j in inside]
                for r in range(signal.numblocks[nl])
            ]
            firsts = [int(sig_b[j]) for j in inside]
            for g, (g0, g1) in enumerate(groups):
                meta, pieces = [], []
                for m, t in enumerate(traces):
                    lo, hi = max(g0, offsets[m]) - offsets[m], min(g1, offsets[m + 1]) - offsets[m]
                    tb, sb = time_b[m], syn_b[m]
                    cols = np.flatnonzero((sb[:-1] >= lo) & (sb[1:] <= hi) & (sb[:-1] < sb[1:]))
                    rows = np.flatnonzero((tb[:-1] >= t0) & (tb[1:] <= t1) & (tb[:-1] < tb[1:]))
                    for c in cols.tolist() if hi > lo else []:
                        for j in rows.tolist():
                            col = int(offsets[m] + sb[c] - g0)
                            meta.append((int(tb[j]), col, *wiring[m][c]))
                            pieces.append(_inline(t, (t.name, *index, j, 0, c)))
                kernel = functools.partial(
                    _contract_block,
                    window,
                    t0,
                    t1,
                    int(window_starts[wc]) if window else 0,
                    window_chunks[wc] if window else 0,
                    g1 - g0,
                    firsts,
                    meta,
                )
                at = (bi,) if window is None else (part, wc)
                dsk[(name, *index, 0, *at, g)] = (kernel, sig, pieces)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[signal, *unrefined])
    widths = tuple(b - a for a, b in groups)
    if window is None:
        chunks = (*lead_chunks, (n_rule,), window_chunks, widths)
        out = da.Array(graph, name, chunks, dtype=dtype)
        dims, coords = [*lead, "rule", "time"], {"time": ds.time}
    else:
        chunks = (*lead_chunks, (n_rule,), (1,) * parts, window_chunks, widths)
        out = da.Array(graph, name, chunks, dtype=dtype)
        partial = n_lead * n_rule * max(window_chunks) * max(widths) * dtype.itemsize
        every = max(2, min(parts, budget // max(1, partial)))
        out = out.sum(axis=nl + 1, split_every={nl + 1: every})
        start = ds.time.values[: n_window * window : window]
        dims, coords = [*lead, "rule", "window"], {"window": ("window", start)}
    return _named(ds, matrices, offsets, out, dims, coords)


def _named(
    ds: xr.Dataset, matrices: Sequence[str], offsets: np.ndarray, out: da.Array, dims, coords
) -> dict[str, xr.DataArray]:
    """The matrices' columns of ``out`` as named DataArrays with ``ds``'s coordinates."""
    result = {}
    for m, a, b in zip(matrices, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        part = xr.DataArray(out[..., a:b], dims=[*dims, f"synapse_{m}"])
        keep = {k: v for k, v in ds.coords.items() if set(v.dims) <= set(part.dims)}
        result[m] = part.assign_coords(keep | coords).rename(f"contribution_{m}")
    return result


def contributions(
    ds: xr.Dataset, matrices: Sequence[str] = ("rec", "in"), task_mb: float | None = None
) -> dict[str, xr.DataArray]:
    """Per-step gradient contributions ``sum_trial s_rule(t)[post] * e(t)`` of every rule, for
    several weight matrices in one lazy pass (each signal chunk is read once).

    BPTT's, in the same factorisation, is the total learning signal times the same traces
    (spec I.3). Summed over ``time`` they equal the recorded gradients when every trial and the
    whole trial were recorded.

    Args:
        task_mb: memory budget of one task (MiB; default :data:`TASK_MB`): the input it reads.
    Returns:
        matrix -> DataArray (..., ``rule``, ``time``, ``synapse_<matrix>``).
    """
    return _contributions(ds, matrices, None, task_mb)


def window_contributions(
    ds: xr.Dataset,
    window_ms: float = 100.0,
    matrices: Sequence[str] = ("rec", "in"),
    task_mb: float | None = None,
) -> dict[str, xr.DataArray]:
    """:func:`contributions` summed over windows of ``window_ms`` (a last partial window is
    dropped), computed window by window without the per-step values.

    Returns:
        matrix -> DataArray (..., ``rule``, ``window``, ``synapse_<matrix>``); the ``window``
        coordinate is each window's start (ms). ``task_mb``: as :func:`contributions`.
    """
    return _contributions(ds, matrices, window_ms, task_mb)


def step_contributions(
    ds: xr.Dataset, matrix: str = "rec", task_mb: float | None = None
) -> xr.DataArray:
    """:func:`contributions` of one weight matrix: (..., ``rule``, ``time``, ``synapse_*``)."""
    return contributions(ds, (matrix,), task_mb)[matrix]


def _window_steps(da: xr.DataArray | xr.Dataset, window_ms: float) -> int:
    dt = float(da.time[1] - da.time[0]) if da.sizes["time"] > 1 else 1.0
    return max(1, int(round(window_ms / dt)))


def _windows(da: xr.DataArray, window_ms: float) -> xr.DataArray:
    """Sum ``time`` into windows of ``window_ms`` (a last partial window is dropped); the new
    ``window`` coordinate is each window's start. A product with a ``[time, window]`` indicator,
    so dask reduces chunk by chunk whatever the chunking."""
    steps = _window_steps(da, window_ms)
    n = da.sizes["time"] // steps
    index = np.arange(da.sizes["time"]) // steps
    indicator = xr.DataArray(
        (index[:, None] == np.arange(n)[None, :]).astype(np.float32),
        dims=("time", "window"),
        coords={"window": da.time.values[: n * steps : steps]},
    )
    return xr.dot(da, indicator, dim="time")


def time_alignment(
    ds: xr.Dataset, window_ms: float = 100.0, matrix: str = "rec", task_mb: float | None = None
) -> xr.Dataset:
    """Alignment with BPTT of each rule's gradient contributions per time window of the trial.

    Contributions are summed within each window (existing synapses only), then compared with
    BPTT's over synapses. Lazy; reads the traces and signals chunk by chunk when computed.

    Returns:
        ``cosine``, ``angle``, ``norm_ratio`` (..., ``rule``, ``window``; the rule's norm over
        BPTT's in the same window) and ``reference_norm`` (..., ``window``: the norm of BPTT's
        contribution), so that windows where a contribution is negligible can be told apart
        (:func:`negligible`): their cosine compares rounding residues, not credit.
        ``task_mb``: the memory budget of one task, as :func:`contributions`.
    """
    return time_alignments(ds, window_ms, (matrix,), task_mb).sel(matrix=matrix, drop=True)


def time_alignments(
    ds: xr.Dataset,
    window_ms: float = 100.0,
    matrices: Sequence[str] = ("rec", "in"),
    task_mb: float | None = None,
) -> xr.Dataset:
    """:func:`time_alignment` of several matrices from one pass over the signals, along a new
    ``matrix`` dim."""
    out = []
    for m, contrib in window_contributions(ds, window_ms, matrices, task_mb).items():
        exists = ds[f"w_{m}"] != 0
        res = compare_contributions(contrib.where(exists, 0.0), f"synapse_{m}")
        out.append(res.expand_dims(matrix=[m]))
    return xr.concat(out, dim="matrix")


def compare_contributions(
    contrib: xr.DataArray, dim: str | Sequence[str], reference: str = REFERENCE
) -> xr.Dataset:
    """:func:`compare_with` of contributions along ``dim`` (synapses), with ``reference_norm``:
    the norm of the reference rule's contribution (``contrib`` without its ``rule`` dim), from
    which :func:`negligible` tells which cosines compare contributions too small to count."""
    res = compare_with(contrib, dim, reference)
    ref = contrib.drop_attrs().sel(rule=reference, drop=True)
    res["reference_norm"] = np.sqrt((ref * ref).sum(dim)).rename("reference_norm")
    return res


NEGLIGIBLE = 1e-6
"""A window's contribution is negligible below this fraction of BPTT's norm in the same window
(or, for BPTT's own, of BPTT's largest window): :func:`negligible`."""


def negligible(result: xr.Dataset, rel: float = NEGLIGIBLE, dim: str = "window") -> xr.DataArray:
    """Where a cosine of :func:`time_alignment` compares contributions too small to mean anything.

    True where the rule's contribution is below ``rel`` times BPTT's in the same window
    (``norm_ratio < rel``), where BPTT's own contribution is below ``rel`` times its largest
    along ``dim`` (the other windows of the same iteration), or where either is zero (cosine
    undefined). A rule whose signal only leaks into a window through a filter (e-prop's readout
    signal long before the loss counts: ~1e-14 of BPTT's) has a cosine there that is numerical
    noise, however large.

    Args:
        result: a :func:`time_alignment` (or :func:`time_alignments`) result with ``cosine``,
            ``norm_ratio`` and ``reference_norm``.
        rel: the relative threshold.
        dim: the windows dimension, over which BPTT's largest contribution is taken.

    Returns:
        boolean DataArray of ``cosine``'s dims (..., ``rule``, ``window``).
    """
    ref = result["reference_norm"]
    small_ref = ref <= rel * ref.max(dim)
    return ((result["norm_ratio"] < rel) | small_ref | result["cosine"].isnull()).rename(
        "negligible"
    )


def signal_alignment(ds: xr.Dataset, window_ms: float = 100.0) -> xr.Dataset:
    """Alignment of each rule's per-neuron signal with the total learning signal (BPTT), per
    neuron group and time window, over trials and neurons."""
    signal = _windows(ds.learning_signal, window_ms)
    out = []
    for name, mask in neuron_groups(ds).items():
        part = signal.where(mask, 0.0)
        out.append(compare_with(part, ("trial", "neuron")).expand_dims(group=[name]))
    return xr.concat(out, dim="group")


def credit_by_type(ds: xr.Dataset) -> xr.DataArray:
    """Which cells receive credit: root-mean-square of each rule's per-neuron signal over time
    and trials, averaged over the cells of each group. Dims (..., ``rule``, ``group``)."""
    rms = np.sqrt((ds.learning_signal**2).mean(("time", "trial")))
    out = [
        rms.where(mask).mean("neuron").expand_dims(group=[g])
        for g, mask in neuron_groups(ds).items()
    ]
    return xr.concat(out, dim="group").rename("signal_rms")


# ------------------------------------------------------------------------------------------------
# runs and metrics


def run_config(path: str | Path) -> dict[str, Any]:
    """The resolved config of a run folder as nested dicts, read as data (the task is not
    built: a task in a user's file is not imported here)."""
    import tomllib

    return tomllib.loads((Path(path) / "config.toml").read_text())


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{section}.{key}": value
        for section, values in cfg.items()
        for key, value in values.items()
    }


def find_runs(roots: Iterable[str | Path], **query: Any) -> list[Path]:
    """Run folders under ``roots`` (or the folders themselves) whose config matches ``query``.

    Keys are config fields, dotted (``"train.rule"``) or bare when unambiguous (``rule``,
    ``seed``); runs are never selected by folder name.
    """
    found = [p for p in run_folders(roots) if _matches(_flat(run_config(p)), query)]
    return found


def _matches(flat: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, want in query.items():
        keys = [k for k in flat if k == key or k.split(".", 1)[1] == key]
        if len(keys) != 1:
            raise KeyError(f"config key {key!r} is unknown or ambiguous; use section.field")
        if flat[keys[0]] != want:
            return False
    return True


def load_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The metrics of many runs as one tidy table.

    Columns: ``run`` (folder name), ``rule``, ``seed``, ``iteration``, ``split``, ``name``,
    ``value``.
    """
    frames = []
    for path in paths:
        path = Path(path)
        cfg = run_config(path)
        df = pd.read_csv(path / "metrics.csv")
        df.insert(0, "seed", cfg["run"]["seed"])
        df.insert(0, "rule", cfg["train"]["rule"])
        df.insert(0, "run", str(path))
        frames.append(df)
    if not frames:
        raise FileNotFoundError("no runs given")
    return pd.concat(frames, ignore_index=True)


def open_runs(paths: Iterable[str | Path]) -> xr.Dataset:
    """Records of many runs, lazily, along a new ``run`` dim with ``training_rule``, ``seed`` and
    ``config`` (JSON) coordinates from each run's config.

    Runs with different seeds have different synapse lists, so synapses are indexed by identity
    (``synapse_rec = post * n_neuron + pre``, ``synapse_in = post * n_input + pre``) and joined
    outer: a synapse absent from a run is NaN there. ``post_*``/``pre_*`` are rebuilt after.
    """
    datasets = []
    for path in paths:
        cfg = run_config(path)
        ds = open_run(path)
        n, n_in = ds.sizes["neuron"], ds.sizes["input"]
        ds = ds.assign_coords(
            synapse_rec=ds.post_rec.values * n + ds.pre_rec.values,
            synapse_in=ds.post_in.values * n_in + ds.pre_in.values,
        ).drop_vars(["post_rec", "pre_rec", "post_in", "pre_in"])
        datasets.append(
            ds.expand_dims(run=[str(path)]).assign_coords(
                training_rule=("run", [cfg["train"]["rule"]]),
                seed=("run", [cfg["run"]["seed"]]),
                config=("run", [json.dumps(cfg)]),
            )
        )
    out = xr.concat(
        datasets, dim="run", data_vars="all", coords="minimal", compat="override", join="outer"
    )
    return out.assign_coords(
        post_rec=("synapse_rec", out.synapse_rec.values // n),
        pre_rec=("synapse_rec", out.synapse_rec.values % n),
        post_in=("synapse_in", out.synapse_in.values // n_in),
        pre_in=("synapse_in", out.synapse_in.values % n_in),
    )


def by_record(analysis: Callable[[xr.Dataset], xr.Dataset], run: str | Path) -> xr.Dataset:
    """``analysis`` of every record of ``run``, computed one record file per task and concatenated
    along ``iteration``.

    Each task opens its record and computes ``analysis`` on it with dask's synchronous scheduler:
    memory stays bounded by a few of its tasks (each reads at most ``task_mb``, :data:`TASK_MB`
    unless ``analysis`` sets another), reads are sequential within one file, and the only
    thing that leaves a task is its small result. The tasks run on the active scheduler: the
    threads of this process, or the workers of a ``dask.distributed`` client, where this layout
    avoids moving chunks between workers (measured: README, analysis benchmark).
    """
    files = record_files(run)
    if not files:
        raise FileNotFoundError(f"no complete records in {str(run)!r}")
    tasks = [dask.delayed(_analyse_record, pure=True)(analysis, str(f)) for f in files]
    return xr.concat(dask.compute(*tasks), dim="iteration")


def _analyse_record(analysis: Callable[[xr.Dataset], xr.Dataset], path: str) -> xr.Dataset:
    ds = open_record(path)
    # variables without a time axis are small: read whole at once (h5py), the analysis on them
    # builds no graph; the per-step ones stay lazy and stream chunk by chunk
    small = [n for n, v in ds.data_vars.items() if "time" not in v.dims]
    with h5py.File(path, "r") as f:
        ds = ds.assign({n: ds[n].copy(data=f[n][()]) for n in small})
    with dask.config.set(scheduler="sync"):
        return analysis(ds).compute()


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """``np.convolve(values, ones(width)/width, 'valid')`` as the original plot (PLOT)."""
    if width <= 1 or len(values) < width:
        return np.asarray(values, dtype=float)
    return np.convolve(values, np.ones(width) / width, mode="valid")


def learning_curves(
    metrics: pd.DataFrame, name: str = "loss", split: str = "val", smooth: int = 5
) -> pd.DataFrame:
    """Mean and std over seeds of a metric, per rule and iteration, after a ``smooth``-point
    moving average of each run (the paper's Fig. 3C smoothing; std with ddof = 1).

    Returns:
        columns ``rule``, ``iteration``, ``mean``, ``std``, ``n`` (runs).
    """
    sel = metrics[(metrics["name"] == name) & (metrics["split"] == split)]
    rows = []
    for rule, by_rule in sel.groupby("rule", sort=False):
        curves = []
        for _, run in by_rule.groupby("run"):
            run = run.sort_values("iteration")
            its = run["iteration"].to_numpy()
            sm = moving_average(run["value"].to_numpy(), smooth)
            offset = len(its) - len(sm)
            curves.append(pd.Series(sm, index=its[offset // 2 : offset // 2 + len(sm)]))
        table = pd.concat(curves, axis=1)
        for it, row in table.iterrows():
            vals = row.dropna().to_numpy()
            rows.append(
                {
                    "rule": rule,
                    "iteration": int(it),
                    "mean": vals.mean(),
                    "std": vals.std(ddof=1) if len(vals) > 1 else 0.0,
                    "n": len(vals),
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# schedulers


def _hdf5plugin_worker_plugin():
    """A dask.distributed worker plugin that registers the blosc filter in every worker."""
    from distributed import WorkerPlugin

    class ImportHdf5Plugin(WorkerPlugin):
        name = "mdgl-hdf5plugin"

        def setup(self, worker=None):  # noqa: D102
            import hdf5plugin  # noqa: F401

    return ImportHdf5Plugin()


@contextlib.contextmanager
def scheduler(
    address: str | None = None, workers: int | None = None, memory_limit: str | None = None
) -> Iterator[Any]:
    """Run dask computations inside on the threaded scheduler (default), an existing
    ``dask.distributed`` scheduler at ``address``, or a local cluster of ``workers`` processes
    (one thread each, ``memory_limit`` per worker). Yields the client, or None."""
    if address is None and not workers:
        with dask.config.set(scheduler="threads"):
            yield None
        return
    from distributed import Client, LocalCluster

    if address is not None:
        client = Client(address)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit or "auto",
            dashboard_address=None,
        )
        client = Client(cluster)
    try:
        client.register_plugin(_hdf5plugin_worker_plugin())
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def tidy(result: xr.Dataset) -> pd.DataFrame:
    """An analysis result as a flat table (one row per coordinate combination)."""
    df = result.to_dataframe().reset_index()
    keep = [c for c in df.columns if c not in ("cell_type", "adaptive", "readout")]
    return df[keep]
