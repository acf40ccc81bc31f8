"""The figures (mdgl_analysis.analysis.figures): each draws from a tiny set of real runs.

The runs are trained once per module: evidence accumulation with bptt, eprop, mdgl x 2 seeds (a
350 ms trial, batch 8, 50 cells, 6 iterations, validation every iteration, cosines with BPTT
every 2 iterations, records of 2 trials every 3 iterations), and one pattern-generation run (MSE,
a 200 ms trial, batch 1, 4 iterations, records every 2). Their folders have neutral names, so a
figure that groups runs by folder name instead of by config would fail.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import h5py
import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.patches import Rectangle

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mdgl_analysis import analysis  # noqa: E402
from mdgl_analysis.analysis import plotting  # noqa: E402
from mdgl_analysis.analysis.figures import FIGURES  # noqa: E402
from mdgl_analysis.cli import FIGURE_SCRIPTS  # noqa: E402
from mdgl_analysis.cli import main as mdgl_main  # noqa: E402
from mdgl_analysis.recording.readers import open_record, record_files  # noqa: E402

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
RULES = ("bptt", "eprop", "mdgl")
SEEDS = (1, 2)
TINY = [
    "--preset",
    "demo",
    "--iterations",
    "6",
    "--set",
    "task.n_cues=3",
    "--set",
    "task.delay_ms=50",
    "--set",
    "network.n_regular=25",
    "--set",
    "network.n_adaptive=25",
    "--set",
    "train.batch=8",
    "--set",
    "train.val_batch=8",
    "--set",
    "train.val_every=1",
    "--set",
    "train.compare_every=2",
    "--set",
    "record.every=3",
    "--set",
    "record.trials=0-1",
]
PATTERN = [
    "--preset",
    "demo",
    "--task",
    "pattern",
    "--iterations",
    "4",
    "--record-every",
    "2",
    "--set",
    "task.duration_ms=200",
    "--set",
    "train.batch=1",
    "--set",
    "train.val_batch=1",
    "--set",
    "train.val_every=1",
    "--set",
    "train.compare_every=2",
    "--set",
    "record.trials=all",  # the demo preset records trials 0-7: the batch has one
]


def figure(name: str) -> ModuleType:
    """The figure module ``mdgl_analysis.analysis.figures.<name>``."""
    return importlib.import_module(f"mdgl_analysis.analysis.figures.{name}")


def gid_lines(fig: plt.Figure) -> dict[str, plt.Line2D]:
    """Every line of ``fig`` that has a gid, by gid (the last one of a gid wins)."""
    return {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}


def check_outputs(name: str, out: Path, printed: str) -> None:
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert [str(p) for p in paths] == printed.split()[-2:]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of tiny trained evidence runs, nested and with names that say nothing of the
    rule."""
    base = tmp_path_factory.mktemp("runs")
    k = 0
    for rule in RULES:
        for seed in SEEDS:
            out = base / f"group{k % 2}" / f"run{k}"
            argv = ["train", *TINY, "--rule", rule, "--seed", str(seed)]
            assert mdgl_main([*argv, "--out", str(out), "--no-progress"]) == 0
            k += 1
    return base


