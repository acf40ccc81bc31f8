"""Verify a record file from its contents alone.

Three checks, all from the file and nothing else:

1. **Integrity**: every chunk of every variable is read (a chunk that does not decompress is
   named) and every variable's values are compared with the SHA-256 the writer stored with it
   (attribute ``sha256``).
2. **Recompute**: rebuild the network from the recorded weights and the resolved config (a file
   attribute), rerun the batch's recorded inputs and recompute everything the record holds that
   follows from them: every recorded rule's gradient, the readout gradients, loss and metric,
   and every per-step variable (spikes, states, output, signals, credit, traces) in the recorded
   trials and window, exactly as the writer produced them. The weight change must keep Dale's
   law, and at iteration 0 (when the optimiser state is known: empty) it must be the first step
   of the optimiser on the recorded gradient of the training rule.
3. **Contract** (when every trial and the whole trial were recorded with signals and traces):
   ``sum_{time, trial} learning_signal[rule, ..., post] * e[..., synapse]`` must equal the recorded
   gradient of every rule, BPTT included (spec I.3), computed lazily chunk by chunk.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - blosc filter
import numpy as np
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis import runtime
from mdgl_analysis.network.model import Snapshot, Weights, forward, loss_of
from mdgl_analysis.network.neuron import ALIFParams
from mdgl_analysis.recording import schema
from mdgl_analysis.recording.traces import Synapses
from mdgl_analysis.recording.writer import (
    CHECKSUM,
    Window,
    cast,
    digest_update,
    streams,
    time_chunk,
)
from mdgl_analysis.rules import get_rule
from mdgl_analysis.tasks.base import TaskBatch

_GROUP_OF = {  # a variable whose presence shows that a group was recorded
    "z": "state",
    "bptt_credit": "credit",
    "learning_signal": "signals",
    "e_rec": "traces",
    "eps_v_rec": "eligibility",
}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = np.abs(b).max() if b.size else 0.0
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max(initial=0))


# ------------------------------------------------------------------------------------------------
# 1. integrity


def _blocks(dataset: h5py.Dataset):
    """``(key, label)`` of blocks that together read every chunk of ``dataset`` once, in C order
    (one block if it is contiguous).

    A block is one index on each leading axis whose chunks are 1 long, a chunk's range on the
    next axis and everything after, so it is a contiguous run of the C-order values.
    """
    chunks = dataset.chunks
    if chunks is None or dataset.size == 0:
        yield (), "the whole variable"
        return
    split = [i for i, (c, n) in enumerate(zip(chunks, dataset.shape, strict=True)) if c < n]
    if not split:
        yield (), "its only chunk"
        return
    lead = 0
    while chunks[lead] == 1 and lead < split[-1]:
        lead += 1
    lead += 1
    grid = [range(0, dataset.shape[i], chunks[i]) for i in range(lead)]
    for start in np.ndindex(*[len(g) for g in grid]):
        key = tuple(
            slice(grid[i][j], min(grid[i][j] + chunks[i], dataset.shape[i]))
            for i, j in enumerate(start)
        )
        yield key, "chunk(s) at [" + ", ".join(f"{k.start}:{k.stop}" for k in key) + "]"


def integrity(path: str | Path) -> list[str]:
    """Read every chunk of every recorded variable and check its SHA-256; the problems found
    (empty when the file is intact)."""
    problems = []
    with h5py.File(path, "r") as f:
        names = [n for n in f if n in schema.VARIABLES or n in schema.COORDS]
        if not any(CHECKSUM in f[n].attrs for n in names):
            return []  # written before records carried checksums: nothing to compare with
        for name in names:
            dataset, hasher = f[name], hashlib.sha256()
            for key, label in _blocks(dataset):
                try:
                    block = dataset[key]
                except Exception as err:  # noqa: BLE001 - a damaged chunk, named in one line
                    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                    problems.append(f"variable {name!r}, {label}: cannot be read ({reason})")
                    break
                digest_update(hasher, np.asarray(block))
            else:
                stored = f[name].attrs.get(CHECKSUM)
                if stored is None:
                    problems.append(f"variable {name!r} has no {CHECKSUM} checksum")
                elif _text(stored) != hasher.hexdigest():
                    problems.append(f"variable {name!r}: values differ from their {CHECKSUM}")
    return problems


# ------------------------------------------------------------------------------------------------
# 2. recompute


def _rebuild(f: h5py.File, full: bool):
    """The network, batch and forward pass of a record (the task is not rebuilt: its file may
    not be here; the record holds the batch)."""
    cfg = config_mod.from_dict(json.loads(f.attrs["config"]), resolve_task=False)
    loss_kind = _text(f.attrs.get("loss", "cross_entropy"))
    target_name = "target" if loss_kind == "cross_entropy" else "target_value"
    dtype = torch.float64 if f["w_rec"].dtype == np.float64 else torch.float32
    names = ("w_rec", "w_in", "w_out", "b_out", "post_rec", "pre_rec", "post_in", "pre_in")
    t = {name: torch.as_tensor(f[name][()]) for name in (*names, "adaptive", "x", target_name)}
    inhibitory = torch.as_tensor(np.array([_text(c) == "I" for c in f["cell_type"][()]]))
    runtime.configure(cfg.run.threads)  # the same float path as the training process
    n, n_in = cfg.network.n_rec, t["x"].shape[-1]
    syn = Synapses(*(t[k].long() for k in ("post_rec", "pre_rec", "post_in", "pre_in")))
    w_in, w_rec = syn.scatter(t["w_rec"].to(dtype), t["w_in"].to(dtype), n, n_in)
    params = ALIFParams.from_config(cfg.network, t["adaptive"].bool()).to("cpu", dtype)
    snap = Snapshot(
        Weights(w_in, w_rec, t["w_out"].to(dtype), t["b_out"].to(dtype)), params, inhibitory
    )
    target = t[target_name].long() if loss_kind == "cross_entropy" else t[target_name].to(dtype)
    if "mask" in f:
        mask = torch.as_tensor(f["mask"][()]).bool()
    else:  # schema 1: the evidence task, one target per trial read at the last step
        n_steps = t["x"].shape[0]
        target = target.expand(n_steps, -1)
        mask = torch.zeros(n_steps, target.shape[1], dtype=torch.bool)
        mask[-1] = True
    batch = TaskBatch(t["x"].to(dtype), target, mask)
    fwd = forward(snap, batch, loss_of(cfg, loss_kind), lean=not full)
    return cfg, snap, fwd, syn


def recompute(path: str | Path, everything: bool = False) -> dict[str, float]:
    """Relative max error between recomputed and recorded gradients, per ``rule_matrix``; with
    ``everything`` also of every other quantity that follows from the recorded weights and
    inputs (check 2 of the module docstring)."""
    with h5py.File(path, "r") as f:
        rules = [_text(r) for r in f["rule"][()]]
        groups = tuple(g for name, g in _GROUP_OF.items() if name in f)
        cfg, snap, fwd, syn = _rebuild(f, full=everything and bool(groups))
        rec_idx, in_idx = (syn.rec_post, syn.rec_pre), (syn.in_post, syn.in_pre)
        grads, errors = {}, {}
        for i, rule in enumerate(rules):
            g = grads[rule] = get_rule(rule)(snap, fwd)
            errors[f"{rule}_rec"] = _rel(g.w_rec[rec_idx].numpy(), f["grad_rec"][i])
            errors[f"{rule}_in"] = _rel(g.w_in[in_idx].numpy(), f["grad_in"][i])
        if not everything:
            return errors
        metric = _text(f.attrs.get("metric", "accuracy"))
        for name, value in [
            ("grad_out", grads["bptt"].w_out),
            ("grad_b_out", grads["bptt"].b_out),
            ("loss", fwd.ro.loss),
            (metric, fwd.ro.metric),
        ]:
            if name in f:
                errors[name] = _rel(value.numpy(), f[name][()])
        errors.update(_recompute_streams(f, rules, groups, snap, fwd, syn))
        errors.update(_update_checks(f, cfg, rules))
    return errors


def _recompute_streams(f, rules, groups, snap, fwd, syn) -> dict[str, float]:
    """Every recorded per-step variable against its recomputation, chunk by chunk."""
    if not groups:
        return {}
    dt = float(np.asarray(f.attrs.get("dt_ms", 1.0)).item())
    times = f["time"][()]
    t0 = int(round(float(times[0]) / dt)) if times.size else 0
    win = Window(
        groups, tuple(rules), tuple(int(i) for i in f["trial"][()]), t0, t0 + times.size, syn
    )
    float_dtype = (
        np.float16 if any(f[n].dtype == np.float16 for n in _GROUP_OF if n in f) else np.float32
    )
    diff: dict[str, float] = {}
    scale: dict[str, float] = {}
    for name, key, part in streams(win, snap, fwd, lambda name: time_chunk(f, name)):
        if name not in f:  # y: schema 1 did not record it
            continue
        got = cast(name, part, float_dtype).numpy().astype(np.float64)
        stored = f[name][key].astype(np.float64)
        diff[name] = max(diff.get(name, 0.0), float(np.abs(got - stored).max(initial=0)))
        scale[name] = max(scale.get(name, 0.0), float(np.abs(stored).max(initial=0)))
    errors = {}
    for name, d in diff.items():
        # values stored in float16 may round to the neighbouring float16 of their recomputation
        floor = 2 * float(np.finfo(np.float16).eps) if f[name].dtype == np.float16 else 0.0
        rel = d / scale[name] if scale[name] > 0 else d
        errors[name] = 0.0 if rel <= floor else rel
    return errors


def _update_checks(f, cfg, rules) -> dict[str, float]:
    """The recorded weight change: Dale's law after it (the fraction of synapses that break
    it); at iteration 0 the optimiser's first step on the training rule's recorded gradient
    (relative error; its state is empty there)."""
    errors = {}
    cell_e = np.array([_text(c) == "E" for c in f["cell_type"][()]])
    sign_rec = np.where(cell_e[f["pre_rec"][()]], 1.0, -1.0)
    sign_in = f["input_sign"][()][f["pre_in"][()]].astype(np.float64)
    bad = 0
    for part, sign in (("rec", sign_rec), ("in", sign_in)):
        w, dw = f[f"w_{part}"][()].astype(np.float64), f[f"dw_{part}"][()].astype(np.float64)
        tol = 1e-6 * max(float(np.abs(w).max(initial=0)), 1e-30)
        bad += int((sign * (w + dw) < -tol).sum() + (sign * w < -tol).sum())
    errors["update_dale"] = bad / max(1, f["w_rec"].size + f["w_in"].size)
    training = _text(f.attrs.get("training_rule", ""))
    if int(np.asarray(f.attrs.get("iteration", -1)).item()) != 0 or training not in rules:
        return errors
    t, r = cfg.train, rules.index(training)
    first = math.sqrt(1 - t.adam_beta2)  # TF Adam's first step: lr * g / (|g| + eps / first)
    worst = 0.0
    for w_name, dw_name, grad, constrained in [  # constrained: sign, guard, l1, reconnection
        ("w_rec", "dw_rec", f["grad_rec"][r], True),
        ("w_in", "dw_in", f["grad_in"][r], True),
        ("w_out", "dw_out", f["grad_out"][()], True),
        ("b_out", "db_out", f["grad_b_out"][()], False),
    ]:
        w, dw, g = (np.asarray(a, np.float64) for a in (f[w_name][()], f[dw_name][()], grad))
        after = w + dw
        sign, keep = np.ones_like(w), np.ones(w.shape, bool)
        if constrained:  # connected before and after, not revived at reconnect_eps
            sign = np.sign(w)
            keep = (w != 0) & (after != 0) & ~np.isclose(np.abs(after), t.reconnect_eps)
        g_theta = sign * g
        d_theta = -t.lr * first * g_theta / (first * np.abs(g_theta) + t.adam_eps)
        expected = sign * (d_theta - (t.lr * t.l1 if constrained else 0.0))
        # dw = after - before was rounded in the stored dtype: allow that rounding
        rounding = 4 * np.finfo(f[dw_name].dtype).eps * (np.abs(w) + np.abs(after))
        excess = (np.abs(dw - expected) - rounding)[keep]
        if excess.size:
            worst = max(worst, max(float(excess.max()), 0.0) / np.abs(expected[keep]).max())
    errors["update_first_step"] = worst
    return errors


@dataclass
class Report:
    """What :func:`verify_file` found in one record.

    Attributes:
        problems: integrity failures (unreadable chunks, checksums that differ or lack).
        errors: check name -> relative error of the recomputed against the recorded values.
        contract: the largest relative error of signals times traces (None: not checkable).
        why: why the contraction could not be checked.
    """

    path: Path
    problems: list[str] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    contract: float | None = None
    why: str = ""

    @property
    def recomputed(self) -> float:
        return max(self.errors.values(), default=0.0)

    def failures(self, tolerance: float) -> list[str]:
        """Every problem, and every check whose error exceeds ``tolerance``."""
        bad = [
            f"{name}: relative error {e:.2e}" for name, e in self.errors.items() if e > tolerance
        ]
        if self.contract is not None and self.contract > tolerance:
            bad.append(f"signal x trace: relative error {self.contract:.2e}")
        return self.problems + bad

    def ok(self, tolerance: float) -> bool:
        return not self.failures(tolerance)


def verify_file(path: str | Path) -> Report:
    """Every check of one record (module docstring)."""
    report = Report(Path(path))
    try:
        report.problems = integrity(path)
        if report.problems:  # damaged: recomputing would only repeat what is known
            return report
        report.errors = recompute(path, everything=True)
    except (OSError, KeyError, ValueError, TypeError) as err:  # not a record of this schema
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        report.problems = [f"not a readable record ({type(err).__name__}: {reason})"]
        return report
    try:
        report.contract = max(contract(path).values())
    except ValueError as err:
        report.why = str(err).split(": ", 1)[-1]
    return report


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
