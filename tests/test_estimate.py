"""``mdgl train --dry-run`` and the estimate behind it: seconds, memory, record sizes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import h5py
import pytest

import mdgl_analysis as m
from mdgl_analysis.cli import main
from mdgl_analysis.config import resolve
from mdgl_analysis.recording.writer import STRING_BYTES
from mdgl_analysis.training import estimate as E
from mdgl_analysis.training.loop import Trainer

# a 350-step trial of the evidence task, small batches
SHORT = ["task.delay_ms=50", "task.cue_ms=20", "task.gap_ms=10", "train.batch=8"]
SHORT += ["train.val_batch=8", "train.compare_every=0"]
EVERY_QUANTITY = "record.quantities=state,signals,credit,traces,eligibility"


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def listing(*folders: Path) -> list[str]:
    return sorted(
        os.path.join(root, name)
        for folder in folders
        for root, dirs, files in os.walk(folder)
        for name in dirs + files
    )


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A working directory and a temporary-file directory of the test's own, so that files
    created anywhere by the code under test show up (other processes' files do not)."""
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return work, temp


def record_bytes(path: Path) -> int:
    """Uncompressed bytes of every dataset of a record: elements x item size (a
    variable-length string: its 16-byte reference); the netCDF dimensions that are not
    variables (``synapse_rec``, ``synapse_in``) hold no data."""
    total = 0

    def add(name: str, obj) -> None:
        nonlocal total
        if not isinstance(obj, h5py.Dataset):
            return
        if str(obj.attrs.get("NAME", b"")).find("not a netCDF variable") >= 0:
            return
        item = STRING_BYTES if h5py.check_string_dtype(obj.dtype) else obj.dtype.itemsize
        total += obj.size * item

    with h5py.File(path, "r") as f:
        f.visititems(add)
    return total


def test_a_dry_run_prints_config_and_estimate_and_creates_nothing(private_tmp, capsys):
    work, temp = private_tmp
    before = listing(work, temp)
    argv = ["train", "--preset", "demo", "--iterations", "20", "--dry-run"]
    assert main([*argv, *sets([*SHORT, "record.every=10"]), "--out", "new/run"]) == 0
    out = capsys.readouterr().out
    assert "[network]" in out and 'rule = "bptt"' in out and "iterations = 20" in out
    for start in ("seconds:", "memory:", "records:", "total:"):
        assert any(line.startswith(start) for line in out.splitlines()), (start, out)
    assert "2 recorded iteration(s)" in out and "free there" in out
    # a sweep's dry run neither
    argv = ["sweep", "demo", "--rules", "bptt,eprop", "--seeds", "1-2", "--iterations", "5"]
    assert main([*argv, "--dry-run", "--jobs", "2", *sets(SHORT), "--out", "sw"]) == 0
    out = capsys.readouterr().out
    assert "rule eprop (each of 2 seed(s))" in out and "sweep: 4 runs, 2 at a time" in out
    assert listing(work, temp) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["--rule", "backprop"],
        ["--set", "train.batch=0"],
        ["--set", "record.layout=sparse"],
        ["--set", "network.n_regular=2000000"],  # cannot fit in memory
        ["--out", "existing"],
        ["--task", "missing.py:Task"],
    ],
)
def test_bad_input_with_a_dry_run_is_one_line_and_exit_status_2(private_tmp, capsys, argv):
    work, temp = private_tmp
    (work / "existing").mkdir()
    before = listing(work, temp)
    assert main(["train", "--preset", "demo", "--dry-run", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mdgl: error:") and captured.err.count("\n") == 1
    assert listing(work, temp) == before


@pytest.mark.parametrize(
    ("layout", "extra"),
    [
        ("list", [EVERY_QUANTITY, "record.trials=0-2", "run.seed=3"]),
        ("dense", ["record.quantities=state,traces", "record.trials=1", "record.dtype=float16"]),
    ],
)
def test_the_estimated_record_size_is_the_real_records_uncompressed_bytes(
    private_tmp, capsys, layout, extra
):
    work, _ = private_tmp
    small = ["network.n_regular=20", "network.n_adaptive=20", "record.t_stop_ms=300"]
    overrides = [*SHORT, *small, f"record.layout={layout}", "record.iterations=first", *extra]
    cfg = m.configure("demo", iterations=1, set=overrides)
    expected = E.record_of(cfg)
    run = m.train(cfg, out=work / "run")
    err = capsys.readouterr().err
    assert "mdgl: records:" in err and "free there" in err  # said before training
    (path,) = run.record_files()
    assert expected.data_bytes == record_bytes(path)
    assert expected.iterations == 1
    if layout == "dense":
        assert (expected.synapses_rec, expected.synapses_in) == (40 * 39, 40 * 40)
    else:  # the masks of the run's seed, counted exactly
        assert expected.synapses_rec == int(run.records().sizes["synapse_rec"])
        assert expected.synapses_rec < 40 * 39 // 4
    # on disk: approximate (a typical ratio of the codec)
    assert 0.4 < path.stat().st_size / expected.disk_bytes < 2.5


def test_the_record_schedule_and_sizes_follow_the_config():
    cfg = resolve(None, "demo", [*SHORT, "record.every=7", "record.iterations=first,last,3,99"])
    cfg = resolve(overrides=["train.iterations=20"], base=cfg)
    assert E.recorded_iterations(cfg) == [0, 3, 7, 14, 19]
    half = resolve(overrides=["record.dtype=float16"], base=cfg)
    a, b = E.record_size(cfg, 100, 50), E.record_size(half, 100, 50)
    floats = dict(a.variables)["e_rec"]
    assert dict(b.variables)["e_rec"] * 2 == floats
    assert a.total_data_bytes == 5 * a.data_bytes
    more = E.record_size(cfg, 101, 50)
    per_synapse = sum(v for k, v in more.variables) - a.data_bytes
    assert per_synapse > 0 and dict(more.variables)["e_rec"] - floats == floats // 100


def test_the_seconds_estimate_is_within_a_factor_of_two_of_a_measured_iteration():
    cfg = resolve(None, "demo", [*SHORT, "train.batch=16"])
    timing = E.measure(cfg, steps=120)  # about a third of the 350 steps, scaled by 350 / 120
    assert timing.measured_steps == 120 and timing.n_steps == cfg.n_steps == 350
    trainer = Trainer(cfg, E.runtime.resolve_device("cpu"))
    trainer.step()  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - start)
    measured = sorted(times)[2]
    assert 0.5 < timing.iteration / measured < 2.0, (timing.iteration, measured)
