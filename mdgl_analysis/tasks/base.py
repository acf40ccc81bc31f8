"""The task protocol: what an experiment gives the network, and which steps its loss reads.

A task is a small object (the built-ins are written exactly like a user's task)::

    class MyTask(Task):
        n_in, n_out, n_steps, loss = 8, 2, 300, "cross_entropy"

        def sample(self, batch: int, gen: torch.Generator) -> TaskBatch: ...

* ``n_in``, ``n_out``, ``n_steps``: input channels, readout outputs, steps per trial;
* ``loss``: ``"cross_entropy"`` (targets are class indices) or ``"mse"`` (targets are values);
* ``sample(batch, gen)``: one batch drawn from ``gen`` (a CPU generator), as a :class:`TaskBatch`.

**Parameters.** Every public class attribute of a plain type (int, float, bool, str) is a
parameter: ``MyTask(n_steps=500)``, ``--set task.n_steps=500`` or ``n_steps = 500`` in a config's
``[task]`` section set it on the instance, converted to the type of the class default. Properties
and methods are not parameters. A task may define ``check(self)`` to reject bad parameter values
(raise :class:`TaskError` naming the parameter and what is allowed).

The loss of a batch is the mean over the masked steps and trials (and, for ``mse``, the outputs)
of the per-step loss; see :mod:`mdgl_analysis.network.readout`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.plugins import one_line  # noqa: F401 - re-exported: tasks quote user errors

LOSSES = ("cross_entropy", "mse")
"""Per-step readout losses: softmax cross-entropy on class targets, squared error on values."""

PARAMETER_TYPES = (bool, int, float, str)


class TaskError(ValueError):
    """A task, its parameters or a batch it produced is invalid; the message says which and why."""


class TaskBatch(NamedTuple):
    """One batch of trials.

    Attributes:
        x: ``[time, batch, input]`` float inputs (spike counts or currents).
        target: ``[time, batch]`` int64 class indices (cross-entropy) or
            ``[time, batch, output]`` float values (MSE); only masked steps are read.
        mask: ``[time, batch]`` bool, the steps whose loss counts (at least one).
    """

    x: Tensor
    target: Tensor
    mask: Tensor


class Task:
    """Base class of tasks: parameters from class attributes, and batch checking."""

    n_in: int
    n_out: int
    n_steps: int
    loss: str

    def __init__(self, **params: Any):
        known = self.parameters()
        for key, value in params.items():
            if key not in known:
                allowed = ", ".join(known) or "none"
                raise TaskError(
                    f"task.{key} is not a parameter of task {self.name()}; parameters: {allowed}"
                )
            setattr(self, key, coerce(f"task.{key}", value, type(known[key])))
        self.check()

    # -- parameters -------------------------------------------------------------------------
    @classmethod
    def name(cls) -> str:
        return cls.__name__

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Parameter name -> class default (public class attributes of a plain type)."""
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if key.startswith("_"):
                    continue
                if isinstance(value, PARAMETER_TYPES):
                    out[key] = value
                else:  # a property or method of a subclass hides a parameter of its base
                    out.pop(key, None)
        return out

    def values(self) -> dict[str, Any]:
        """The current value of every parameter (what a resolved config stores)."""
        return {key: getattr(self, key) for key in self.parameters()}

    def check(self) -> None:
        """Reject bad parameter values (raise :class:`TaskError`); the default accepts all."""

    # -- the protocol ---------------------------------------------------------------------------
    def sample(self, batch: int, gen: torch.Generator) -> TaskBatch:
        """Draw ``batch`` trials from ``gen``; see :class:`TaskBatch` for the shapes."""
        raise NotImplementedError(f"task {self.name()} does not implement sample(batch, gen)")


