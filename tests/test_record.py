"""Full-trace recording: schema, laziness, verification from the file alone, crash safety."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import h5netcdf
import numpy as np
import pytest
import xarray as xr

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import ConfigError
from mdgl_analysis.recording.readers import open_record, open_run, record_files
from mdgl_analysis.recording.schema import SCHEMA_VERSION, VARIABLES, iteration_of, selected
from mdgl_analysis.recording.verify import contract, recompute
from mdgl_analysis.rules import RULES
from mdgl_analysis.training.loop import start
from mdgl_analysis.training.runs import RunFolder

from helpers import small_config, spy_reads, train_command

ALL = "state,signals,credit,traces,eligibility"


def rec_config(iterations=4, dtype="float32", **record):
    cfg = small_config()
    rec = dict(every=2, quantities=ALL, chunk_mb=0.01) | record
    cfg = replace(
        cfg,
        train=replace(cfg.train, iterations=iterations, val_every=2, rule="mdgl"),
        record=replace(cfg.record, **rec),
        run=replace(cfg.run, dtype=dtype, checkpoint_every=1),
    )
    return config_mod.validate(cfg)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    cfg = rec_config()
    run, status = start(cfg, tmp_path_factory.mktemp("rec") / "run", ["test"], progress=False)
    assert status == "completed"
    return cfg, run


def test_records_round_trip_through_xarray_with_the_schema(recorded):
    cfg, run = recorded
    files = record_files(run.path)
    assert [iteration_of(f) for f in files] == [0, 2]
    ds = open_run(run.path)
    assert list(ds.iteration.values) == [0, 2]
    for name, var in selected(ALL.split(",")).items():
        assert name in ds, name
        assert ds[name].dims == ("iteration", *var.dims), name
    assert set(ds.cell_type.values) == {"E", "I"}
    assert int((ds.cell_type == "I").sum()) == 2
    assert ds.adaptive.values.tolist() == [0] * 6 + [1] * 6
    assert (ds.post_rec != ds.pre_rec).all()
    assert list(ds.rule.values) == list(RULES)  # BPTT first, then every local rule
    assert float(ds.time[1] - ds.time[0]) == cfg.network.dt
    assert ds.attrs["schema_version"] == SCHEMA_VERSION
    assert config_mod.from_dict(json.loads(ds.attrs["config"])) == cfg
    assert ds.z.dtype == np.uint8 and ds.x.dtype == np.uint8
    z = ds.z.sel(iteration=2).values
    assert z.sum() > 0 and set(np.unique(z)) <= {0, 1}
    # netCDF4: every axis has a dimension scale (h5netcdf reads the file back without phony dims)
    with h5netcdf.File(record_files(run.path)[0], "r") as f:
        assert set(f.dimensions) >= {"time", "trial", "neuron", "synapse_rec", "synapse_in"}
    ds.close()


def test_opening_a_run_reads_no_bulk_data(recorded, monkeypatch):
    cfg, run = recorded
    reads = spy_reads(monkeypatch)
    ds = open_run(run.path)
    bulk = {n for n, v in VARIABLES.items() if "time" in v.dims}
    assert not bulk & set(reads), f"bulk variables read at open: {bulk & set(reads)}"
    assert ds.e_rec.isel(iteration=0, time=0).values.size > 0  # the spy sees real reads
    assert "e_rec" in reads
    ds.close()


def test_every_recorded_gradient_is_recomputed_from_the_file_alone(recorded):
    cfg, run = recorded
    for f in record_files(run.path):
        errors = recompute(f)
        assert len(errors) == 2 * len(RULES)
        assert max(errors.values()) < 1e-6
        ds = open_record(f)
        assert float(np.abs(ds.grad_rec.sel(rule="mdgl")).max()) > 0
        ds.close()


def test_recorded_traces_times_recorded_signals_equal_the_recorded_gradients(recorded):
    cfg, run = recorded
    for f in record_files(run.path):
        errors = contract(f)
        assert set(errors) == {f"{r}_{p}" for r in RULES for p in ("rec", "in")}
        assert max(errors.values()) < 1e-5


def test_float64_records_satisfy_the_identity_to_machine_precision(tmp_path):
    cfg = rec_config(iterations=1, dtype="float64", every=1, quantities="signals,traces")
    cfg = replace(cfg, record=replace(cfg.record, dtype="float32"))
    run, _ = start(cfg, tmp_path / "r", ["test"], progress=False)
    (f,) = record_files(run.path)
    assert max(recompute(f).values()) == 0.0
    assert max(contract(f).values()) < 1e-6  # float32 storage of float64 values


def test_trial_subset_and_time_window_hold_the_same_values_as_a_full_record(tmp_path, recorded):
    _, full_run = recorded
    cfg = rec_config(trials="0,2", t_start_ms=13.0, t_stop_ms=41.0)
    run, _ = start(cfg, tmp_path / "part", ["test"], progress=False)
    part, full = open_run(run.path), open_run(full_run.path)
    assert part.sizes["trial"] == 2 and part.sizes["time"] == 28
    assert float(part.time[0]) == 13.0
    window = dict(time=slice(13, 41), trial=[0, 2])
    for name in ("z", "v", "psi", "e_rec", "eps_a_in", "learning_signal", "bptt_credit"):
        np.testing.assert_array_equal(part[name].values, full[name].isel(**window).values)
    np.testing.assert_array_equal(part.grad_rec.values, full.grad_rec.values)
    # checked against the gradient of those trials in that window (tests/test_verify_subset.py)
    assert max(contract(record_files(run.path)[0]).values()) < 1e-5
    part.close()
    full.close()


def test_weight_change_is_the_update_actually_applied(recorded):
    cfg, run = recorded
    ds = open_run(run.path)
    ckpts = {int(p.stem.split("_")[1]): p for p in run.checkpoints()}
    import torch

    state = torch.load(ckpts[3], weights_only=False)["net"]  # weights after step 2
    theta, sign = state["theta_rec"], state["sign_rec"]
    w_after = torch.where(theta > 0, sign * theta, torch.zeros_like(theta))
    w_after.fill_diagonal_(0)
    post, pre = ds.post_rec.values, ds.pre_rec.values
    got = (ds.w_rec + ds.dw_rec).sel(iteration=2).values
    np.testing.assert_allclose(got, w_after[post, pre].numpy(), rtol=0, atol=1e-7)
    assert np.abs(ds.dw_rec.sel(iteration=2).values).max() > 0
    ds.close()


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("record.trials", "0-9", "record.trials"),
        ("record.trials", "a,b", "record.trials"),
        ("record.every", "-1", "record.every"),
        ("record.quantities", "state,gossip", "record.quantities"),
        ("record.t_start_ms", "70", "record.t_start_ms"),
        ("record.t_stop_ms", "5000", "record.t_stop_ms"),
        ("record.layout", "sparse", "record.layout"),
        ("record.dtype", "int8", "record.dtype"),
        ("record.codec", "bz2", "record.codec"),
        ("record.rules", "eprop,nope", "record.rules"),
        ("record.iterations", "first,later", "record.iterations"),
        ("record.chunk_mb", "0", "record.chunk_mb"),
    ],
)
def test_bad_schedules_are_rejected_with_the_field_named(key, value, fragment):
    cfg = small_config()
    cfg = replace(
        cfg,
        record=replace(cfg.record, t_stop_ms=60.0) if key == "record.t_start_ms" else cfg.record,
    )
    from mdgl_analysis.rules import check_rules

    with pytest.raises(ConfigError, match=fragment):
        check_rules(config_mod.validate(config_mod.set_value(cfg, key, value)))


# ------------------------------------------------------------------------------------------------
# crash safety


def _write_config(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(config_mod.dumps(cfg))
    return path


def _same_record(a: Path, b: Path) -> None:
    da, db = xr.open_dataset(a, engine="h5netcdf"), xr.open_dataset(b, engine="h5netcdf")
    for name in da.variables:
        np.testing.assert_array_equal(da[name].values, db[name].values, err_msg=name)
    da.close()
    db.close()


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def test_full_disk_fails_the_run_cleanly_and_keeps_earlier_files(tmp_path):
    cfg = rec_config(iterations=6, every=0)
    cfg = replace(cfg, record=replace(cfg.record, iterations="4", chunk_mb=1.0))
    cfg_file = _write_config(tmp_path, cfg)
    out = tmp_path / "full"
    done = subprocess.run(
        train_command(cfg_file, out),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(300_000),
        timeout=300,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("mdgl: error:") and "not enough room" in last
    run = RunFolder(out)
    meta = run.meta()
    assert meta["status"] == "failed" and meta["error"]
    assert not list((out / "records").glob("*")), "no partial record left behind"
    ckpts = run.checkpoints()  # the one at iteration 0 is written when the run starts
    assert [int(p.stem.split("_")[1]) for p in ckpts] == [0, 1, 2, 3, 4]
    import torch

    for p in ckpts:
        torch.load(p, weights_only=False)  # intact
    rows = run.read_metrics()
    assert max(r["iteration"] for r in rows) == 3  # iteration 4 failed: no metrics from it


def test_a_write_failing_mid_record_removes_the_partial_file_and_fails_the_run(
    tmp_path, monkeypatch
):
    from mdgl_analysis.recording import writer as record

    cfg = rec_config(iterations=5, every=2)
    original = record._BackgroundWriter.put

    def failing_put(self, name, key, value):
        if "iter_000002" in self.file.filename and name == "e_rec":  # midway through record 2
            self.error = OSError(28, "No space left on device")
        return original(self, name, key, value)

    monkeypatch.setattr(record._BackgroundWriter, "put", failing_put)
    from mdgl_analysis.training.loop import TrainingError

    with pytest.raises(TrainingError, match="No space left"):
        start(cfg, tmp_path / "r", ["test"], progress=False)
    run = RunFolder(tmp_path / "r")
    assert run.meta()["status"] == "failed"
    assert [iteration_of(f) for f in record_files(run.path)] == [0]
    assert not list((run.path / "records").glob("*.tmp"))
    assert max(recompute(record_files(run.path)[0]).values()) < 1e-6  # the earlier one is intact


def test_a_schema_1_record_of_the_pre_plugin_code_still_verifies():
    """tests/data/schema1_record.h5: written by commit 0eb0727 (one target per trial, no mask)."""
    path = Path(__file__).parent / "data" / "schema1_record.h5"
    errors = recompute(path)
    assert max(errors.values()) < 1e-6 and len(errors) == 12
    assert max(contract(path).values()) < 1e-6


def test_xarray_concatenates_a_runs_records_as_they_are(recorded):
    """Each record holds its iteration as a length-1 dimension coordinate: plain
    ``xr.open_mfdataset`` (nothing of ours) makes one dataset of a run."""
    import xarray as xr

    _, run = recorded
    files = record_files(run.path)
    ds = xr.open_mfdataset(files, engine="h5netcdf", data_vars="all", combine="by_coords")
    assert list(ds.iteration.values) == [iteration_of(f) for f in files] == [0, 2]
    assert ds.e_rec.dims[0] == "iteration" and ds.grad_rec.dims == (
        "iteration",
        "rule",
        "synapse_rec",
    )
    ours = open_run(run.path)
    np.testing.assert_array_equal(ds.grad_rec.values, ours.grad_rec.values)
    ds.close()
    ours.close()


def test_the_printed_plugin_path_lets_h5py_read_records_without_hdf5plugin(recorded, capsys):
    """``mdgl info --hdf5-plugin-path`` names the folder that HDF5 tools need in
    HDF5_PLUGIN_PATH; a process that never imports hdf5plugin then reads the blosc chunks."""
    import subprocess
    import sys

    from mdgl_analysis import cli

    _, run = recorded
    assert cli.main(["info", "--hdf5-plugin-path"]) == 0
    plugins = capsys.readouterr().out.strip()
    record = record_files(run.path)[0]
    code = (
        "import sys, h5py; assert 'hdf5plugin' not in sys.modules; "
        f"print(float(abs(h5py.File({str(record)!r})['e_rec'][()]).sum()))"
    )
    env = {"HDF5_PLUGIN_PATH": plugins, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(float(abs(open_run(run.path).e_rec[0]).sum()))
    without = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert without.returncode != 0  # the plugin path is what makes the data readable


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="no h5dump (Debian: hdf5-tools)")
def test_h5dump_reads_record_data_with_the_plugin_path(recorded, capsys):
    import subprocess

    from mdgl_analysis import cli

    _, run = recorded
    assert cli.main(["info", "--hdf5-plugin-path"]) == 0
    env = {"HDF5_PLUGIN_PATH": capsys.readouterr().out.strip(), "PATH": "/usr/bin:/bin"}
    record = str(record_files(run.path)[0])
    cmd = ["h5dump", "-d", "/e_rec", "-s", "0,0,0", "-c", "2,1,5", record]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env).stdout
    assert "(1,0,0):" in out  # the values of a blosc-compressed chunk, not an empty DATA {}
