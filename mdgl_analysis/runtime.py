"""Process-wide settings that make the CPU time loop fast, applied by the trainer and benchmark.

* ``torch.set_num_threads``: chosen by measurement (see README, benchmark section).
* flush denormals to zero: membrane potentials of silent cells decay geometrically and reach
  float32 denormals (~1e-38) late in a 2 s trial, where every arithmetic operation becomes ~10x
  slower. Values that small never matter to a threshold of 0.01.
* glibc ``mallopt``: keep freed memory in the process instead of returning it to the kernel, so the
  trial-sized buffers of one iteration reuse the pages of the previous one rather than page-faulting
  them in again (measured: about 2 us per 4 KiB page on this machine, 25 ms per 51 MB buffer).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import platform

import torch

from mdgl_analysis import kernels

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def stream_seed(seed: int, name: str) -> int:
    """Independent 63-bit seed of the named random stream of a run (``"init"``, ``"task"``,
    ``"feedback"``, ...)."""
    digest = hashlib.sha256(f"mdgl-analysis:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def configure(threads: int) -> None:
    """Apply the settings above (idempotent)."""
    torch.set_num_threads(threads)
    kernels.set_threads(threads)
    torch.set_flush_denormal(True)
    if platform.system() == "Linux":
        name = ctypes.util.find_library("c")
        if name:
            try:
                libc = ctypes.CDLL(name)
                libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
                libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
            except (OSError, AttributeError):  # not glibc: nothing to tune
                pass


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device = 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def resolve_core(name: str, device: torch.device) -> str:
    """The time loops' implementation for ``run.core = name`` on ``device``.

    ``auto`` is ``numba`` on CPU when numba is installed (else ``torch``) and ``cuda_graph`` on
    CUDA; ``numba`` on CUDA or without numba, and ``cuda_graph`` on CPU, are errors.
    """
    if name == "auto":
        if device.type == "cuda":
            return "cuda_graph"
        return "numba" if kernels.available() else "torch"
    if name == "numba" and device.type != "cpu":
        raise RuntimeError(f"run.core = 'numba' runs on the CPU, not on {device.type}; use auto")
    if name == "numba" and not kernels.available():
        raise RuntimeError("run.core = 'numba' but numba is not installed: pip install numba")
    if name == "cuda_graph" and device.type != "cuda":
        raise RuntimeError(f"run.core = 'cuda_graph' needs a CUDA device, not {device.type}")
    return name