def coerce(key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (bool, int, float, str); a string (from ``--set`` or a task
    parameter) is parsed. One parser for config fields and task parameters alike.

    Raises:
        TaskError: ``"{key} = {value!r} is not allowed: ..."`` when it is not one.
    """
    name = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    given = value  # named as given in the message
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        try:
            if kind is bool:
                if text not in ("true", "false", "1", "0"):
                    raise ValueError
                return text in ("true", "1")
            number = float(text)
        except ValueError:
            raise TaskError(f"{key} = {given!r} is not allowed: {name[kind]}") from None
        value = number
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and float(value).is_integer()
        value = int(value) if ok else value
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise TaskError(f"{key} = {given!r} is not allowed: {name[kind]}")
    return value


def check_task(task: Any) -> None:
    """The protocol's attributes exist and make sense; TaskError naming the first that does not."""
    label = getattr(task, "name", lambda: type(task).__name__)()
    for attr in ("n_in", "n_out", "n_steps"):
        value = getattr(task, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TaskError(f"task {label}: {attr} = {value!r} is not allowed: an integer >= 1")
    if getattr(task, "loss", None) not in LOSSES:
        raise TaskError(
            f"task {label}: loss = {getattr(task, 'loss', None)!r} is not allowed: "
            f"one of {', '.join(LOSSES)}"
        )
    if task.loss == "cross_entropy" and task.n_out < 2:
        raise TaskError(
            f"task {label}: n_out = {task.n_out} is not allowed with cross_entropy: at least 2 "
            "classes"
        )
    if not callable(getattr(task, "sample", None)):
        raise TaskError(f"task {label} has no sample(batch, generator) method")


def draw(task: Any, size: int, gen: torch.Generator) -> TaskBatch:
    """``task.sample(size, gen)``, checked by :func:`check_batch`; an exception inside the task's
    own code becomes a one-line TaskError."""
    try:
        batch = task.sample(size, gen)
    except TaskError:
        raise
    except Exception as err:  # noqa: BLE001 - the task's code: say what broke, in one line
        label = getattr(task, "name", lambda: type(task).__name__)()
        raise TaskError(
            f"task {label}: sample({size}, gen) raised {type(err).__name__}: {one_line(err)}"
        ) from None
    return check_batch(task, batch, size)


def _finite(t: Tensor) -> bool:
    """No NaN or infinity in ``t``: one sum (NaN and infinities propagate into it; 1.6 ms for a
    paper-scale batch against 34 ms for an elementwise test), the elementwise test only when the
    sum is not finite (an overflow of huge but finite values)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_batch(task: Any, batch: Any, size: int) -> TaskBatch:
    """Check one batch of ``task`` against the protocol; returns it as a :class:`TaskBatch`.

    Raises TaskError naming the first wrong field (type, shape, dtype, values, empty mask).
    """
    label = getattr(task, "name", lambda: type(task).__name__)()
    where = f"task {label}: sample({size}, gen)"
    if not (isinstance(batch, tuple) and len(batch) == 3):
        raise TaskError(f"{where} returned {type(batch).__name__}, not TaskBatch(x, target, mask)")
    x, target, mask = batch
    for name, value in (("x", x), ("target", target), ("mask", mask)):
        if not isinstance(value, Tensor):
            raise TaskError(f"{where}: {name} is a {type(value).__name__}, not a torch.Tensor")
    t, n_in, n_out = task.n_steps, task.n_in, task.n_out
    if tuple(x.shape) != (t, size, n_in):
        raise TaskError(f"{where}: x has shape {tuple(x.shape)}, expected {(t, size, n_in)}")
    if not x.is_floating_point():
        raise TaskError(f"{where}: x has dtype {x.dtype}, expected a floating-point dtype")
    if not _finite(x):
        raise TaskError(f"{where}: x has NaN or infinite values")
    if task.loss == "cross_entropy":
        if tuple(target.shape) != (t, size) or target.dtype != torch.int64:
            raise TaskError(
                f"{where}: target is {target.dtype} {tuple(target.shape)}, expected torch.int64 "
                f"{(t, size)} class indices for loss cross_entropy"
            )
    elif tuple(target.shape) != (t, size, n_out) or not target.is_floating_point():
        raise TaskError(
            f"{where}: target is {target.dtype} {tuple(target.shape)}, expected a float "
            f"{(t, size, n_out)} for loss mse"
        )
    if tuple(mask.shape) != (t, size) or mask.dtype != torch.bool:
        raise TaskError(
            f"{where}: mask is {mask.dtype} {tuple(mask.shape)}, expected torch.bool {(t, size)}"
        )
    if not mask.any():
        raise TaskError(f"{where}: mask selects no step; at least one step must count")
    if task.loss == "cross_entropy":
        counted = target[mask]
        if counted.numel() and (counted.min() < 0 or counted.max() >= n_out):
            raise TaskError(
                f"{where}: target has class {int(counted.min())}..{int(counted.max())} at masked "
                f"steps, expected 0..{n_out - 1}"
            )
    elif not _finite(target[mask]):
        raise TaskError(f"{where}: target has NaN or infinite values at masked steps")
    return TaskBatch(x, target, mask)
