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


_SCRATCH = threading.local()


def _neuron_major(signal: list[np.ndarray], n_lead: int, n_rule: int, dtype) -> np.ndarray:
    """The rule blocks [*lead, rule, time, trial, neuron] as one [lead, neuron, rule, time,
    trial] array, the layout the products read. Written into a buffer kept per thread (a fresh
    one would page-fault in each time) and transposed a slab of rows at a time (cache friendly:
    about 3x faster than one strided copy)."""
    n_t, n_b, n_n = signal[0].shape[-3:]
    shape = (n_lead, n_n, n_rule, n_t * n_b)
    size = int(np.prod(shape))
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = _SCRATCH.buffer = np.empty(size, dtype=dtype)
    sig = buffer[:size].reshape(shape)
    r = 0
    for block in signal:
        rows = block.reshape(n_lead, -1, n_t * n_b, n_n)
        for a in range(0, n_t * n_b, 1024):
            part = rows[:, :, a : a + 1024].transpose(0, 3, 1, 2)
            sig[:, :, r : r + rows.shape[1], a : a + 1024] = part
        r += rows.shape[1]
    return sig.reshape(n_lead, n_n, n_rule, n_t, n_b)


def _contract_block(
    window: int | None,
    n_window: int,
    wiring,
    start: int,
    signal: list[np.ndarray],
    firsts: list[list[int]],
    traces: list[list[np.ndarray]],
) -> np.ndarray:
    """One time block ``[start, start + steps)`` of :func:`_contributions`.

    Args:
        signal: the blocks [*lead, rule, steps, trial, neuron] along ``rule``.
        firsts, traces: per matrix, the chunks [*lead, time, trial, synapse_m] that overlap the
            block and the step each starts at (used in place: no concatenation).
        wiring: :func:`_cell_runs` and the number of synapses, per matrix.
    Returns:
        the matrices' synapses one after the other: per step [*lead, rule, steps, synapse] when
        ``window`` is None, else [*lead, rule, 1, window, synapse], the block's part of the sum
        over each window of ``window`` steps.
    """
    lead, n_t = signal[0].shape[:-4], signal[0].shape[-3]
    n_lead, n_rule = int(np.prod(lead, dtype=int)), sum(b.shape[-4] for b in signal)
    dtype = np.result_type(*signal, *(c for chunks in traces for c in chunks))
    sig = _neuron_major(signal, n_lead, n_rule, dtype)
    n_syn = sum(n for *_, n in wiring)
    if window is None:
        out = np.empty((n_lead, n_rule, n_t, n_syn), dtype=dtype)
    else:
        out = np.zeros((n_lead, n_rule, 1, n_window, n_syn), dtype=dtype)
    offset = 0
    for (order, runs, n), starts, chunks in zip(wiring, firsts, traces, strict=True):
        cols = slice(offset, offset + n)
        offset += n
        for first, chunk in zip(starts, chunks, strict=True):
            chunk = chunk.reshape(n_lead, *chunk.shape[-3:])
            lo, hi = max(first, start), min(first + chunk.shape[1], start + n_t)
            # the steps [lo, hi) of this chunk, cut where windows end (complete windows only)
            ends = range((lo // window + 1) * window, hi, window) if window else []
            for a, b in itertools.pairwise([lo, *ends, hi]):
                w = None if window is None else a // window
                if w is not None and w >= n_window:
                    continue
                for i in range(n_lead):
                    s_ab = sig[i, :, :, a - start : b - start]
                    e_ab = chunk[i, a - first : b - first]
                    if w is None:
                        out[i, :, a - start : b - start, cols] = _contract(
                            s_ab, e_ab, 1, order, runs
                        )
                    else:
                        out[i, :, 0, w, cols] += _contract(s_ab, e_ab, b - a, order, runs)[:, 0]
    return out.reshape(*lead, *out.shape[1:])


def _contributions(
    ds: xr.Dataset, matrices: Sequence[str], window_ms: float | None
) -> dict[str, xr.DataArray]:
    """Per-step (``window_ms`` None) or per-window contributions of every rule, all matrices in
    one lazy pass.

    One task per time chunk of the signal (a few hundred steps: the scheduler's per-task cost
    stays small next to the work): it takes every rule's signal chunk and the trace chunks that
    overlap it, as they were read, and only the small per-window sums leave it.
    """
    signal = ds.learning_signal.reset_coords(drop=True)
    lead = [d for d in signal.dims if d not in ("rule", "time", "trial", "neuron")]
    signal = signal.transpose(*lead, "rule", "time", "trial", "neuron")
    signal = signal.chunk({"trial": -1, "neuron": -1}).data
    lead_chunks = signal.chunks[: len(lead)]
    traces = [
        ds[f"e_{m}"]
        .reset_coords(drop=True)
        .transpose(*lead, "time", "trial", f"synapse_{m}")
        .chunk(dict(zip(lead, lead_chunks, strict=True)) | {"trial": -1, f"synapse_{m}": -1})
        .data
        for m in matrices
    ]
    posts = [np.asarray(ds[f"post_{m}"].values, dtype=np.intp) for m in matrices]
    wiring = [(*_cell_runs(post), len(post)) for post in posts]
    n_t, n_rule, n_syn = signal.shape[len(lead) + 1], signal.shape[len(lead)], sum(map(len, posts))
    window = None if window_ms is None else _window_steps(ds, window_ms)
    n_window = 0 if window is None else n_t // window
    kernel = functools.partial(_contract_block, window, n_window, wiring)
    time_chunks = signal.chunks[len(lead) + 1]
    bounds = np.cumsum((0, *time_chunks))
    trace_bounds = [np.cumsum((0, *t.chunks[len(lead)])) for t in traces]
    name = "contributions-" + dask.base.tokenize(signal, *traces, window, matrices)
    dsk: dict = {}
    for index in itertools.product(*(range(len(c)) for c in lead_chunks)):
        for j, (t0, t1) in enumerate(itertools.pairwise(bounds)):
            sig = [(signal.name, *index, r, j, 0, 0) for r in range(signal.numblocks[len(lead)])]
            firsts, pieces = [], []
            for t, tb in zip(traces, trace_bounds, strict=True):
                overlap = np.flatnonzero((tb[:-1] < t1) & (tb[1:] > t0)).tolist()
                firsts.append([int(tb[c]) for c in overlap])
                pieces.append([(t.name, *index, c, 0, 0) for c in overlap])
            key = (name, *index, 0, j, 0) if window is None else (name, *index, 0, j, 0, 0)
            dsk[key] = (kernel, int(t0), sig, firsts, pieces)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[signal, *traces])
    dtype = np.result_type(signal.dtype, *[t.dtype for t in traces])
    if window is None:
        chunks = (*lead_chunks, (n_rule,), time_chunks, (n_syn,))
        out = da.Array(graph, name, chunks, dtype=dtype)
        dims, coords = [*lead, "rule", "time"], {"time": ds.time}
    else:
        chunks = (*lead_chunks, (n_rule,), (1,) * len(time_chunks), (n_window,), (n_syn,))
        out = da.Array(graph, name, chunks, dtype=dtype).sum(axis=len(lead) + 1)
        start = ds.time.values[: n_window * window : window]
        dims, coords = [*lead, "rule", "window"], {"window": ("window", start)}
    result, offset = {}, 0
    for m, post in zip(matrices, posts, strict=True):
        part = xr.DataArray(out[..., offset : offset + len(post)], dims=[*dims, f"synapse_{m}"])
        offset += len(post)
        keep = {k: v for k, v in ds.coords.items() if set(v.dims) <= set(part.dims)}
        result[m] = part.assign_coords(keep | coords).rename(f"contribution_{m}")
    return result


def contributions(
    ds: xr.Dataset, matrices: Sequence[str] = ("rec", "in")
) -> dict[str, xr.DataArray]:
    """Per-step gradient contributions ``sum_trial s_rule(t)[post] * e(t)`` of every rule, for
    several weight matrices in one lazy pass (each signal chunk is read once).

    BPTT's, in the same factorisation, is the total learning signal times the same traces
    (spec I.3). Summed over ``time`` they equal the recorded gradients when every trial and the
    whole trial were recorded.

    Returns:
        matrix -> DataArray (..., ``rule``, ``time``, ``synapse_<matrix>``).
    """
    return _contributions(ds, matrices, None)


def window_contributions(
    ds: xr.Dataset, window_ms: float = 100.0, matrices: Sequence[str] = ("rec", "in")
) -> dict[str, xr.DataArray]:
    """:func:`contributions` summed over windows of ``window_ms`` (a last partial window is
    dropped), computed window by window without the per-step values.

    Returns:
        matrix -> DataArray (..., ``rule``, ``window``, ``synapse_<matrix>``); the ``window``
        coordinate is each window's start (ms).
    """
    return _contributions(ds, matrices, window_ms)


def step_contributions(ds: xr.Dataset, matrix: str = "rec") -> xr.DataArray:
    """:func:`contributions` of one weight matrix: (..., ``rule``, ``time``, ``synapse_*``)."""
    return contributions(ds, (matrix,))[matrix]


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


def time_alignment(ds: xr.Dataset, window_ms: float = 100.0, matrix: str = "rec") -> xr.Dataset:
    """Alignment with BPTT of each rule's gradient contributions per time window of the trial.

    Contributions are summed within each window (existing synapses only), then compared with
    BPTT's over synapses. Lazy; reads the traces and signals chunk by chunk when computed.

    Returns:
        ``cosine``, ``angle``, ``norm_ratio`` (..., ``rule``, ``window``; the rule's norm over
        BPTT's in the same window) and ``reference_norm`` (..., ``window``: the norm of BPTT's
        contribution), so that windows where a contribution is negligible can be told apart
        (:func:`negligible`): their cosine compares rounding residues, not credit.
    """
    return time_alignments(ds, window_ms, (matrix,)).sel(matrix=matrix, drop=True)


def time_alignments(
    ds: xr.Dataset, window_ms: float = 100.0, matrices: Sequence[str] = ("rec", "in")
) -> xr.Dataset:
    """:func:`time_alignment` of several matrices from one pass over the signals, along a new
    ``matrix`` dim."""
    out = []
    for m, contrib in window_contributions(ds, window_ms, matrices).items():
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
    memory stays bounded by a few chunks, reads are sequential within one file, and the only
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
