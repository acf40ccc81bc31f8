"""Gradient-alignment analyses: pure functions on xarray objects, lazy and out of core.

Every function takes and returns xarray objects (or a pandas table for metrics) and reduces over
named dimensions (``dim=``). Nothing is computed until the caller asks (``.compute()``,
``.values``, :func:`compute`), so the same code runs on one machine with the threaded scheduler or
on a ``dask.distributed`` cluster, with memory bounded by a few chunks.

Vocabulary: the dims of :mod:`mdgl_analysis.schema`; parts are named as in the training metrics
(``cos_<rule>_<part>``): matrices ``rec``, ``in``; cell-type blocks ``rec_EE``, ``rec_EI``,
``rec_IE``, ``rec_II`` (pre->post: ``rec_EI`` = E -> I) and ``in_E``, ``in_I`` (input synapses
onto E or I cells).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .io import open_run

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
        ds: records (:func:`~mdgl_analysis.io.open_run`), dims ``iteration``, ``rule``, ...
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


def _contractor(post: np.ndarray):
    """``f(signal, trace)``: ``sum_trial signal[..., post] * trace`` for one synapse list."""
    order = np.argsort(post, kind="stable")  # synapses grouped by postsynaptic cell
    cells, starts = np.unique(post[order], return_index=True)
    ends = np.append(starts[1:], len(post))

    def contract(signal: np.ndarray, trace: np.ndarray) -> np.ndarray:
        # signal [..., time, trial, neuron], trace [..., time, trial, synapse] -> [..., time,
        # synapse]: for the synapses onto cell p, sum_trial s_p(t) e(t) is one small matrix
        # product per step, batched over steps ([time, rules, trial] @ [time, trial, synapses])
        lead = np.broadcast_shapes(signal.shape[:-3], trace.shape[:-3])
        n_t, n_b = signal.shape[-3], signal.shape[-2]
        sig = np.broadcast_to(signal, (*lead, *signal.shape[-3:])).reshape(
            -1, n_t, n_b, signal.shape[-1]
        )
        sig = np.ascontiguousarray(sig.transpose(1, 3, 0, 2))  # [time, neuron, lead, trial]
        tr = trace.reshape(-1, n_t, n_b, trace.shape[-1])  # time is the last loop dim
        if tr.shape[0] != 1:  # traces differ along the lead dims: gather per lead index
            g = np.take(signal, post, axis=-1)
            g *= trace
            return g.sum(axis=-2)
        tr = tr[0][..., order]
        out = np.empty((n_t, sig.shape[2], len(post)), dtype=np.result_type(sig, tr))
        for cell, a, b in zip(cells, starts, ends, strict=True):
            np.matmul(sig[:, cell], tr[:, :, a:b], out=out[:, :, a:b])
        result = np.empty_like(out)
        result[..., order] = out
        return result.transpose(1, 0, 2).reshape(*lead, n_t, len(post))

    return contract


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
    funcs = [_contractor(np.asarray(ds[f"post_{m}"].values, dtype=np.intp)) for m in matrices]

    def contract_all(signal: np.ndarray, *traces: np.ndarray):
        outs = tuple(f(signal, trace) for f, trace in zip(funcs, traces, strict=True))
        return outs if len(outs) > 1 else outs[0]

    outs = xr.apply_ufunc(
        contract_all,
        ds.learning_signal.reset_coords(drop=True).chunk({"rule": -1}),  # every rule per block
        *[ds[f"e_{m}"].reset_coords(drop=True) for m in matrices],
        input_core_dims=[["trial", "neuron"], *[["trial", f"synapse_{m}"] for m in matrices]],
        output_core_dims=[[f"synapse_{m}"] for m in matrices],
        dask="parallelized",
        output_dtypes=[np.float32] * len(matrices),
    )
    outs = outs if isinstance(outs, tuple) else (outs,)
    result = {}
    for m, out in zip(matrices, outs, strict=True):
        coords = {c: ds[c] for c in (f"post_{m}", f"pre_{m}") if c in ds.coords}
        result[m] = out.rename(f"contribution_{m}").assign_coords(coords)
    return result


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
    """
    contrib = _windows(step_contributions(ds, matrix), window_ms)
    exists = ds[f"w_{matrix}"] != 0
    return compare_with(contrib.where(exists, 0.0), f"synapse_{matrix}")


def time_alignments(
    ds: xr.Dataset, window_ms: float = 100.0, matrices: Sequence[str] = ("rec", "in")
) -> xr.Dataset:
    """:func:`time_alignment` of several matrices from one pass over the signals, along a new
    ``matrix`` dim."""
    out = []
    for m, contrib in contributions(ds, matrices).items():
        exists = ds[f"w_{m}"] != 0
        res = compare_with(_windows(contrib, window_ms).where(exists, 0.0), f"synapse_{m}")
        out.append(res.expand_dims(matrix=[m]))
    return xr.concat(out, dim="matrix")


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
    """The resolved config of a run folder as nested dicts."""
    from . import config as config_mod

    return config_mod.to_dict(config_mod.load(Path(path) / "config.toml"))


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
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        candidates = (
            [root]
            if (root / "run.json").is_file()
            else sorted(p.parent for p in root.rglob("run.json"))
        )
        found += [p for p in candidates if _matches(_flat(run_config(p)), query)]
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
    import dask

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
