"""The contraction check of ``mdgl verify`` on records of some trials and of a time window.

The sum of signal x trace over the recorded trials and steps is compared with a reference
computed without any trace: each rule's signal on the whole recomputed batch, kept on the
recorded trials and steps, run through the backward adjoint recursion. These tests show that the
check passes on honest records, that the reference is each rule's gradient of those trials, and
that it fails on a tampered trace and against a wrong reference.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from mdgl_analysis import cli
from mdgl_analysis import config as config_mod
from mdgl_analysis.recording.readers import record_files
from mdgl_analysis.recording.verify import (
    _contraction,
    _rebuild,
    _rel,
    contract,
    contraction_scope,
    contraction_totals,
    integrity,
    reference_gradients,
    subset_gradients,
    verify_file,
)
from mdgl_analysis.recording.writer import CHECKSUM, digest_update
from mdgl_analysis.rules import RULES as ALL_RULES
from mdgl_analysis.rules import get_rule
from mdgl_analysis.training.loop import start

from helpers import small_config

RULES = list(ALL_RULES)
TRIALS = [1, 3, 4]  # of a batch of 6
WINDOW = dict(t_start_ms=13.0, t_stop_ms=41.0)  # steps 13..40 of 75


def config(**record):
    """12 cells, a batch of 6, the rate regulariser on (a term shared by the whole batch)."""
    cfg = small_config(iterations=1, val_every=1, rule="mdgl", compare_every=0, reg_rate=0.1)
    rec = dict(every=1, quantities="state,signals,traces", chunk_mb=0.02) | record
    cfg = replace(
        cfg,
        train=replace(cfg.train, batch=6, val_batch=6),
        record=replace(cfg.record, **rec),
    )
    return config_mod.validate(cfg)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The iteration-0 record of the same run recorded three ways (same seed, same batch)."""
    root = tmp_path_factory.mktemp("subset")
    trials = ",".join(map(str, TRIALS))
    kinds = {"full": {}, "trials": dict(trials=trials), "window": dict(trials=trials, **WINDOW)}
    out = {}
    for name, record in kinds.items():
        run, status = start(config(**record), root / name, ["test"], progress=False)
        assert status == "completed"
        out[name] = record_files(run.path)[0]
    return out


def _rechecksum(f: h5py.File, name: str) -> None:
    hasher = hashlib.sha256()
    digest_update(hasher, np.asarray(f[name][()]))
    f[name].attrs[CHECKSUM] = hasher.hexdigest()


@pytest.mark.parametrize("kind", ["trials", "window"])
def test_a_record_of_some_trials_contracts_to_the_gradient_of_those_trials(records, kind, capsys):
    path = records[kind]
    errors = contract(path)
    assert set(errors) == {f"{r}_{p}" for r in RULES for p in ("rec", "in")}
    assert max(errors.values()) < 2e-6, errors  # float32 storage
    with h5py.File(path, "r") as f:  # not vacuous: spikes in the recorded trials and steps ...
        assert f["z"][()].sum() > 0 and f["trial"].size == len(TRIALS)
    reference = reference_gradients(path)  # ... and every reference gradient nonzero
    assert all(np.abs(g).max() > 0 for g in reference.values())
    scope = "3 of 6 trials" + (", 13-41 of 75 ms" if kind == "window" else "")
    assert contraction_scope(path) == scope
    capsys.readouterr()
    assert cli.main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"signal x trace ({scope}) max rel. error" in out, out
    assert "signal x trace checked in 1 of 1 record(s)" in out, out


def test_the_full_record_still_contracts_to_the_recorded_gradients(records, capsys):
    path = records["full"]
    assert contraction_scope(path) == "every trial"
    assert max(contract(path).values()) < 2e-6
    report = verify_file(path)
    assert report.ok(1e-5) and report.scope == "every trial" and report.contract is not None


