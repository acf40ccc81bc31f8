r"""Readout, loss, accuracy and the learning signal (spec A.4, A.5, D.0).

The readout sees low-pass filtered spikes, ``psp(t) = kappa psp(t-1) + (1-kappa) z(t)``, and only
the last step counts: ``logits = psp(T-1) @ w_out.T + b_out``. So ``psp(T-1)`` is one weighted sum
over time with the kernel ``(1-kappa) kappa^(T-1-t)``, and the learning signal (the partial
derivative of the loss with respect to the emitted spikes, through the readout only) is, in closed
form (spec D.0, identity I.5),

.. math:: L_{bj}(t) = (1-\kappa)\kappa^{T-1-t} \sum_k W^{out}_{kj} (\pi_{bk} - 1[k = y_b]) / B

plus, when the firing-rate regulariser is on, its derivative
``2 c (rate_j - target) / (T B dt)`` (spec G; rates in spikes per ms).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def readout_kernel(n_steps: int, kappa: float, like: Tensor) -> Tensor:
    """``[time]`` weights of each step in psp(T-1): ``(1-kappa) kappa^(T-1-t)``."""
    powers = torch.arange(n_steps - 1, -1, -1, device=like.device, dtype=like.dtype)
    return (1.0 - kappa) * kappa**powers


class Readout(NamedTuple):
    """Readout of one batch at the last step.

    Attributes:
        psp: ``[batch, neuron]`` filtered spikes at T-1.
        logits, probs: ``[batch, output]``.
        dlogits: ``[batch, output]`` dE/dlogits = (probs - onehot) / B.
        loss: scalar cross-entropy (mean over the batch); reg: scalar rate regulariser;
        accuracy: scalar; rate: ``[neuron]`` mean firing rate in spikes per ms.
    """

    psp: Tensor
    logits: Tensor
    probs: Tensor
    dlogits: Tensor
    loss: Tensor
    reg: Tensor
    accuracy: Tensor
    rate: Tensor


def readout(
    z: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    target: Tensor,
    kappa: float,
    dt: float = 1.0,
    reg_rate: float = 0.0,
    reg_target: float = 0.01,
) -> Readout:
    """Logits, loss, accuracy and firing-rate regulariser of spikes ``z [time, batch, neuron]``.

    Args:
        w_out: ``[output, neuron]``; b_out: ``[output]``; target: ``[batch]`` class indices.
        reg_rate: regulariser coefficient c; reg_target: target rate in spikes per ms.
    """
    kernel = readout_kernel(z.shape[0], kappa, z)
    psp = torch.einsum("t,tbj->bj", kernel, z)
    logits = psp @ w_out.T + b_out
    loss = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=-1)
    dlogits = (probs - F.one_hot(target, logits.shape[-1]).to(probs.dtype)) / z.shape[1]
    rate = z.mean(dim=(0, 1)) / dt
    reg = reg_rate * ((rate - reg_target) ** 2).sum()
    accuracy = (logits.argmax(-1) == target).to(z.dtype).mean()
    return Readout(psp, logits, probs, dlogits, loss, reg, accuracy, rate)


def learning_signal(
    ro: Readout,
    w_out: Tensor,
    n_steps: int,
    kappa: float,
    dt: float = 1.0,
    reg_rate: float = 0.0,
    reg_target: float = 0.01,
) -> Tensor:
    """L = dE/dz through the readout (and the regulariser) only, ``[time, batch, neuron]`` (D.0)."""
    kernel = readout_kernel(n_steps, kappa, ro.psp)
    signal = kernel[:, None, None] * (ro.dlogits @ w_out)
    if reg_rate:
        batch = ro.psp.shape[0]
        signal = signal + 2 * reg_rate * (ro.rate - reg_target) / (n_steps * batch * dt)
    return signal


def readout_gradients(ro: Readout) -> tuple[Tensor, Tensor]:
    """Exact dE/dw_out ``[output, neuron]`` and dE/db_out ``[output]`` (every rule uses these)."""
    return ro.dlogits.T @ ro.psp, ro.dlogits.sum(0)
