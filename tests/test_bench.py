"""``mdgl bench``: JSON lines, interleaved rounds, ``--scaling`` and its figure.

The cases that time something run the real workers (one subprocess per case and round) on a tiny
configuration of the demo preset with the torch core; the checks are about what is reported,
never about how fast anything is.
"""

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from mdgl_analysis import cli
from mdgl_analysis import config as config_mod
from mdgl_analysis.training import bench

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
TINY = ["--preset", "demo", "--threads", "1", "--iterations", "1"]
TINY_SET = ["--set", "train.batch=8", "--set", "run.core=torch"]
SETTINGS = ("rule", "threads", "device", "core", "batch", "n_steps", "n_rec", "iterations")
TIMES = ("s_per_iter_median", "s_per_iter_min", "peak_rss_mb")


def lines_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_gives_one_object_per_case_and_rounds_run_interleaved(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.jsonl"
    argv = ["bench", *TINY, "--rules", "bptt,eprop", "--rounds", "2", "--json", "--out", str(out)]
    code = cli.main([*argv, *TINY_SET, "--set", "task.delay_ms=50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    objects = lines_of(captured.out)
    assert [o["rule"] for o in objects] == ["bptt", "eprop"]
    assert lines_of(out.read_text()) == objects  # --out writes the same lines
    for o in objects:
        assert all(key in o for key in SETTINGS + TIMES), o
        assert (o["threads"], o["core"], o["batch"], o["iterations"]) == (1, "torch", 8, 1)
        assert o["n_steps"] == 650 and o["n_rec"] == 100 and o["rounds"] == 2
        assert len(o["s_per_iter_rounds"]) == 2
        assert o["s_per_iter_median"] == pytest.approx(sum(o["s_per_iter_rounds"]) / 2)
        assert o["s_per_iter_min"] <= min(o["s_per_iter_rounds"])
        assert o["peak_rss_mb"] > 0
    a, b = objects
    assert a["run_order"] == [0, 2] and b["run_order"] == [1, 3]
    # the workers' own start times: bptt, eprop, bptt, eprop (round-robin, not bptt twice first)
    starts = [
        a["started_unix"][0],
        b["started_unix"][0],
        a["started_unix"][1],
        b["started_unix"][1],
    ]
    assert starts == sorted(starts)
    assert "round 1/2: bptt" in captured.err


def test_scaling_prints_the_time_exponent_between_consecutive_values(tmp_path, capsys):
    out = tmp_path / "scaling.jsonl"
    argv = ["bench", *TINY, "--rules", "bptt", "--scaling", "n=40,20", "--out", str(out)]
    code = cli.main([*argv, *TINY_SET, "--set", "task.delay_ms=50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    header, first, second = captured.out.splitlines()
    assert header.split()[3:] == ["N", "s/iter", "min", "peak", "RSS", "MB", "exponent", "device"]
    assert first.split()[3] == "20" and second.split()[3] == "40"  # sorted
    small, large = lines_of(out.read_text())
    assert (small["axis"], small["value"], small["n_rec"]) == ("n", 20, 20)
    assert (large["value"], large["n_rec"]) == (40, 40) and small["exponent"] is None
    expected = math.log(large["s_per_iter_median"] / small["s_per_iter_median"]) / math.log(2)
    assert large["exponent"] == pytest.approx(expected)
    assert second.split()[-2] == f"{expected:.2f}"
    assert "network.n_regular=20" in large["overrides"]


def paper_cfg(preset: str = "paper") -> config_mod.Config:
    return config_mod.resolve(None, preset, [], {})


@pytest.mark.parametrize("steps", [500, 1000, 1999, 2000, 4000])
def test_the_evidence_trial_is_stretched_to_the_asked_length(steps):
    cfg = paper_cfg()
    overrides = bench.trial_length_overrides(cfg, steps)
    scaled = config_mod.resolve(None, "paper", overrides, {})
    assert scaled.n_steps == steps
    assert scaled.task.params["n_cues"] == cfg.task.params["n_cues"]
    if steps == 2000:  # the paper's length: the paper's task, unchanged
        assert scaled.task.params == cfg.task.params


def test_a_task_with_a_duration_is_scaled_by_it():
    assert bench.trial_length_overrides(paper_cfg("pattern"), 300) == ["task.duration_ms=300"]


BAD = {
    "unknown axis": (["--scaling", "x=1,2"], "AXIS=V1,V2"),
    "no values": (["--scaling", "n="], "integers >= 1"),
    "not integers": (["--scaling", "b=16,many"], "integers >= 1"),
    "one value": (["--scaling", "t=500"], "at least two different values"),
    "odd network": (["--scaling", "n=100,201"], "N must be even"),
    "too short a trial": (["--scaling", "t=2,4"], "use longer trials"),
    "scaled key also set": (
        ["--scaling", "b=8,16", "--set", "train.batch=4"],
        "conflicts with --scaling",
    ),
    "unknown core": (["--cores", "torch,fast"], "--cores 'torch,fast'"),
    "zero rounds": (["--rounds", "0"], "--rounds 0 is not allowed"),
    "out is a folder": (["--out", "."], "--out '.' is not allowed"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_bench_arguments_give_one_error_line_and_exit_2(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra, expected = BAD[name]
    code = cli.main(["bench", "--rules", "bptt", "--threads", "1", "--iterations", "1", *extra])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdgl: error:"), lines
    assert expected in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# the figure


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scaling", ANALYSES / "bench_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(rule: str, core: str, value: int, seconds: float) -> dict:
    return {
        "rule": rule,
        "threads": 1,
        "device": "cpu",
        "core": core,
        "core_used": None,
        "preset": "paper",
        "batch": 64,
        "n_steps": 2000,
        "n_rec": value,
        "iterations": 5,
        "rounds": 3,
        "axis": "n",
        "value": value,
        "s_per_iter_median": seconds,
        "cpu": "test CPU",
    }


def test_the_scaling_figure_draws_one_line_per_rule_and_core(tmp_path, capsys):
    rows = [
        row("bptt", core, n, s * n / 100)
        for core, s in (("torch", 0.4), ("numba", 0.1))
        for n in (100, 200, 400)
    ] + [row("bptt_autograd", "torch", n, 0.9 * (n / 100) ** 1.5) for n in (100, 200, 400)]
    failed = {"rule": "mdgl", "axis": "n", "value": 400, "error": "MemoryError"}
    path = tmp_path / "scaling.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*rows, failed]) + "\n")
    script = load_script()
    loaded = script.load([path])
    assert len(loaded) == 9
    fig = script.P.new_figure((6, 4))
    ax = script.plot_scaling(fig.subplots(), loaded)
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 4 and labels[-1] == "slope 1 (time ∝ N)"
    assert "BPTT, core numba (last exponent 1.00)" in labels
    assert "BPTT by autograd (reference), core torch (last exponent 1.50)" in labels
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "3 interleaved rounds" in script.describe(loaded)
    out = tmp_path / "fig" / "scaling.png"
    assert script.main([str(path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "left out mdgl at n = 400: MemoryError" in capsys.readouterr().err


def test_the_scaling_figure_refuses_a_file_without_scaling_cases(tmp_path, capsys):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"rule": "bptt", "s_per_iter_median": 0.4}) + "\n")
    assert load_script().main([str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no timed --scaling case" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
