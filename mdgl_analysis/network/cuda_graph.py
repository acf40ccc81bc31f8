"""The two per-step time loops on CUDA, each captured once as a CUDA graph and replayed.

On a GPU the torch loops are bound by launch overhead, not arithmetic: the rollout launches about
22 kernels per step on ``[batch, neuron]`` tensors, the adjoint about 11 (issue 13). A CUDA graph
records a whole trial's kernels once (:class:`torch.cuda.CUDAGraph`) and launches them all with
one call afterwards.

* :func:`rollout_graphed` is the no-grad path of :func:`~mdgl_analysis.network.neuron.rollout`
  and :func:`adjoint_graphed` is :func:`~mdgl_analysis.rules.adjoint.adjoint`: the same
  :func:`~mdgl_analysis.network.neuron.alif_step` and :func:`~mdgl_analysis.network.neuron.psi`,
  the same operations in the same order, so float64 results agree to rounding and float32 spikes
  agree exactly.
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

from mdgl_analysis.network.neuron import ALIFParams, ALIFState, Trajectory, alif_step, psi

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


def _scalars(p: ALIFParams) -> tuple:
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


# ------------------------------------------------------------------------------------------------
# the loops, operation for operation those of neuron.rollout (no-grad path) and adjoint.adjoint


def _rollout_body(
    x: Tensor, w_in: Tensor, w_rec: Tensor, beta: Tensor, p: ALIFParams, lean: bool
) -> Callable[[], tuple[Tensor | None, ...]]:
    """The no-grad loop of :func:`~mdgl_analysis.network.neuron.rollout` from the zero state,
    reading ``x [time, batch, input]``, ``w_in [neuron, input]``, ``w_rec [neuron, neuron]`` and
    ``beta [neuron]``; the closure returns ``(z, v, a, threshold, refractory, psi)`` (``v``, ``a``
    and ``threshold`` ``None`` when ``lean``), each ``[time, batch, neuron]``."""
    p = p._replace(beta=beta)

    def body() -> tuple[Tensor | None, ...]:
        n_steps, batch, _ = x.shape
        n = w_rec.shape[0]
        state = ALIFState.zeros(batch, n, x.device, x.dtype)
        scale = 1.0 - p.alpha
        i_in = (x.reshape(n_steps * batch, -1) @ (scale * w_in).T).reshape(n_steps, batch, n)
        w_rec_scaled = (scale * w_rec).T.contiguous()
        z, v = x.new_empty(n_steps, batch, n), x.new_empty(n_steps, batch, n)
        refractory = torch.empty(n_steps, batch, n, dtype=torch.bool, device=x.device)
        a = x.new_empty(2 if lean else n_steps, batch, n)
        threshold = i_in if lean else torch.empty_like(v)
        refs = (state.ref.clone(), torch.empty_like(state.ref))
        for t in range(n_steps):
            out = ALIFState(v[t], a[t % 2 if lean else t], z[t], refs[t % 2])
            state, _, _ = alif_step(
                i_in[t], state, w_rec_scaled, p, out, threshold[t], refractory[t]
            )
        if lean:
            return z, None, None, None, refractory, psi(v, threshold, refractory, p, out=v)
        return z, v, a, threshold, refractory, psi(v, threshold, refractory, p)

    return body


def _adjoint_body(
    signal: Tensor,
    psi_: Tensor,
    beta: Tensor,
    w_rec: Tensor | None,
    w_hat: Tensor | None,
    p: ALIFParams,
    adaptive: bool,
) -> Callable[[], tuple[Tensor | None, ...]]:
    """The loop of :func:`~mdgl_analysis.rules.adjoint.adjoint` reading ``signal`` and ``psi_``
    ``[time, batch, neuron]``, ``beta [neuron]``, ``w_rec [post, pre]`` (``None``: the local
    form) and ``w_hat [post, pre]`` (MDGL's modulatory weights, or ``None``); ``adaptive`` is
    ``bool(beta.any())``, decided before capture (a graph cannot read it). The closure returns
    ``(lam, total)``."""

    def body() -> tuple[Tensor | None, ...]:
        scale = 1.0 - p.alpha
        lam = torch.empty_like(signal)
        total = torch.empty_like(signal) if w_rec is not None else None
        w_back = scale * w_rec if w_rec is not None else None
        dv = torch.zeros_like(signal[0])
        da = torch.zeros_like(signal[0])
        neg_beta = -beta
        n_steps = signal.shape[0]
        for t in range(n_steps - 1, -1, -1):
            s = signal[t]
            if w_hat is not None and t < n_steps - 1:
                s = torch.addmm(s, psi_[t + 1] * signal[t + 1], w_hat, alpha=scale)
            if w_back is not None:
                dz = torch.addmm(s, dv, w_back, out=total[t])
                dz = torch.add(dz, dv, alpha=-p.v_th)
            else:
                dz = torch.add(s, dv, alpha=-p.v_th)
            if adaptive:
                dz.add_(da, alpha=1.0 - p.rho)
            g = dz.mul_(psi_[t])
            if adaptive:
                da = torch.addcmul(da * p.rho, g, neg_beta)
            dv = torch.add(g, dv, alpha=p.alpha, out=lam[t])
        lam.mul_(scale)
        return lam, total

    return body


# ------------------------------------------------------------------------------------------------
# the public functions


def rollout_graphed(
    x: Tensor, w_in: Tensor, w_rec: Tensor, p: ALIFParams, lean: bool = False
) -> Trajectory:
    """:func:`~mdgl_analysis.network.neuron.rollout` from the zero state, no grad, as a CUDA graph.

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
    device = _device_of("rollout_graphed", x=x, w_in=w_in, w_rec=w_rec, beta=p.beta)
    key = (
        "rollout",
        _signature(x),
        _signature(w_in),
        _signature(w_rec),
        _signature(p.beta),
        _scalars(p),
        bool(lean),
    )

    def make_body(x_s: Tensor, w_in_s: Tensor, w_rec_s: Tensor, beta_s: Tensor):
        return _rollout_body(x_s, w_in_s, w_rec_s, beta_s, p, bool(lean))

    return Trajectory(*_replay(key, device, (x, w_in, w_rec, p.beta), make_body))


def adjoint_graphed(
    signal: Tensor,
    psi: Tensor,
    p: ALIFParams,
    w_rec: Tensor | None = None,
    w_hat: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`~mdgl_analysis.rules.adjoint.adjoint` as a CUDA graph; returns ``(lam, total)``.

    Args:
        signal: ``[time, batch, neuron]`` per-neuron learning signal s(t), on CUDA.
        psi: ``[time, batch, neuron]`` dz/dv of the forward pass.
        p: the constants; ``p.beta`` ``[neuron]`` on the same device.
        w_rec: ``[post, pre]`` effective recurrent weights for exact BPTT; ``None`` keeps only each
            neuron's own dynamics (e-prop and the MDGL family).
        w_hat: ``[post, pre]`` modulatory weights of MDGL: the signal becomes
            ``s(t) + (1-alpha) (psi s)(t+1) @ w_hat`` for ``t <= T-2``, formed step by step.
    Returns:
        lam: ``[time, batch, neuron]``, ``(1-alpha) delta_v(t)``; total: for BPTT ``[time, batch,
        neuron]`` L_tot(t), else ``None``; both freshly allocated.
    Raises:
        RuntimeError: a tensor is not on CUDA, or they are on different devices.
    """
    device = _device_of(
        "adjoint_graphed", signal=signal, psi=psi, beta=p.beta, w_rec=w_rec, w_hat=w_hat
    )
    adaptive = bool(p.beta.any())  # one host sync, as in adjoint.adjoint
    key = (
        "adjoint",
        _signature(signal),
        _signature(psi),
        _signature(p.beta),
        _signature(w_rec),
        _signature(w_hat),
        _scalars(p),
        adaptive,
    )

    def make_body(
        signal_s: Tensor,
        psi_s: Tensor,
        beta_s: Tensor,
        w_rec_s: Tensor | None,
        w_hat_s: Tensor | None,
    ):
        return _adjoint_body(signal_s, psi_s, beta_s, w_rec_s, w_hat_s, p, adaptive)

    lam, total = _replay(key, device, (signal, psi, p.beta, w_rec, w_hat), make_body)
    return lam, total
