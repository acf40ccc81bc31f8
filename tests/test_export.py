"""``mdgl export``: portable copies of records (no HDF5 plugin needed) and NWB files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - the original records are blosc-compressed
import numpy as np
import pytest
import xarray as xr

from mdgl_analysis import cli
from mdgl_analysis import config as config_mod
from mdgl_analysis.api import Run
from mdgl_analysis.recording import export as export_mod
from mdgl_analysis.recording import writer
from mdgl_analysis.recording.readers import open_run, record_files
from mdgl_analysis.training.loop import start
from mdgl_analysis.training.runs import RunFolder

from helpers import small_config

ALL = "state,signals,credit,traces,eligibility"
PREFIX = "mdgl: error:"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A small run (12 cells, T = 75, batch 3) recording every quantity at iterations 0 and 2,
    blosc-compressed in several time chunks per variable."""
    cfg = small_config()
    cfg = config_mod.validate(
        replace(
            cfg,
            train=replace(cfg.train, iterations=3, val_every=2, rule="mdgl"),
            record=replace(cfg.record, every=2, quantities=ALL, chunk_mb=0.01, codec="lz4"),
            run=replace(cfg.run, checkpoint_every=1),
        )
    )
    run, status = start(cfg, tmp_path_factory.mktemp("rec") / "run", ["test"], progress=False)
    assert status == "completed"
    assert len(record_files(run.path)) == 2
    return run.path


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def copied(recorded, tmp_path_factory) -> Path:
    before = tree_digest(recorded)
    out = Run(recorded).export(tmp_path_factory.mktemp("copy") / "portable")
    assert tree_digest(recorded) == before  # the source is never touched
    return out


def attributes(obj) -> dict[str, tuple]:
    """Every HDF5 attribute of ``obj``: value (dimension lists as the scales' names) and type."""
    out = {}
    for key in obj.attrs:
        value = obj.attrs[key]
        if key == "DIMENSION_LIST":
            value = [tuple(obj.file[ref].name for ref in refs) for refs in value]
        elif key == "REFERENCE_LIST":
            value = sorted((obj.file[ref].name, int(axis)) for ref, axis in value)
        elif isinstance(value, np.ndarray):
            value = (value.tolist(), str(value.dtype))
        out[key] = (repr(value), str(obj.attrs.get_id(key).dtype))
    return out


def filters(dataset: h5py.Dataset) -> list[int]:
    plist = dataset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def test_the_copy_keeps_every_value_dimension_and_attribute_of_each_record(recorded, copied):
    originals, copies = record_files(recorded), record_files(copied)
    assert [p.name for p in copies] == [p.name for p in originals]
    compressed = 0
    for a_path, b_path in zip(originals, copies, strict=True):
        with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
            assert list(a) == list(b)
            assert attributes(a) == attributes(b)
            for name in a:
                x, y = a[name], b[name]
                assert (x.dtype, x.shape, x.chunks) == (y.dtype, y.shape, y.chunks), name
                assert attributes(x) == attributes(y), name
                if h5py.check_string_dtype(x.dtype):
                    assert x[()].tolist() == y[()].tolist(), name
                else:
                    assert x[()].tobytes() == y[()].tobytes(), name
                if filters(x):  # blosc in the original, deflate after shuffle in the copy
                    assert filters(x) == [32001] and filters(y) == [
                        h5py.h5z.FILTER_SHUFFLE,
                        h5py.h5z.FILTER_DEFLATE,
                    ], name
                    compressed += 1
    assert compressed >= 20
    with h5py.File(originals[-1], "r") as f:
        assert f["z"][()].sum() > 0 and f["v"].chunks[0] < f["v"].shape[0]  # not vacuous


