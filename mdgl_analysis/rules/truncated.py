r"""Exact gradient through at most k traversals of recurrent synapses (``truncated``,
``rules.hops = k``).

BPTT's adjoint (:mod:`mdgl_analysis.rules.adjoint`) sends credit backwards along two kinds of
paths: inside each cell (leak, reset, adaptation) and across recurrent synapses, through
``(1-alpha) W_rec^T delta_v(t+1)``. Keeping at most k synapse traversals per path is k + 1
passes of the cell-local adjoint:

.. math::

    s^{(0)} &= L, \qquad \lambda^{(i)} = \mathrm{local\_adjoint}(s^{(i)}), \\
    s^{(i+1)}(t) &= L(t) + \lambda^{(i)}(t+1)\, W_{rec} \quad (t \le T-2), \qquad
    s^{(i+1)}(T-1) = L(T-1),

with ``lambda = (1-alpha) delta_v`` = dE/dI along the paths kept. ``lambda^{(i)}`` holds every path
with at most i traversals, each cell's own dynamics between them (a path from ``I_p(t)`` crosses a
synapse ``p -> j`` into ``I_j(t+1)``, then continues inside j). The gradient is
``sum_{b,t} s^{(k)}(t) e(t)`` with e-prop's traces, so the rule is recordable with the per-neuron
signal ``s^{(k)}``. k = 0 is e-prop; k = 1 holds ``mdgl_exact``'s paths and also the receiving
cell's own dynamics after the hop; a path crosses at most T - 1 synapses in T steps, so k >= T - 1
is BPTT. Cost: k + 1 cell-local adjoint passes and k products with ``W_rec`` (``[T B, N] x
[N, N]``); state is per neuron, never per synapse.
"""

from __future__ import annotations

from torch import Tensor

from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.rules.adjoint import adjoint, adjoint_gradients


def truncated_signal(snap: Snapshot, fwd: Forward, hops: int | None = None) -> Tensor:
    """``s^{(k)} [time, batch, neuron]`` for ``k = hops`` (``snap.rules.hops`` when None)."""
    k = snap.rules.hops if hops is None else hops
    if k < 0:
        raise ValueError(f"rules.hops = {k!r} is not allowed: an integer >= 0")
    n_steps, n = fwd.signal.shape[0], fwd.signal.shape[-1]
    w_rec = snap.weights.w_rec
    signal = fwd.signal
    for _ in range(min(k, n_steps - 1)):  # more passes than T - 1 change nothing
        lam, _ = adjoint(signal, fwd.traj.psi, snap.params, core=snap.core)
        signal = fwd.signal.clone()
        signal[:-1].view(-1, n).addmm_(lam[1:].reshape(-1, n), w_rec)
    return signal


def truncated(snap: Snapshot, fwd: Forward) -> Gradients:
    """The gradient through at most ``snap.rules.hops`` recurrent-synapse traversals."""
    return adjoint_gradients(fwd, snap.params, truncated_signal(snap, fwd), core=snap.core)
