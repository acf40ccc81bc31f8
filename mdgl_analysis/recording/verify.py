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
3. **Contract** (when signals and traces were recorded):
   ``sum_{time, trial} learning_signal[rule, ..., post] * e[..., synapse]``, computed lazily chunk
   by chunk, must equal every rule's gradient, BPTT included (spec I.3). With every trial and the
   whole trial recorded it is compared with the recorded gradients. With a subset of the trials
   or a time window it is compared with a reference that never touches a trace (see
   :func:`subset_gradients`): each rule's signal, computed on the whole recomputed batch (so with
   the batch's normalisation), kept on the recorded trials and steps and zero elsewhere, run
   through the backward adjoint recursion of :mod:`mdgl_analysis.rules.adjoint`. Trials are
   independent (the loss is a sum of per-trial terms divided by the batch's count of masked
   steps; the modulatory signals mix cells, never trials; the rate regulariser's term is a
   constant of the batch), and ``sum_t s(t) e(t) = sum_t lam(t) u(t)`` holds for any signal
   ``s``, so zeroing ``s`` outside the window gives the windowed sum exactly.
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
from mdgl_analysis.network.model import Forward, Snapshot, Weights, forward, loss_of
from mdgl_analysis.network.neuron import ALIFParams
from mdgl_analysis.recording import schema
from mdgl_analysis.recording.schema import CHECKSUM, digest_update
from mdgl_analysis.recording.traces import Synapses
from mdgl_analysis.recording.writer import Window, cast, streams, time_chunk
from mdgl_analysis.rules import get_rule
from mdgl_analysis.rules.adjoint import adjoint, synaptic_gradients
from mdgl_analysis.rules.bptt import bptt_credit
from mdgl_analysis.rules.local import signal_of
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
    feedback = torch.as_tensor(f["feedback"][()]).to(dtype) if "feedback" in f else None
    weights = Weights(w_in, w_rec, t["w_out"].to(dtype), t["b_out"].to(dtype))
    snap = Snapshot(weights, params, inhibitory, rules=cfg.rules, feedback=feedback)
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
        scope: what the contraction covered (``"every trial"``, ``"8 of 32 trials"``, with the
            time window when it is not the whole trial; see :func:`contraction_scope`).
        why: why the contraction could not be checked.
    """

    path: Path
    problems: list[str] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    contract: float | None = None
    scope: str = ""
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
            bad.append(f"signal x trace ({self.scope}): relative error {self.contract:.2e}")
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
        report.scope = contraction_scope(path)
    except ValueError as err:
        report.why = str(err).split(": ", 1)[-1]
    return report


# ------------------------------------------------------------------------------------------------
# 3. contract


def _window(f: h5py.File) -> tuple[list[int], int, int]:
    """The recorded trials (indices into the batch) and steps ``[t0, t1)`` of a record."""
    dt = float(np.asarray(f.attrs.get("dt_ms", 1.0)).item())
    times = f["time"][()]
    t0 = int(round(float(times[0]) / dt)) if times.size else 0
    return [int(i) for i in f["trial"][()]], t0, t0 + times.size


def _whole(f: h5py.File) -> bool:
    """Every trial and the whole trial recorded."""
    trials, t0, t1 = _window(f)
    return len(trials) == f["batch"].size and (t0, t1) == (0, f["input_time"].size)


def contraction_scope(path: str | Path) -> str:
    """What the contraction of a record covers, in words: ``"every trial"``, ``"8 of 32
    trials"``, followed by the window when it is not the whole trial (``", 0-400 of 800 ms"``)."""
    with h5py.File(path, "r") as f:
        trials, t0, t1 = _window(f)
        batch, n_steps = f["batch"].size, f["input_time"].size
        dt = float(np.asarray(f.attrs.get("dt_ms", 1.0)).item())
    text = "every trial" if len(trials) == batch else f"{len(trials)} of {batch} trials"
    if (t0, t1) != (0, n_steps):
        text += f", {t0 * dt:g}-{t1 * dt:g} of {n_steps * dt:g} ms"
    return text


