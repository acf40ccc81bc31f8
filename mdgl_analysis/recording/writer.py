"""Full-trace recording: one netCDF4/HDF5 file per recorded iteration, streamed in time chunks.

On a recorded iteration the trainer keeps the full trajectory, computes every recorded rule's
gradient on the same batch, applies its own update, then calls :meth:`Recorder.write`. The writer
produces the per-step quantities chunk by chunk (traces straight from the forward recursion of
:mod:`.traces`), hands each chunk to a background thread through a bounded queue and
never holds a recorded quantity's whole time axis at synapse size. The file is written as
``iter_NNNNNN.h5.tmp`` and renamed when complete, so a killed run leaves only complete records
(plus at most one ``.tmp`` that readers ignore and ``mdgl resume`` deletes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc
import h5netcdf
import h5py
import hdf5plugin
import numpy as np
import torch

try:
    import resource
except ImportError:  # not on Windows
    resource = None
from torch import Tensor

from mdgl_analysis import __version__
from mdgl_analysis.config import Config, parse_trials, record_iterations, task_of, to_dict
from mdgl_analysis.network.model import Forward, Gradients, Snapshot, SpikingNetwork, Weights
from mdgl_analysis.network.readout import METRICS
from mdgl_analysis.recording import schema
from mdgl_analysis.recording.schema import CHECKSUM, digest_update
from mdgl_analysis.recording.traces import Synapses, eligibility_chunks
from mdgl_analysis.rules import record_rules
from mdgl_analysis.rules.bptt import bptt_credit
from mdgl_analysis.rules.local import signal_of

# python-blosc holds the GIL while it (de)compresses unless told otherwise: let the trainer (or
# other dask threads) run meanwhile
blosc.set_releasegil(True)

_NUMPY = {"float32": np.float32, "float16": np.float16}


STRING_BYTES = 16
"""Bytes a variable-length string takes in its HDF5 dataset (the heap's text not counted)."""


def variable_bytes(
    cfg: Config, synapses_rec: int, synapses_in: int, x_counts: bool = True
) -> tuple[tuple[str, int], ...]:
    """The uncompressed bytes of every coordinate and variable a record of ``cfg`` holds, with
    the dims and dtypes the writer gives them (pure): ``float`` in ``record.dtype``, ``model``
    in ``run.dtype``, ``count`` uint8, ``int`` int64 (the integer coordinates int32,
    ``adaptive``, ``readout`` and ``input_sign`` int8, strings :data:`STRING_BYTES` each),
    ``input`` uint8 for counts (``x_counts``) else ``run.dtype``.

    Args:
        synapses_rec, synapses_in: lengths of the ``synapse_rec`` and ``synapse_in`` dims.
    Returns:
        ``(name, bytes)`` per coordinate and variable.
    """
    task, rec = task_of(cfg), cfg.record
    model = 8 if cfg.run.dtype == "float64" else 4
    t0 = int(round(rec.t_start_ms / cfg.network.dt))
    t1 = int(round(rec.t_stop_ms / cfg.network.dt)) if rec.t_stop_ms else task.n_steps
    sizes = {
        "iteration": 1,
        "time": t1 - t0,
        "trial": len(parse_trials(rec.trials, cfg.train.batch)),
        "input_time": task.n_steps,
        "batch": cfg.train.batch,
        "neuron": cfg.network.n_rec,
        "input": task.n_in,
        "output": task.n_out,
        "rule": len(record_rules(cfg)),
        "synapse_rec": synapses_rec,
        "synapse_in": synapses_in,
    }
    coord_item = {"iteration": 8, "time": model, "input_time": model}
    coord_item.update(dict.fromkeys(("adaptive", "readout", "input_sign"), 1))
    item = {
        "float": 2 if rec.dtype == "float16" else 4,
        "model": model,
        "count": 1,
        "int": 8,
        "input": 1 if x_counts else model,
        "str": STRING_BYTES,
    }
    groups = [g.strip() for g in rec.quantities.split(",") if g.strip()]
    out = []
    for name, var in schema.COORDS.items():
        size = coord_item.get(name, item["str"] if var.kind == "str" else 4)
        out.append((name, size * int(np.prod([sizes[d] for d in var.dims]))))
    for name, var in schema.selected(groups, task.loss).items():
        out.append((name, item[var.kind] * int(np.prod([sizes[d] for d in var.dims]))))
    return tuple(out)


def record_path(directory: Path, iteration: int) -> Path:
    return directory / f"iter_{iteration:06d}.h5"


def _flat_start(key: Any, shape: tuple[int, ...]) -> int:
    """Flat C-order index of the first element that ``dataset[key]`` selects."""
    key = key if isinstance(key, tuple) else (key,)
    first = [
        k if isinstance(k, int) else k.indices(n)[0]
        for k, n in zip(key, shape[: len(key)], strict=True)
    ]
    first += [0] * (len(shape) - len(first))
    return int(np.ravel_multi_index(first, shape)) if shape else 0


_BLOSC = {"lz4": ("lz4", 5), "zstd": ("zstd", 1)}  # codec -> (blosc compressor, level)


def codec_options(codec: str) -> dict[str, Any]:
    """h5py dataset options of a codec name (blosc needs ``import hdf5plugin`` to read)."""
    if codec in _BLOSC:
        cname, clevel = _BLOSC[codec]
        return dict(hdf5plugin.Blosc(cname=cname, clevel=clevel, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if codec == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    return {}


class _BackgroundWriter:
    """Owns the open file; writes ``(name, key, array)`` items from a bounded queue in a thread.

    A write that covers whole HDF5 chunks is compressed here with blosc (which releases the GIL,
    so the trainer keeps computing meanwhile) and stored with ``write_direct_chunk``: the HDF5
    library's own single-threaded filter pipeline reached only about half the disk's speed.
    Anything else goes through h5py. A failure in the thread (full disk, say) is re-raised in the
    caller at the next put or at close.
    """

    def __init__(self, file: h5netcdf.File, codec: str, depth: int = 3):
        self.file = file
        self.blosc = _BLOSC.get(codec)
        self.direct = codec in _BLOSC or codec == "none"
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.hashes: dict[str, Any] = {}
        self.written: dict[str, int] = {}  # elements written so far, in C order
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            name, key, value, event = item
            try:
                if event is not None:
                    event.synchronize()
                array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
                dataset = self.file.variables[name]._h5ds
                self._digest(name, dataset, key, array)
                if not (self.direct and self._write_chunk(dataset, key, array)):
                    dataset[key] = array
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller
                self.error = err

    def _digest(self, name: str, dataset: h5py.Dataset, key: Any, array: np.ndarray) -> None:
        """Checksum the values in write order, which must be C order (each variable is streamed
        along its leading axes)."""
        done = self.written.get(name, 0)
        if _flat_start(key, dataset.shape) != done:
            raise RuntimeError(f"record variable {name!r} is not written in C order")
        digest_update(
            self.hashes.setdefault(name, hashlib.sha256()), array.astype(dataset.dtype, copy=False)
        )
        self.written[name] = done + array.size

    def _write_chunk(self, dataset: h5py.Dataset, key: Any, array: np.ndarray) -> bool:
        """Write ``array`` as whole chunks if ``key`` selects whole chunks (one, or several: a
        variable split along its last axis too); else False."""
        chunks = dataset.chunks
        if chunks is None or array.dtype != dataset.dtype:
            return False
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (dataset.ndim - len(key))
        offset, sizes = [], []
        for k, c, n in zip(key, chunks, dataset.shape, strict=True):
            if isinstance(k, int):
                start, size = k, 1
            else:
                start, stop, _ = k.indices(n)
                size = stop - start
            if start % c or (size % c and start + size != n):
                return False
            offset.append(start)
            sizes.append(size)
        if int(np.prod(sizes)) != array.size:
            return False
        array = array.reshape(sizes)
        grid = [range(0, s, c) for s, c in zip(sizes, chunks, strict=True)]
        for corner in itertools.product(*grid):
            piece = array[tuple(slice(a, a + c) for a, c in zip(corner, chunks, strict=True))]
            at = tuple(o + a for o, a in zip(offset, corner, strict=True))
            self._write_one(dataset, at, piece)
        return True

    def _write_one(self, dataset: h5py.Dataset, offset: tuple[int, ...], block: np.ndarray):
        """Compress one chunk (``block``, at most the chunk shape) and store it at ``offset``."""
        chunks, sizes = dataset.chunks, block.shape
        if tuple(sizes) != tuple(chunks):  # an edge chunk is stored at full size
            full = np.zeros(chunks, dtype=block.dtype)
            full[tuple(slice(0, s) for s in sizes)] = block
            block = full
        block = np.ascontiguousarray(block)
        data: Any = memoryview(block).cast("B")
        if self.blosc is not None:
            cname, clevel = self.blosc
            data = blosc.compress_ptr(
                block.ctypes.data,
                block.size,
                typesize=block.dtype.itemsize,
                clevel=clevel,
                shuffle=blosc.SHUFFLE,
                cname=cname,
            )
        dataset.id.write_direct_chunk(tuple(offset), data)

    def put(self, name: str, key: Any, value: Tensor | np.ndarray) -> None:
        self._raise()
        event = None
        if isinstance(value, Tensor) and value.is_cuda:  # pinned staging, copied asynchronously
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            host.copy_(value, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            value = host
        self.queue.put((name, key, value, event))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def epochs_of(task) -> list[list]:
    """The task's named step windows ``[name, start, stop]`` for figures (empty if it has none)."""
    epochs = task.epochs() if callable(getattr(task, "epochs", None)) else []
    return [[str(name), int(start), int(stop)] for name, start, stop in epochs]


def input_names_of(task, n_in: int) -> list[str]:
    """The task's names of its input channels, or empty strings."""
    names = task.input_names() if callable(getattr(task, "input_names", None)) else None
    return [str(n) for n in names] if names and len(names) == n_in else [""] * n_in


@dataclass(frozen=True)
class Window:
    """What a record keeps of an iteration's per-step quantities: the groups of
    ``record.quantities``, the rules (``bptt`` first), the trials, the steps ``[t0, t1)`` and the
    synapses."""

    groups: tuple[str, ...]
    rules: tuple[str, ...]
    trials: tuple[int, ...]
    t0: int
    t1: int
    synapses: Synapses


def time_chunk(f, name: str) -> int:
    """Steps per HDF5 chunk of a recorded per-step variable (an h5netcdf or h5py file)."""
    var = f.variables[name] if hasattr(f, "variables") else f[name]
    return var.chunks[schema.VARIABLES[name].dims.index("time")]


def streams(
    win: Window, snap: Snapshot, fwd: Forward, steps: Callable[[str], int]
) -> Iterator[tuple[str, Any, Tensor]]:
    """Every per-step variable of a record, one chunk of ``steps(name)`` steps at a time, in C
    order: ``(name, key into the variable, values in the model's dtype)``.

    The writer stores what this yields; :mod:`~mdgl_analysis.recording.verify` recomputes it from
    a record and compares. One local rule's signal is in memory at a time; traces come chunk by
    chunk from the forward recursion.
    """
    traj = fwd.traj
    batch = traj.z.shape[1]
    trials = torch.tensor(win.trials, device=traj.z.device)
    every_trial = len(win.trials) == batch

    def pick(part: Tensor) -> Tensor:
        return part if every_trial else part.index_select(1, trials)

    def stream(name: str, full: Tensor, rule: int | None = None):
        n = steps(name)
        for s in range(win.t0, win.t1, n):
            e = min(s + n, win.t1)
            rows = slice(s - win.t0, e - win.t0)
            yield name, rows if rule is None else (rule, rows), pick(full[s:e])

    if "state" in win.groups:
        for name in ("z", "v", "threshold", "a", "psi"):
            yield from stream(name, getattr(traj, name))
        yield from stream("y", fwd.ro.y)
    if "credit" in win.groups or "signals" in win.groups:
        lam, total = bptt_credit(snap, fwd)
        if "credit" in win.groups:
            yield from stream("bptt_credit", lam)
        del lam
        if "signals" in win.groups:
            yield from stream("readout_signal", fwd.signal)
            yield from stream("learning_signal", total, rule=0)
        del total
    if "signals" in win.groups:
        for r_i, rule in enumerate(win.rules[1:], start=1):
            yield from stream("learning_signal", signal_of(rule, snap, fwd), rule=r_i)
    if "traces" in win.groups or "eligibility" in win.groups:
        n_rec = win.synapses.n_rec
        n = steps("e_rec" if "traces" in win.groups else "eps_v_rec")
        # the recursion runs only up to the end of the window, chunks aligned to its start
        sub = fwd._replace(traj=traj._replace(psi=traj.psi[: win.t1], z=traj.z[: win.t1]))
        for c in eligibility_chunks(snap, sub, win.synapses, chunk=n):
            s, e = max(c.start, win.t0), min(c.stop, win.t1)
            if s >= e:
                continue
            rows, key = slice(s - c.start, e - c.start), slice(s - win.t0, e - win.t0)
            parts = {"e": c.e} if "traces" in win.groups else {}
            if "eligibility" in win.groups:
                parts.update(eps_v=c.eps_v, eps_a=c.eps_a)
            for stem, full in parts.items():
                block = pick(full[rows])
                yield f"{stem}_rec", key, block[..., :n_rec]
                yield f"{stem}_in", key, block[..., n_rec:]


def cast(name: str, value: Tensor, float_dtype: type = np.float32) -> Tensor:
    """A per-step variable's values in its stored dtype (``float_dtype``: ``record.dtype``)."""
    kind = schema.VARIABLES[name].kind
    if kind == "count":
        return value.to(torch.uint8).contiguous()
    if kind == "float":
        return value.to(torch.float16 if float_dtype is np.float16 else torch.float32).contiguous()
    return value.contiguous()


class Recorder:
    """The recording schedule of a run and the writer of its record files."""

    def __init__(
        self,
        cfg: Config,
        net: SpikingNetwork,
        directory: Path,
        run_id: str,
        publish: Callable[[Path, Path], None] = os.replace,
    ):
        """``publish(tmp, path)`` gives a complete record its final name (the run folder enters
        its checksum first)."""
        self.cfg, self.directory, self.run_id = cfg, Path(directory), run_id
        self.publish = publish
        rec = cfg.record
        self.every, self.explicit = record_iterations(cfg)
        self.trials = parse_trials(rec.trials, cfg.train.batch)
        self.groups = [g.strip() for g in rec.quantities.split(",") if g.strip()]
        self.task = task_of(cfg)
        self.variables = schema.selected(self.groups, self.task.loss)
        self.rules = record_rules(cfg)
        n, n_in = cfg.network.n_rec, net.net_cfg.n_in
        if rec.layout == "dense":
            self.synapses = Synapses.dense(n, n_in, net.b_out.device)
        else:
            self.synapses = Synapses.from_masks(net.init_rec, net.init_in)
        self.input_sign = np.where(net.input_inhibitory.cpu().numpy(), -1, 1).astype(np.int8)
        dt = cfg.network.dt
        self.t0 = int(round(rec.t_start_ms / dt))
        self.t1 = int(round(rec.t_stop_ms / dt)) if rec.t_stop_ms else cfg.n_steps
        self.float_dtype = _NUMPY[rec.dtype]
        self.window = Window(
            tuple(self.groups),
            tuple(self.rules),
            tuple(self.trials),
            self.t0,
            self.t1,
            self.synapses,
        )

    @property
    def enabled(self) -> bool:
        return self.every > 0 or bool(self.explicit)

    def scheduled(self, iteration: int) -> bool:
        return (self.every > 0 and iteration % self.every == 0) or iteration in self.explicit

    def chunk_steps(self, width: int, itemsize: int) -> int:
        """Steps per HDF5 chunk of a ``[time, trial, width]`` variable (about ``chunk_mb``)."""
        per_step = len(self.trials) * width * itemsize
        steps = int(self.cfg.record.chunk_mb * 2**20 // max(1, per_step))
        return max(1, min(steps, self.t1 - self.t0))

    def chunk_width(self, width: int, itemsize: int, cell: int = 1) -> int:
        """Width (last axis) of an HDF5 chunk of a ``[time, trial, width]`` variable: all of it
        when one step fits ``chunk_mb``, else a part of one step that fits (a multiple of
        ``cell``, a cell's synapses in the dense layout, where one fits), so that no chunk, and
        no analysis task, needs more than about ``chunk_mb`` (a large network's dense traces)."""
        fits = int(self.cfg.record.chunk_mb * 2**20 // max(1, len(self.trials) * itemsize))
        if fits >= width:
            return max(1, width)
        return max(1, fits // cell * cell or fits)

    def estimate_bytes(self, fwd: Forward) -> int:
        """A record's size before compression: every coordinate and variable
        (:func:`variable_bytes`), and 1 MiB for attributes and HDF5 metadata."""
        counts = self.x_kind(fwd.x) == "count"
        parts = variable_bytes(self.cfg, self.synapses.n_rec, self.synapses.in_post.numel(), counts)
        return sum(b for _, b in parts) + (1 << 20)

    def _check_space(self, fwd: Forward) -> None:
        """Refuse to start a record that cannot fit (free disk space, RLIMIT_FSIZE)."""
        need = self.estimate_bytes(fwd)
        free = shutil.disk_usage(self.directory).free
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else -1
        room = free if limit in (-1, resource.RLIM_INFINITY) else min(free, limit)
        if need > room:
            raise OSError(
                errno.ENOSPC,
                f"not enough room for a record of up to {need / 2**20:.0f} MiB "
                f"({room / 2**20:.0f} MiB available: free disk space or the file size limit); "
                "record fewer quantities, trials or steps (record.*)",
                str(self.directory),
            )

    # ------------------------------------------------------------------------------------------
    def write(
        self,
        iteration: int,
        snap: Snapshot,
        fwd: Forward,
        grads: dict[str, Gradients],
        after: Weights,
    ) -> dict[str, float]:
        """Write the record of one iteration; returns ``{"bytes": ..., "seconds": ...}``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_space(fwd)
        path = record_path(self.directory, iteration)
        tmp = path.with_name(path.name + ".tmp")
        start = time.perf_counter()
        file = h5netcdf.File(tmp, "w")
        writer = _BackgroundWriter(file, self.cfg.record.codec)
        try:
            self._write(file, writer, iteration, snap, fwd, grads, after)
            writer.close()
            for name, var in file.variables.items():
                if writer.written.get(name) != var._h5ds.size:
                    raise RuntimeError(f"record variable {name!r} was not completely written")
                var.attrs[CHECKSUM] = writer.hashes[name].hexdigest()
            file.close()
        except BaseException as err:
            writer.queue.put(None)
            writer.thread.join()
            # h5netcdf's close() flushes its metadata, which crashes HDF5 after a failed write
            # (full disk): close the HDF5 file directly; the partial file is deleted anyway
            with contextlib.suppress(Exception):
                file._h5file.close()
            file._closed = True  # and never flush it later (h5netcdf's __del__)
            tmp.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno:  # HDF5's message spans lines
                raise OSError(err.errno, os.strerror(err.errno), str(tmp)) from err
            raise
        self.publish(tmp, path)
        return {"bytes": float(path.stat().st_size), "seconds": time.perf_counter() - start}

    def _write(self, f, writer, iteration, snap, fwd, grads, after) -> None:
        cfg, syn = self.cfg, self.synapses
        net_cfg = cfg.network
        traj, p = fwd.traj, snap.params
        n_steps, batch, n = traj.z.shape
        n_in, k = fwd.x.shape[-1], snap.weights.w_out.shape[0]
        model_np = np.float64 if fwd.x.dtype == torch.float64 else np.float32
        f.dimensions = {
            "iteration": 1,
            "time": self.t1 - self.t0,
            "trial": len(self.trials),
            "input_time": n_steps,
            "batch": batch,
            "neuron": n,
            "input": n_in,
            "output": k,
            "rule": len(self.rules),
            "synapse_rec": syn.n_rec,
            "synapse_in": syn.in_post.numel(),
        }
        f.attrs.update(
            {
                "schema_version": schema.SCHEMA_VERSION,
                "iteration": iteration,
                "run_id": self.run_id,
                "training_rule": cfg.train.rule,
                "task": cfg.task.name,
                "loss": self.task.loss,
                "metric": METRICS[self.task.loss],
                "task_epochs": json.dumps(epochs_of(self.task)),
                "layout": cfg.record.layout,
                "dt_ms": net_cfg.dt,
                "mdgl_analysis_version": __version__,
                "config": json.dumps(to_dict(cfg)),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "Conventions": "CF-1.8",
            }
        )
        w = snap.weights
        cpu = {
            "iteration": np.array([iteration], dtype=np.int64),
            "time": (np.arange(self.t0, self.t1) * net_cfg.dt).astype(model_np),
            "trial": np.asarray(self.trials, dtype=np.int32),
            "input_time": (np.arange(n_steps) * net_cfg.dt).astype(model_np),
            "batch": np.arange(batch, dtype=np.int32),
            "neuron": np.arange(n, dtype=np.int32),
            "cell_type": np.array(
                ["I" if i else "E" for i in snap.inhibitory.tolist()], dtype=object
            ),
            "adaptive": (p.beta != 0).cpu().numpy().astype(np.int8),
            "readout": (w.w_out != 0).any(0).cpu().numpy().astype(np.int8),
            "input": np.arange(n_in, dtype=np.int32),
            "input_sign": self.input_sign,
            "input_population": np.array(input_names_of(self.task, n_in), dtype=object),
            "output": np.arange(k, dtype=np.int32),
            "rule": np.array(self.rules, dtype=object),
            "post_rec": syn.rec_post.cpu().numpy().astype(np.int32),
            "pre_rec": syn.rec_pre.cpu().numpy().astype(np.int32),
            "post_in": syn.in_post.cpu().numpy().astype(np.int32),
            "pre_in": syn.in_pre.cpu().numpy().astype(np.int32),
        }
        for name, var in schema.COORDS.items():
            dtype = h5py.string_dtype() if var.kind == "str" else cpu[name].dtype
            v = f.create_variable(name, var.dims, dtype)
            v.attrs.update({"units": var.units, "long_name": var.description})
            writer.put(name, (), cpu[name])

        codec = codec_options(cfg.record.codec)
        for name, var in self.variables.items():
            self._create(f, name, var, codec, model_np, fwd.x)

        def small(name: str, value: Tensor | np.ndarray) -> None:
            writer.put(name, (), value)

        rec_idx = (syn.rec_post, syn.rec_pre)
        in_idx = (syn.in_post, syn.in_pre)
        small("x", fwd.x.to(torch.uint8) if self.x_kind(fwd.x) == "count" else fwd.x)
        small("target" if self.task.loss == "cross_entropy" else "target_value", fwd.target)
        small("mask", fwd.mask.to(torch.uint8))
        for state_name in ("initial_v", "initial_a", "initial_z"):
            small(state_name, torch.zeros(batch, n, dtype=fwd.x.dtype))
        small("grad_rec", torch.stack([grads[r].w_rec[rec_idx] for r in self.rules]))
        small("grad_in", torch.stack([grads[r].w_in[in_idx] for r in self.rules]))
        small("grad_out", grads["bptt"].w_out)
        small("grad_b_out", grads["bptt"].b_out)
        for name, before, now in [
            ("rec", w.w_rec[rec_idx], after.w_rec[rec_idx]),
            ("in", w.w_in[in_idx], after.w_in[in_idx]),
            ("out", w.w_out, after.w_out),
        ]:
            small(f"w_{name}", before)
            small(f"dw_{name}", now - before)
        small("b_out", w.b_out)
        small("feedback", snap.feedback)
        small("db_out", after.b_out - w.b_out)
        small("loss", np.asarray(fwd.ro.loss.item(), dtype=model_np))
        small(METRICS[self.task.loss], np.asarray(fwd.ro.metric.item(), dtype=model_np))

        for name, key, part in streams(self.window, snap, fwd, lambda name: time_chunk(f, name)):
            writer.put(name, key, self._cast(name, part))

    def _cast(self, name: str, value: Tensor) -> Tensor:
        return cast(name, value, self.float_dtype)

    def synapses_per_cell(self, dim: str) -> int:
        """Synapses onto each cell along ``dim`` when every cell has as many (the dense layout),
        else 1."""
        post = {"synapse_rec": self.synapses.rec_post, "synapse_in": self.synapses.in_post}.get(dim)
        if post is None or post.numel() == 0:
            return 1
        counts = torch.bincount(post.cpu())
        counts = counts[counts > 0]
        return int(counts[0]) if bool((counts == counts[0]).all()) else 1

    @staticmethod
    def x_kind(x: Tensor) -> str:
        """Inputs are stored as uint8 counts when they are counts (0..255), else exactly."""
        counts = bool(((x >= 0) & (x <= 255) & (x == x.round())).all())
        return "count" if counts else "model"

    def _create(self, f, name: str, var: schema.Var, codec: dict, model_np, x=None) -> None:
        kind = self.x_kind(x) if var.kind == "input" else var.kind
        dtype = {
            "float": self.float_dtype,
            "model": model_np,
            "count": np.uint8,
            "int": np.int64,
        }[kind]
        shape = tuple(f.dimensions[d].size for d in var.dims)
        kwargs: dict[str, Any] = {}
        if "time" in var.dims:
            # time chunks nest: the widest variables (recurrent traces) set a base length, every
            # other per-step variable takes the largest multiple of it that fits chunk_mb, so
            # analyses combine variables chunk by chunk without reading any chunk twice
            itemsize = np.dtype(self.float_dtype).itemsize
            base = self.chunk_steps(
                max(f.dimensions["synapse_rec"].size, f.dimensions["neuron"].size), itemsize
            )
            width = f.dimensions[var.dims[-1]].size
            steps = self.chunk_steps(width, np.dtype(dtype).itemsize) // base * base or base
            chunks = tuple(
                1 if d == "rule" else steps if d == "time" else f.dimensions[d].size
                for d in var.dims
            )
            # one step wider than chunk_mb: the last axis is split too (whole cells if dense)
            cell = self.synapses_per_cell(var.dims[-1])
            last = self.chunk_width(width, np.dtype(dtype).itemsize, cell) if steps == 1 else width
            chunks = (*chunks[:-1], last)
            kwargs = {"chunks": chunks, **codec}
        elif int(np.prod(shape or (1,))) * np.dtype(dtype).itemsize > 1 << 20:
            kwargs = {"chunks": True, **codec}
        v = f.create_variable(name, var.dims, dtype, **kwargs)
        v.attrs.update({"units": var.units, "long_name": var.description})
        coords = schema.coordinates_attr(var.dims)
        if coords:
            v.attrs["coordinates"] = coords
