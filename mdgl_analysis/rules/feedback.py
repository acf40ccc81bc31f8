r"""Random e-prop (Bellec et al. 2020): e-prop whose learning signal reaches the recurrent cells
through fixed random feedback weights instead of the readout weights.

The learning signal of e-prop is ``L(t) = dE/dy_bar(t) @ W_out`` (plus the local rate
regulariser); random e-prop uses ``L_B(t) = dE/dy_bar(t) @ B`` with ``B [output, neuron]`` drawn
once per run (:func:`mdgl_analysis.network.connectivity.random_feedback`, the run's
``"feedback"`` stream, standard deviation ``rules.feedback_scale / sqrt(n_rec)``), dense: every
recurrent cell receives feedback, readout-connected or not. The gradient is
``sum_{b,t} L_B(t) e(t)`` with e-prop's eligibility traces; the readout weights keep their exact
gradient.
"""

from __future__ import annotations

from torch import Tensor

from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.rules.adjoint import adjoint_gradients


def random_feedback_signal(snap: Snapshot, fwd: Forward) -> Tensor:
    """``L_B [time, batch, neuron]``: the learning signal with ``snap.feedback`` in place of
    ``W_out`` (the regulariser's local part unchanged)."""
    if snap.feedback is None:
        raise ValueError("eprop_random needs the run's feedback weights (Snapshot.feedback)")
    return fwd.signal + fwd.ro.dy_bar @ (snap.feedback - snap.weights.w_out)


def eprop_random(snap: Snapshot, fwd: Forward) -> Gradients:
    """e-prop with fixed random feedback weights ``snap.feedback`` in the learning signal."""
    return adjoint_gradients(fwd, snap.params, random_feedback_signal(snap, fwd), core=snap.core)
