"""A small float64 network and batch for the oracle tests (spec I uses B=3, T=80, N=12)."""

from __future__ import annotations

import torch

from mdgl_analysis.config import (
    Config,
    NetworkConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    task_of,
    validate,
)
from mdgl_analysis.network.model import SpikingNetwork, forward, loss_of
from mdgl_analysis.tasks import Task, TaskBatch

# the example of the issue "Bring your own experiment", as a user writes it
USER_TASK = """
import torch
from mdgl_analysis.tasks import Task, TaskBatch

class MyTask(Task):
    n_in, n_out, n_steps, loss = 8, 2, 300, "cross_entropy"

    def sample(self, batch: int, gen: torch.Generator) -> TaskBatch:
        side = torch.randint(0, 2, (batch,), generator=gen)
        x = torch.zeros(self.n_steps, batch, self.n_in)
        x[:100, :, :4] = (side[:, None] == 0) * 0.05
        x[:100, :, 4:] = (side[:, None] == 1) * 0.05
        target = side.expand(self.n_steps, batch).clone()
        mask = torch.zeros(self.n_steps, batch, dtype=torch.bool)
        mask[-50:] = True
        return TaskBatch(torch.poisson(x, generator=gen), target, mask)
"""


SMALL_TASK = {
    "n_in": 8,
    "n_cues": 3,
    "cue_ms": 10,
    "gap_ms": 5,
    "delay_ms": 20,
    "recall_ms": 15,
    "cue_rate_hz": 300,
    "noise_rate_hz": 100,
    "sampler": "poisson",  # the batches the oracle tests were written on
}


def small_config(core: str = "torch", **train) -> Config:
    """12 neurons (6 LIF, 6 ALIF, 2 inhibitory), 8 inputs, dense-ish 50% connectivity, T = 75;
    the time loops of ``core`` (the torch reference unless stated)."""
    return validate(
        Config(
            network=NetworkConfig(
                n_regular=6, n_adaptive=6, p_in=0.5, p_rec=0.5, p_out=0.5, n_ref=3, v_th=0.01
            ),
            task=TaskConfig("evidence", dict(SMALL_TASK)),
            train=TrainConfig(batch=3, val_batch=3, **train),
            run=RunConfig(core=core),
        )
    )


class StepTask(Task):
    """A test task with a loss at many steps: random Poisson inputs, random targets per step
    (classes for cross-entropy, values for MSE), a random mask of about ``density`` of the
    steps (``density = 1``: every step)."""

    n_in, n_out, n_steps = 8, 2, 75
    loss = "cross_entropy"
    density = 0.4
    rate = 0.02

    def sample(self, batch: int, gen: torch.Generator) -> TaskBatch:
        shape = (self.n_steps, batch)
        x = torch.poisson(torch.full((*shape, self.n_in), self.rate, dtype=torch.float64), gen)
        if self.loss == "cross_entropy":
            target = torch.randint(0, self.n_out, shape, generator=gen)
        else:
            target = torch.randn(*shape, self.n_out, generator=gen, dtype=torch.float64) * 0.1
        mask = torch.rand(shape, generator=gen) < self.density
        mask[-1] = True
        return TaskBatch(x, target, mask)


def make_small(
    seed: int = 0, scale_in: float = 3.0, task: Task | None = None, core: str = "torch", **train
):
    """A float64 network whose input weights are scaled up so that every cell type spikes, one
    batch of ``task`` (default: the small evidence task) and its forward pass (``core``'s loops)."""
    cfg = small_config(core, **train)
    gen = torch.Generator().manual_seed(seed)
    net = SpikingNetwork(cfg, gen, torch.float64)
    with torch.no_grad():
        net.theta_in.mul_(scale_in)
    task = task or task_of(cfg)
    batch = task.sample(cfg.train.batch, gen)
    snap = net.snapshot()
    fwd = forward(snap, batch, loss_of(cfg, task.loss))
    return cfg, net, snap, fwd


def train_command(cfg_file, out) -> list[str]:
    """``python -m mdgl_analysis train --config cfg_file --out out --no-progress``."""
    import sys

    return [
        sys.executable,
        "-m",
        "mdgl_analysis",
        "train",
        "--config",
        str(cfg_file),
        "--out",
        str(out),
        "--no-progress",
    ]


def train_process(cfg_file, out, **popen):
    """:func:`train_command` as a background subprocess (for kill tests)."""
    import subprocess

    return subprocess.Popen(
        train_command(cfg_file, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen
    )


def spy_reads(monkeypatch) -> list[str]:
    """Names of the record variables read from now on: through h5netcdf (xarray's backend) and
    through the direct chunk reader of :mod:`mdgl_analysis.recording.readers`."""
    import h5netcdf

    from mdgl_analysis.recording import readers as io

    reads: list[str] = []
    original = h5netcdf.core.BaseVariable.__getitem__
    original_chunk = io.read_chunk

    def spy(self, key):
        reads.append(self.name.strip("/"))
        return original(self, key)

    def spy_chunk(path, name, *args):
        reads.append(name)
        return original_chunk(path, name, *args)

    monkeypatch.setattr(h5netcdf.core.BaseVariable, "__getitem__", spy)
    monkeypatch.setattr(io, "read_chunk", spy_chunk)
    return reads
