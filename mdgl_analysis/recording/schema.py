"""The HDF5 record schema: one declaration per variable, shared by writer, reader and tests.

A record file holds one training iteration (design section 3). It follows the netCDF4
conventions (a dimension scale on every axis), so xarray, h5py, netCDF-C and HDFView read it.

Dimension vocabulary (the same names as the torch code and the analysis):

=============  =====================================================================
``iteration``   the training iteration of the record (length 1: records concatenate on it)
``time``        recorded steps (the time window), coordinate in ms
``trial``       recorded trials of the batch, coordinate = index in the batch
``input_time``  every step of the trial (for the inputs), coordinate in ms
``batch``       every trial of the batch (inputs, targets, initial state)
``neuron``      recurrent cells; coordinates ``cell_type`` (E/I), ``adaptive``, ``readout``
``input``       input channels; coordinates ``input_sign``, ``input_population`` (the task's
                channel names, or empty)
``output``      readout outputs (classes for cross-entropy)
``rule``        learning rules (``bptt`` first)
``synapse_rec`` recurrent synapses (initially connected, or every pair in the dense layout);
                coordinates ``post_rec``, ``pre_rec`` (neuron indices)
``synapse_in``  input synapses; coordinates ``post_in`` (neuron), ``pre_in`` (input)
=============  =====================================================================

The identity every record satisfies when all trials and the whole trial are recorded:
``grad_rec[r, s] = sum_{time, trial} learning_signal[r, :, :, post_rec[s]] * e_rec[:, :, s]``
(and the same for inputs); for ``bptt`` the learning signal is the total learning signal L_tot of
spec I.3, for a local rule its own signal (spec D). With some trials or a time window recorded,
the same sum over what was recorded equals each rule's gradient of those trials and steps alone
(``mdgl verify`` recomputes it from the batch's weights and inputs). The modulatory part of an
MDGL rule's signal is ``learning_signal - readout_signal``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SCHEMA_VERSION = 3
"""2: per-step targets and mask of any task (``target`` or ``target_value``, ``mask``), the
readout output ``y``, the metric of the task's loss (``accuracy`` or ``nmse``), inputs stored
exactly when they are not counts; file attributes ``task``, ``loss``, ``metric``,
``task_epochs``. 3: an ``iteration`` dimension of length 1 with its coordinate (so that
``xarray.open_mfdataset`` concatenates a run's records as they are), a ``sha256`` attribute on
every variable."""

DIMS = (
    "iteration",
    "time",
    "trial",
    "input_time",
    "batch",
    "neuron",
    "input",
    "output",
    "rule",
    "synapse_rec",
    "synapse_in",
)


class Var(NamedTuple):
    """One variable: dims, storage kind, units, meaning, and the group that switches it on.

    ``kind``: ``"float"`` (the recording dtype, float32 or float16), ``"model"`` (the model's
    dtype, exact), ``"count"`` (uint8), ``"input"`` (uint8 for counts, else the model's dtype),
    ``"int"``, ``"str"``. ``loss``: written only for tasks with this loss (``""``: always).
    """

    dims: tuple[str, ...]
    kind: str
    units: str
    description: str
    group: str
    loss: str = ""


COORDS: dict[str, Var] = {
    "iteration": Var(("iteration",), "int", "1", "the training iteration recorded", "coords"),
    "time": Var(("time",), "model", "ms", "time of each recorded step", "coords"),
    "trial": Var(("trial",), "int", "1", "index of each recorded trial in the batch", "coords"),
    "input_time": Var(("input_time",), "model", "ms", "time of every step", "coords"),
    "batch": Var(("batch",), "int", "1", "trial index", "coords"),
    "neuron": Var(("neuron",), "int", "1", "recurrent cell index", "coords"),
    "cell_type": Var(("neuron",), "str", "", "E (excitatory) or I (inhibitory)", "coords"),
    "adaptive": Var(("neuron",), "int", "1", "1 for ALIF cells, 0 for LIF", "coords"),
    "readout": Var(("neuron",), "int", "1", "1 if the cell has a readout weight now", "coords"),
    "input": Var(("input",), "int", "1", "input channel index", "coords"),
    "input_sign": Var(("input",), "int", "1", "+1 excitatory, -1 inhibitory", "coords"),
    "input_population": Var(("input",), "str", "", "the task's name of the channel", "coords"),
    "output": Var(("output",), "int", "1", "readout output (class) index", "coords"),
    "rule": Var(("rule",), "str", "", "learning rule name", "coords"),
    "post_rec": Var(("synapse_rec",), "int", "1", "postsynaptic neuron", "coords"),
    "pre_rec": Var(("synapse_rec",), "int", "1", "presynaptic neuron", "coords"),
    "post_in": Var(("synapse_in",), "int", "1", "postsynaptic neuron", "coords"),
    "pre_in": Var(("synapse_in",), "int", "1", "presynaptic input channel", "coords"),
}

T3 = ("time", "trial", "neuron")

VARIABLES: dict[str, Var] = {
    # inputs: always (they and the weights reproduce every gradient)
    "x": Var(
        ("input_time", "batch", "input"), "input", "1", "inputs (counts or currents)", "inputs"
    ),
    "target": Var(
        ("input_time", "batch"), "int", "1", "target class per step", "inputs", "cross_entropy"
    ),
    "target_value": Var(
        ("input_time", "batch", "output"), "model", "1", "target per step", "inputs", "mse"
    ),
    "mask": Var(("input_time", "batch"), "count", "1", "1 where the loss counts", "inputs"),
    "initial_v": Var(("batch", "neuron"), "model", "1", "membrane potential at t=-1", "inputs"),
    "initial_a": Var(("batch", "neuron"), "model", "1", "adaptation at t=-1", "inputs"),
    "initial_z": Var(("batch", "neuron"), "model", "1", "spikes at t=-1", "inputs"),
    # network state per step
    "z": Var(T3, "count", "spikes", "spikes z(t)", "state"),
    "v": Var(T3, "float", "1", "membrane potential v(t)", "state"),
    "threshold": Var(T3, "float", "1", "adaptive threshold A(t)", "state"),
    "a": Var(T3, "float", "1", "adaptation variable a(t)", "state"),
    "psi": Var(T3, "float", "1", "pseudo-derivative dz/dv (spec A.3)", "state"),
    "y": Var(
        ("time", "trial", "output"), "float", "1", "readout output y(t) (logits for CE)", "state"
    ),
    # signals per step
    "readout_signal": Var(T3, "float", "1", "L = dE/dz through the readout (spec D.0)", "signals"),
    "learning_signal": Var(
        ("rule", *T3),
        "float",
        "1",
        "the per-neuron signal each rule pairs with e (bptt: L_tot of spec I.3)",
        "signals",
    ),
    # exact credit per step
    "bptt_credit": Var(T3, "float", "1", "dE/dI(t): BPTT gradient of the input current", "credit"),
    # eligibility traces and vectors
    "e_rec": Var(("time", "trial", "synapse_rec"), "float", "1", "trace e(t) (spec C)", "traces"),
    "e_in": Var(("time", "trial", "synapse_in"), "float", "1", "trace e(t) (spec C)", "traces"),
    "eps_v_rec": Var(("time", "trial", "synapse_rec"), "float", "1", "eps^v", "eligibility"),
    "eps_a_rec": Var(("time", "trial", "synapse_rec"), "float", "1", "eps^a", "eligibility"),
    "eps_v_in": Var(("time", "trial", "synapse_in"), "float", "1", "eps^v", "eligibility"),
    "eps_a_in": Var(("time", "trial", "synapse_in"), "float", "1", "eps^a", "eligibility"),
    # gradients (dE/dW of the effective weights, summed over the whole batch): always
    "grad_rec": Var(("rule", "synapse_rec"), "model", "1", "dE/dW_rec per rule", "gradients"),
    "grad_in": Var(("rule", "synapse_in"), "model", "1", "dE/dW_in per rule", "gradients"),
    "grad_out": Var(("output", "neuron"), "model", "1", "dE/dW_out (every rule)", "gradients"),
    "grad_b_out": Var(("output",), "model", "1", "dE/db_out (every rule)", "gradients"),
    # weights before the step, and the change the step applied (Adam, constraints, rewiring)
    "w_rec": Var(("synapse_rec",), "model", "1", "W_rec before the step", "weights"),
    "w_in": Var(("synapse_in",), "model", "1", "W_in before the step", "weights"),
    "w_out": Var(("output", "neuron"), "model", "1", "W_out before the step", "weights"),
    "b_out": Var(("output",), "model", "1", "readout bias before the step", "weights"),
    "feedback": Var(
        ("output", "neuron"), "model", "1", "random feedback weights B (eprop_random)", "weights"
    ),
    "dw_rec": Var(("synapse_rec",), "model", "1", "applied change of W_rec", "weights"),
    "dw_in": Var(("synapse_in",), "model", "1", "applied change of W_in", "weights"),
    "dw_out": Var(("output", "neuron"), "model", "1", "applied change of W_out", "weights"),
    "db_out": Var(("output",), "model", "1", "applied change of b_out", "weights"),
    "loss": Var((), "model", "1", "loss of the batch (mean over masked steps)", "weights"),
    "accuracy": Var((), "model", "1", "accuracy of the masked steps", "weights", "cross_entropy"),
    "nmse": Var((), "model", "1", "normalised MSE of the masked steps", "weights", "mse"),
}

GROUPS = ("inputs", "gradients", "weights", "state", "signals", "credit", "traces", "eligibility")
OPTIONAL_GROUPS = ("state", "signals", "credit", "traces", "eligibility")

COORDINATES_OF = {
    "neuron": "cell_type adaptive readout",
    "input": "input_sign input_population",
    "synapse_rec": "post_rec pre_rec",
    "synapse_in": "post_in pre_in",
}
"""CF ``coordinates`` attribute of a variable with this dim: its non-index coordinates."""


def selected(groups: list[str], loss: str = "cross_entropy") -> dict[str, Var]:
    """The variables of the always-on groups and of ``groups``, for a task with ``loss``."""
    on = {"inputs", "gradients", "weights", *groups}
    return {
        name: var for name, var in VARIABLES.items() if var.group in on and var.loss in ("", loss)
    }


def coordinates_attr(dims: tuple[str, ...]) -> str:
    return " ".join(COORDINATES_OF[d] for d in dims if d in COORDINATES_OF)


RECORDS = "records"
"""The folder of a run that holds its record files ``iter_NNNNNN.h5``."""

MANIFEST = "manifest.json"
"""The file of a run that holds the SHA-256 and size of every checkpoint and record."""

LOCK = "run.lock"
"""The file of a run on which its one writer holds an advisory lock."""

CHECKSUM = "sha256"
"""Attribute of every recorded variable: SHA-256 of its values as stored, in C order (strings as
UTF-8, each followed by a NUL byte), so a record checks itself wherever it travels."""


def digest_update(hasher: Any, array: np.ndarray) -> None:
    """Feed a block of a variable's values (C order) into its :data:`CHECKSUM`."""
    if array.dtype.kind in "OSU":
        for value in array.ravel():
            hasher.update((value.decode() if isinstance(value, bytes) else str(value)).encode())
            hasher.update(b"\0")
    else:
        hasher.update(memoryview(np.ascontiguousarray(array)).cast("B"))


def sha256_of(path: Path) -> str:
    """The SHA-256 of a whole file (as the manifest holds it), hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def iteration_of(path: Path) -> int:
    """The iteration of a record file, from its name ``iter_NNNNNN.h5``."""
    return int(path.name.split("_")[1].split(".")[0])
