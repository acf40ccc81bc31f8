"""The network as trainable magnitudes and fixed signs (spec B.2), and one forward pass.

:class:`SpikingNetwork` is a thin ``nn.Module`` owning the parameters (``theta_*``, ``b_out``) and
buffers (signs, initial masks, cell types); the dynamics live in :mod:`.neuron` and the readout
in :mod:`.readout`. Effective weights are ``W = sign * theta`` where ``theta > 0`` and 0 elsewhere,
with the W_rec diagonal forced to zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from mdgl_analysis.config import Config, RulesConfig
from mdgl_analysis.network.connectivity import (
    Connectivity,
    connection_budget,
    initial_connectivity,
    random_feedback,
)
from mdgl_analysis.network.cuda_graph import rollout_graphed
from mdgl_analysis.network.neuron import ALIFParams, Trajectory, rollout
from mdgl_analysis.network.readout import Loss, Readout, learning_signal, readout
from mdgl_analysis.runtime import resolve_core, stream_seed
from mdgl_analysis.tasks.base import TaskBatch

MATRICES = ("in", "rec", "out")


class Weights(NamedTuple):
    """Effective weights: w_in ``[neuron, input]``, w_rec ``[neuron, neuron]`` (post, pre),
    w_out ``[output, neuron]``, b_out ``[output]``."""

    w_in: Tensor
    w_rec: Tensor
    w_out: Tensor
    b_out: Tensor


class Gradients(NamedTuple):
    """dE/dW for the effective weights, shaped like :class:`Weights` (dense: non-existing synapses
    carry the "virtual" gradient the optimiser sees, spec E.1; W_rec diagonal zero)."""

    w_in: Tensor
    w_rec: Tensor
    w_out: Tensor
    b_out: Tensor


class Snapshot(NamedTuple):
    """What a learning rule needs besides the forward pass: weights, constants, cell types, the
    implementation of the time loops (``core``: ``"torch"``, ``"numba"`` or ``"cuda_graph"``, see
    :func:`mdgl_analysis.runtime.resolve_core`), the rules' parameters (the config's ``[rules]``)
    and the run's random feedback weights ``feedback [output, neuron]`` (``eprop_random``)."""

    weights: Weights
    params: ALIFParams
    inhibitory: Tensor  # bool [neuron]
    core: str = "torch"
    rules: RulesConfig = RulesConfig()
    feedback: Tensor | None = None


class Forward(NamedTuple):
    """Pass 1 of an iteration: inputs, trajectory, readout and learning signal.

    Attributes:
        x: ``[time, batch, input]``; target: ``[time, batch]`` classes or
        ``[time, batch, output]`` values; mask: bool ``[time, batch]``;
        traj: the :class:`Trajectory`; ro: the :class:`Readout`;
        signal: ``[time, batch, neuron]`` learning signal L = dE/dz.
    """

    x: Tensor
    target: Tensor
    mask: Tensor
    traj: Trajectory
    ro: Readout
    signal: Tensor


def effective(theta: Tensor, sign: Tensor) -> Tensor:
    """W = sign * theta where theta > 0, else 0 (spec B.2)."""
    return torch.where(theta > 0, sign * theta, torch.zeros_like(theta))


class SpikingNetwork(nn.Module):
    """Parameters ``theta_in [neuron, input]``, ``theta_rec [neuron, neuron]``,
    ``theta_out [output, neuron]``, ``b_out [output]``; signs and initial masks as buffers."""

    def __init__(self, cfg: Config, gen: torch.Generator, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        self.net_cfg = net_cfg = cfg.sized_network  # with the task's input and output sizes
        conn: Connectivity = initial_connectivity(net_cfg, gen)
        for m in MATRICES:
            theta = getattr(conn, f"theta_{m}")
            self.register_parameter(f"theta_{m}", nn.Parameter(theta.to(dtype)))
            self.register_buffer(f"sign_{m}", getattr(conn, f"sign_{m}").to(dtype))
            self.register_buffer(f"init_{m}", theta > 0)
        self.b_out = nn.Parameter(torch.zeros(net_cfg.n_out, dtype=dtype))
        self.register_buffer("inhibitory", conn.inhibitory)
        self.register_buffer("adaptive", conn.adaptive)
        self.register_buffer("input_inhibitory", conn.input_inhibitory)
        self.register_buffer("offdiag", ~torch.eye(cfg.network.n_rec, dtype=torch.bool))
        # eprop_random's B: the run's own "feedback" stream, so that it is the same whatever the
        # other draws; saved with the network (checkpoints) and in records
        feedback_gen = torch.Generator().manual_seed(stream_seed(cfg.run.seed, "feedback"))
        b = random_feedback(net_cfg.n_out, net_cfg.n_rec, cfg.rules.feedback_scale, feedback_gen)
        self.register_buffer("feedback", b.to(dtype))
        self.budget = connection_budget(net_cfg)

    @property
    def params(self) -> ALIFParams:
        p = ALIFParams.from_config(self.cfg.network, self.adaptive.cpu())
        return p.to(self.b_out.device, self.b_out.dtype)

    def weights(self) -> Weights:
        w_rec = effective(self.theta_rec, self.sign_rec) * self.offdiag
        return Weights(
            effective(self.theta_in, self.sign_in),
            w_rec,
            effective(self.theta_out, self.sign_out),
            self.b_out,
        )

    def snapshot(self) -> Snapshot:
        """Detached copies of the current weights (never views of the parameters)."""
        with torch.no_grad():
            w = Weights(*(t.detach().clone() for t in self.weights()))
        core = resolve_core(self.cfg.run.core, self.b_out.device)
        rules = self.cfg.rules
        return Snapshot(w, self.params, self.inhibitory, core, rules, self.feedback.clone())

    def connected(self) -> dict[str, int]:
        """Connection count per matrix (theta > 0; the W_rec diagonal never counts)."""
        with torch.no_grad():
            return {
                "in": int((self.theta_in > 0).sum()),
                "rec": int(((self.theta_rec > 0) & self.offdiag).sum()),
                "out": int((self.theta_out > 0).sum()),
            }


def forward(snap: Snapshot, batch: TaskBatch, loss: Loss, lean: bool = False) -> Forward:
    """Pass 1 without autograd: rollout, readout, loss and learning signal.

    Args:
        batch: the :class:`~mdgl_analysis.tasks.TaskBatch` (on the model's device and dtype).
        loss: the loss kind and regulariser (:class:`~mdgl_analysis.network.readout.Loss`).
        lean: keep only what the rules need (see :func:`~mdgl_analysis.network.neuron.rollout`).
    """
    p, w = snap.params, snap.weights
    x, target, mask = batch
    with torch.no_grad():
        if snap.core == "cuda_graph":
            traj = rollout_graphed(x, w.w_in, w.w_rec, p, lean=lean)
        else:
            traj = rollout(x, w.w_in, w.w_rec, p, lean=lean, core=snap.core)
        ro = readout(traj.z, w.w_out, w.b_out, target, mask, p.kappa, loss)
        signal = learning_signal(ro, w.w_out, loss)
    return Forward(x, target, mask, traj, ro, signal)


def loss_of(cfg: Config, kind: str) -> Loss:
    """The :class:`Loss` of a config (regulariser, dt) for a task whose loss is ``kind``."""
    train = cfg.train
    return Loss(kind, train.reg_rate, train.reg_target_hz / 1000.0, cfg.network.dt)
