"""run.tensorboard mirrors metrics.csv as TensorBoard scalars, and a resumed run writes no step
twice."""

from __future__ import annotations

from collections import Counter

import pytest

from mdgl_analysis import cli
from mdgl_analysis.training.runs import RunFolder

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

ARGV = [
    "train",
    "--preset",
    "demo",
    "--no-progress",
    "--set",
    "task.delay_ms=50",
    "--set",
    "train.val_every=1",
    "--set",
    "run.checkpoint_every=2",
    "--set",
    "run.tensorboard=true",
]


def scalars(run, tag: str) -> list[tuple[int, float]]:
    ea = EventAccumulator(str(run / "tensorboard"))
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def test_metrics_appear_as_scalars_once_per_step_also_after_a_resume(tmp_path):
    run = tmp_path / "r"
    assert cli.main([*ARGV, "--iterations", "5", "--out", str(run)]) == 0
    folder = RunFolder(run)
    folder.checkpoint_path(5).unlink()  # as if killed after iteration 4's checkpoint
    folder.checkpoint_path(4).unlink()  # ... and its events and rows of 2..4 were written
    folder.forget()
    assert cli.main(["resume", str(run), "--no-progress", "--iterations", "6"]) == 0
    rows = [r for r in folder.read_metrics() if r["split"] == "val" and r["name"] == "loss"]
    events = scalars(run, "val/loss")
    steps = Counter(step for step, _ in events)
    assert max(steps.values()) == 1, steps  # no step twice
    assert [(r["iteration"], pytest.approx(r["value"], rel=1e-6)) for r in rows] == events
    assert {step for step, _ in scalars(run, "train/accuracy")} == set(range(6))


def test_tensorboard_off_writes_no_folder(tmp_path):
    argv = [a for a in ARGV if a != "run.tensorboard=true"][:-1]
    assert cli.main([*argv, "--iterations", "1", "--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / "tensorboard").exists()
