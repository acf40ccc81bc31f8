"""Portable copies of records and runs: every record rewritten with a codec that needs no plugin.

Records are blosc-compressed (``record.codec = lz4`` or ``zstd``), which HDF5 reads only through
the filter plugin that ``hdf5plugin`` installs. :func:`export_run` writes a copy of a run folder in
which every record ``records/iter_NNNNNN.h5`` is rewritten with HDF5's built-in deflate filter
(gzip level 1 after the shuffle filter, the same settings as ``record.codec = gzip``) or with no
compression at all, so that any HDF5 or netCDF-4 reader (h5dump, ncdump, MATLAB, h5py without
``hdf5plugin``, Julia, R) reads it as it is.

What the copy keeps, exactly:

- every dimension (name, size, order), every dimension scale and coordinate, every variable with
  its dims, dtype, chunk shape and values (bit-identical: each block read is written back
  unchanged), and every attribute of the file and of each variable. The per-variable ``sha256``
  attributes therefore still hold: the copy checks the values it copies against them and refuses
  a record whose values do not match (a damaged source is never laundered into a clean copy);
- the run's other files (``config.toml``, ``run.json``, ``metrics.csv``, ``checkpoints/``,
  ``tensorboard/``, ...) byte for byte; leftovers of interrupted writes (``*.tmp``) and the
  writer lock ``run.lock`` are not copied;
- ``manifest.json`` with the SHA-256 and size of each new record (checkpoints keep their
  entries); each source record is first checked against the source manifest.

Only the filters change, and with them the HDF5 chunk bytes and the files' checksums.

Nothing is written under the source, and nothing half-made is left: the copy is built under a
temporary name beside ``out`` (``.NAME.XXXX.tmp``) and renamed when complete; a failure removes
it. While it copies a run, the export holds a shared lock on the run's ``run.lock``, so that no
``mdgl train`` or ``mdgl resume`` changes the run meanwhile (and a run being written is refused).

This module imports no torch; a variable's checksum is the schema's
(:func:`mdgl_analysis.recording.schema.digest_update`, as the writer computes it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import hdf5plugin  # noqa: F401 - registers the blosc filter the source records use
import numpy as np

from mdgl_analysis.recording.schema import (
    CHECKSUM,
    LOCK,
    MANIFEST,
    RECORDS,
    digest_update,
    iteration_of,
    sha256_of,
)

__all__ = [
    "CODECS",
    "ExportError",
    "check_manifest",
    "check_out",
    "export",
    "export_record",
    "export_run",
    "reading",
    "source_records",
]

CODECS = {
    "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "none": {},
}
"""h5py dataset options of each plugin-free codec (gzip: the same as ``record.codec = gzip``)."""

SLAB_BYTES = 64 * 2**20
"""Largest block of a variable held in memory while copying (rounded to whole chunks)."""


class ExportError(ValueError):
    """An export that cannot be made: bad input or a damaged source; the message is one line."""


# ------------------------------------------------------------------------------------------------
# what can be exported, where


def source_records(source: str | Path) -> tuple[bool, list[Path]]:
    """``(is_run, record files)`` of a run folder or a single record file; ExportError when the
    source is neither, or holds no record."""
    path = Path(source)
    if not path.exists():
        raise ExportError(f"{str(source)!r} does not exist: give a run folder or a record file")
    if path.is_dir():
        if not (path / "run.json").is_file():
            raise ExportError(f"{str(source)!r} is not a run folder (no run.json)")
        folder = path / RECORDS
        files = sorted(folder.glob("iter_*.h5"), key=iteration_of) if folder.is_dir() else []
        if not files:
            raise ExportError(
                f"run {str(source)!r} has no record files (train with --record-every K): "
                "nothing to export"
            )
        return True, files
    if not h5py.is_hdf5(path):
        raise ExportError(f"{str(source)!r} is not a record file (an HDF5 file iter_NNNNNN.h5)")
    with h5py.File(path, "r") as f:
        if "schema_version" not in f.attrs:
            raise ExportError(f"{str(source)!r} is HDF5 but not a record (no schema_version)")
    return False, [path]


def check_out(source: str | Path, out: str | Path) -> Path:
    """``out`` as a Path, after checking that it can be created and is outside ``source``;
    ExportError naming the problem otherwise. Nothing is created."""
    src, dst = Path(source).resolve(), Path(out)
    if str(out).strip() == "":
        raise ExportError("--out '' is not allowed: the path of the copy to create")
    if dst.exists() or dst.is_symlink():
        raise ExportError(f"--out {str(out)!r} already exists; choose a new path")
    parent = dst.resolve().parent
    if not parent.is_dir():
        raise ExportError(f"--out {str(out)!r}: folder {str(dst.parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"--out {str(out)!r}: folder {str(dst.parent)!r} is not writable")
    if src.is_dir() and (dst.resolve() == src or src in dst.resolve().parents):
        raise ExportError(f"--out {str(out)!r} is inside {str(source)!r}, which is never changed")
    return dst


# ------------------------------------------------------------------------------------------------
# one record


def slabs(dataset: h5py.Dataset, limit: int = SLAB_BYTES) -> Iterator[tuple]:
    """Keys of consecutive slabs along the first axis that together cover ``dataset`` in C order:
    whole chunks along that axis, at most about ``limit`` bytes each (at least one chunk)."""
    if dataset.ndim == 0 or dataset.size == 0:
        yield ()
        return
    n = dataset.shape[0]
    row = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))
    step = dataset.chunks[0] if dataset.chunks else 1
    rows = max(1, limit // max(1, row) // step) * step
    for start in range(0, n, rows):
        yield (slice(start, min(start + rows, n)),)


def _permissions(path: Path, mode: int) -> None:
    """Give a file made by :mod:`tempfile` (0600, 0700) the usual permissions under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _dtype_of(dataset: h5py.Dataset) -> Any:
    return h5py.string_dtype() if h5py.check_string_dtype(dataset.dtype) else dataset.dtype


