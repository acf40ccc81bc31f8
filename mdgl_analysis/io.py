"""Reading recorded runs lazily with xarray (design sections 3 and 5).

``open_run(path)`` concatenates every complete record file of a run along a new ``iteration``
dimension whose coordinate holds the real iteration numbers. Nothing bulk is read: variables are
dask arrays chunked like the HDF5 chunks. Files still being written (``*.tmp``) are ignored.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the blosc filter the records use
import xarray as xr

from .record import RECORDS, iteration_of

__all__ = ["open_record", "open_run", "record_files", "storage"]


def record_files(run: str | Path) -> list[Path]:
    """Complete record files of a run folder (or of a ``records/`` folder), by iteration."""
    path = Path(run)
    folder = path / RECORDS if (path / RECORDS).is_dir() else path
    return sorted(folder.glob("iter_*.h5"), key=iteration_of)


def open_record(path: str | Path) -> xr.Dataset:
    """One record file as a lazy Dataset, with an ``iteration`` coordinate."""
    path = Path(path)
    ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
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