@pytest.fixture(scope="module")
def runs(root: Path) -> list[Path]:
    return analysis.find_runs([root])


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny recorded run of the pattern-generation task (MSE at every step)."""
    out = tmp_path_factory.mktemp("pattern") / "a"
    assert mdgl_main(["train", *PATTERN, "--out", str(out), "--no-progress"]) == 0
    return out


# ------------------------------------------------------------------------------------------------
# every figure, every task


@pytest.mark.parametrize("name", FIGURES)
def test_figure_writes_png_and_pdf(name: str, root: Path, tmp_path: Path, capsys) -> None:
    assert figure(name).main([str(root), "--out", str(tmp_path)]) == 0
    check_outputs(name, tmp_path, capsys.readouterr().out)
    plt.close("all")


@pytest.mark.parametrize("name", FIGURES)
def test_pattern_run_draws_every_figure(
    name: str, pattern_run: Path, tmp_path: Path, capsys
) -> None:
    assert figure(name).main([str(pattern_run), "--out", str(tmp_path)]) == 0
    check_outputs(name, tmp_path, capsys.readouterr().out)
    plt.close("all")


def test_figure_modules_import_no_torch() -> None:
    """The analysis side imports no torch: each figure module, in a fresh interpreter."""
    code = (
        "import importlib, sys\n"
        f"for name in {list(FIGURES)!r}:\n"
        "    importlib.import_module(f'mdgl_analysis.analysis.figures.{name}')\n"
        "    assert 'torch' not in sys.modules, name\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_mdgl_figures_runs_the_package_modules(
    pattern_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """``mdgl figures`` draws the figures from the package (no analyses/ folder needed, run from
    elsewhere), each in its own process: a failing one stops no other. The analyses/ scripts
    are the same command lines."""
    from mdgl_analysis import cli

    assert FIGURE_SCRIPTS == FIGURES  # every figure, with its stable file names
    monkeypatch.chdir(tmp_path)  # not the checkout: nothing found by relative path
    monkeypatch.setattr(cli, "FIGURE_SCRIPTS", ("no_such_figure", "recorded_trial"))
    assert mdgl_main(["figures", str(pattern_run), "--out", "figs"]) == 1
    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert written == ["recorded_trial.pdf", "recorded_trial.png"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("no_such_figure: failed: ")
    # a figure its inputs cannot give is skipped with its reason; drawn ones make it a success
    monkeypatch.setattr(cli, "FIGURE_SCRIPTS", ("fig3c_learning_curves", "recorded_trial"))
    empty = tmp_path / "empty"
    shutil.copytree(pattern_run, empty)
    shutil.rmtree(empty / "records")
    assert mdgl_main(["figures", str(empty), "--out", "figs2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("recorded_trial: skipped: "), err
    monkeypatch.setattr(cli, "FIGURE_SCRIPTS", ("recorded_trial",))
    assert mdgl_main(["figures", str(empty), "--out", "figs3"]) == 2  # nothing could be drawn
    assert capsys.readouterr().err.startswith("recorded_trial: skipped: ")
    for name in FIGURES:
        assert (ANALYSES / f"{name}.py").is_file()
    helped = subprocess.run(
        [sys.executable, str(ANALYSES / "recorded_trial.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "--outputs" in helped.stdout


# ------------------------------------------------------------------------------------------------
# learning curves


def test_learning_curve_mean_equals_analysis(runs: list[Path]) -> None:
    """The plotted lines of each rule are analysis.learning_curves' means on the same runs:
    the loss in panel A, the task's metric (accuracy here) in panel B."""
    fig = figure("fig3c_learning_curves").plot(runs)
    metrics = analysis.load_metrics(runs)
    for ax, name in zip(fig.axes, ("loss", "accuracy"), strict=True):
        expected = analysis.learning_curves(metrics, name, "val", smooth=5)
        lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
        assert set(lines) == {f"mean:{rule}" for rule in RULES}
        for rule in RULES:
            want = expected[expected["rule"] == rule].sort_values("iteration")
            line = lines[f"mean:{rule}"]
            np.testing.assert_array_equal(line.get_xdata(), want["iteration"].to_numpy(float))
            np.testing.assert_allclose(line.get_ydata(), want["mean"].to_numpy(), rtol=0, atol=0)
            n = int(want["n"].max())
            assert line.get_label() == plotting.rule_n_label(rule, n, "runs")
    assert fig.axes[0].get_ylabel() == "validation loss (cross-entropy, nats)"
    assert fig.axes[1].get_ylabel() == "validation accuracy (fraction correct)"
    assert "mean ± std over n = 2 runs per rule" in fig.get_suptitle()
    assert "Fig. 3C" in fig.get_suptitle()
    plt.close(fig)