def export_record(source: str | Path, out: str | Path, codec: str = "gzip") -> None:
    """Write the record ``source`` as a new file ``out`` with ``codec`` (``gzip`` or ``none``).

    Dimensions, coordinates, variables (dims, dtype, chunk shape, values) and attributes are
    kept exactly; each variable's values are checked against its ``sha256`` attribute while they
    are copied (ExportError if they differ). ``out`` is written under a temporary name in its
    folder and linked to its final name when complete (ExportError if it exists by then); a
    failure leaves nothing.
    """
    if codec not in CODECS:
        raise ExportError(f"codec {codec!r} is not allowed: one of {', '.join(CODECS)}")
    source, out = Path(source), Path(out)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        _copy_record(source, tmp, CODECS[codec])
        _permissions(tmp, 0o666)
        try:
            os.link(tmp, out)  # never replaces a file that appeared meanwhile
        except FileExistsError:
            raise ExportError(f"--out {str(out)!r} already exists; choose a new path") from None
    finally:
        tmp.unlink(missing_ok=True)


def _copy_record(source: Path, target: Path, codec: dict[str, Any]) -> None:
    with h5netcdf.File(source, "r") as src, h5netcdf.File(target, "w") as dst:
        if src.groups:
            raise ExportError(f"record {str(source)!r} holds groups: not a record of this schema")
        if any(dim.isunlimited() for dim in src.dimensions.values()):
            raise ExportError(f"record {str(source)!r} has an unlimited dimension: not a record")
        # in the source's netCDF order (its dimension ids), which h5py's listing does not keep
        order = sorted(src.dimensions, key=lambda d: int(src._h5group[d].attrs["_Netcdf4Dimid"]))
        dst.dimensions = {name: src.dimensions[name].size for name in order}
        dst.attrs.update(dict(src.attrs))
        for name, var in src.variables.items():
            dataset = var._h5ds
            options = {"chunks": dataset.chunks, **codec} if dataset.chunks else {}
            new = dst.create_variable(name, var.dimensions, _dtype_of(dataset), **options)
            new.attrs.update(dict(var.attrs))
            hasher = hashlib.sha256()
            for key in slabs(dataset):
                block = dataset[key]
                digest_update(hasher, np.asarray(block))
                new._h5ds[key] = block
            stored = var.attrs.get(CHECKSUM)
            if stored is not None and hasher.hexdigest() != str(stored):
                raise ExportError(
                    f"record {str(source)!r}: variable {name!r} does not match its SHA-256 "
                    f"(damaged; `mdgl verify {source}` says more): not exported"
                )


