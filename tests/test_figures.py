"""The figure scripts in analyses/: each runs on a tiny set of real runs and writes PNG and PDF.

The runs are trained once per module (bptt, eprop, mdgl x 2 seeds; a 350 ms trial, batch 8,
50 cells, 6 iterations, validation every iteration, cosines with BPTT every 2 iterations, records
of 2 trials every 3 iterations). Their folders have neutral names, so a figure that groups runs
by folder name instead of by config would fail.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mdgl_analysis import analysis
from mdgl_analysis.analysis import plotting  # noqa: E402
from mdgl_analysis.cli import main as mdgl_main  # noqa: E402

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
SCRIPTS = (
    "fig3c_learning_curves",
    "alignment_over_training",
    "alignment_by_block",
    "alignment_over_time",
    "recorded_trial",
)
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


def load_script(name: str) -> ModuleType:
    """Import ``analyses/<name>.py`` as a module (analyses/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"figure_{name}", ANALYSES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of tiny trained runs, nested and with names that say nothing of the rule."""
    base = tmp_path_factory.mktemp("runs")
    k = 0
    for rule in RULES:
        for seed in SEEDS:
            out = base / f"group{k % 2}" / f"run{k}"
            rc = mdgl_main(
                [
                    "train",
                    *TINY,
                    "--rule",
                    rule,
                    "--seed",
                    str(seed),
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            assert rc == 0
            k += 1
    return base


@pytest.fixture(scope="module")
def runs(root: Path) -> list[Path]:
    return analysis.find_runs([root])


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_writes_png_and_pdf(name: str, root: Path, tmp_path: Path, capsys) -> None:
    paths = load_script(name).main([str(root), "--out", str(tmp_path)])
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    printed = capsys.readouterr().out.split()
    assert [str(p) for p in paths] == printed[-2:]
    plt.close("all")


def test_learning_curve_mean_equals_analysis(runs: list[Path]) -> None:
    """The plotted line of each rule is analysis.learning_curves' mean on the same runs."""
    fig = load_script("fig3c_learning_curves").plot(runs)
    expected = analysis.learning_curves(analysis.load_metrics(runs), "loss", "val", smooth=5)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    assert set(lines) == {f"mean:{rule}" for rule in RULES}
    for rule in RULES:
        want = expected[expected["rule"] == rule].sort_values("iteration")
        line = lines[f"mean:{rule}"]
        np.testing.assert_array_equal(line.get_xdata(), want["iteration"].to_numpy(float))
        np.testing.assert_allclose(line.get_ydata(), want["mean"].to_numpy(), rtol=0, atol=0)
        n = int(want["n"].max())
        assert line.get_label() == plotting.rule_n_label(rule, n, "runs")
    plt.close(fig)


def test_runs_of_unequal_length_count_where_they_reached(runs: list[Path], tmp_path: Path):
    """One BPTT run stopped at iteration 3: the curve turns dotted there, and the table counts
    that run only at the checkpoints it reached."""
    import shutil

    bptt = [r for r in runs if analysis.run_config(r)["train"]["rule"] == "bptt"]
    copies = [shutil.copytree(r, tmp_path / f"copy{i}") for i, r in enumerate(bptt)]
    metrics = pd.read_csv(copies[0] / "metrics.csv")
    metrics[metrics.iteration <= 3].to_csv(copies[0] / "metrics.csv", index=False)
    fig = load_script("fig3c_learning_curves").plot(copies, smooth=1)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    assert lines["mean:bptt"].get_xdata().max() == 3
    assert lines["fewer:bptt"].get_linestyle() == ":"
    assert lines["fewer:bptt"].get_xdata().min() == 3 and lines["fewer:bptt"].get_xdata().max() == 6
    plt.close(fig)
    script = load_script("fig3c_table")
    df = script.table(copies, [3, 6])
    assert df.loc[0, "n@3"] == 2 and df.loc[0, "n@6"] == 1
    assert "(n=1)" in script.markdown(df, [3, 6])
    kept = script.metrics_table(copies)
    assert list(kept.columns) == ["run", "rule", "seed", "iteration", "split", "name", "value"]
    assert set(kept.run) == {"copy0", "copy1"} and kept.name.str.startswith("cos_").any()
    assert kept[kept.split == "train"].name.str.match("loss|accuracy|cos_").all()


def test_alignment_over_training_mean_equals_metrics(runs: list[Path]) -> None:
    """The plotted line is the mean over seeds of the runs' own cos_<rule>_<part> metrics."""
    fig = load_script("alignment_over_training").plot(runs)
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


def test_cosine_names_split_into_rule_and_part() -> None:
    assert plotting.split_cosine_name("cos_mdgl_exact_rec_EI") == ("mdgl_exact", "rec_EI")
    assert plotting.split_cosine_name("cos_mdgl_in_I") == ("mdgl", "in_I")
    assert plotting.split_cosine_name("cos_eprop_rec") == ("eprop", "rec")
    assert plotting.split_cosine_name("loss") is None


def test_recorded_trial_options(root: Path, tmp_path: Path) -> None:
    script = load_script("recorded_trial")
    paths = script.main(
        [
            str(root),
            "--out",
            str(tmp_path),
            "--rule",
            "mdgl",
            "--seed",
            "2",
            "--iteration",
            "0",
            "--trial",
            "1",
            "--signals",
            "bptt,mdgl",
        ]
    )
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(SystemExit, match="iteration 1 was not recorded"):
        script.main([str(root), "--out", str(tmp_path), "--iteration", "1"])
    with pytest.raises(SystemExit, match="trial 5 was not recorded"):
        script.main([str(root), "--out", str(tmp_path), "--trial", "5"])
    plt.close("all")


def test_save_writes_png_and_pdf(tmp_path: Path) -> None:
    plotting.setup()
    fig, ax = plt.subplots()
    plotting.mean_band(ax, [0, 1, 2], [0.5, 0.4, 0.3], [0.1, 0.1, 0.0], plotting.rule_color("mdgl"))
    paths = plotting.save(fig, tmp_path / "sub", "x")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert set(plotting.RULE_COLORS) == set(plotting.RULE_LABELS) == set(plotting.RULES)
    assert len(set(plotting.RULE_COLORS.values())) == len(plotting.RULE_COLORS)
    plt.close(fig)


def test_task_epochs_follow_the_config() -> None:
    cfg = {
        "network": {"dt": 1.0},
        "task": {
            "n_cues": 3,
            "cue_ms": 50,
            "gap_ms": 25,
            "delay_ms": 50,
            "recall_ms": 100,
            "cue_rate_hz": 40.0,
            "noise_rate_hz": 10.0,
        },
    }
    epochs = pd.DataFrame(plotting.task_epochs(cfg))
    assert epochs["kind"].tolist() == ["cue", "cue", "cue", "delay", "recall"]
    assert epochs[["start", "stop"]].to_numpy().tolist() == [
        [0, 50],
        [75, 125],
        [150, 200],
        [200, 250],
        [250, 350],
    ]
