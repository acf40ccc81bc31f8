"""Reading recorded runs lazily with xarray (design sections 3 and 5).

``open_run(path)`` concatenates every complete record file of a run along a new ``iteration``
dimension whose coordinate holds the real iteration numbers. Nothing bulk is read: variables are
dask arrays chunked like the HDF5 chunks. Files still being written (``*.tmp``) are ignored.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import blosc
import dask
import dask.array as da
import h5py
import hdf5plugin  # noqa: F401 - registers the blosc filter the records use
import numpy as np
import xarray as xr

from mdgl_analysis.recording.schema import RECORDS, iteration_of

__all__ = ["open_record", "open_run", "record_files", "storage"]


def run_folders(roots: Iterable[str | Path]) -> list[Path]:
    """The run folders (holding ``run.json``) among ``roots`` or under them, sorted per root."""
    found: list[Path] = []
    for root in map(Path, roots):
        if (root / "run.json").is_file():
            found.append(root)
        else:
            found += sorted(p.parent for p in root.rglob("run.json"))
    return found


def record_files(run: str | Path) -> list[Path]:
    """Complete record files of a run folder (or of a ``records/`` folder), by iteration."""
    path = Path(run)
    folder = path / RECORDS if (path / RECORDS).is_dir() else path
    return sorted(folder.glob("iter_*.h5"), key=iteration_of)


_BLOSC_FILTER = 32001
blosc.set_releasegil(True)  # python-blosc holds the GIL while it decompresses unless told
_FILES: dict[tuple[str, int, int], h5py.File] = {}
_FILES_LOCK = threading.Lock()


def _h5(path: str) -> h5py.File:
    """An open read-only handle per file version (a record rewritten by a resume is a new one)."""
    st = os.stat(path)
    key = (path, st.st_ino, st.st_mtime_ns)
    with _FILES_LOCK:
        f = _FILES.get(key)
        if f is None or not f.id.valid:
            f = _FILES[key] = h5py.File(path, "r")
        return f


def read_chunk(
    path: str,
    name: str,
    offset: tuple[int, ...],
    chunks: tuple[int, ...],
    size: tuple[int, ...],
    dtype: str,
    compressed: bool,
) -> np.ndarray:
    """One HDF5 chunk of a record variable: the raw bytes under h5py's lock, then blosc
    decompression outside it (which releases the GIL), so dask threads decompress in parallel."""
    dataset = _h5(path)[name]
    try:
        mask, raw = dataset.id.read_direct_chunk(offset)
    except (OSError, KeyError, RuntimeError):  # a chunk never written: let HDF5 fill it
        return dataset[tuple(slice(o, o + s) for o, s in zip(offset, size, strict=True))]
    data = blosc.decompress(raw) if compressed and mask == 0 else raw
    block = np.frombuffer(data, dtype=dtype).reshape(chunks)
    return block[tuple(slice(0, s) for s in size)]


def _direct(path: str, name: str) -> da.Array | None:
    """A dask array of ``name`` reading whole chunks with :func:`read_chunk`, or None when the
    variable is not chunked or uses another filter than blosc (h5py reads those)."""
    dataset = _h5(path)[name]
    if dataset.chunks is None:
        return None
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters not in ([], [_BLOSC_FILTER]):
        return None
    chunks, shape, dtype = dataset.chunks, dataset.shape, dataset.dtype
    st = os.stat(path)
    key = f"read-{name}-" + dask.base.tokenize(path, st.st_ino, st.st_mtime_ns, name)
    grid = [range(0, n, c) for n, c in zip(shape, chunks, strict=True)]
    dsk = {}
    for index in itertools.product(*(range(len(g)) for g in grid)):
        offset = tuple(g[i] for g, i in zip(grid, index, strict=True))
        size = tuple(min(c, n - o) for c, n, o in zip(chunks, shape, offset, strict=True))
        args = (path, name, offset, chunks, size, dtype.str, bool(filters))
        dsk[(key, *index)] = (read_chunk, *args)
    sizes = [[min(c, n - o) for o in g] for g, c, n in zip(grid, chunks, shape, strict=True)]
    return da.Array(dsk, key, sizes, dtype=dtype)


def _fast_reads(ds: xr.Dataset) -> xr.Dataset:
    """Replace the per-step variables' dask arrays by :func:`_direct` ones (same values)."""
    path = ds.encoding.get("source")
    if not path:
        return ds
    for name, var in ds.data_vars.items():
        if "time" in var.dims and var.chunks is not None:
            fast = _direct(str(path), name)
            if fast is not None and fast.shape == var.shape:
                ds[name] = var.copy(data=fast)
    return ds


def open_record(path: str | Path) -> xr.Dataset:
    """One record file as a lazy Dataset, with an ``iteration`` coordinate."""
    path = Path(path)
    ds = _fast_reads(xr.open_dataset(path, engine="h5netcdf", chunks={}))
    if "iteration" in ds.dims:  # schema 3: a length-1 dimension coordinate
        return _load_coords(ds.isel(iteration=0))
    return _load_coords(ds).assign_coords(iteration=int(ds.attrs["iteration"]))


def _load_coords(ds: xr.Dataset) -> xr.Dataset:
    """Read the small non-index coordinates (cell types, synapse lists) into memory."""
    small = [name for name in ds.coords if name not in ds.dims and ds[name].ndim == 1]
    return ds.assign_coords({name: ds[name].load() for name in small})


def open_run(path: str | Path, **kwargs) -> xr.Dataset:
    """All recorded iterations of a run as one lazy Dataset with dims ``iteration``, ...

    Coordinates that do not change between iterations (cell types, synapse lists, time) are
    taken from the first file; every data variable gains the ``iteration`` dimension.
    Dask chunks equal the HDF5 chunks (the fastest choice, design section 5). Extra keyword
    arguments go to :func:`xarray.open_mfdataset`.
    """
    files = record_files(path)
    if not files:
        raise FileNotFoundError(f"no record files in {str(path)!r} (train with --record-every K)")
    options = dict(
        engine="h5netcdf",
        combine="nested",
        concat_dim="iteration",
        data_vars="all",
        coords="minimal",
        compat="override",
        join="override",
        chunks={},
        preprocess=_fast_reads,
        combine_attrs="drop_conflicts",
    )
    options.update(kwargs)
    ds = _load_coords(xr.open_mfdataset(files, **options))
    return ds.assign_coords(iteration=("iteration", [iteration_of(f) for f in files]))


def storage(path: str | Path) -> list[tuple[str, tuple[str, ...], tuple[int, ...], int, str]]:
    """Per variable of a record file: name, dims, shape, bytes on disk, dtype."""
    out = []
    with h5py.File(path, "r") as f:
        for name, ds in f.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            dims = tuple(d[0].name.lstrip("/") if len(d) else "?" for d in ds.dims)
            out.append((name, dims, ds.shape, ds.id.get_storage_size(), str(ds.dtype)))
    return out
