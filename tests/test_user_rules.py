"""Rules from a user's file (``FILE.py:FUNCTION``): trained and compared with BPTT without
touching the package, checked at every call, never imported from a run folder by itself; and the
contract every registered rule keeps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import mdgl_analysis as m
from mdgl_analysis import cli
from mdgl_analysis.config import ConfigError
from mdgl_analysis.rules import RULES, RuleError, check_gradients, get_rule, record_rules
from mdgl_analysis.rules.local import signal_of
from mdgl_analysis.training.loop import ResumeError

from helpers import make_small, small_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules.md"

TINY = {
    "network.n_regular": 10,
    "network.n_adaptive": 10,
    "train.iterations": 2,
    "train.batch": 2,
    "train.val_batch": 2,
    "train.compare_every": 1,
    "record.every": 0,
    "record.iterations": "",
    "record.trials": "all",
}

RULE_FILE = """
import torch
from mdgl_analysis.network.model import Gradients
from mdgl_analysis.rules import get_rule


def doubled(snapshot, forward):
    return Gradients(*(2 * g for g in get_rule("eprop")(snapshot, forward)))


def wrong_shape(snapshot, forward):
    g = get_rule("eprop")(snapshot, forward)
    return g._replace(w_rec=g.w_rec[:-1])


def not_gradients(snapshot, forward):
    return 3


def nan(snapshot, forward):
    g = get_rule("eprop")(snapshot, forward)
    return g._replace(w_in=g.w_in * float("nan"))


def raising(snapshot, forward):
    raise ValueError("no\\nluck")


def one_argument(snapshot):
    return None
"""


@pytest.fixture
def rule_file(tmp_path):
    path = tmp_path / "rules.py"
    path.write_text(RULE_FILE)
    return path


def test_the_worked_example_of_the_docs_runs_as_written(tmp_path):
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", DOCS.read_text(), flags=re.S | re.M)
    rule_code, script = (b for b in blocks if "my_rule" in b)
    assert rule_code.startswith("# my_rule.py")
    (tmp_path / "my_rule.py").write_text(rule_code)
    (tmp_path / "example.py").write_text(script)
    done = cli_free_run(tmp_path / "example.py", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed" in done.stdout
    assert "'cos_eprop_rec'" in done.stdout and "'cos_excitatory_signal_rec'" in done.stdout


def cli_free_run(script: Path, cwd: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, env=env
    )


def test_a_rule_from_a_file_trains_is_compared_and_resumes_only_when_named(rule_file, tmp_path):
    name = f"{rule_file}:doubled"
    compared = {**TINY, "train.compare_rules": f"eprop,{name}"}
    run = m.train("demo", rule=name, set=compared, out=tmp_path / "r")
    assert run.status == "completed" and run.meta["rule"] == name
    metrics = run.metrics()
    cos = metrics.query("name == 'cos_doubled_rec'").value.to_numpy()
    eprop = metrics.query("name == 'cos_eprop_rec'").value.to_numpy()
    assert len(cos) == 2 and abs(cos - eprop).max() < 1e-6 and abs(cos).min() > 0  # 2 x e-prop
    assert set(run.meta["rule_files"]) == {name}
    marker = tmp_path / "imported"
    before = rule_file.read_text()
    rule_file.write_text(before + f"\nopen({str(marker)!r}, 'a').write('x')\n")
    try:
        for extra in ([], ["--rule", f"{tmp_path / 'other.py'}:doubled"]):
            argv = ["resume", str(run.path), "--iterations", "3", "--no-progress", *extra]
            assert cli.main(argv) == 2
        with pytest.raises(ResumeError, match="changed since"):
            m.resume(run, iterations=3, rules=[name])
        assert not marker.exists()  # refused before anything was imported
    finally:
        rule_file.write_text(before)
    assert m.resume(run, iterations=3, rules=[name]).meta["iteration"] == 3


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("missing", "has no function 'missing'; rules there: doubled, nan,"),
        ("one_argument", "one_argument is not a function rule(snapshot, forward)"),
    ],
)
def test_a_file_without_the_rule_is_refused_before_training(rule_file, tmp_path, function, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        m.train("demo", rule=f"{rule_file}:{function}", set=TINY, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="no such file"):
        m.train("demo", rule=f"{tmp_path / 'nowhere.py'}:f", set=TINY, out=tmp_path / "r")


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("wrong_shape", "w_rec is (11, 12) torch.float64 on cpu; allowed: (12, 12)"),
        ("not_gradients", "returned int"),
        ("nan", "w_in has non-finite values"),
        ("raising", "raised ValueError: no luck"),
    ],
)
def test_a_rule_breaking_its_contract_gets_a_one_line_error(rule_file, function, message):
    cfg, net, snap, fwd = make_small(0)
    with pytest.raises(RuleError, match=re.escape(message)) as err:
        get_rule(f"{rule_file}:{function}")(snap, fwd)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("rule", RULES)
def test_every_registered_rule_keeps_the_contract(rule):
    """Shapes, dtype and device of the weights, finite, not all zero, recordable (BPTT, or a
    per-neuron signal that the record pairs with the traces)."""
    cfg, net, snap, fwd = make_small(1)
    grads = check_gradients(rule, RULES[rule](snap, fwd), snap)
    for g in grads:
        assert g.abs().max() > 0
    assert rule in record_rules(small_config())
    if rule != "bptt":
        signal = signal_of(rule, snap, fwd)
        assert signal.shape == fwd.signal.shape and bool(torch.isfinite(signal).all())