# ------------------------------------------------------------------------------------------------
# a run folder


def _manifest(run: Path) -> dict[str, dict[str, Any]] | None:
    """The ``files`` of the run's manifest, None for a run made before manifests."""
    path = run / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ExportError(f"{str(path)!r} is not a manifest of checksums") from None
    return files


def check_manifest(run: Path, records: list[Path]) -> dict[str, dict[str, Any]] | None:
    """The ``files`` of the run's manifest (None for a run made before manifests), after
    checking every record it lists against its SHA-256; ExportError naming a record that
    differs."""
    files = _manifest(run)
    for record in records:
        key = f"{RECORDS}/{record.name}"
        if files is not None and key in files and sha256_of(record) != files[key].get("sha256"):
            raise ExportError(
                f"record {str(record)!r} differs from its SHA-256 in {MANIFEST} (changed after "
                f"it was written; `mdgl verify {run}` says more): not exported"
            )
    return files


@contextlib.contextmanager
def reading(run: Path) -> Iterator[None]:
    """Hold a shared lock on the run's ``run.lock`` (if it has one), so that no writer changes
    the run while it is copied; ExportError when a writer holds it now."""
    lock = run / LOCK
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # no lock file (an older run) or not readable: nothing to hold
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
            raise ExportError(
                f"run {str(run)!r} is being written ({holder}): export it when it has stopped"
            ) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        yield
    finally:
        os.close(fd)


def _ignored(folder: str, names: list[str]) -> list[str]:
    top = Path(folder).name
    skip = [n for n in names if n.endswith(".tmp") or n == LOCK]
    if top == RECORDS:  # records are rewritten, not copied
        skip += [n for n in names if n.startswith("iter_") and n.endswith(".h5")]
    return skip


def export_run(source: str | Path, out: str | Path, codec: str = "gzip") -> Path:
    """Write a copy of the run folder ``source`` as the new folder ``out`` in which every record
    is rewritten with ``codec`` (see the module docstring); returns ``out``.

    Raises ExportError (one line) for a source that is not a run with records, an ``out`` that
    exists or cannot be made, a damaged source record; OSError for a failed write. In every case
    nothing is left at ``out`` nor beside it.
    """
    if codec not in CODECS:
        raise ExportError(f"codec {codec!r} is not allowed: one of {', '.join(CODECS)}")
    source = Path(source)
    is_run, records = source_records(source)
    if not is_run:
        raise ExportError(f"{str(source)!r} is a record file: use export_record")
    out = check_out(source, out)
    with reading(source):
        files = check_manifest(source, records)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        try:
            # the source's tree is copied into tmp, which already exists
            shutil.copytree(source, tmp, ignore=_ignored, dirs_exist_ok=True)
            (tmp / RECORDS).mkdir(exist_ok=True)
            for record in records:
                key = f"{RECORDS}/{record.name}"
                target = tmp / key
                _copy_record(record, target, CODECS[codec])
                if files is not None and key in files:
                    files[key] = {"sha256": sha256_of(target), "bytes": target.stat().st_size}
            if files is not None:
                (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")
            _permissions(tmp, 0o777)
            if out.exists():
                raise ExportError(f"--out {str(out)!r} already exists; choose a new path")
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def export(source: str | Path, out: str | Path, codec: str = "gzip") -> Path:
    """:func:`export_run` of a run folder, :func:`export_record` of a record file (``out``: the
    new file); every check is made before anything is created. Returns ``out``."""
    if codec not in CODECS:
        raise ExportError(f"codec {codec!r} is not allowed: one of {', '.join(CODECS)}")
    is_run, records = source_records(source)
    if is_run:
        return export_run(source, out, codec)
    out = check_out(source, out)
    export_record(records[0], out, codec)
    return out