def test_the_reference_is_each_rules_gradient_of_the_recorded_trials(records):
    """Computed on the whole batch, the reference of every trial and step is the recorded
    gradient; of a subset, it is each rule applied to the forward pass of those trials alone
    (for BPTT by its own recursion through W_rec, not through L_tot); subsets add up."""
    full = records["full"]
    with h5py.File(full, "r") as f:
        _, snap, fwd, syn = _rebuild(f, full=False)
        recorded = {p: f[f"grad_{p}"][()] for p in ("rec", "in")}
    n_steps, batch = fwd.x.shape[:2]
    idx = {"rec": (syn.rec_post, syn.rec_pre), "in": (syn.in_post, syn.in_pre)}

    def flat(grads):  # rule -> (g_in, g_rec) dense -> (rule, part) -> [synapse]
        return {
            (r, part): g[k][idx[part]].double().numpy()
            for r, g in grads.items()
            for k, part in ((0, "in"), (1, "rec"))
        }

    every = flat(subset_gradients(snap, fwd, RULES, list(range(batch)), 0, n_steps))
    for (r, part), g in every.items():
        assert _rel(g, recorded[part][RULES.index(r)]) < 1e-6, (r, part)

    some = flat(subset_gradients(snap, fwd, RULES, TRIALS, 0, n_steps))
    rest = [b for b in range(batch) if b not in TRIALS]
    others = flat(subset_gradients(snap, fwd, RULES, rest, 0, n_steps))
    for key, g in every.items():
        assert _rel(some[key] + others[key], g) < 1e-6, key
        assert _rel(some[key], g) > 1e-2, key  # the subset is not the whole batch

    pick = torch.tensor(TRIALS)
    traj = fwd.traj._replace(
        **{k: getattr(fwd.traj, k).index_select(1, pick) for k in ("z", "refractory", "psi")}
    )
    ro = fwd.ro._replace(  # the rate (regulariser) stays the batch's
        **{k: getattr(fwd.ro, k).index_select(1, pick) for k in ("y", "dy", "dy_bar")}
    )
    alone = fwd._replace(
        x=fwd.x.index_select(1, pick),
        target=fwd.target.index_select(1, pick),
        mask=fwd.mask.index_select(1, pick),
        traj=traj,
        ro=ro,
        signal=fwd.signal.index_select(1, pick),
    )
    by_rule = flat({r: get_rule(r)(snap, alone)[:2] for r in RULES})
    for key, g in by_rule.items():
        assert _rel(some[key], g) < 1e-6, key


def _tamper_trace(path) -> None:
    """The largest recurrent trace of the second recorded trial (batch index 3) 5% larger, its
    checksum rewritten so that only recomputation can catch it."""
    with h5py.File(path, "r+") as f:
        e = f["e_rec"][()]
        trial = e[:, 1]
        t, s = np.unravel_index(int(np.abs(trial).argmax()), trial.shape)
        e[t, 1, s] *= 1.05
        f["e_rec"][...] = e
        _rechecksum(f, "e_rec")
    assert integrity(path) == []


def test_a_trace_tampered_in_one_recorded_trial_fails_the_contraction(records, tmp_path):
    for kind in ("trials", "window"):
        path = tmp_path / f"{kind}.h5"
        shutil.copy(records[kind], path)
        _tamper_trace(path)
        errors = contract(path)
        assert max(errors.values()) > 1e-4, errors
        report = verify_file(path)
        assert not report.ok(1e-5) and report.contract > 1e-4
        assert any(
            line.startswith("signal x trace (3 of 6 trials") for line in report.failures(1e-5)
        )


def test_a_wrong_reference_fails_the_same_comparison(records):
    """The subset's contraction against the recorded gradients of the whole batch, and the
    window's against the reference of the whole trial, both fail: the comparison sees it."""
    with h5py.File(records["full"], "r") as f:
        recorded = {p: f[f"grad_{p}"][()] for p in ("rec", "in")}
    totals = contraction_totals(records["trials"])
    for (rule, part), total in totals.items():
        assert _rel(total, recorded[part][RULES.index(rule)]) > 1e-2, (rule, part)

    path = records["window"]
    with h5py.File(path, "r") as f:
        _, snap, fwd, syn = _rebuild(f, full=False)
    whole_trial = subset_gradients(snap, fwd, RULES, TRIALS, 0, fwd.x.shape[0])
    windowed = contraction_totals(path)
    for rule, (_, g_rec) in whole_trial.items():
        wrong = g_rec[syn.rec_post, syn.rec_pre].double().numpy()
        assert _rel(windowed[rule, "rec"], wrong) > 1e-2, rule


def test_float16_records_are_allowed_their_rounding_and_no_more(tmp_path):
    run, _ = start(
        config(dtype="float16", trials="1,3,4"), tmp_path / "half", ["test"], progress=False
    )
    path = record_files(run.path)[0]
    reference = reference_gradients(path)
    raw = max(_rel(total, reference[key]) for key, (total, _) in _contraction(path).items())
    assert raw > 1e-5  # float16 rounding alone exceeds the default tolerance ...
    assert max(contract(path).values()) < 1e-6  # ... and is all there is
    assert verify_file(path).ok(1e-5)
    tampered = tmp_path / "tampered.h5"  # a new file: readers keep the record open
    shutil.copy(path, tampered)
    _tamper_trace(tampered)
    assert max(contract(tampered).values()) > 1e-4  # a 5% change of one trace is not rounding
