"""Sweeps: every (rule, seed) its own run, resumable, one failure does not stop the others."""

from __future__ import annotations

import json

import pytest

from mdgl_analysis.cli import main
from mdgl_analysis.config import ConfigError
from mdgl_analysis.training.sweep import parse_rules, parse_seeds

TINY = [
    "--set",
    "task.delay_ms=50",
    "--set",
    "task.cue_ms=20",
    "--set",
    "task.gap_ms=10",
    "--set",
    "record.every=0",
    "--set",
    "train.batch=8",
    "--set",
    "train.val_batch=8",
]


def test_seeds_and_rules_are_parsed_and_bad_ones_named():
    assert parse_seeds("1-3") == [1, 2, 3] and parse_seeds("4,2") == [4, 2]
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("1-x")
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("1,1")
    assert parse_rules("bptt,mdgl") == ["bptt", "mdgl"]
    with pytest.raises(ConfigError, match="eprop"):
        parse_rules("bptt,backprop")


@pytest.mark.slow
def test_sweep_runs_every_pair_skips_completed_ones_and_survives_a_failure(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "eprop-s2").mkdir(parents=True)  # a broken folder where one run should go
    (out / "eprop-s2" / "run.json").write_text("{")
    (out / "eprop-s2" / "config.toml").write_text("")
    args = [
        "sweep",
        "demo",
        "--rules",
        "bptt,eprop",
        "--seeds",
        "1-2",
        "--iterations",
        "2",
        "--jobs",
        "2",
        "--out",
        str(out),
        *TINY,
    ]
    assert main(args) == 1  # one run failed
    manifest = json.loads((out / "sweep.json").read_text())
    status = {(r["rule"], r["seed"]): r["status"] for r in manifest["runs"]}
    assert status == {
        ("bptt", 1): "completed",
        ("bptt", 2): "completed",
        ("eprop", 1): "completed",
        ("eprop", 2): "failed",
    }
    assert (out / "config.toml").is_file()
    capsys.readouterr()
    # repaired, the sweep runs again: completed runs are skipped, the failed one now runs
    for f in (out / "eprop-s2").iterdir():
        f.unlink()
    (out / "eprop-s2").rmdir()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("already completed") == 3
    manifest = json.loads((out / "sweep.json").read_text())
    assert all(r["status"] == "completed" for r in manifest["runs"])
    # more iterations resume every run instead of starting again
    assert main([*args[:6], "--iterations", "3", *args[8:]]) == 0
    for r in manifest["runs"]:
        meta = json.loads(
            (tmp_path / "sweep" / f"{r['rule']}-s{r['seed']}" / "run.json").read_text()
        )
        assert meta["iteration"] == 3 and meta["resumed"]


def test_sweep_refuses_a_folder_made_with_another_configuration(tmp_path):
    out = tmp_path / "s"
    base = [
        "sweep",
        "demo",
        "--rules",
        "bptt",
        "--seeds",
        "1",
        "--iterations",
        "1",
        "--out",
        str(out),
        *TINY,
    ]
    assert main(base) == 0
    assert main([*base, "--set", "train.lr=0.1"]) == 2


def test_a_sweep_says_as_each_run_starts_and_how_each_ended_with_two_jobs(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "eprop-s1").mkdir(parents=True)  # a broken folder where one run should go
    (out / "eprop-s1" / "run.json").write_text("{")
    args = ["sweep", "demo", "--rules", "bptt,eprop", "--seeds", "1", "--iterations", "1"]
    assert main([*args, "--jobs", "2", "--out", str(out), *TINY]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    started = [line.split() for line in lines if line.startswith("started")]
    assert sorted((words[1], words[3]) for words in started) == [("bptt", "1"), ("eprop", "1")]
    ended = [line.split() for line in lines if line.startswith(("completed", "failed"))]
    assert sorted((w[0], w[1], w[3]) for w in ended) == [
        ("completed", "bptt", "1"),
        ("failed", "eprop", "1"),
    ]
    assert sorted(w[-1] for w in ended) == ["[1/2]", "[2/2]"]  # runs ended out of runs
    # each run's start is said before its end; stderr is no terminal here: no progress bar
    for rule in ("bptt", "eprop"):
        said = [i for i, line in enumerate(lines) if f" {rule} " in line]
        assert len(said) == 2 and lines[said[0]].startswith("started")
    assert "\r" not in captured.err and "run/s" not in captured.err
