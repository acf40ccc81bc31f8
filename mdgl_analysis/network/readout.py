r"""Readout, per-step losses, metrics and the learning signal (spec A.4, A.5, D.0, generalised).

The readout sees low-pass filtered spikes at every step,
``psp(t) = kappa psp(t-1) + (1-kappa) z(t)``, ``y(t) = psp(t) @ w_out.T + b_out`` (``[time,
batch, output]``: logits for cross-entropy, values for MSE). The loss is the mean over the masked
steps and trials of the per-step loss,

.. math::

    E = \frac{1}{M} \sum_{(t,b) \in \text{mask}} \ell(y_b(t), y^*_b(t)),\qquad
    \ell_{CE} = -\log \mathrm{softmax}(y)_{y^*},\quad
    \ell_{MSE} = \frac{1}{K} \sum_k (y_k - y^*_k)^2

(``M`` masked entries, ``K`` outputs). Because ``y`` is a linear filter of the spikes, the
learning signal (the partial derivative of E with respect to the emitted spikes, through the
readout only) is one backward filter over time of ``dE/dy``:

.. math::

    L_{bj}(t) = \sum_k W^{out}_{kj}\, \bar\delta_{bk}(t),\qquad
    \bar\delta(t) = (1-\kappa) \sum_{t' \ge t} \kappa^{t'-t}\, \frac{\partial E}{\partial y(t')}

with ``dE/dy = mask (softmax(y) - onehot(y*)) / M`` (cross-entropy) or
``mask 2 (y - y*) / (M K)`` (MSE). For the evidence task (mask = the last step, M = B) this is
spec I.5: ``L(t) = (1-kappa) kappa^(T-1-t) W_out^T (pi - onehot) / B``. The readout's own exact
gradients follow from the same filter: ``dE/dW_out = sum_{t,b} deltabar(t)^T z(t)``,
``dE/db_out = sum_{t,b} dE/dy(t)``. With the firing-rate regulariser (spec G) its derivative
``2 c (rate_j - target) / (T B dt)`` is added to L.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = {"cross_entropy": "accuracy", "mse": "nmse"}
"""The metric of each loss: accuracy of the masked steps; normalised MSE (the squared error summed
over the masked steps and the outputs, divided by the target's squared deviation from its mean
over those steps, each output around its own mean, summed likewise)."""

_BLOCK = 32  # steps per block of the exponential filter


def causal_filter(u: Tensor, decay: float) -> Tensor:
    """``f(t) = decay f(t-1) + u(t)``, ``f(-1) = 0``, along the first axis of ``u [time, ...]``.

    Computed in blocks of steps: one small lower-triangular matrix product per block plus the
    carry of the previous block's last value (no per-step Python loop); differentiable.
    """
    n = u.shape[0]
    rest = u.shape[1:]
    flat = u.reshape(n, -1)
    block = min(_BLOCK, n)
    steps = torch.arange(block, device=u.device, dtype=u.dtype)
    lag = steps[:, None] - steps[None, :]
    kernel = torch.where(lag >= 0, decay ** lag.clamp(min=0), torch.zeros_like(lag))
    carry_w = decay ** (steps + 1)  # [block]: weight of f(start - 1) at each step of a block
    parts = []
    prev = None
    for start in range(0, n, block):
        stop = min(start + block, n)
        m = stop - start
        part = kernel[:m, :m] @ flat[start:stop]
        if prev is not None:
            part = part + carry_w[:m, None] * prev
        parts.append(part)
        prev = part[-1]
    return torch.cat(parts).reshape(n, *rest)


def anticausal_filter(u: Tensor, decay: float) -> Tensor:
    """``g(t) = decay g(t+1) + u(t)``, ``g(T) = 0``: :func:`causal_filter` backwards in time."""
    return causal_filter(u.flip(0), decay).flip(0)


class Loss(NamedTuple):
    """What the loss needs besides the batch: its kind and the optional rate regulariser.

    Attributes:
        kind: ``"cross_entropy"`` or ``"mse"``.
        reg_rate: regulariser coefficient c; reg_target: target rate in spikes per ms;
        dt: ms per step.
    """

    kind: str
    reg_rate: float = 0.0
    reg_target: float = 0.01
    dt: float = 1.0


class Readout(NamedTuple):
    """Readout of one batch at every step.

    Attributes:
        y: ``[time, batch, output]`` outputs (logits for cross-entropy).
        dy: ``[time, batch, output]`` dE/dy, zero outside the mask.
        dy_bar: ``[time, batch, output]`` the backward-filtered dE/dy (module docstring), so that
            ``L = dy_bar @ w_out``.
        loss: scalar loss of the masked steps; reg: scalar rate regulariser;
        metric: scalar accuracy (cross-entropy) or normalised MSE (mse), see :data:`METRICS`;
        rate: ``[neuron]`` mean firing rate in spikes per ms.
    """

    y: Tensor
    dy: Tensor
    dy_bar: Tensor
    loss: Tensor
    reg: Tensor
    metric: Tensor
    rate: Tensor


def readout(
    z: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    target: Tensor,
    mask: Tensor,
    kappa: float,
    loss: Loss,
) -> Readout:
    """Outputs, loss, metric and regulariser of spikes ``z [time, batch, neuron]``.

    Args:
        w_out: ``[output, neuron]``; b_out: ``[output]``.
        target: ``[time, batch]`` class indices (cross-entropy) or ``[time, batch, output]``
            values (MSE); mask: bool ``[time, batch]``, the steps that count.
    """
    y = (1.0 - kappa) * causal_filter(z @ w_out.T, kappa) + b_out
    sel, n_masked = y[mask], int(mask.sum())
    dy = torch.zeros_like(y)
    with torch.no_grad():
        if loss.kind == "cross_entropy":
            tgt = target[mask]
            grad = (torch.softmax(sel, -1) - F.one_hot(tgt, y.shape[-1]).to(y.dtype)) / n_masked
        else:
            tgt = target[mask].to(y.dtype)
            grad = 2.0 * (sel - tgt) / (n_masked * y.shape[-1])
        dy[mask] = grad
    if loss.kind == "cross_entropy":
        value = F.cross_entropy(sel, tgt)
        metric = (sel.argmax(-1) == tgt).to(z.dtype).mean()
    else:
        squared = (sel - tgt) ** 2
        value = squared.mean()
        spread = ((tgt - tgt.mean(0)) ** 2).sum()
        metric = squared.sum().detach() / spread if spread > 0 else sel.new_tensor(float("nan"))
    rate = z.mean(dim=(0, 1)) / loss.dt
    reg = loss.reg_rate * ((rate - loss.reg_target) ** 2).sum()
    dy_bar = (1.0 - kappa) * anticausal_filter(dy, kappa)
    return Readout(y, dy, dy_bar, value, reg, metric, rate)


def learning_signal(ro: Readout, w_out: Tensor, loss: Loss) -> Tensor:
    """L = dE/dz through the readout (and the regulariser) only, ``[time, batch, neuron]``."""
    signal = ro.dy_bar @ w_out
    if loss.reg_rate:
        n_steps, batch = ro.y.shape[:2]
        signal = signal + 2 * loss.reg_rate * (ro.rate - loss.reg_target) / (
            n_steps * batch * loss.dt
        )
    return signal


def readout_gradients(ro: Readout, z: Tensor) -> tuple[Tensor, Tensor]:
    """Exact dE/dw_out ``[output, neuron]`` and dE/db_out ``[output]`` (every rule uses these).

    Args:
        z: ``[time, batch, neuron]`` spikes of the forward pass.
    """
    k, n = ro.y.shape[-1], z.shape[-1]
    return ro.dy_bar.reshape(-1, k).T @ z.reshape(-1, n), ro.dy.sum((0, 1))
