"""The evidence task as a plug-in reproduces the code before tasks were plug-ins (commit 0eb0727).

``tests/data/evidence_regression.npz`` holds, from that code in float64: the inputs, spikes,
loss, accuracy, learning signal, BPTT's total signal and every rule's gradients and signals of
the small test network and of the demo network, and three training steps of the demo preset
through the whole loop for BPTT, e-prop and MDGL (``tests/data/make_evidence_regression.py``
made it). Same draws, same spikes, and everything else to 1e-12 relative. The data were drawn
with torch.poisson per step, so every case states ``task.sampler = "poisson"`` (that code path).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.network.model import SpikingNetwork, forward, loss_of
from mdgl_analysis.rules import RULES
from mdgl_analysis.rules.bptt import bptt_credit
from mdgl_analysis.rules.local import signal_of
from mdgl_analysis.training.loop import Trainer

from helpers import SMALL_TASK

REF = np.load(Path(__file__).parent / "data" / "evidence_regression.npz")
TOLERANCE = 1e-12


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


def demo_config():
    """The demo preset on the sampler the stored data were drawn with."""
    return config_mod.set_value(config_mod.PRESETS["demo"], "task.sampler", "poisson")


def case_config(name: str):
    if name == "demo":
        return config_mod.set_value(demo_config(), "train.batch", 8), 1.0
    data = {
        "network": dict(n_regular=6, n_adaptive=6, p_in=0.5, p_rec=0.5, p_out=0.5, n_ref=3),
        "task": dict(SMALL_TASK, sampler="poisson"),
        "train": dict(batch=3, val_batch=3, reg_rate=0.1 if name == "small_reg" else 0.0),
    }
    return config_mod.from_dict(data), 3.0


PRE_PLUGIN_RULES = ("bptt", "eprop", "mdgl", "mdgl_exact", "mdgl_nonlocal", "mdgl_online")
"""The rules the reference data holds (the rules added later have oracle tests of their own)."""


@pytest.mark.parametrize("name", ["small", "small_reg", "demo"])
def test_evidence_loss_signals_and_gradients_equal_the_pre_plugin_code(name):
    cfg, scale = case_config(name)
    task = config_mod.task_of(cfg)
    gen = torch.Generator().manual_seed(0)
    net = SpikingNetwork(cfg, gen, torch.float64)
    with torch.no_grad():
        net.theta_in.mul_(scale)
    batch = task.sample(cfg.train.batch, gen)
    assert np.array_equal(batch.x.numpy(), REF[f"{name}/x"])
    assert np.array_equal(batch.target[-1].numpy(), REF[f"{name}/target"])
    snap = net.snapshot()
    fwd = forward(snap, batch, loss_of(cfg, task.loss))
    assert np.array_equal(fwd.traj.z.numpy().astype(np.uint8), REF[f"{name}/z"])
    assert fwd.traj.z.sum() > 10
    assert rel(fwd.ro.loss, REF[f"{name}/loss"]) < TOLERANCE
    assert rel(fwd.ro.metric, REF[f"{name}/accuracy"]) < TOLERANCE
    assert rel(fwd.ro.reg, REF[f"{name}/reg"]) < TOLERANCE
    if name != "demo":
        assert rel(fwd.signal, REF[f"{name}/signal"]) < TOLERANCE
        assert rel(bptt_credit(snap, fwd)[1], REF[f"{name}/bptt_total"]) < TOLERANCE
    for rule in PRE_PLUGIN_RULES:
        grads = RULES[rule](snap, fwd)
        for m in ("w_in", "w_rec", "w_out", "b_out"):
            assert rel(getattr(grads, m), REF[f"{name}/{rule}/{m}"]) < TOLERANCE, (rule, m)
        if rule != "bptt" and name != "demo":
            assert rel(signal_of(rule, snap, fwd), REF[f"{name}/{rule}/s"]) < TOLERANCE, rule


@pytest.mark.parametrize("rule", ["bptt", "eprop", "mdgl"])
def test_three_training_steps_of_the_demo_preset_equal_the_pre_plugin_code(rule):
    cfg = config_mod.set_value(demo_config(), "run.dtype", "float64")
    cfg = config_mod.set_value(cfg, "train.batch", 8)
    trainer = Trainer(replace(cfg, train=replace(cfg.train, rule=rule)), torch.device("cpu"))
    losses = [next(v for _, _, n, v in trainer.step() if n == "loss") for _ in range(3)]
    assert rel(losses, REF[f"loop/{rule}/loss"]) < TOLERANCE
    assert rel(trainer.net.theta_rec.detach(), REF[f"loop/{rule}/theta_rec"]) < TOLERANCE
    assert rel(trainer.net.theta_in.detach(), REF[f"loop/{rule}/theta_in"]) < TOLERANCE
    # not vacuous: the weights moved
    assert (
        rel(
            trainer.net.theta_rec.detach(), Trainer(cfg, torch.device("cpu")).net.theta_rec.detach()
        )
        > 0
    )
