"""Every analysis task reads at most ``task_mb`` whatever the record's layout and size; records
whose one step outgrows ``record.chunk_mb`` are chunked along synapses too."""

from __future__ import annotations

import functools
from dataclasses import replace

import h5py
import hdf5plugin  # noqa: F401 - the records' blosc filter
import numpy as np
import pytest
import xarray as xr
from dask.core import get_dependencies
from dask.highlevelgraph import HighLevelGraph

from mdgl_analysis import config as config_mod
from mdgl_analysis.analysis import alignment as A
from mdgl_analysis.cli import main
from mdgl_analysis.recording.readers import open_run, read_chunk, record_files
from mdgl_analysis.recording.verify import integrity
from mdgl_analysis.training.loop import start

from helpers import small_config

SHORT_TRIAL = {"n_cues": 3, "cue_ms": 10, "gap_ms": 5, "delay_ms": 10, "recall_ms": 10}


def _record(path, layout: str, chunk_mb: float, n: int | None = None) -> object:
    """A recorded run (2 recorded iterations) of the small network, or of ``n`` cells on a
    short trial (a large network's dense traces on a small scale)."""
    cfg = small_config()
    network, task = cfg.network, cfg.task
    if n is not None:
        network = replace(network, n_regular=n // 2, n_adaptive=n - n // 2, p_rec=0.1)
        task = replace(task, params={**task.params, **SHORT_TRIAL})
    cfg = replace(
        cfg,
        network=network,
        task=task,
        train=replace(cfg.train, iterations=2, rule="mdgl", compare_every=0, val_every=10),
        record=replace(
            cfg.record,
            every=1,
            quantities="signals,traces",
            chunk_mb=chunk_mb,
            layout=layout,
        ),
    )
    run, _ = start(config_mod.validate(cfg), path, ["test"], progress=False)
    return run.path


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    return {
        "list": _record(root / "list", "list", 0.0005),
        "dense": _record(root / "dense", "dense", 0.0005),
        "large": _record(root / "large", "dense", 0.002, n=120),
    }


def _task_inputs(arrays) -> dict:
    """Per task of the low-level graphs of ``arrays``: the bytes of the chunks it reads (its
    dependencies), from the chunk shapes and dtypes of every array layer."""
    layers: dict = {}
    for a in arrays:
        graph = a.__dask_graph__()
        assert isinstance(graph, HighLevelGraph)
        layers.update(graph.layers)
    tasks, sizes = {}, {}
    for layer in layers.values():
        meta = layer.collection_annotations or {}
        tasks.update(dict(layer))
        for key in layer:
            chunks = meta.get("chunks")
            if chunks is not None and isinstance(key, tuple) and len(key) == len(chunks) + 1:
                shape = [chunks[axis][i] for axis, i in enumerate(key[1:])]
                sizes[key] = int(np.prod(shape)) * np.dtype(meta["dtype"]).itemsize
    # dask's reductions annotate their first level with the chunks of their input (its tasks
    # return one element along the reduced axes): size those from the level that reads them
    for key in list(tasks):
        if "-partial-" in str(key[0]) or "-aggregate-" in str(key[0]):
            for d in get_dependencies(tasks, key):
                if isinstance(d, tuple) and "-partial-" not in str(d[0]):
                    sizes[d] = sizes[key]

    def deps(key) -> set:
        # a dependency named by a plain string is xarray's handle on a file variable, no data
        return {d for d in get_dependencies(tasks, key) if isinstance(d, tuple)}

    def size(key) -> int:
        """A task outside the array layers (a split of dask's rechunk: one chunk's slice) is
        counted as all it reads, an upper bound."""
        if key not in sizes:
            sizes[key] = sum(size(d) for d in deps(key))
        return sizes[key]

    return {key: sum(size(d) for d in deps(key)) + _inlined(tasks[key]) for key in tasks}


def _inlined(task) -> int:
    """The bytes of the record chunks a task reads itself (the contraction tasks read their
    trace chunks inline): a whole chunk per read, however little of it the task keeps."""
    if isinstance(task, list):
        return sum(map(_inlined, task))
    if not isinstance(task, tuple) or not task:
        return 0
    if task[0] is read_chunk:
        return int(np.prod(task[5])) * np.dtype(task[6]).itemsize
    return sum(map(_inlined, task[1:]))


def _graphs(ds, task_mb):
    steps = A.contributions(ds, task_mb=task_mb)
    windows = A.time_alignments(ds, 10.0, task_mb=task_mb)
    return [v.data for v in steps.values()] + [v.data for v in windows.data_vars.values()]


def _largest_contraction(inputs) -> int:
    return max(v for k, v in inputs.items() if str(k[0]).startswith("contributions-"))


@pytest.mark.parametrize("layout", ["list", "dense", "large"])
def test_every_task_reads_at_most_the_budget_and_a_large_budget_makes_one_task(records, layout):
    ds = open_run(records[layout])
    n_syn = ds.sizes["synapse_rec"] + ds.sizes["synapse_in"]
    budget = 24576 if layout != "large" else 100_000  # bytes (the large: below one step)
    step = ds.sizes["trial"] * n_syn * 4
    assert ds.sizes["time"] * step > 3 * budget  # the split must happen
    inputs = _task_inputs(_graphs(ds, budget / 2**20))
    assert max(inputs.values()) <= budget
    contractions = [k for k in inputs if str(k[0]).startswith("contributions-")]
    assert len(contractions) > 3 * ds.sizes["iteration"]
    # non-vacuity: a budget above everything gives one task per iteration, reading everything
    big = _task_inputs(_graphs(ds, 1024))
    one = [k for k in big if str(k[0]).startswith("contributions-") and len(k) == 5]
    assert len(one) == ds.sizes["iteration"]
    assert _largest_contraction(big) >= ds.sizes["time"] * step > budget


@pytest.mark.parametrize("layout", ["list", "dense", "large"])
def test_a_tiny_budget_gives_the_numbers_of_the_default_one_and_of_the_recorded_gradients(
    records, layout
):
    ds = open_run(records[layout])
    tiny = 24576 / 2**20 if layout != "large" else 100_000 / 2**20
    for matrix in ("rec", "in"):
        small = A.step_contributions(ds, matrix, task_mb=tiny).compute()
        default = A.step_contributions(ds, matrix).compute()
        scale = float(np.abs(default).max())
        assert scale > 0
        assert float(np.abs(small - default).max()) <= 1e-6 * scale
        grad = ds[f"grad_{matrix}"].compute()
        total = small.sum("time")
        assert float(np.abs(total - grad).max() / np.abs(grad).max()) < 1e-5
    for matrix, small in A.window_contributions(ds, 10.0, task_mb=tiny).items():
        default = A.window_contributions(ds, 10.0, (matrix,))[matrix].values
        assert np.abs(default).max() > 0
        assert np.abs(small.values - default).max() <= 1e-6 * np.abs(default).max()
    # cosines of windows whose contributions are not rounding residues (A.negligible)
    small, default = (A.time_alignments(ds, 10.0, task_mb=mb).compute() for mb in (tiny, None))
    kept = ~A.negligible(default)
    assert kept.any()
    np.testing.assert_allclose(small.cosine.where(kept), default.cosine.where(kept), atol=1e-4)


def test_a_record_whose_one_step_outgrows_chunk_mb_is_chunked_by_whole_cells_and_verifies(
    records,
):
    path = record_files(records["large"])[0]
    with h5py.File(path, "r") as f:
        e_rec = f["e_rec"]
        n_trial, n_syn = e_rec.shape[1:]
        assert n_trial * n_syn * 4 > 0.02 * 2**20  # one step is wider than a chunk
        assert e_rec.chunks[0] == 1 and e_rec.chunks[2] < n_syn
        assert e_rec.chunks[2] % 119 == 0  # whole cells: 119 synapses onto each of 120 cells
        assert np.prod(e_rec.chunks) * 4 <= 0.02 * 2**20
    ds = open_run(records["large"])
    assert ds.e_rec.data.chunksize == (1, 1, n_trial, e_rec.chunks[2])  # dask chunks = HDF5's
    assert integrity(path) == []  # every chunk reads back with the values' checksum


def test_task_mb_must_be_a_positive_number(records, capsys):
    ds = open_run(records["list"])
    for bad in (0, -1.0, float("nan"), "8"):
        with pytest.raises(ValueError, match="task_mb"):
            A.contributions(ds, task_mb=bad)
    assert main(["analyze", "alignment", str(records["list"]), "--by", "time", "--task-mb", "0"])
    assert capsys.readouterr().err.strip() == (
        "mdgl: error: --task-mb 0.0 is not allowed: a finite number of MiB > 0"
    )
    # a budget below one step of the signal and the record's chunks: one line, exit 2
    argv = ["analyze", "alignment", str(records["list"]), "--by", "time", "--window-ms", "10"]
    argv += ["--task-mb", "0.001"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mdgl: error: task_mb = 0.001 is too small"), err


@pytest.mark.slow
def test_a_local_cluster_of_small_workers_gives_the_threaded_numbers_on_the_dense_record(
    records,
):
    ds = open_run(records["dense"])
    tiny = 24576 / 2**20
    with A.scheduler():
        threaded = A.time_alignments(ds, 10.0).compute()
    with A.scheduler(workers=2, memory_limit="1GB") as client:
        assert client is not None
        graph = A.time_alignments(ds, 10.0, task_mb=tiny).compute()
        analysis = functools.partial(A.time_alignments, window_ms=10.0, task_mb=tiny)
        per_record = A.by_record(analysis, records["dense"])
    kept = ~A.negligible(threaded)  # windows whose cosines compare more than rounding residues
    assert kept.any()
    for other in (graph, per_record.transpose(*threaded.dims)):
        np.testing.assert_allclose(other.cosine.where(kept), threaded.cosine.where(kept), atol=1e-4)
        xr.testing.assert_allclose(other.reference_norm, threaded.reference_norm, rtol=1e-5)
