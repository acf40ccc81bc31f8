"""A full disk (any OSError) at every write point of a run: no crash, no ``.tmp`` file, every
earlier checkpoint and record intact, the run ``failed`` with the file named, and resumable.

The disk is filled by injection, persistently (from the chosen hit of a write point on, every
write of that kind fails) and the way a full disk behaves: a write that needs new space fails
after writing part of its data; rewriting a file in place within its size succeeds. Once more
on a real 40 MB filesystem (a tmpfs mounted in a user namespace, where the machine allows it).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import h5netcdf
import pytest
import torch

from mdgl_analysis.recording import writer
from mdgl_analysis.recording.readers import record_files
from mdgl_analysis.recording.schema import iteration_of
from mdgl_analysis.recording.verify import verify_file
from mdgl_analysis.training import runs
from mdgl_analysis.training.loop import TrainingError, resume, start
from mdgl_analysis.training.runs import RunFolder

from helpers import small_config

ITERATIONS = 4


def config():
    cfg = small_config(iterations=ITERATIONS, val_every=2, rule="mdgl", compare_every=0)
    return replace(
        cfg,
        record=replace(cfg.record, every=1, quantities="state,signals,traces", chunk_mb=0.01),
        run=replace(cfg.run, checkpoint_every=1),
    )


def _full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Disk:
    """Counts the hits of every write point; from hit ``at`` of point ``fail`` on, it fails."""

    def __init__(self, monkeypatch, fail: str, at: int):
        self.fail, self.at = fail, at
        self.hits: dict[str, int] = {}
        real_open, real_replace = builtins.open, os.replace
        disk = self

        class PartialFile:
            """A file whose writes stop halfway once the disk is full."""

            def __init__(self, f, point):
                self._f, self._point = f, point

            def write(self, data):
                if disk.hit(self._point):
                    self._f.write(data[: len(data) // 2])
                    self._f.flush()
                    raise _full()
                return self._f.write(data)

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self._f.__exit__(*exc)

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if "w" in mode or "a" in mode:  # new space; "r+" rewrites in place
                return PartialFile(f, self.point_of(Path(file), mode))
            return f

        def fake_replace(src, dst):
            if disk.hit("rename " + self.point_of(Path(dst), "w")):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
            return real_replace(src, dst)

        real_digest, real_close = writer._BackgroundWriter._digest, h5netcdf.File.close

        def fake_digest(bw, name, dataset, key, array):
            if disk.hit("record chunk"):
                raise _full()
            return real_digest(bw, name, dataset, key, array)

        def fake_close(file):
            if file.mode != "r" and disk.hit("record close"):
                raise _full()
            return real_close(file)

        monkeypatch.setattr(runs, "open", fake_open, raising=False)
        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(writer._BackgroundWriter, "_digest", fake_digest)
        monkeypatch.setattr(h5netcdf.File, "close", fake_close)

    @staticmethod
    def point_of(path: Path, mode: str) -> str:
        name = path.name.removesuffix(".tmp")
        if name.endswith(".pt"):
            return "checkpoint"
        if name.endswith(".h5"):
            return "record"
        return name + (" append" if "a" in mode else "")

    def hit(self, point: str) -> bool:
        self.hits[point] = self.hits.get(point, 0) + 1
        return point == self.fail and self.hits[point] >= self.at


POINTS = {  # write point -> the hits to fail at (first, and one in the middle of the run)
    "checkpoint": (1, 3),
    "rename checkpoint": (1, 3),
    "manifest.json": (1, 4),
    "rename manifest.json": (2, 5),
    "run.json": (2, 4),
    "rename run.json": (2, 4),
    "metrics.csv append": (1, 3),
    "record chunk": (1, 40),
    "record close": (1, 3),
    "rename record": (1, 3),
}
CASES = [(point, at) for point, hits in POINTS.items() for at in hits]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and how often it hits each write point."""
    run, status = start(config(), tmp_path_factory.mktemp("ref") / "r", ["test"], progress=False)
    assert status == "completed"
    return run


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(("point", "at"), CASES, ids=[f"{p}-{a}" for p, a in CASES])
def test_a_full_disk_at_any_write_fails_the_run_cleanly_and_it_resumes(
    point, at, reference, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "r"
    with monkeypatch.context() as m:
        disk = Disk(m, point, at)
        with pytest.raises((TrainingError, OSError)) as exc:
            start(config(), path, ["test"], progress=False)
        assert disk.hits[point] >= at, f"the point was hit only {disk.hits.get(point)} times"
    message = str(exc.value)
    assert "\n" not in message and "No space left on device" in message
    building = path.with_name(f".{path.name}.creating")  # where a run folder is made
    assert f"'{path}/" in message or f"'{building}/" in message  # the file is named
    assert not building.exists()
    run = RunFolder(path)
    if not path.exists():  # failed while making the folder, which is then removed
        assert not isinstance(exc.value, TrainingError)
        start(config(), path, ["test"], progress=False)
        assert _same(_state(run.checkpoint_path(ITERATIONS)), _state(reference.checkpoint_path(4)))
        return
    meta = run.meta()
    assert meta["status"] == "failed" and "No space left on device" in meta["error"]
    assert not list(path.rglob("*.tmp"))
    problems, _ = run.check_files()
    assert problems == []
    for ckpt in run.checkpoints():  # every checkpoint there loads and is the reference's
        assert _same(_state(ckpt), _state(reference.checkpoint_path(int(ckpt.stem[5:]))))
    for f in record_files(path):
        assert verify_file(f).ok(1e-5)
    run.read_metrics()  # no partial line

    resume(path, progress=False)
    assert run.meta()["status"] == "completed"
    final = run.checkpoint_path(ITERATIONS)
    assert _same(_state(final), _state(reference.checkpoint_path(ITERATIONS)))
    assert [iteration_of(f) for f in record_files(path)] == list(range(ITERATIONS))
    assert not list(path.rglob("*.tmp"))


def test_every_write_point_is_hit_by_a_run(reference, tmp_path, monkeypatch):
    """The injection is not vacuous: an undisturbed run passes through every point above."""
    disk = Disk(monkeypatch, "nothing", 1)
    start(config(), tmp_path / "r", ["test"], progress=False)
    for point, hits in POINTS.items():
        assert disk.hits.get(point, 0) >= max(hits), (point, disk.hits.get(point))


SMALL_FS = textwrap.dedent(
    """
    mount -t tmpfs -o size=$3 tmpfs "$1" || exit 99
    cd "$1"
    "$2" -c "
    import sys
    from mdgl_analysis import cli
    from mdgl_analysis.recording import writer
    if '$4' == 'no-precheck':  # let the writer itself meet the full disk
        writer.Recorder._check_space = lambda self, fwd: None
    sys.exit(cli.main(['train', '--preset', 'demo', '--no-progress', '--iterations', '6',
        '--set', 'task.delay_ms=50', '--set', 'train.compare_every=0', '--set', 'record.every=1',
        '--set', 'run.checkpoint_every=1', '--out', '$1/r']))
    "
    echo "train exit $?"
    grep '"status"' "$1/r/run.json"
    "$2" -m mdgl_analysis verify "$1/r" > /dev/null 2>&1
    echo "verify exit $?"
    ls "$1/r/records"
    find "$1" -name "*.tmp"
    """
)


@pytest.mark.parametrize("precheck", ["precheck", "no-precheck"])
def test_a_real_full_filesystem(tmp_path, precheck):
    """A 100 MB tmpfs that the demo's records fill: the record that does not fit is refused
    before it starts (or, without that check, fails mid-write). The run fails in one line naming
    the file, says ``failed``, leaves no temporary file, and what it wrote before verifies."""
    if (
        not shutil.which("unshare")
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode
    ):
        pytest.skip("no user namespaces to mount a small filesystem in")
    mount = tmp_path / "fs"
    mount.mkdir()
    script = tmp_path / "fill.sh"
    script.write_text(SMALL_FS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        ["unshare", "-rm", "sh", str(script), str(mount), sys.executable, "100m", precheck],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if proc.returncode == 99:
        pytest.skip("tmpfs cannot be mounted here")
    out, err = proc.stdout, proc.stderr.strip().splitlines()
    assert "train exit 1" in out, out + proc.stderr
    # before it starts, a recording run states its records' size and the free space (estimate)
    estimate = ("mdgl: records:", "mdgl: in total", "mdgl: warning: the records will not fit")
    assert any(line.startswith(estimate[0]) for line in err), err
    err = [line for line in err if not line.startswith(estimate)]
    assert len(err) == 1 and err[0].startswith("mdgl: error:"), err
    # the write that meets the full disk names its file: a record, or (without the precheck,
    # when the records' sizes leave a sliver) the checkpoint after one
    where = f"{mount}/r/records" if precheck == "precheck" else f"{mount}/r/"
    assert "[Errno 28]" in err[0] and where in err[0], err[0]
    assert '"status": "failed"' in out and "verify exit 0" in out, out
    assert "iter_000000.h5" in out and ".tmp" not in out
