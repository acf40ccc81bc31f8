"""Tampered run folders and records: ``mdgl verify`` exits 1 naming what is wrong; a resumed run
falls back to its newest intact checkpoint; a crafted checkpoint never runs code.

Each tampering is tried twice where that matters: naively (the variable's own SHA-256 then
differs) and with the checksum rewritten to match, as a careless tool would leave a file; the
second kind is caught by recomputing the value from the record's weights and inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mdgl_analysis import cli
from mdgl_analysis.recording.readers import record_files
from mdgl_analysis.recording.verify import integrity, verify_file
from mdgl_analysis.recording.writer import CHECKSUM, digest_update
from mdgl_analysis.training.loop import start
from mdgl_analysis.training.runs import RunFolder, sha256_of

from helpers import small_config


def config(**record):
    cfg = small_config(iterations=2, val_every=2, rule="mdgl", compare_every=0)
    rec = dict(every=1, quantities="state,signals,traces,credit", chunk_mb=0.002) | record
    return replace(cfg, record=replace(cfg.record, **rec), run=replace(cfg.run, checkpoint_every=1))


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A run recording every trial and step, and one recording two trials of a time window."""
    root = tmp_path_factory.mktemp("tamper")
    full, _ = start(config(), root / "full", ["test"], progress=False)
    part, _ = start(
        config(trials="0,2", t_start_ms=10.0, t_stop_ms=50.0), root / "part", ["t"], progress=False
    )
    return {"full": full.path, "part": part.path}


@pytest.fixture
def copy(templates, tmp_path):
    def _copy(name: str) -> Path:
        shutil.copytree(templates[name], tmp_path / name)
        return tmp_path / name

    return _copy


def rechecksum(f: h5py.File, name: str) -> None:
    hasher = hashlib.sha256()
    digest_update(hasher, np.asarray(f[name][()]))
    f[name].attrs[CHECKSUM] = hasher.hexdigest()


def tamper(path: Path, name: str, change, keep_checksum: bool) -> None:
    with h5py.File(path, "r+") as f:
        values = f[name][()]
        f[name][...] = change(values.copy())
        assert not np.array_equal(f[name][()], values), "the tampering changed nothing"
        if keep_checksum:
            rechecksum(f, name)


def flip_spike(z):
    z[5, 0, 3] = 1 - z[5, 0, 3]
    return z


def bump_largest(v):
    """The largest value 1% larger."""
    flat = v.reshape(-1)
    flat[int(np.abs(flat).argmax())] *= 1.01
    return v


TAMPERINGS = {  # variable -> (run, record iteration, change)
    "grad_out": ("full", 1, bump_largest),
    "grad_rec": ("full", 1, bump_largest),
    "dw_rec": ("full", 0, bump_largest),  # the optimiser's first step, known exactly
    "loss": ("full", 1, lambda v: v * 1.01),
    "accuracy": ("full", 1, lambda v: 1.0 - v),
    "z": ("full", 1, flip_spike),
    "learning_signal": ("full", 1, bump_largest),
    "e_rec": ("part", 1, bump_largest),  # a partial record's traces: its subset contraction
    "bptt_credit": ("part", 0, bump_largest),
    "x": ("full", 1, lambda v: np.where(v == 0, 1, 0).astype(v.dtype)),
}


def verify(path: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["verify", str(path)])
    return code, capsys.readouterr().out


def test_the_untouched_runs_verify(templates, capsys):
    for path in templates.values():
        code, out = verify(path, capsys)
        assert code == 0 and "OK" in out, out
        for f in record_files(path):
            report = verify_file(f)
            assert report.ok(1e-6) and len(report.errors) > 25 and not report.problems


@pytest.mark.parametrize("keep_checksum", [False, True], ids=["naive", "rechecksummed"])
@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_a_tampered_variable_fails_verify(name, keep_checksum, copy, capsys):
    which, iteration, change = TAMPERINGS[name]
    run = copy(which)
    record = record_files(run)[iteration]
    tamper(record, name, change, keep_checksum)
    if not keep_checksum:  # the run's manifest sees the file change
        code, out = verify(run, capsys)
        assert code == 1 and "MISMATCH" in out, out
        assert f"records/{record.name}: its SHA-256 differs" in out
    code, out = verify(record, capsys)  # the file alone: its own checksums, then recomputation
    assert code == 1, out
    failed = [line for line in out.splitlines() if "FAILED" in line]
    if keep_checksum:
        assert failed and not any("sha256" in line for line in failed), out
    else:
        assert any(f"variable {name!r}: values differ from their sha256" in x for x in failed)


