"""The two per-step time loops on CUDA, each captured once as a CUDA graph and replayed.

On a GPU the torch loops are bound by launch overhead, not arithmetic: the rollout launches about
22 kernels per step on ``[batch, neuron]`` tensors, the adjoint about 11 (issue 13). A CUDA graph
records a whole trial's kernels once (:class:`torch.cuda.CUDAGraph`) and launches them all with
one call afterwards.

* :func:`graphed` captures any closure of torch operations; :func:`rollout_graphed` captures the
  no-grad torch loop of :func:`~mdgl_analysis.network.neuron.rollout` itself and
  :func:`mdgl_analysis.rules.adjoint.adjoint_graphed` that of
  :func:`~mdgl_analysis.rules.adjoint.adjoint`: the very same operations, so results agree with
  the torch core to rounding (float64) and float32 spikes agree.
* A graph reads and writes fixed addresses. Each captured graph owns static input buffers (the
  inputs, the weights and ``beta``); every call copies its tensors into them, replays, and
  returns clones of the outputs, which stay valid across later calls.
* Graphs are cached by everything they bake in: shapes, dtypes, device, stream, ``lean`` (or the
  BPTT/local form), the scalar constants of :class:`~mdgl_analysis.network.neuron.ALIFParams`
  (and for the adjoint whether any cell adapts). The cache holds the :data:`MAX_GRAPHS` most
  recently used; the first call of a key runs the loop once eagerly on a side stream (the
  warm-up the torch documentation asks for) and captures it, so it costs about two eager calls.
* The whole trial is one graph (about 22 T kernel nodes for the rollout, 11 T for the adjoint):
  no chunking, so no state handed between pieces.

Axis order: ``[time, batch, neuron]``; weights ``[post, pre]``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from mdgl_analysis.network.neuron import ALIFParams, Trajectory, rollout

MAX_GRAPHS = 8  # captured graphs kept (each holds its trial-sized buffers on the GPU)


class _Captured(NamedTuple):
    """A captured graph, its static inputs (copied into before each replay) and its outputs."""

    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor | None, ...]


_CACHE: OrderedDict[tuple, _Captured] = OrderedDict()
_LOCK = threading.Lock()  # one copy-in, replay, clone-out at a time per process


def clear_cache() -> None:
    """Drop every captured graph (their GPU memory is freed with them)."""
    with _LOCK:
        _CACHE.clear()


def _device_of(caller: str, **tensors: Tensor | None) -> torch.device:
    """The one CUDA device of ``tensors``; a one-line RuntimeError otherwise."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    for name, device in devices.items():
        if device.type != "cuda":
            raise RuntimeError(
                f"{caller}: {name} is on {device}, not on CUDA; CUDA graphs need CUDA tensors "
                "(run.core = torch or numba runs on the CPU)"
            )
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise RuntimeError(f"{caller}: tensors on different devices ({where}); one CUDA device")
    return next(iter(devices.values()))


def scalars(p: ALIFParams) -> tuple:
    """The constants a captured graph bakes in: every field of ``p`` but ``beta``."""
    return tuple(value for name, value in zip(p._fields, p, strict=True) if name != "beta")


def _signature(t: Tensor | None) -> tuple | None:
    return None if t is None else (tuple(t.shape), t.dtype)


def _static(t: Tensor | None) -> Tensor | None:
    """A contiguous copy of ``t`` that a graph reads from (same dtype and device)."""
    return None if t is None else t.detach().clone(memory_format=torch.contiguous_format)


def _stream_id(device: torch.device) -> int:
    """The current stream of ``device``: graphs are cached per stream, so that replays on two
    streams never share static buffers."""
    return torch.cuda.current_stream(device).cuda_stream