def test_learning_curves_of_a_regression_task_use_nmse(pattern_run: Path) -> None:
    fig = figure("fig3c_learning_curves").plot([pattern_run], smooth=1)
    metrics = analysis.load_metrics([pattern_run])
    ax_loss, ax_metric = fig.axes
    assert ax_loss.get_ylabel() == "validation loss (MSE, target units²)"
    assert ax_metric.get_ylabel() == "validation normalised MSE (1)"
    want = analysis.learning_curves(metrics, "nmse", "val", smooth=1)
    line = {line.get_gid(): line for line in ax_metric.get_lines()}["mean:bptt"]
    np.testing.assert_array_equal(line.get_xdata(), want["iteration"].to_numpy(float))
    np.testing.assert_allclose(line.get_ydata(), want["mean"].to_numpy(), rtol=0, atol=0)
    title = fig.get_suptitle()
    assert "Fig. 3C" not in title and "Evidence" not in title and "pattern" in title
    assert "one run per rule: no spread" in title and "±" not in title  # one run: no std
    assert line.get_label() == "BPTT, one run"
    assert not [c for ax in fig.axes for c in ax.collections if str(c.get_gid()).startswith("p")]
    plt.close(fig)
    # 5 validation points, 5-point smoothing: one point, drawn as a marker
    fig = figure("fig3c_learning_curves").plot([pattern_run])
    line = {line.get_gid(): line for line in fig.axes[1].get_lines()}["mean:bptt"]
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"
    plt.close(fig)


def test_learning_curves_refuse_runs_of_different_metrics(
    runs: list[Path], pattern_run: Path
) -> None:
    eprop = next(r for r in runs if plotting.run_key(r)[0] == "eprop")
    with pytest.raises(plotting.FigureError, match="different losses or metrics"):
        figure("fig3c_learning_curves").plot([eprop, pattern_run])


def test_runs_of_unequal_length_count_where_they_reached(runs: list[Path], tmp_path: Path):
    """One BPTT run stopped at iteration 3: the curve turns dotted there, and the table counts
    that run only at the checkpoints it reached."""
    bptt = [r for r in runs if analysis.run_config(r)["train"]["rule"] == "bptt"]
    copies = [shutil.copytree(r, tmp_path / f"copy{i}") for i, r in enumerate(bptt)]
    metrics = pd.read_csv(copies[0] / "metrics.csv")
    metrics[metrics.iteration <= 3].to_csv(copies[0] / "metrics.csv", index=False)
    fig = figure("fig3c_learning_curves").plot(copies, smooth=1)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    assert lines["mean:bptt"].get_xdata().max() == 3
    assert lines["fewer:bptt"].get_linestyle() == ":"
    assert lines["fewer:bptt"].get_xdata().min() == 3 and lines["fewer:bptt"].get_xdata().max() == 6
    plt.close(fig)
    script = load_table_script()
    df = script.table(copies, [3, 6])
    assert df.loc[0, "n@3"] == 2 and df.loc[0, "n@6"] == 1
    assert "(n=1)" in script.markdown(df, [3, 6])
    kept = script.metrics_table(copies)
    assert list(kept.columns) == ["run", "rule", "seed", "iteration", "split", "name", "value"]
    assert set(kept.run) == {"copy0", "copy1"} and kept.name.str.startswith("cos_").any()
    assert kept[kept.split == "train"].name.str.match("loss|accuracy|cos_").all()


