"""Verify a record file from its contents alone.

Two checks, both from the file and nothing else:

1. **Recompute**: rebuild the network from the recorded weights and the resolved config (a file
   attribute), rerun the batch's recorded inputs, recompute every recorded rule's gradient and
   compare with the recorded gradients.
2. **Contract** (when every trial and the whole trial were recorded with signals and traces):
   ``sum_{time, trial} learning_signal[rule, ..., post] * e[..., synapse]`` must equal the recorded
   gradient of every rule, BPTT included (spec I.3), computed lazily chunk by chunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - blosc filter
import numpy as np
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis import runtime
from mdgl_analysis.network.model import Snapshot, Weights, forward, loss_of
from mdgl_analysis.network.neuron import ALIFParams
from mdgl_analysis.rules import get_rule
from mdgl_analysis.tasks.base import TaskBatch


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


def recompute(path: str | Path) -> dict[str, float]:
    """Relative max error between recomputed and recorded gradients, per ``rule_matrix``."""
    with h5py.File(path, "r") as f:
        # the task is not rebuilt (its file may not be here): the record holds the batch
        cfg = config_mod.from_dict(json.loads(f.attrs["config"]), resolve_task=False)
        loss_kind = _text(f.attrs.get("loss", "cross_entropy"))
        target_name = "target" if loss_kind == "cross_entropy" else "target_value"
        dtype = torch.float64 if f["w_rec"].dtype == np.float64 else torch.float32
        t = {
            name: torch.as_tensor(f[name][()])
            for name in (
                "w_rec",
                "w_in",
                "w_out",
                "b_out",
                "post_rec",
                "pre_rec",
                "post_in",
                "pre_in",
                "adaptive",
                "x",
                target_name,
                "grad_rec",
                "grad_in",
            )
        }
        t["mask"] = torch.as_tensor(f["mask"][()]) if "mask" in f else None
        inhibitory = torch.as_tensor(np.array([c == b"I" or c == "I" for c in f["cell_type"][()]]))
        rules = [r.decode() if isinstance(r, bytes) else str(r) for r in f["rule"][()]]
    runtime.configure(cfg.run.threads)  # the same float path as the training process
    n, n_in = cfg.network.n_rec, t["x"].shape[-1]
    w_rec = torch.zeros(n, n, dtype=dtype)
    w_rec[t["post_rec"].long(), t["pre_rec"].long()] = t["w_rec"].to(dtype)
    w_in = torch.zeros(n, n_in, dtype=dtype)
    w_in[t["post_in"].long(), t["pre_in"].long()] = t["w_in"].to(dtype)
    params = ALIFParams.from_config(cfg.network, t["adaptive"].bool()).to("cpu", dtype)
    snap = Snapshot(
        Weights(w_in, w_rec, t["w_out"].to(dtype), t["b_out"].to(dtype)), params, inhibitory
    )
    target = t[target_name].long() if loss_kind == "cross_entropy" else t[target_name].to(dtype)
    mask = t["mask"]
    if mask is None:  # schema 1: the evidence task, one target per trial read at the last step
        n_steps = t["x"].shape[0]
        target = target.expand(n_steps, -1)
        mask = torch.zeros(n_steps, target.shape[1], dtype=torch.bool)
        mask[-1] = True
    batch = TaskBatch(t["x"].to(dtype), target, mask.bool())
    fwd = forward(snap, batch, loss_of(cfg, loss_kind), lean=True)
    errors = {}
    for i, rule in enumerate(rules):
        g = get_rule(rule)(snap, fwd)
        rec = g.w_rec[t["post_rec"].long(), t["pre_rec"].long()].numpy()
        inp = g.w_in[t["post_in"].long(), t["pre_in"].long()].numpy()
        errors[f"{rule}_rec"] = _rel(rec, t["grad_rec"][i].numpy())
        errors[f"{rule}_in"] = _rel(inp, t["grad_in"][i].numpy())
    return errors


def verify_file(path: str | Path) -> tuple[float, float | None, str]:
    """Both checks of one record: ``(recompute error, contract error or None, why not)``."""
    recomputed = max(recompute(path).values())
    try:
        return recomputed, max(contract(path).values()), ""
    except ValueError as err:
        return recomputed, None, str(err).split(": ", 1)[-1]


def contract(path: str | Path) -> dict[str, float]:
    """Relative max error of signal-times-trace sums against the recorded gradients.

    Raises ValueError when the file lacks what the identity needs (all trials, the whole trial,
    signals and traces).
    """
    from mdgl_analysis.recording.readers import open_record

    ds = open_record(path)
    missing = [v for v in ("learning_signal", "e_rec", "e_in") if v not in ds]
    if missing:
        raise ValueError(f"{path}: not recorded: {', '.join(missing)} (record.quantities)")
    if ds.sizes["trial"] != ds.sizes["batch"] or ds.sizes["time"] != ds.sizes["input_time"]:
        raise ValueError(f"{path}: the identity needs every trial and the whole trial recorded")
    errors = {}
    for part, post in (("rec", "post_rec"), ("in", "post_in")):
        signal = ds.learning_signal.astype("float64").isel(neuron=ds[post].values.astype(int))
        signal = signal.rename(neuron=f"synapse_{part}")
        total = (signal * ds[f"e_{part}"].astype("float64")).sum(("time", "trial")).compute()
        for rule in ds.rule.values:
            errors[f"{rule}_{part}"] = _rel(
                total.sel(rule=rule).values, ds[f"grad_{part}"].sel(rule=rule).values
            )
    ds.close()
    return errors
