"""Alignment analyses: analytical cases, laziness, schedulers, identities, run selection."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mdgl_analysis import config as config_mod
from mdgl_analysis.analysis import alignment as A
from mdgl_analysis.cli import main
from mdgl_analysis.recording.readers import open_run
from mdgl_analysis.recording.schema import VARIABLES
from mdgl_analysis.training.loop import start

from helpers import small_config, spy_reads


def _run(path, rule="mdgl", seed=1, iterations=3):
    cfg = small_config()
    cfg = replace(
        cfg,
        train=replace(cfg.train, iterations=iterations, rule=rule, val_every=1, compare_every=1),
        record=replace(cfg.record, every=2, quantities="state,signals,traces", chunk_mb=0.01),
        run=replace(cfg.run, seed=seed),
    )
    run, _ = start(config_mod.validate(cfg), path, ["test"], progress=False)
    return run.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, [
        _run(root / "a", "mdgl", 1),
        _run(root / "b", "eprop", 2),
        _run(root / "c", "mdgl", 3),
    ]


def test_cosine_angle_and_norm_ratio_on_known_vectors():
    a = xr.DataArray([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0]], dims=("case", "synapse"))
    assert float(A.cosine(a, a, "synapse")[0]) == pytest.approx(1.0)
    assert float(A.cosine(a, -a, "synapse")[1]) == pytest.approx(-1.0)
    b = xr.DataArray([[-2.0, 1.0, 7.0], [0.0, 5.0, 0.0]], dims=("case", "synapse"))
    np.testing.assert_allclose(A.cosine(a, b, "synapse"), [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(A.angle(a, b, "synapse"), [90.0, 90.0])
    np.testing.assert_allclose(A.norm_ratio(2 * a, a, "synapse"), [2.0, 2.0])
    assert np.isnan(float(A.cosine(a, 0 * a, "synapse")[0]))


def test_blocks_are_named_pre_to_post_from_the_cell_types():
    ds = xr.Dataset(
        coords={
            "cell_type": ("neuron", ["I", "E", "E"]),
            "post_rec": ("synapse_rec", [0, 1, 0, 2]),
            "pre_rec": ("synapse_rec", [1, 0, 2, 1]),
            "post_in": ("synapse_in", [0, 2]),
        }
    )
    rec, inp = A.synapse_blocks(ds)
    assert rec.values.tolist() == ["rec_EI", "rec_IE", "rec_EI", "rec_EE"]
    assert inp.values.tolist() == ["in_I", "in_E"]


def test_gradient_alignment_selects_existing_synapses_of_each_block():
    grads = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, -2.0, 3.0, 0.0]])  # bptt, other
    ds = xr.Dataset(
        {
            "grad_rec": (("rule", "synapse_rec"), grads),
            "w_rec": ("synapse_rec", [0.1, 0.2, 0.0, 0.3]),
            "grad_in": (("rule", "synapse_in"), [[1.0], [1.0]]),
            "w_in": ("synapse_in", [0.5]),
        },
        coords={
            "rule": ["bptt", "x"],
            "cell_type": ("neuron", ["I", "E", "E"]),
            "post_rec": ("synapse_rec", [0, 1, 0, 2]),
            "pre_rec": ("synapse_rec", [1, 0, 2, 1]),
            "post_in": ("synapse_in", [0]),
        },
    )
    by_block = A.gradient_alignment(ds, by="block").cosine.sel(rule="x")
    assert float(by_block.sel(part="rec_EI")) == pytest.approx(1.0)  # synapse 2 does not exist
    assert float(by_block.sel(part="rec_IE")) == pytest.approx(-1.0)
    assert np.isnan(float(by_block.sel(part="rec_EE")))  # other's gradient there is zero
    rec = A.gradient_alignment(ds).cosine.sel(rule="x", part="rec")
    expected = (1 - 4) / (np.sqrt(1 + 4 + 16) * np.sqrt(1 + 4))
    assert float(rec) == pytest.approx(expected)


def test_building_the_analyses_reads_no_bulk_data(runs, monkeypatch):
    _, paths = runs
    reads = spy_reads(monkeypatch)
    ds = open_run(paths[0])
    lazy = [
        A.gradient_alignment(ds, "block"),
        A.time_alignment(ds, 10),
        A.signal_alignment(ds, 10),
        A.credit_by_type(ds),
    ]
    bulk = {n for n, v in VARIABLES.items() if "time" in v.dims}
    assert not bulk & set(reads)
    lazy[1].cosine.compute()
    assert {"e_rec", "learning_signal"} <= set(reads)


def test_step_contributions_summed_over_time_equal_the_recorded_gradients(runs):
    _, paths = runs
    ds = open_run(paths[0])
    for matrix in ("rec", "in"):
        total = A.step_contributions(ds, matrix).sum("time").compute()
        grad = ds[f"grad_{matrix}"].compute()
        assert float(np.abs(grad).max()) > 0
        assert float(np.abs(total - grad).max() / np.abs(grad).max()) < 1e-5


def _contributions_oracle(ds, matrix):
    """Per-step contributions by a plain einsum: [iteration, rule, time, synapse]."""
    sig = ds.learning_signal.transpose("iteration", "rule", "time", "trial", "neuron").values
    post = ds[f"post_{matrix}"].values
    trace = ds[f"e_{matrix}"].transpose("iteration", "time", "trial", f"synapse_{matrix}").values
    return np.einsum("irtbs,itbs->irts", sig[..., post].astype(float), trace.astype(float))


@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.parametrize("group", [1, 3, 12])
def test_contraction_kernel_matches_einsum_for_sorted_and_unsorted_synapses(sort, group):
    rng = np.random.default_rng(0)
    post = rng.integers(0, 7, size=40)
    post = np.sort(post) if sort else post
    signal = rng.normal(size=(3, 12, 5, 7))  # rule, time, trial, neuron
    trace = rng.normal(size=(12, 5, 40))  # time, trial, synapse
    order, runs = A._cell_runs(post)
    assert (order is None) == sort
    got = A._contract(np.ascontiguousarray(signal.transpose(3, 0, 1, 2)), trace, group, order, runs)
    want = np.einsum("rtbs,tbs->rts", signal[..., post], trace)
    want = want.reshape(3, 12 // group, group, 40).sum(2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window_ms", [1.0, 7.0, 25.0])
def test_window_contributions_are_the_step_contributions_summed_per_window(runs, window_ms):
    _, paths = runs
    lazy = open_run(paths[0])
    n_t = lazy.sizes["time"]
    assert len(lazy.e_rec.chunks[lazy.e_rec.dims.index("time")]) > 3  # windows cross chunks
    for ds in (lazy, lazy.load()):  # dask-backed and in memory
        for matrix, got in A.window_contributions(ds, window_ms).items():
            step = A._window_steps(ds, window_ms)
            n = n_t // step
            want = _contributions_oracle(ds, matrix)[:, :, : n * step]
            want = want.reshape(*want.shape[:2], n, step, -1).sum(3)
            got = got.transpose("iteration", "rule", "window", f"synapse_{matrix}")
            assert np.abs(want).max() > 0
            np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
            np.testing.assert_array_equal(got.window.values, ds.time.values[: n * step : step])
            assert (got[f"post_{matrix}"].values == ds[f"post_{matrix}"].values).all()
        per_step = A.step_contributions(ds, "in").transpose("iteration", "rule", "time", ...)
        want = _contributions_oracle(ds, "in")
        np.testing.assert_allclose(per_step.values, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_time_alignment_over_several_runs_keeps_the_run_coordinates(runs):
    _, paths = runs
    res = A.time_alignment(A.open_runs(paths[:2]), 10).compute()
    assert res.cosine.dims[:2] == ("run", "iteration")
    assert list(res.training_rule.values) == ["mdgl", "eprop"]
    assert np.isfinite(res.cosine.values).all()  # synapses missing from one run count as zero


@pytest.mark.slow
def test_threaded_scheduler_and_local_cluster_give_the_same_numbers(runs):
    _, paths = runs
    ds = open_run(paths[0])
    with A.scheduler():
        threaded = A.time_alignment(ds, 10).compute()
    with A.scheduler(workers=2, memory_limit="1GB") as client:
        assert client is not None
        distributed = A.time_alignment(ds, 10).compute()
        per_record = A.by_record(functools.partial(A.time_alignment, window_ms=10), paths[0])
    xr.testing.assert_allclose(threaded, distributed, rtol=1e-6)
    xr.testing.assert_allclose(threaded, per_record, rtol=1e-6)
    assert np.isfinite(threaded.cosine.values).any()


def test_by_record_is_the_analysis_of_the_whole_run(runs):
    _, paths = runs
    whole = A.gradient_alignment(open_run(paths[1]), "block").compute()
    per_record = A.by_record(functools.partial(A.gradient_alignment, by="block"), paths[1])
    xr.testing.assert_identical(whole, per_record.transpose(*whole.cosine.dims))
    assert per_record.sizes["iteration"] == 2 and np.isfinite(per_record.cosine).any()
    with pytest.raises(FileNotFoundError, match="no complete records"):
        A.by_record(A.gradient_alignment, paths[1] / "checkpoints")


def test_runs_are_selected_by_config_values_not_folder_names(runs):
    root, paths = runs
    assert A.find_runs([root], rule="mdgl") == [paths[0], paths[2]]
    assert A.find_runs([root], **{"run.seed": 2}) == [paths[1]]
    with pytest.raises(KeyError, match="ambiguous"):
        A.find_runs([root], n_steps=3)


def test_metrics_of_many_runs_form_one_tidy_table_and_curves_average_over_seeds(runs):
    _, paths = runs
    m = A.load_metrics(paths)
    assert {"run", "rule", "seed", "iteration", "split", "name", "value"} <= set(m.columns)
    curves = A.learning_curves(m, "loss", "val", smooth=1)
    mdgl = m[(m.rule == "mdgl") & (m.split == "val") & (m.name == "loss")]
    at0 = mdgl[mdgl.iteration == 0]["value"]
    row = curves[(curves.rule == "mdgl") & (curves.iteration == 0)].iloc[0]
    assert row["mean"] == pytest.approx(at0.mean()) and row["n"] == 2
    assert row["std"] == pytest.approx(at0.std(ddof=1))


def test_moving_average_matches_numpy_valid_convolution():
    x = np.arange(10.0) ** 2
    np.testing.assert_allclose(A.moving_average(x, 5), np.convolve(x, np.ones(5) / 5, "valid"))


def test_open_runs_stacks_runs_with_rule_and_seed_coordinates(runs):
    _, paths = runs
    ds = A.open_runs(paths)
    assert ds.sizes["run"] == 3
    assert ds.training_rule.values.tolist() == ["mdgl", "eprop", "mdgl"]
    assert ds.seed.values.tolist() == [1, 2, 3]


def test_cli_analyze_prints_a_table_and_writes_a_tidy_file(runs, tmp_path, capsys):
    root, _ = runs
    out = tmp_path / "align.csv"
    assert main(["analyze", "alignment", str(root), "--by", "block", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cosine similarity with BPTT" in printed and "rec_EE" in printed
    table = pd.read_csv(out)
    assert {"run", "training_rule", "seed", "part", "iteration", "rule", "cosine"} <= set(table)
    assert set(table.part) == {"rec_EE", "rec_EI", "rec_IE", "rec_II", "in_E", "in_I"}
    assert main(["analyze", "alignment", str(root), "--out", str(tmp_path / "x.txt")]) == 2


@pytest.mark.slow
def test_cli_analyze_on_a_local_cluster_gives_the_threaded_table(runs, tmp_path):
    root, _ = runs
    tables = []
    for extra in ([], ["--workers", "2", "--memory-limit", "1GB"]):
        out = tmp_path / f"time{len(extra)}.csv"
        args = ["analyze", "alignment", str(root), "--by", "time", "--window-ms", "10"]
        assert main([*args, "--out", str(out), *extra]) == 0
        tables.append(
            pd.read_csv(out).sort_values(["run", "iteration", "matrix", "window", "rule"])
        )
    threaded, cluster = (t.reset_index(drop=True) for t in tables)
    assert np.isfinite(threaded.cosine).any()
    pd.testing.assert_frame_equal(threaded, cluster[threaded.columns], rtol=1e-6)


def test_open_runs_joins_different_synapse_lists_by_identity(runs):
    _, paths = runs
    ds = A.open_runs(paths)
    one = open_run(paths[1])
    ids = one.post_rec.values * one.sizes["neuron"] + one.pre_rec.values
    got = ds.w_rec.sel(run=str(paths[1]), synapse_rec=ids).isel(iteration=0).values
    np.testing.assert_array_equal(got, one.w_rec.isel(iteration=0).values)
    assert (
        ds.post_rec.values * ds.sizes["neuron"] + ds.pre_rec.values == ds.synapse_rec.values
    ).all()
