"""Run folders are safe to receive: checkpoints are never unpickled as code, a damaged checkpoint
falls back to the newest intact one, and one process at a time writes a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from mdgl_analysis.cli import main
from mdgl_analysis.training.runs import RunFolder, RunFolderError

FAST = ["--preset", "demo", "--set", "task.delay_ms=50", "--set", "train.compare_every=0"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A completed 3-iteration run with a checkpoint after every iteration."""
    path = tmp_path_factory.mktemp("template") / "r"
    argv = ["train", *FAST, "--iterations", "3", "--set", "run.checkpoint_every=1"]
    assert main([*argv, "--no-progress", "--out", str(path)]) == 0
    assert [p.name for p in RunFolder(path).checkpoints()][-1] == "ckpt_000003.pt"
    return path


@pytest.fixture
def run(template, tmp_path):
    shutil.copytree(template, tmp_path / "r")
    return tmp_path / "r"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_never_executed_and_the_error_is_one_line(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for ckpt in RunFolder(run).checkpoints():
        torch.save({"iteration": 1, "net": _Evil(marker)}, ckpt)
    capsys.readouterr()
    assert main(["resume", str(run), "--iterations", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    assert len(err) == 1 and "no intact checkpoint" in err[0] and "ckpt_000003.pt" in err[0]
    for command in (["info", str(run)], ["verify", str(run)]):
        main(command)
        assert not marker.exists()


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(run, capsys):
    folder = RunFolder(run)
    latest = folder.checkpoints()[-1]
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated
    capsys.readouterr()
    assert main(["resume", str(run), "--iterations", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ckpt_000003.pt" in err and "resuming from ckpt_000002.pt" in err
    assert (latest.parent / "ckpt_000003.pt.damaged").is_file()  # kept, not deleted
    assert folder.meta()["iteration"] == 4 and folder.meta()["status"] == "completed"
    assert folder.meta()["resumed"][-1]["from_iteration"] == 2


def test_two_resumes_of_one_run_started_together_train_once(run):
    cmd = [sys.executable, "-m", "mdgl_analysis", "resume", str(run), "--no-progress"]
    procs = [
        subprocess.Popen([*cmd, "--iterations", "12"], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and "is in use by another process (pid " in refused[0]
    holder = next(p.pid for p, (code, _) in zip(procs, results, strict=True) if code == 0)
    assert f"(pid {holder} on " in refused[0]  # the lock file names the process that holds it
    rows = RunFolder(run).read_metrics()
    keys = [(r["iteration"], r["split"], r["name"]) for r in rows]
    assert len(keys) == len(set(keys))  # no duplicated rows
    assert max(r["iteration"] for r in rows) == 12


def test_the_lock_is_released_when_a_run_ends(run):
    folder = RunFolder(run)
    with folder.lock():
        assert folder.lock_path.read_text().startswith(f"pid {os.getpid()} on ")
        busy = f"in use by another process \\(pid {os.getpid()}"
        with pytest.raises(RunFolderError, match=busy), RunFolder(run).lock():
            pass  # a second holder, in this process too (flock is per open file)
    assert folder.lock_path.read_text() == ""
    time.sleep(0.01)
    with RunFolder(run).lock():  # a second taker succeeds once the first let go
        pass


DIVERGING = [
    "train",
    *FAST,
    "--set",
    "train.lr=1000",
    "--set",
    "train.val_every=2",
    "--set",
    "train.divergence_patience=3",
    "--iterations",
    "60",
    "--no-progress",
]


def test_a_diverging_run_is_flagged_and_stopped_with_its_checkpoints_intact(tmp_path, capsys):
    out = tmp_path / "d"
    assert main([*DIVERGING, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "diverges at iteration" in err and "stopped" in err
    folder = RunFolder(out)
    meta = folder.meta()
    assert meta["status"] == "diverged" and meta["iteration"] < 60
    assert "validation loss" in meta["diverged"]["reason"]
    for ckpt in folder.checkpoints():
        folder.load_checkpoint(ckpt)  # intact
    main(["info", str(out)])
    assert "diverged  at iteration" in capsys.readouterr().out


def test_a_sane_run_is_not_flagged_and_flagging_can_leave_a_run_going(tmp_path, capsys):
    sane = tmp_path / "s"
    argv = ["train", *FAST, "--iterations", "6", "--no-progress", "--out", str(sane)]
    assert main(argv) == 0 and "diverged" not in RunFolder(sane).meta()
    going = tmp_path / "g"
    argv = [*DIVERGING, "--set", "train.stop_on_divergence=false", "--out", str(going)]
    assert main(argv) == 0
    meta = RunFolder(going).meta()
    assert meta["status"] == "completed" and meta["iteration"] == 60 and meta["diverged"]