def load_table_script() -> ModuleType:
    """``analyses/fig3c_table.py`` (a script, not a figure) as a module."""
    spec = importlib.util.spec_from_file_location("fig3c_table", ANALYSES / "fig3c_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------
# alignment


def test_alignment_over_training_mean_equals_metrics(runs: list[Path]) -> None:
    """The plotted line is the mean over seeds of the runs' own cos_<rule>_<part> metrics."""
    fig = figure("alignment_over_training").plot(runs)
    metrics = analysis.load_metrics(runs)
    for ax, part in zip(fig.axes, ("rec", "in"), strict=True):
        lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
        assert set(lines) == {f"mean:{rule}:{part}" for rule in ("eprop", "mdgl")}
        for rule in ("eprop", "mdgl"):
            own = metrics[(metrics["rule"] == rule) & (metrics["name"] == f"cos_{rule}_{part}")]
            want = own.groupby("iteration")["value"].mean()
            line = lines[f"mean:{rule}:{part}"]
            np.testing.assert_array_equal(line.get_xdata(), want.index.to_numpy(float))
            np.testing.assert_allclose(line.get_ydata(), want.to_numpy(), rtol=1e-12)
    plt.close(fig)


def test_legend_n_is_the_seeds_plotted_at_the_last_iteration(runs: list[Path], tmp_path: Path):
    """One e-prop seed's run stopped at iteration 2 of 6: the legend says n = 2 seeds where both
    are plotted and 1 for the dotted rest, which ends at the last iteration with one seed."""
    eprop = [r for r in runs if plotting.run_key(r)[0] == "eprop"]
    copies = [shutil.copytree(r, tmp_path / f"copy{i}") for i, r in enumerate(eprop)]
    metrics = pd.read_csv(copies[0] / "metrics.csv")
    metrics[metrics.iteration <= 2].to_csv(copies[0] / "metrics.csv", index=False)
    fig = figure("alignment_over_training").plot(copies)
    table = analysis.load_metrics(copies)
    cos = table[table["name"] == "cos_eprop_rec"]
    last = cos["iteration"].max()
    at_last = cos.loc[cos["iteration"] == last, "seed"].nunique()
    assert at_last == 1 and cos["seed"].nunique() == 2
    lines = gid_lines(fig)
    assert lines["mean:eprop:rec"].get_label() == f"e-prop, n = 2 seeds; dotted: {at_last}"
    assert lines["mean:eprop:rec"].get_xdata().max() == 2
    assert lines["fewer:eprop:rec"].get_linestyle() == ":"
    assert lines["fewer:eprop:rec"].get_xdata().max() == last
    assert "n = 1–2 seeds per rule" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"e-prop, n = 2 seeds; dotted: {at_last}" in legend
    assert any(t.startswith("dotted: fewer seeds") for t in legend)
    plt.close(fig)


def test_one_run_says_one_run_and_draws_no_spread(runs: list[Path]) -> None:
    mdgl = next(r for r in runs if plotting.run_key(r)[0] == "mdgl")
    fig = figure("alignment_over_training").plot([mdgl])
    assert "one seed per rule: no spread" in fig.get_suptitle() and "±" not in fig.get_suptitle()
    assert gid_lines(fig)["mean:mdgl:rec"].get_label() == "MDGL, one seed"
    assert not [c for ax in fig.axes for c in ax.collections]  # no ± band
    plt.close(fig)
    fig = figure("fig3c_learning_curves").plot([mdgl])
    assert "one run per rule: no spread" in fig.get_suptitle()
    assert gid_lines(fig)["mean:mdgl"].get_label() == "MDGL, one run"
    plt.close(fig)


def test_markers_only_on_series_of_few_points() -> None:
    plotting.setup()
    fig = plotting.new_figure((4, 3))
    ax = fig.subplots()
    for k, count in enumerate((5, plotting.DENSE + 1)):
        x = np.arange(count, dtype=float)
        rows = pd.DataFrame({"iteration": x, "mean": x, "std": x * 0, "n": np.full(count, 3)})
        plotting.band_by_n(ax, rows, "eprop", "seeds", f"mean:{k}")
    lines = gid_lines(fig)
    assert lines["mean:0"].get_marker() == "o"
    assert lines["mean:1"].get_marker() in (None, "None", "")
    assert lines["mean:1"].get_label() == "e-prop, n = 3 seeds"


def test_a_block_without_cosine_in_one_seed_says_what_n_counts(runs: list[Path], tmp_path: Path):
    eprop = [r for r in runs if plotting.run_key(r)[0] == "eprop"]
    copies = [shutil.copytree(r, tmp_path / f"copy{i}") for i, r in enumerate(eprop)]
    metrics = pd.read_csv(copies[0] / "metrics.csv")
    metrics.loc[metrics["name"] == "cos_eprop_rec_EI", "value"] = np.nan  # an empty block
    metrics.to_csv(copies[0] / "metrics.csv", index=False)
    module = figure("alignment_by_block")
    fig = module.plot(copies)
    table = plotting.cosine_table(copies)
    table = table[(table["rule"] == "eprop") & table["part"].isin(module.BLOCKS)]
    stats = module.summary(module.per_seed(table)).set_index("part")
    assert stats.loc["rec_EI", "n"] == 1 and stats["n"].max() == 2
    notes = [t for t in fig.axes[0].texts if t.get_gid() == "fewer:eprop"]
    assert [t.get_text() for t in notes] == ["1 of 2\nseeds"] * int((stats["n"] < 2).sum())
    assert "zero\ngradient in that block" in fig.legends[0].get_title().get_text()
    plt.close(fig)


def _contributions(bptt_scale: list[float], rule_scale: list[float]) -> xr.DataArray:
    """Contributions [iteration, rule, window, synapse] of ``bptt`` and ``eprop``: e-prop's is
    BPTT's pattern plus noise, each window scaled as given."""
    rng = np.random.default_rng(0)
    n_win, n_syn = len(bptt_scale), 40
    ref = rng.normal(size=(n_win, n_syn))
    other = ref + 0.5 * rng.normal(size=(n_win, n_syn))
    values = np.stack([ref * np.c_[bptt_scale], other * np.c_[rule_scale]])
    return xr.DataArray(
        values[None],
        dims=("iteration", "rule", "window", "synapse"),
        coords={"iteration": [0], "rule": ["bptt", "eprop"], "window": 50.0 * np.arange(n_win)},
    )


def test_negligible_windows_are_masked_and_normal_ones_are_not() -> None:
    """Window 0: e-prop's contribution is 1e-14 of BPTT's (a cosine of rounding residues);
    window 1: normal; window 2: BPTT's own is 1e-12 of its largest. Only window 1 counts."""
    contrib = _contributions([1.0, 1.0, 1e-12], [1e-14, 1.0, 1.0])
    res = analysis.compare_contributions(contrib, "synapse")
    assert np.isfinite(res.cosine.values).all()  # the raw cosines look like data everywhere
    masked = analysis.negligible(res).sel(rule="eprop", iteration=0).values
    assert masked.tolist() == [True, False, True]
    table = figure("alignment_over_time").masked_table(res).set_index("window")
    assert table["masked"].tolist() == [True, False, True]
    assert np.isnan(table.loc[0.0, "value"]) and np.isnan(table.loc[100.0, "value"])
    assert table.loc[50.0, "value"] == pytest.approx(float(res.cosine.sel(rule="eprop")[0, 1]))


def test_alignment_over_time_leaves_out_negligible_windows(runs: list[Path], monkeypatch) -> None:
    """With a time alignment whose first window is negligible for e-prop, the figure draws no
    value there (a gap), a hatched strip over it, says so in the legend, and draws the others."""
    real = analysis.time_alignment

    def fake(ds, window_ms, matrix="rec"):
        got = real(ds, window_ms, matrix=matrix).compute()
        scale = np.ones(got.sizes["window"])
        scale[0] = 1e-14
        factor = xr.DataArray(scale, dims="window", coords={"window": got.window})
        ratio = got.norm_ratio.where(got.rule != "eprop", got.norm_ratio * factor)
        return got.assign(norm_ratio=ratio)

    monkeypatch.setattr(analysis, "time_alignment", fake)
    eprop = next(r for r in runs if plotting.run_key(r)[0] == "eprop")
    fig = figure("alignment_over_time").plot([eprop], window_ms=50, matrices=("rec",))
    ax = fig.axes[1]
    stairs = {p.get_gid(): p for p in ax.patches if p.get_gid()}
    values = stairs["mean:eprop:rec"].get_data().values
    assert np.isnan(values[0]) and np.isfinite(values[1:]).any()
    strips = [c for c in ax.collections if c.get_gid() == "masked:eprop:rec"]
    assert len(strips) >= 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("masked: negligible contribution") for t in legend)
    plt.close(fig)