def subset_gradients(
    snap: Snapshot, fwd: Forward, rules: list[str], trials: list[int], t0: int, t1: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``sum_{b in trials, t0 <= t < t1} s_p(t) e_pq(t)`` of every rule, without any trace.

    Each rule's signal ``s`` is computed on the whole batch of ``fwd`` (so with its
    normalisation: the loss divides by the batch's count of masked steps, the rate regulariser
    uses the batch's rates): ``L_tot`` of spec I.3 for ``bptt`` (the signal that BPTT pairs with
    the traces), :func:`~mdgl_analysis.rules.local.signal_of` for a local rule. It is kept on
    ``trials`` and ``[t0, t1)``, set to zero elsewhere, and run through the adjoint recursion of
    each cell's own dynamics (:func:`~mdgl_analysis.rules.adjoint.adjoint` without the recurrent
    term): ``sum_t s(t) e(t) = sum_t lam(t) u(t)`` for any signal, so this is the windowed sum
    over the trials, computed backwards in time from the weights and inputs alone. With every
    trial and the whole trial it is each rule's gradient.

    Args:
        snap: the weights and constants; fwd: the forward pass of the whole batch (a lean one
            suffices: ``z``, ``psi``, readout and learning signal).
        rules: rule names; trials: indices into the batch; t0, t1: the steps ``[t0, t1)``.
    Returns:
        rule -> ``(g_in [neuron, input], g_rec [neuron, neuron])`` (W_rec diagonal zero).
    """
    idx = torch.as_tensor(trials, dtype=torch.long, device=fwd.x.device)
    psi = fwd.traj.psi[:t1].index_select(1, idx)  # lam(t) = 0 after t1: the signal is zero
    z = fwd.traj.z[:t1].index_select(1, idx)
    x = fwd.x[:t1].index_select(1, idx)
    out = {}
    for rule in rules:
        whole = bptt_credit(snap, fwd)[1] if rule == "bptt" else signal_of(rule, snap, fwd)
        signal = whole[:t1].index_select(1, idx)  # a copy
        del whole
        signal[:t0] = 0.0
        lam, _ = adjoint(signal, psi, snap.params)
        out[rule] = synaptic_gradients(lam, x, z)
    return out


def reference_gradients(path: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """What the contraction of a record must equal: ``(rule, "rec" | "in")`` -> ``[synapse]``.

    With every trial and the whole trial recorded, the recorded gradients (which
    :func:`recompute` checks); otherwise :func:`subset_gradients` of the recorded trials and
    steps, recomputed from the record's weights and inputs of the whole batch.
    """
    with h5py.File(path, "r") as f:
        rules = [_text(r) for r in f["rule"][()]]
        if _whole(f):
            return {
                (rule, part): f[f"grad_{part}"][i].astype(np.float64)
                for i, rule in enumerate(rules)
                for part in ("rec", "in")
            }
        trials, t0, t1 = _window(f)
        _, snap, fwd, syn = _rebuild(f, full=False)
    grads = subset_gradients(snap, fwd, rules, trials, t0, t1)
    idx = {"rec": (syn.rec_post, syn.rec_pre), "in": (syn.in_post, syn.in_pre)}
    return {
        (rule, part): g[k][idx[part]].numpy().astype(np.float64)
        for rule, g in grads.items()
        for k, part in ((0, "in"), (1, "rec"))
    }


_HALF = np.finfo(np.float16)
_U16 = float(_HALF.eps) / 2  # unit roundoff of float16
_A16 = float(_HALF.smallest_subnormal) / 2  # largest rounding error of a subnormal float16


def _contraction(path: str | Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """``(rule, part)`` -> ``(total, rounding)``: the float64 sum of signal x trace over what the
    record holds, and how far rounding the signals and traces to float16 can have moved it (zero
    unless they are stored in float16).

    With ``A = |stored signal|``, ``E = |stored trace|``, ``u`` float16's unit roundoff and ``a``
    the rounding error of its subnormals, the value before rounding differs from the stored one
    by at most ``(u A + a) / (1 - u)``, so each product by at most
    ``c1 A E + c2 (A + E) + c3`` (constants below), summed over time and trials.
    """
    import xarray as xr

    from mdgl_analysis.recording.readers import open_record

    ds = open_record(path)
    try:
        missing = [v for v in ("learning_signal", "e_rec", "e_in") if v not in ds]
        if missing:
            raise ValueError(f"{path}: not recorded: {', '.join(missing)} (record.quantities)")
        half = any(ds[v].dtype == np.float16 for v in ("learning_signal", "e_rec", "e_in"))
        out = {}
        for part, post in (("rec", "post_rec"), ("in", "post_in")):
            rename = {"neuron": f"synapse_{part}"}
            neurons = ds[post].values.astype(int)
            signal = ds.learning_signal.astype("float64").isel(neuron=neurons).rename(rename)
            trace = ds[f"e_{part}"].astype("float64")
            lazy = [(signal * trace).sum(("time", "trial"))]
            if half:
                lazy += [
                    (abs(signal) * abs(trace)).sum(("time", "trial")),
                    abs(ds.learning_signal.astype("float64"))
                    .sum(("time", "trial"))
                    .isel(neuron=neurons)
                    .rename(rename),
                    abs(trace).sum(("time", "trial")),
                ]
            done = xr.Dataset({str(i): v for i, v in enumerate(lazy)}).compute()
            u, a = _U16, _A16
            c1 = 2 * u / (1 - u) + u * u / (1 - u) ** 2
            c2 = a / (1 - u) + u * a / (1 - u) ** 2
            c3 = a * a / (1 - u) ** 2 * ds.sizes["time"] * ds.sizes["trial"]
            for rule in ds.rule.values:
                total = done["0"].sel(rule=rule).values
                rounding = np.zeros_like(total)
                if half:
                    ae, sum_a = done["1"].sel(rule=rule).values, done["2"].sel(rule=rule).values
                    rounding = c1 * ae + c2 * (sum_a + done["3"].values) + c3
                out[_text(rule), part] = (total, rounding)
    finally:
        ds.close()
    return out


def contraction_totals(path: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """``sum_{time, trial} learning_signal[rule, :, :, post] * e[:, :, synapse]`` over what the
    record holds, in float64, lazily chunk by chunk: ``(rule, "rec" | "in")`` -> ``[synapse]``.

    Raises ValueError when the record lacks signals or traces.
    """
    return {key: total for key, (total, _) in _contraction(path).items()}


def contract(path: str | Path) -> dict[str, float]:
    """Relative max error of the signal-times-trace sums (:func:`contraction_totals`) against
    what they must equal (:func:`reference_gradients`), per ``rule_matrix``. Signals and traces
    stored in float16 are allowed the change that their rounding can make (:func:`_contraction`),
    as the recomputed float16 variables are.

    Raises ValueError when the file lacks signals or traces.
    """
    totals = _contraction(path)
    reference = reference_gradients(path)
    errors = {}
    for (rule, part), (total, rounding) in totals.items():
        ref = reference[rule, part]
        excess = float(np.maximum(np.abs(total - ref) - rounding, 0.0).max(initial=0.0))
        scale = float(np.abs(ref).max(initial=0.0))
        errors[f"{rule}_{part}"] = excess / scale if scale > 0 else excess
    return errors
