"""Out-of-core alignment benchmark (issue: analysis, speed and memory).

    python benchmarks/alignment_out_of_core.py RUN [--window-ms 100] [--memory-limit 2GB]

On the records of RUN (make them large: e.g. `mdgl train --preset paper --iterations 15
--record-every 1 --set record.quantities=signals,traces`), measures:

1. a plain sequential h5py read of the variables the analysis needs, chunk by chunk;
2. gradient alignment per iteration and per time window (`analysis.gradient_alignment`,
   `analysis.time_alignment` for recurrent and input synapses) with the threaded scheduler;
3. the same on a 2-worker LocalCluster whose workers share the memory limit;

each scheduler with two strategies: one lazy graph over the whole run (``graph``), and one task
per record file (``analysis.by_record``).

Reports seconds, throughput (logical bytes of those variables per second) and the peak RSS of the
whole process tree (sampled every 20 ms), and checks both schedulers give the same numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import threading
import time

import dask
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import psutil
import xarray as xr

from mdgl_analysis.analysis import alignment as A
from mdgl_analysis.recording.readers import open_run, record_files

VARIABLES = ("e_rec", "e_in", "learning_signal", "grad_rec", "grad_in", "w_rec", "w_in")


class PeakRSS:
    """Peak resident memory of this process and all its children, sampled in a thread."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self):
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def drop_caches() -> bool:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def plain_read(files) -> tuple[float, int]:
    """Read every chunk of the analysed variables once, sequentially, with h5py."""
    total = 0
    t0 = time.perf_counter()
    for path in files:
        with h5py.File(path, "r") as f:
            for name in VARIABLES:
                ds = f[name]
                step = ds.chunks[ds.ndim - 3] if ds.chunks and ds.ndim >= 3 else ds.shape[0]
                axis = ds.ndim - 3 if ds.ndim >= 3 else 0
                for start in range(0, ds.shape[axis], step):
                    key = (slice(None),) * axis + (slice(start, start + step),)
                    total += ds[key].nbytes
    return time.perf_counter() - t0, total


def alignments(ds: xr.Dataset, window_ms: float = 100.0) -> xr.Dataset:
    """Alignment per iteration (matrix and block) and per time window, lazily."""
    block = A.gradient_alignment(ds, "block").cosine.rename(part="block")
    return xr.merge(
        [
            A.gradient_alignment(ds).cosine.rename("cos_matrix"),
            block.rename("cos_block"),
            A.time_alignments(ds, window_ms).cosine.rename("cos_time"),
        ],
        compat="no_conflicts",
        join="outer",
    )


def analyse(path, window_ms: float, strategy: str) -> xr.Dataset:
    """One compute of :func:`alignments` over the whole run (``graph``), or per record file."""
    if strategy == "graph":
        return alignments(open_run(path), window_ms).compute()
    return A.by_record(functools.partial(alignments, window_ms=window_ms), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--window-ms", type=float, default=100.0)
    ap.add_argument("--memory-limit", default="2GB", help="total for the 2-worker cluster")
    args = ap.parse_args()
    files = record_files(args.run)
    logical = sum(open_run(args.run)[v].nbytes for v in VARIABLES)
    print(
        f"{len(files)} record files, {sum(f.stat().st_size for f in files) / 2**30:.2f} GiB on "
        f"disk; analysed variables {logical / 2**30:.2f} GiB uncompressed"
    )
    dropped = drop_caches()
    with PeakRSS() as rss:
        seconds, nbytes = plain_read(files)
    print(
        f"plain h5py read:      {seconds:6.1f} s  {nbytes / 2**20 / seconds:6.0f} MiB/s  "
        f"peak RSS {rss.peak / 2**20:5.0f} MiB  (page cache dropped: {dropped})"
    )
    base = nbytes / seconds
    results = {}
    for label in ("threaded", "2-worker LocalCluster"):
        for strategy in ("graph", "by record"):
            drop_caches()
            workers = None if label == "threaded" else 2
            per_worker = f"{dask.utils.parse_bytes(args.memory_limit) // 2}B"
            with PeakRSS() as rss, A.scheduler(workers=workers, memory_limit=per_worker):
                t0 = time.perf_counter()
                with dask.config.set(num_workers=2):
                    results[label, strategy] = analyse(args.run, args.window_ms, strategy)
                seconds = time.perf_counter() - t0
            rate = logical / seconds
            print(
                f"{label + ', ' + strategy:<32} {seconds:6.1f} s  {rate / 2**20:6.0f} MiB/s  "
                f"peak RSS {rss.peak / 2**20:5.0f} MiB (process tree)  = {rate / base:.2f} x "
                "plain read",
                flush=True,
            )
    a = results["threaded", "graph"]
    diff = max(float(np.nanmax(np.abs(a[v] - b[v]))) for b in results.values() for v in a.data_vars)
    print(f"largest difference between schedulers and strategies: {diff:.2e}")
    print(a.cos_matrix.mean("iteration").to_pandas().round(3))
    print(a.cos_time.mean("iteration").sel(matrix="rec").to_pandas().round(3))


if __name__ == "__main__":
    main()
