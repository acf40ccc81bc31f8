"""Compiled CPU kernels (numba) of the three time loops and the gradient contractions.

numpy in, numpy out, no torch: :mod:`mdgl_analysis.network.neuron` and
:mod:`mdgl_analysis.rules.adjoint` wrap them for ``run.core = "numba"`` and keep the PyTorch
implementation as the reference (autograd oracles, CUDA). Every kernel computes in the dtype of its
arrays (float32 or float64), the constants passed in that dtype, no fast-math, so results agree
with the torch path to rounding: the same spikes, v and gradients to ~1e-15 in float64.

What makes them fast is not arithmetic but structure:

* one compiled loop per trial (or per block of trials) over all time steps, no per-step calls;
* event-driven: an input count or a spike adds one column of the sparse weights (CSR/CSC index
  lists of the existing synapses); the contractions ``sum lam(t) u(t)`` visit only nonzero
  presynaptic activity ``u``;
* the adjoint keeps its state as ``[neuron, trial]`` so the recurrent term is a sparse
  matrix times a block of trials, trials the vectorised axis;
* MDGL's modulatory signal is formed inside the adjoint step by step (no trial-sized temporary).

:func:`available` says whether numba can be imported (``run.core = "auto"`` falls back to torch
when it cannot).
"""

from __future__ import annotations

import sys
import warnings
from functools import cache

# numpy warns that the smallest subnormal is zero when denormals are flushed (runtime.configure),
# each time numba asks for a float type's limits while compiling
warnings.filterwarnings("ignore", message="The value of the smallest subnormal")


@cache
def available() -> bool:
    """Whether numba imports (the kernels compile on first use)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


_THREADS = [1]  # asked for by set_threads, applied once numba is imported


def threads() -> int:
    """numba's thread count (1 without numba); imports numba."""
    if not available():
        return 1
    _apply()
    import numba

    return numba.get_num_threads()


def set_threads(n: int) -> None:
    """numba's thread count for the trial-parallel loops. numba is not imported here (it costs
    about 56 MB of memory, which a run on the torch core need not pay): the count is applied
    when it is, or now if it already is."""
    _THREADS[0] = max(1, n)
    if "numba" in sys.modules:
        _apply()


def _apply() -> None:
    import numba

    numba.set_num_threads(max(1, min(_THREADS[0], numba.config.NUMBA_NUM_THREADS)))