def _capture(
    device: torch.device, body: Callable[[], tuple[Tensor | None, ...]]
) -> tuple[torch.cuda.CUDAGraph, tuple[Tensor | None, ...]]:
    """Run ``body`` once on a side stream (warm-up), then capture it; returns the graph and the
    tensors ``body`` returned during capture (the graph rewrites them at every replay)."""
    with torch.cuda.device(device):
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            body()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the recorder's writer thread may synchronise on its own events meanwhile
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            outputs = body()
        current.wait_stream(side)
    return graph, outputs


def _replay(
    key: tuple,
    device: torch.device,
    values: tuple[Tensor | None, ...],
    make_body: Callable[..., Callable[[], tuple[Tensor | None, ...]]],
) -> tuple[Tensor | None, ...]:
    """Copy ``values`` into the static inputs of the graph cached under ``key`` (capturing
    ``make_body(*static_inputs)`` first if there is none), replay it, return clones of its
    outputs."""
    key = (*key, device, _stream_id(device))
    with _LOCK, torch.no_grad():
        entry = _CACHE.get(key)
        if entry is None:
            inputs = tuple(_static(v) for v in values)
            graph, outputs = _capture(device, make_body(*inputs))
            entry = _CACHE[key] = _Captured(graph, inputs, outputs)
            while len(_CACHE) > MAX_GRAPHS:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
            for static, value in zip(entry.inputs, values, strict=True):
                if static is not None:
                    static.copy_(value)
        entry.graph.replay()
        return tuple(None if t is None else t.clone() for t in entry.outputs)


def graphed(
    caller: str,
    key: tuple,
    values: dict[str, Tensor | None],
    make_body: Callable[..., Callable[[], tuple[Tensor | None, ...]]],
) -> tuple[Tensor | None, ...]:
    """Run ``make_body(*static_inputs)()`` as a CUDA graph: captured on the first call for these
    shapes, dtypes and ``key`` (what else the body bakes in), replayed afterwards.

    Args:
        caller: the public function's name (for errors).
        key: hashable constants of the body besides the inputs' shapes and dtypes.
        values: the tensors the body reads, by name (``None`` allowed), copied into the graph's
            static inputs before each replay.
        make_body: called once, with the static inputs in the order of ``values``; returns the
            closure to capture, which returns a tuple of tensors (or ``None``).
    Returns:
        clones of the closure's outputs after the replay.
    Raises:
        RuntimeError: a tensor is not on CUDA, or they are on different devices.
    """
    device = _device_of(caller, **values)
    signature = tuple(_signature(v) for v in values.values())
    return _replay((caller, signature, *key), device, tuple(values.values()), make_body)


def rollout_graphed(
    x: Tensor, w_in: Tensor, w_rec: Tensor, p: ALIFParams, lean: bool = False
) -> Trajectory:
    """:func:`~mdgl_analysis.network.neuron.rollout` from the zero state, no grad, as a CUDA graph
    (the torch loop itself is what is captured).

    Args:
        x: ``[time, batch, input]`` input spike counts, on CUDA.
        w_in: ``[neuron, input]`` effective input weights.
        w_rec: ``[neuron, neuron]`` effective recurrent weights ``[post, pre]``, diagonal zero.
        p: the constants; ``p.beta`` ``[neuron]`` on the same device.
        lean: keep only ``z``, ``refractory`` and ``psi`` (``v``, ``a``, ``threshold`` ``None``).
    Returns:
        the :class:`~mdgl_analysis.network.neuron.Trajectory`, every field ``[time, batch,
        neuron]``, freshly allocated (not views of the graph's buffers) and without autograd graph.
    Raises:
        RuntimeError: a tensor is not on CUDA, or they are on different devices.
    """

    def make_body(x_s: Tensor, w_in_s: Tensor, w_rec_s: Tensor, beta_s: Tensor):
        q = p._replace(beta=beta_s)
        return lambda: tuple(rollout(x_s, w_in_s, w_rec_s, q, lean=lean))

    values = {"x": x, "w_in": w_in, "w_rec": w_rec, "beta": p.beta}
    return Trajectory(*graphed("rollout_graphed", (scalars(p), bool(lean)), values, make_body))