def test_random_bytes_in_a_compressed_chunk_name_the_variable_and_chunk(copy, capsys):
    run = copy("full")
    record = record_files(run)[1]
    with h5py.File(record, "r") as f:
        ds = f["learning_signal"]
        assert ds.chunks is not None and ds.id.get_num_chunks() > 2
        info = ds.id.get_chunk_info(2)
    with open(record, "r+b") as f:
        f.seek(info.byte_offset + 16)
        f.write(os.urandom(min(64, info.size - 16)))
    code, out = verify(record, capsys)
    assert code == 1, out
    line = next(x for x in out.splitlines() if "FAILED" in x)
    assert "'learning_signal'" in line and ("cannot be read" in line or "sha256" in line), line
    if "cannot be read" in line:
        assert "chunk(s) at [" in line


def test_a_record_of_random_bytes_fails_in_one_line_each(copy, capsys):
    run = copy("full")
    record_files(run)[0].write_bytes(os.urandom(4096))
    code, out = verify(run, capsys)
    assert code == 1
    assert "iter_000000.h5: not a readable record" in out
    assert "iter_000001.h5: every chunk read" in out  # the other record still checks


def test_a_flipped_bit_in_the_latest_checkpoint_falls_back_with_the_reason(copy, capsys):
    run = copy("full")
    folder = RunFolder(run)
    latest = folder.checkpoints()[-1]
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside a tensor: torch.load alone would accept it
    latest.write_bytes(bytes(data))
    torch.load(latest, weights_only=True)  # ... as this shows
    code, out = verify(run, capsys)
    assert code == 1 and f"checkpoints/{latest.name}: its SHA-256 differs" in out
    capsys.readouterr()
    assert cli.main(["resume", str(run), "--iterations", "3", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{latest.name} (its SHA-256 differs from the one in manifest.json" in err
    assert "resuming from ckpt_000001.pt" in err
    assert folder.meta()["status"] == "completed" and folder.meta()["iteration"] == 3


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def craft_checkpoints(run: Path, marker: Path) -> None:
    """Replace every checkpoint by a pickle that runs a command, and give the manifest the
    crafted files' checksums, as a sender would."""
    folder = RunFolder(run)
    manifest = json.loads(folder.manifest_path.read_text())
    for ckpt in folder.checkpoints():
        torch.save({"iteration": 1, "net": _Evil(marker)}, ckpt)
        key = str(ckpt.relative_to(run))
        manifest["files"][key] = {"sha256": sha256_of(ckpt), "bytes": ckpt.stat().st_size}
    folder.manifest_path.write_text(json.dumps(manifest))


def test_a_crafted_checkpoint_never_runs_under_any_command(copy, tmp_path, capsys):
    run = copy("full")
    marker = tmp_path / "pwned"
    craft_checkpoints(run, marker)
    sweep = tmp_path / "sweep"  # a received sweep: its run of mdgl, seed 1, is the crafted run
    shutil.copytree(run, sweep / "mdgl-s1")
    RunFolder(sweep / "mdgl-s1").update_meta(status="interrupted", iteration=1)
    commands = [
        ["resume", str(run), "--iterations", "3", "--no-progress"],
        ["info", str(run)],
        ["verify", str(run)],
        ["figures", str(run), "--out", str(tmp_path / "figs")],
        ["analyze", "alignment", str(run)],
        [
            "sweep",
            "demo",
            "--rules",
            "mdgl",
            "--seeds",
            "1",
            "--out",
            str(sweep),
            "--iterations",
            "3",
            "--set",
            "task.delay_ms=50",
        ],
    ]
    for argv in commands:
        capsys.readouterr()
        code = cli.main(argv)
        captured = capsys.readouterr()
        assert not marker.exists(), argv
        if argv[0] == "resume":
            assert code == 2
            err = captured.err.strip().splitlines()
            assert len(err) == 1 and "could run code, so it is refused" in err[0], err
    entry = json.loads((sweep / "sweep.json").read_text())["runs"][0]
    assert entry["status"] != "completed" and "could run code" in entry["note"]


@pytest.mark.parametrize(
    "chunks", [None, (4, 3, 5), (1, 3, 5), (10, 7, 5), (3, 7, 5), (1, 1, 5), (2, 2, 2), (1, 7, 2)]
)
def test_a_variables_checksum_is_read_back_whatever_its_chunks(chunks, tmp_path):
    """The reader hashes the values in C order whatever the chunk layout (auto-chunked inputs of
    a paper-size batch are chunked along several axes), and still sees a change."""
    values = np.arange(10 * 7 * 5, dtype=np.float32).reshape(10, 7, 5)
    hasher = hashlib.sha256()
    digest_update(hasher, values)
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=values, chunks=chunks).attrs[CHECKSUM] = hasher.hexdigest()
    assert integrity(path) == []
    with h5py.File(path, "r+") as f:
        f["x"][9, 6, 4] = -1.0
    assert integrity(path) == ["variable 'x': values differ from their sha256"]
