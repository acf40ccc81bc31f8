"""Recording, verification and analysis for tasks other than evidence: a regression task (MSE at
every step) and a user's task from a file (cross-entropy at many steps)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mdgl_analysis as m
from mdgl_analysis import analysis, cli
from mdgl_analysis.training.loop import ResumeError

from helpers import USER_TASK

SMALL = {
    "network.n_regular": 10,
    "network.n_adaptive": 10,
    "train.iterations": 3,
    "train.compare_every": 1,
    "record.every": 2,
    "record.trials": "all",
    "record.quantities": "state,signals,credit,traces",
}


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pattern") / "run"
    params = {"task.duration_ms": 120, "task.n_in": 12, "train.batch": 2, "train.val_batch": 2}
    return m.train("demo", task="pattern", rule="mdgl", set={**SMALL, **params}, out=out)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_task.py").write_text(USER_TASK)
    params = {"task.n_steps": 150, "train.batch": 4, "train.val_batch": 4}
    task = f"{folder / 'my_task.py'}:MyTask"
    return m.train("demo", task=task, rule="eprop", set={**SMALL, **params}, out=folder / "run")


def test_a_regression_run_records_targets_mask_and_outputs_and_passes_both_checks(pattern_run):
    ds = pattern_run.records()
    assert list(ds.iteration.values) == [0, 2]
    assert ds.target_value.dims == ("iteration", "input_time", "batch", "output")
    assert ds.mask.dims == ("iteration", "input_time", "batch") and bool(ds.mask.all())
    assert ds.y.sizes["output"] == 3 and "nmse" in ds and "accuracy" not in ds
    assert ds.attrs["loss"] == "mse" and ds.attrs["metric"] == "nmse"
    for report in pattern_run.verify().values():
        assert report.ok(1e-5) and report.contract is not None and len(report.errors) > 20
    metrics = pattern_run.metrics()
    assert {"nmse", "loss"} <= set(metrics.name) and "accuracy" not in set(metrics.name)


def test_a_users_task_run_records_verifies_and_analyses(user_run):
    ds = user_run.records()
    assert ds.target.dims == ("iteration", "input_time", "batch")
    assert int(ds.mask.isel(iteration=0).sum()) == 50 * 4
    for report in user_run.verify().values():
        assert report.ok(1e-5) and report.contract is not None and len(report.errors) > 20
    result = analysis.gradient_alignment(ds, by="matrix").compute()
    cos = result.cosine.sel(rule="mdgl", part="rec")
    assert bool((abs(cos) <= 1).all()) and float(abs(cos).max()) > 0
    assert user_run.meta["task"]["name"].endswith("my_task.py:MyTask")
    assert user_run.meta["task"]["metric"] == "accuracy"


def test_a_users_task_run_resumes_only_from_the_task_file_its_user_names(user_run, tmp_path):
    """A received run folder names a task file; resuming would import it, so it is refused until
    the user names that file (unchanged since training) on the command line."""
    name = user_run.meta["task"]["name"]
    task_file = Path(name.rpartition(":")[0])
    marker = tmp_path / "imported"
    before = task_file.read_text()
    task_file.write_text(before + f"\nopen({str(marker)!r}, 'a').write('x')\n")
    try:
        for argv in (
            ["resume", str(user_run.path), "--iterations", "4", "--no-progress"],
            ["resume", str(user_run.path), "--iterations", "4", "--task", "other.py:MyTask"],
        ):
            assert cli.main(argv) == 2
            assert not marker.exists()  # refused before anything was imported
        with pytest.raises(ResumeError, match="changed since"):
            m.resume(user_run, iterations=4, task=name)
        assert not marker.exists()
    finally:
        task_file.write_text(before)
    run = m.resume(user_run, iterations=4, task=name)
    assert run.status == "completed" and run.meta["iteration"] == 4
