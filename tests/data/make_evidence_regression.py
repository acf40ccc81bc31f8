"""Reference values of the evidence task from the code before tasks became plug-ins (commit 0eb0727).

Run with PYTHONPATH pointing at a checkout of that commit."""

import sys
from dataclasses import replace

import numpy as np
import torch

sys.path.insert(0, "/work/main/tests")
from mdgl_analysis import config as C
from mdgl_analysis.model import SpikingNetwork, forward
from mdgl_analysis.rules import RULES
from mdgl_analysis.rules.bptt import bptt_credit
from mdgl_analysis.rules.local import signal_of
from mdgl_analysis.task import sample
from mdgl_analysis.train import Trainer

torch.set_flush_denormal(False)
out = {}


def small_config(reg):
    return C.Config(
        network=C.NetworkConfig(
            n_in=8, n_regular=6, n_adaptive=6, p_in=0.5, p_rec=0.5, p_out=0.5, n_ref=3, v_th=0.01
        ),
        task=C.TaskConfig(
            n_cues=3,
            cue_ms=10,
            gap_ms=5,
            delay_ms=20,
            recall_ms=15,
            cue_rate_hz=300,
            noise_rate_hz=100,
        ),
        train=C.TrainConfig(batch=3, val_batch=3, reg_rate=reg),
    )


cases = {
    "small": (small_config(0.0), 3.0),
    "small_reg": (small_config(0.1), 3.0),
    "demo": (replace(C.PRESETS["demo"], train=replace(C.PRESETS["demo"].train, batch=8)), 1.0),
}
for name, (cfg, scale) in cases.items():
    gen = torch.Generator().manual_seed(0)
    net = SpikingNetwork(cfg, gen, torch.float64)
    with torch.no_grad():
        net.theta_in.mul_(scale)
    b = sample(cfg.task, cfg.network.n_in, cfg.train.batch, gen)
    snap = net.snapshot()
    fwd = forward(snap, b.x, b.target, cfg)
    out[f"{name}/x"] = b.x.numpy()
    out[f"{name}/target"] = b.target.numpy()
    out[f"{name}/z"] = fwd.traj.z.numpy().astype(np.uint8)
    out[f"{name}/loss"] = fwd.ro.loss.numpy()
    out[f"{name}/accuracy"] = fwd.ro.accuracy.numpy()
    out[f"{name}/reg"] = fwd.ro.reg.numpy()
    if name != "demo":
        out[f"{name}/signal"] = fwd.signal.numpy()
    if name != "demo":
        out[f"{name}/bptt_total"] = bptt_credit(snap, fwd)[1].numpy()
    for r in RULES:
        g = RULES[r](snap, fwd)
        for m in ("w_in", "w_rec", "w_out", "b_out"):
            out[f"{name}/{r}/{m}"] = getattr(g, m).numpy()
        if r != "bptt" and name != "demo":
            out[f"{name}/{r}/s"] = signal_of(r, snap, fwd).numpy()
# three training steps of the demo preset in float64 through the whole loop
cfg = C.set_value(C.set_value(C.PRESETS["demo"], "run.dtype", "float64"), "train.batch", 8)
for rule in ("bptt", "eprop", "mdgl"):
    tr = Trainer(replace(cfg, train=replace(cfg.train, rule=rule)), torch.device("cpu"))
    losses = []
    for _ in range(3):
        rows = tr.step()
        losses.append([v for _, s, n, v in rows if n == "loss"][0])
    out[f"loop/{rule}/loss"] = np.array(losses)
    out[f"loop/{rule}/theta_rec"] = tr.net.theta_rec.detach().numpy()
    out[f"loop/{rule}/theta_in"] = tr.net.theta_in.detach().numpy()
np.savez_compressed("/work/main/tests/data/evidence_regression.npz", **out)
print({k: v.shape for k, v in list(out.items())[:8]}, len(out))