def test_cosine_names_split_into_rule_and_part() -> None:
    assert plotting.split_cosine_name("cos_mdgl_exact_rec_EI") == ("mdgl_exact", "rec_EI")
    assert plotting.split_cosine_name("cos_mdgl_in_I") == ("mdgl", "in_I")
    assert plotting.split_cosine_name("cos_eprop_rec") == ("eprop", "rec")
    assert plotting.split_cosine_name("loss") is None


def test_alignment_over_time_of_a_task_without_epochs(pattern_run: Path) -> None:
    """Pattern generation has no epochs: no timeline strip, nothing shaded."""
    fig = figure("alignment_over_time").plot([pattern_run])
    assert len(fig.axes) == 2  # one row: recurrent and input weights
    assert not [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# the recorded trial


def test_recorded_trial_of_a_regression_task_plots_target_and_output(pattern_run: Path) -> None:
    fig = figure("recorded_trial").plot(pattern_run)
    ds = open_record(record_files(pattern_run)[-1]).sel(trial=0)
    lines = gid_lines(fig)
    n_out = ds.sizes["output"]
    assert {f"target:{k}" for k in range(n_out)} | {f"output:{k}" for k in range(n_out)} <= set(
        lines
    )
    for k in range(n_out):
        np.testing.assert_allclose(lines[f"output:{k}"].get_ydata(), ds.y.values[:, k])
        np.testing.assert_allclose(
            lines[f"target:{k}"].get_ydata(), ds.target_value.sel(batch=0).values[:, k]
        )
        np.testing.assert_array_equal(lines[f"output:{k}"].get_xdata(), ds.time.values)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert any("target y*" in t and "every step" in t for t in titles)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["pattern"]  # the task's channel names
    assert "normalised MSE" in fig.get_suptitle() and "majority" not in fig.get_suptitle()
    plt.close(fig)


def test_recorded_trial_of_the_evidence_task(runs: list[Path]) -> None:
    """Cross-entropy: the softmax probability of the target class, the loss step marked; the
    input channels named by population; cues, delay and recall on top."""
    run = next(r for r in runs if record_files(r))
    fig = figure("recorded_trial").plot(run, trial=1)
    ds = open_record(record_files(run)[-1]).sel(trial=1)
    logits = ds.y.values.astype(float)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = ds.target.sel(batch=1).values
    line = gid_lines(fig)["p_target"]
    np.testing.assert_allclose(line.get_ydata(), p[np.arange(len(p)), target], rtol=1e-6)
    top, inputs = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in top.texts] == ["1", "2", "3", "cues", "delay", "recall"]
    assert [t.get_text() for t in inputs.get_yticklabels()] == [
        "left cue",
        "right cue",
        "recall cue",
        "background noise",
    ]
    side = "left" if target[-1] == 1 else "right"
    assert f"target: {side} majority" in fig.get_suptitle()
    plt.close(fig)