def test_the_copy_has_the_runs_other_files_and_a_manifest_of_the_new_records(recorded, copied):
    source, copy = tree_digest(recorded), tree_digest(copied)
    assert "run.lock" in source and "run.lock" not in copy
    same = {k for k in source if not k.startswith(("records/", "manifest.json", "run.lock"))}
    assert {"config.toml", "run.json", "metrics.csv"} < same
    assert any(k.startswith("checkpoints/") for k in same)
    assert {k: copy[k] for k in same} == {k: source[k] for k in same}
    old = json.loads((recorded / "manifest.json").read_text())["files"]
    new = json.loads((copied / "manifest.json").read_text())["files"]
    assert new.keys() == old.keys()
    for key in new:
        if key.startswith("records/"):
            assert new[key]["sha256"] == copy[key] != old[key]["sha256"]
            assert new[key]["bytes"] == (copied / key).stat().st_size
        else:
            assert new[key] == old[key]


def test_mdgl_verify_passes_on_the_copy(copied, capsys):
    assert cli.main(["verify", str(copied)]) == 0
    out = capsys.readouterr().out
    assert "files against manifest.json: 0 problem(s)" in out
    assert out.count("checksums match") == 2 and "OK:" in out


def no_plugins() -> dict[str, str]:
    """The environment of a process that finds no HDF5 filter plugin."""
    return {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump is not installed")
def test_h5dump_reads_the_copys_data_without_plugins(recorded, copied):
    name = record_files(copied)[-1].name
    with h5py.File(copied / "records" / name, "r") as f:
        z = f["z"][()]
    t = int(np.flatnonzero(z[:, 0, :].sum(1))[0])  # a step with a spike in trial 0
    n = z.shape[2]

    def dump(path: Path) -> list[int]:
        done = subprocess.run(
            ["h5dump", "-d", "/z", "-s", f"{t},0,0", "-c", f"1,1,{n}", str(path)],
            capture_output=True,
            text=True,
            env=no_plugins(),
        )
        line = re.search(rf"\({t},0,0\): ([\d, ]+)", done.stdout)
        return [int(v) for v in line.group(1).split(",")] if line else []

    assert dump(copied / "records" / name) == z[t, 0, :].tolist()
    assert dump(recorded / "records" / name) == []  # the blosc original: no data without plugin


@pytest.mark.skipif(shutil.which("ncdump") is None, reason="ncdump is not installed")
def test_ncdump_reads_the_copys_data_without_plugins(recorded, copied):
    name = record_files(copied)[-1].name
    with h5py.File(copied / "records" / name, "r") as f:
        v = f["v"][()]
    done = subprocess.run(
        ["ncdump", "-p", "9", "-v", "v", str(copied / "records" / name)],
        capture_output=True,
        text=True,
        env=no_plugins(),
    )
    assert done.returncode == 0, done.stderr
    values = done.stdout.split(" v =", 1)[1].rstrip().rstrip("}").rstrip().rstrip(";")
    dumped = np.array([float(s) for s in values.replace("\n", " ").split(",")], dtype=np.float32)
    assert np.array_equal(dumped, v.ravel())
    original = subprocess.run(
        ["ncdump", "-v", "v", str(recorded / "records" / name)],
        capture_output=True,
        text=True,
        env=no_plugins(),
    )
    assert original.returncode != 0 and "filter" in original.stderr.lower()


READ_WITHOUT_PLUGIN = """
import sys, h5py
f = h5py.File(sys.argv[1], "r")
total = sum(float(f[name][()].astype("float64").sum()) for name in ("z", "v", "e_rec"))
assert "hdf5plugin" not in sys.modules
print(total)
"""


def test_h5py_without_hdf5plugin_reads_the_copy_and_not_the_blosc_original(recorded, copied):
    name = record_files(copied)[-1].name

    def read(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", READ_WITHOUT_PLUGIN, str(path)],
            capture_output=True,
            text=True,
            env=no_plugins(),
        )

    done = read(copied / "records" / name)
    assert done.returncode == 0, done.stderr
    with h5py.File(recorded / "records" / name, "r") as f:
        expected = sum(float(f[n][()].astype("float64").sum()) for n in ("z", "v", "e_rec"))
    assert float(done.stdout) == expected != 0
    original = read(recorded / "records" / name)  # its filter plugin is not found
    assert original.returncode != 0 and "OSError: Can't synchronously read data" in original.stderr


def test_open_mfdataset_concatenates_the_copy(recorded, copied):
    paths = [str(p) for p in record_files(copied)]
    with xr.open_mfdataset(paths, engine="h5netcdf", data_vars="all") as ds:
        assert ds.iteration.values.tolist() == [0, 2]
        reference = open_run(recorded)
        for name in ("z", "v", "e_rec", "learning_signal", "grad_rec", "loss"):
            assert np.array_equal(ds[name].values, reference[name].values), name
        assert ds.cell_type.values.tolist() == reference.cell_type.values.tolist()


def test_a_single_record_exports_to_a_new_file(recorded, tmp_path, capsys):
    source = record_files(recorded)[0]
    out = tmp_path / "one.h5"
    assert cli.main(["export", str(source), "--codec", "none", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}")
    with h5py.File(source, "r") as a, h5py.File(out, "r") as b:
        assert filters(b["e_rec"]) == [] and filters(a["e_rec"]) == [32001]
        assert a["e_rec"][()].tobytes() == b["e_rec"][()].tobytes()
    assert cli.main(["verify", str(out)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["one.h5"]


def test_the_export_codecs_are_the_writers(tmp_path):
    assert export_mod.CODECS["gzip"] == writer.codec_options("gzip")
    assert export_mod.CODECS["none"] == writer.codec_options("none")


# ------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing created


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as err:  # argparse's errors
        code = err.code
    return code, capsys.readouterr().err


def tamper(record: Path) -> None:
    """Change one value of a record in place (its stored checksums no longer match)."""
    with h5py.File(record, "r+") as f:
        f["loss"][()] = f["loss"][()] + 1.0


@pytest.mark.parametrize(
    "case",
    [
        "missing run",
        "existing out",
        "unknown format",
        "unknown codec",
        "no records",
        "not a run",
        "not a record",
        "out inside the run",
        "out in a missing folder",
        "nwb out not .nwb",
        "damaged record",
        "damaged run",
        "run being written",
        "unreadable record",
        "nwb of records without spikes",
    ],
)
def test_bad_input_gives_one_line_and_exit_2_and_creates_nothing(case, recorded, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["export", str(recorded), "--out", out]
    if case == "missing run":
        argv[1] = str(tmp_path / "nowhere")
    elif case == "existing out":
        (tmp_path / "out").mkdir()
    elif case == "unknown format":
        argv += ["--format", "zarr"]
    elif case == "unknown codec":
        argv += ["--codec", "lz4"]
    elif case == "no records":
        empty = tmp_path / "empty"
        shutil.copytree(recorded, empty, ignore=shutil.ignore_patterns("records"))
        argv[1] = str(empty)
    elif case == "not a run":
        (tmp_path / "folder").mkdir()
        argv[1] = str(tmp_path / "folder")
    elif case == "not a record":
        (tmp_path / "notes.h5").write_text("not HDF5")
        argv[1] = str(tmp_path / "notes.h5")
    elif case == "out inside the run":
        argv[3] = str(recorded / "copy")
    elif case == "out in a missing folder":
        argv[3] = str(tmp_path / "missing" / "out")
    elif case == "nwb out not .nwb":
        argv += ["--format", "nwb"]
    elif case == "damaged record":
        damaged = tmp_path / "damaged.h5"
        shutil.copy(record_files(recorded)[0], damaged)
        tamper(damaged)
        argv[1] = str(damaged)
    elif case == "damaged run":
        damaged = tmp_path / "damaged"
        shutil.copytree(recorded, damaged)
        tamper(record_files(damaged)[-1])
        argv[1] = str(damaged)
    elif case == "unreadable record":
        damaged = tmp_path / "damaged"
        shutil.copytree(recorded, damaged)
        record_files(damaged)[0].write_bytes(b"truncated")
        argv[1] = str(damaged)
    elif case == "nwb of records without spikes":
        pytest.importorskip("pynwb")
        stateless = tmp_path / "stateless.h5"
        shutil.copy(record_files(recorded)[0], stateless)
        with h5py.File(stateless, "r+") as f:
            del f["z"]
        argv[1], argv[3] = str(stateless), str(tmp_path / "out.nwb")
        argv += ["--format", "nwb"]
    before = sorted(p.name for p in tmp_path.iterdir())
    source = tree_digest(recorded)
    if case == "run being written":
        with RunFolder(recorded).lock():
            code, err = run_cli(argv, capsys)
    else:
        code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert err.startswith(PREFIX) and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert tree_digest(recorded) == source


def test_a_failed_write_leaves_nothing(recorded, tmp_path, monkeypatch):
    calls = []
    original = export_mod._copy_record

    def fail_on_the_second(source, target, codec):
        calls.append(source)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(target))
        return original(source, target, codec)

    monkeypatch.setattr(export_mod, "_copy_record", fail_on_the_second)
    with pytest.raises(OSError):
        export_mod.export(recorded, tmp_path / "out")
    assert len(calls) == 2 and os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# NWB


@pytest.fixture(scope="module")
def nwb_file(recorded, tmp_path_factory) -> Path:
    pytest.importorskip("pynwb")
    out = tmp_path_factory.mktemp("nwb") / "run.nwb"
    assert cli.main(["export", str(recorded), "--format", "nwb", "--out", str(out)]) == 0
    return out


def test_the_nwb_file_holds_every_recorded_trials_spikes_and_voltages(recorded, nwb_file):
    from pynwb import NWBHDF5IO

    records = record_files(recorded)
    z, v, x, trials = [], [], [], []
    for path in records:
        with h5py.File(path, "r") as f:
            for position, batch_index in enumerate(f["trial"][()]):
                z.append(f["z"][:, position, :])
                v.append(f["v"][:, position, :])
                x.append(f["x"][:, batch_index, :])
                trials.append((int(f["iteration"][0]), int(batch_index)))
            cell_type = [c.decode() for c in f["cell_type"][()]]
            time_ms = f["time"][()].astype(np.float64)
    spikes = np.concatenate(z).astype(np.int64).sum(0)
    with NWBHDF5IO(str(nwb_file), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        assert [len(t) for t in units["spike_times"]] == spikes.tolist()
        assert spikes.sum() > 0 and len(units) == 12
        assert units["cell_type"].tolist() == cell_type
        assert units["adaptive"].tolist() == [False] * 6 + [True] * 6
        assert np.array_equal(nwb.acquisition["membrane_potential"].data[:], np.concatenate(v))
        assert nwb.acquisition["membrane_potential"].unit == "1"
        assert np.array_equal(nwb.stimulus["inputs"].data[:], np.concatenate(x))
        table = nwb.trials.to_dataframe()
        assert list(zip(table["iteration"], table["batch_index"], strict=True)) == trials
        begins, ends = table["start_time"].to_numpy(), table["stop_time"].to_numpy()
        assert (begins[1:] > ends[:-1]).all()  # end to end, apart
        # the busiest cell's spikes at its trials' starts plus the times of its spiking steps
        cell = int(np.argmax(spikes))
        expected = np.concatenate(
            [
                begin + time_ms[np.flatnonzero(trial[:, cell])] / 1000.0
                for begin, trial in zip(table["start_time"], z, strict=True)
            ]
        )
        assert np.allclose(units["spike_times"].iloc[cell], expected, rtol=0, atol=1e-9)
        assert nwb.identifier == json.loads((recorded / "run.json").read_text())["id"]
        assert "evidence" in nwb.session_description and "mdgl" in nwb.session_description


def test_nwbinspector_finds_no_critical_issue_nor_best_practice_violation(nwb_file):
    inspector = pytest.importorskip("nwbinspector")
    found = [
        f"{m.importance.name}: {m.check_function_name}: {m.message}"
        for m in inspector.inspect_nwbfile(nwbfile_path=str(nwb_file))
    ]
    assert not [m for m in found if m.startswith(("CRITICAL", "BEST_PRACTICE_VIOLATION"))], found


def test_nwb_export_without_pynwb_says_how_to_install_it(recorded, tmp_path):
    code = (
        "import sys\n"
        "sys.modules['pynwb'] = None  # as if it were not installed\n"
        "from mdgl_analysis import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    out = tmp_path / "run.nwb"
    done = subprocess.run(
        [sys.executable, "-c", code, "export", str(recorded), "--format", "nwb", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install 'mdgl-analysis[nwb]'" in done.stderr
    assert os.listdir(tmp_path) == []