def test_recorded_trial_options(root: Path, tmp_path: Path, capsys) -> None:
    module = figure("recorded_trial")
    argv = [str(root), "--out", str(tmp_path), "--rule", "mdgl", "--seed", "2"]
    argv += ["--iteration", "0", "--trial", "1", "--signals", "bptt,mdgl"]
    assert module.main(argv) == 0
    assert all(p.stat().st_size > 0 for p in tmp_path.iterdir())
    capsys.readouterr()
    assert module.main([str(root), "--out", str(tmp_path), "--iteration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iteration 1 was not recorded" in err[0]
    assert module.main([str(root), "--out", str(tmp_path), "--trial", "5"]) == 2
    assert "trial 5 was not recorded" in capsys.readouterr().err
    plt.close("all")


# ------------------------------------------------------------------------------------------------
# runs from before the task plug-ins (run.json without "task", records of schema 1)


def downgrade(run: Path) -> None:
    """Make ``run`` look like a run of schema 1: run.json without ``task``; records without
    the task attributes, ``y`` and ``mask``, with one target per trial."""
    meta = json.loads((run / "run.json").read_text())
    del meta["task"]
    (run / "run.json").write_text(json.dumps(meta))
    for path in record_files(run):
        with h5py.File(path, "r+") as f:
            for key in ("task", "loss", "metric", "task_epochs"):
                del f.attrs[key]
            f.attrs["schema_version"] = 1
            target = f["target"][-1, :]
            for name in ("y", "mask", "target"):
                for k, dim in enumerate(f[name].dims):
                    for scale in list(dim.values()):
                        f[name].dims[k].detach_scale(scale)
                del f[name]
            f.create_dataset("target", data=target)
            f["target"].dims[0].attach_scale(f["batch"])


def test_runs_before_task_plugins_still_draw(runs: list[Path], tmp_path: Path, capsys) -> None:
    """Epochs, metric and target of a schema-1 run follow from its config (the evidence task);
    the recorded trial leaves out the readout panel, saying so in one line."""
    new = next(r for r in runs if record_files(r))
    old = Path(shutil.copytree(new, tmp_path / "old"))
    downgrade(old)
    ds = open_record(record_files(old)[-1])
    assert "y" not in ds and ds.target.dims == ("batch",)
    assert plotting.task_epochs(old) == plotting.task_epochs(new)
    assert plotting.task_epochs(ds) == plotting.task_epochs(new)
    assert plotting.task_info(old)["metric"] == "accuracy"
    for name in FIGURES:
        assert figure(name).main([str(old), "--out", str(tmp_path / "figs")]) == 0, name
    notes = [line for line in capsys.readouterr().err.splitlines() if "schema 1" in line]
    assert len(notes) == 1
    fig = figure("recorded_trial").plot(old)
    assert "p_target" not in gid_lines(fig) and "majority" in fig.get_suptitle()
    plt.close("all")


# ------------------------------------------------------------------------------------------------
# helpers


def test_save_writes_png_and_pdf(tmp_path: Path) -> None:
    plotting.setup()
    fig = plotting.new_figure((4, 3))
    ax = fig.subplots()
    plotting.mean_band(ax, [0, 1, 2], [0.5, 0.4, 0.3], [0.1, 0.1, 0.0], plotting.rule_color("mdgl"))
    paths = plotting.save(fig, tmp_path / "sub", "x")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert set(plotting.RULE_COLORS) == set(plotting.RULE_LABELS) == set(plotting.RULES)
    assert len(set(plotting.RULE_COLORS.values())) == len(plotting.RULE_COLORS)


def test_task_epochs_follow_the_config() -> None:
    """Computed from a config's [task] values without building the task, as the task does."""
    from mdgl_analysis.tasks import make_task

    params = {"n_cues": 3, "cue_ms": 50, "gap_ms": 25, "delay_ms": 50, "recall_ms": 100}
    cfg = {"network": {"dt": 1.0}, "task": {"name": "evidence", **params}}
    epochs = pd.DataFrame(plotting.task_epochs(cfg))
    assert epochs["name"].tolist() == ["cue 1", "cue 2", "cue 3", "delay", "recall"]
    assert [e.kind for e in plotting.task_epochs(cfg)] == ["cue"] * 3 + ["delay", "recall"]
    assert epochs[["start", "stop"]].to_numpy().tolist() == [
        [0, 50],
        [75, 125],
        [150, 200],
        [200, 250],
        [250, 350],
    ]
    task = make_task("evidence", params)
    assert plotting.evidence_info(cfg)["epochs"] == [[n, a, b] for n, a, b in task.epochs()]
    assert plotting.evidence_info(cfg)["input_names"] == task.input_names()
    assert plotting.evidence_info(cfg)["n_steps"] == task.n_steps
    assert plotting.task_epochs({"task": {"name": "pattern"}}) == []


def test_epochs_of_any_task_are_named_and_shaded() -> None:
    """NeuroGym-like periods: named boxes in the strip; waiting periods left unshaded."""
    info = {
        "dt_ms": 2.0,
        "epochs": [["fixation", 0, 50], ["stimulus", 50, 150], ["decision", 150, 200]],
    }
    epochs = plotting.task_epochs(info)
    assert [(e.kind, e.start, e.stop) for e in epochs] == [
        ("fixation", 0, 100),
        ("stimulus", 100, 300),
        ("decision", 300, 400),
    ]
    plotting.setup()
    fig = plotting.new_figure((6, 2))
    top, ax = fig.subplots(2, 1, sharex=True)
    plotting.epoch_bar(top, epochs)
    plotting.shade_epochs(ax, epochs)
    assert [t.get_text() for t in top.texts] == ["fixation", "stimulus", "decision"]
    assert len(ax.patches) == 2  # not the fixation
    assert plotting.task_epochs({"dt_ms": 1.0, "epochs": []}) == []
