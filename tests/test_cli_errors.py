"""Bad input to ``mdgl``: status 2, one ``mdgl: error:`` line on stderr, nothing created.

Every case runs in a fresh temporary folder that is also the working directory, so a run folder
created anywhere relative (the default ``runs/<time>-...``) or at ``--out`` would show up in the
before/after comparison of the folder's contents.
"""

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mdgl_analysis import cli

PREFIX = "mdgl: error:"
OUT = "{tmp}/out"
RUN = "{tmp}/r"
# A case that wrongly passes validation trains for one short iteration instead of hours.
FAST = ["--no-progress", "--iterations", "1", "--set", "task.delay_ms=50"]


def train_task(*extra):
    """``train`` for another task than evidence (the evidence parameter of FAST does not apply)."""
    return ["train", *FAST[:3], "--out", OUT, "--preset", "demo", *extra]


def train(*extra, preset="demo"):
    argv = ["train", *FAST, "--out", OUT]
    if preset:
        argv += ["--preset", preset]
    return argv + list(extra)


# ------------------------------------------------------------------------------------------------
# set-ups


def existing_out(tmp):
    out = tmp / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(bytes(range(256)))


def missing_config(tmp):
    pass


def invalid_toml(tmp):
    (tmp / "bad.toml").write_text("[network\nn_in = \n")


def unknown_section_toml(tmp):
    (tmp / "bad.toml").write_text("[network]\nn_in = 40\n\n[bogus]\nx = 1\n")


def good_toml(tmp):
    (tmp / "good.toml").write_text("[train]\niterations = 1\n")


def task_files(tmp):
    (tmp / "tasks.py").write_text(
        "import torch\n"
        "from mdgl_analysis.tasks import Task, TaskBatch\n"
        "class NanTask(Task):\n"
        "    n_in, n_out, n_steps, loss = 4, 2, 20, 'cross_entropy'\n"
        "    def sample(self, batch, gen):\n"
        "        x = torch.full((self.n_steps, batch, self.n_in), float('nan'))\n"
        "        t = torch.zeros(self.n_steps, batch, dtype=torch.int64)\n"
        "        return TaskBatch(x, t, torch.ones(self.n_steps, batch, dtype=torch.bool))\n"
        "class EmptyMask(NanTask):\n"
        "    def sample(self, batch, gen):\n"
        "        b = super().sample(batch, gen)\n"
        "        return TaskBatch(b.x.nan_to_num(), b.target, b.mask & False)\n"
        "class NoLoss(Task):\n"
        "    n_in, n_out, n_steps = 4, 2, 20\n"
    )


def garbage_metrics(tmp):
    with open(tmp / "r" / "metrics.csv", "a") as f:
        f.write("this is not a metric row\n")


def incomplete_run_json(tmp):
    import json

    path = tmp / "r" / "run.json"
    meta = json.loads(path.read_text())
    del meta["rule"], meta["git"]
    path.write_text(json.dumps(meta))


def edited_rule(tmp):
    path = tmp / "r" / "config.toml"
    path.write_text(path.read_text().replace('rule = "bptt"', 'rule = "eprop"'))


def edited_sizes(tmp):
    path = tmp / "r" / "config.toml"
    path.write_text(path.read_text().replace("n_regular = 50", "n_regular = 40"))


def not_a_run(tmp):
    folder = tmp / "notarun"
    folder.mkdir()
    (folder / "config.toml").write_text("[train]\niterations = 1\n")  # but no run.json
    (folder / "metrics.csv").write_text("iteration,split,name,value\n")


@dataclass(frozen=True)
class Case:
    argv: list[str]
    expect: list[str]  # substrings of the error line
    setup: object = None  # callable(tmp_path) run before the snapshot
    argparse: bool = False  # rejected by argparse (SystemExit) rather than by main's return
    tiny_run: bool = False  # needs a copy of a real 2-iteration run at RUN
    marks: list = field(default_factory=list)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")

CASES = {
    "unknown-rule": Case(train("--rule", "nope"), ["train.rule", "'nope'", "bptt"]),
    "unknown-preset": Case(train(preset="nope"), ["unknown preset", "'nope'", "paper"]),
    "unknown-key": Case(train("--set", "network.n_bogus=3"), ["'network.n_bogus'"]),
    "unknown-section": Case(train("--set", "bogus.n_in=3"), ["'bogus.n_in'"]),
    "set-without-equals": Case(train("--set", "network.n_adaptive"), ["network.n_adaptive", "="]),
    "negative-size": Case(train("--set", "network.n_adaptive=-3"), ["network.n_adaptive", "-3"]),
    "zero-batch": Case(train("--set", "train.batch=0"), ["train.batch", "0"]),
    "probability-above-one": Case(train("--set", "network.p_rec=1.5"), ["network.p_rec", "1.5"]),
    "probability-below-zero": Case(train("--set", "network.p_in=-0.1"), ["network.p_in", "-0.1"]),
    "non-numeric-value": Case(train("--set", "train.lr=fast"), ["train.lr", "'fast'"]),
    "non-integer-for-int-field": Case(train("--set", "train.batch=2.5"), ["train.batch", "2.5"]),
    "non-integer-seed": Case(train("--seed", "abc"), ["run.seed", "'abc'"]),
    "batch-above-cue-patterns": Case(
        train("--set", "train.batch=129"), ["train.batch", "129", "128"]
    ),
    "unknown-device": Case(train("--device", "tpu"), ["run.device", "'tpu'"]),
    "missing-config-file": Case(
        train("--config", "{tmp}/missing.toml", preset=None),
        ["missing.toml", "does not exist"],
        setup=missing_config,
    ),
    "invalid-toml-file": Case(
        train("--config", "{tmp}/bad.toml", preset=None),
        ["bad.toml", "not valid TOML"],
        setup=invalid_toml,
    ),
    "unknown-section-in-toml-file": Case(
        train("--config", "{tmp}/bad.toml", preset=None),
        ["bad.toml", "'bogus'"],
        setup=unknown_section_toml,
    ),
    "existing-output-folder": Case(train(), ["out", "already exists"], setup=existing_out),
    "config-and-preset-together": Case(
        train("--config", "{tmp}/good.toml", preset="demo"),
        ["--config", "--preset"],
        setup=good_toml,
        argparse=True,
    ),
    "cuda-not-available": Case(
        train("--device", "cuda"), ["run.device", "'cuda'", "no CUDA device"], marks=[NO_CUDA]
    ),
    "unknown-task": Case(train_task("--task", "nope"), ["task.name = 'nope'", "evidence, pattern"]),
    "missing-task-file": Case(
        train_task("--task", "nowhere.py:MyTask"), ["no such file", "nowhere.py'"]
    ),
    "missing-task-class": Case(
        train_task("--task", "tasks.py:Missing"),
        ["has no class 'Missing'", "NanTask"],
        setup=task_files,
    ),
    "task-with-nan-inputs": Case(
        train_task("--task", "tasks.py:NanTask"), ["NanTask", "x has NaN"], setup=task_files
    ),
    "task-with-an-empty-mask": Case(
        train_task("--task", "tasks.py:EmptyMask"), ["mask selects no step"], setup=task_files
    ),
    "task-without-a-loss": Case(
        train_task("--task", "tasks.py:NoLoss"), ["loss"], setup=task_files
    ),
    "unknown-task-parameter": Case(
        train("--set", "task.n_cue=3"), ["task.n_cue is not a parameter of task evidence", "n_cues"]
    ),
    "bad-task-parameter": Case(train("--set", "task.n_cues=many"), ["task.n_cues", "'many'"]),
    "network-size-disagrees-with-task": Case(
        train("--set", "network.n_in=41"), ["network.n_in = 41", "the task's size (40"]
    ),
    "task-dt-differs": Case(train("--set", "network.dt=0.5"), ["task.dt = 1.0", "network.dt"]),
    "unknown-neurogym-env": Case(train_task("--task", "neurogym:Nope-v0"), ["Nope-v0"]),
    "bad-boolean": Case(
        train("--set", "train.stop_on_divergence=maybe"),
        ["train.stop_on_divergence", "'maybe'", "true or false"],
    ),
    "zero-divergence-patience": Case(
        train("--set", "train.divergence_patience=0"), ["train.divergence_patience", "0"]
    ),
    "verify-tolerance-nan": Case(
        ["verify", RUN, "--tolerance", "nan"], ["--tolerance nan", "finite"], tiny_run=True
    ),
    "verify-tolerance-negative": Case(
        ["verify", RUN, "--tolerance", "-1"], ["--tolerance -1.0", ">= 0"], tiny_run=True
    ),
    "analyze-window-nan": Case(
        ["analyze", "alignment", RUN, "--by", "time", "--window-ms", "nan"],
        ["--window-ms nan", "finite"],
        tiny_run=True,
    ),
    "sweep-open-seed-range": Case(
        ["sweep", "demo", "--seeds", "1-", "--out", OUT], ["--seeds '1-'", "A-B"]
    ),
    "sweep-reversed-seed-range": Case(
        ["sweep", "demo", "--seeds", "5-1", "--out", OUT], ["--seeds '5-1'"]
    ),
    "info-garbage-in-metrics": Case(
        ["info", RUN],
        ["metrics.csv", "line", "not iteration,split,name,value"],
        setup=garbage_metrics,
        tiny_run=True,
    ),
    "resume-garbage-in-metrics": Case(
        ["resume", "--no-progress", "--iterations", "3", RUN],
        ["metrics.csv", "not iteration,split,name,value"],
        setup=garbage_metrics,
        tiny_run=True,
    ),
    "info-incomplete-run-json": Case(
        ["info", RUN], ["run.json", "lacks rule, git"], setup=incomplete_run_json, tiny_run=True
    ),
    "resume-edited-rule": Case(
        ["resume", "--no-progress", "--iterations", "3", RUN],
        ["train.rule = 'eprop'", "trained with 'bptt'"],
        setup=edited_rule,
        tiny_run=True,
    ),
    "resume-edited-sizes": Case(
        ["resume", "--no-progress", "--iterations", "3", RUN],
        ["ckpt_000002.pt does not fit", "config.toml", "edited"],
        setup=edited_sizes,
        tiny_run=True,
    ),
    "unknown-command": Case(["nope"], ["'nope'", "train"], argparse=True),
    "no-command": Case([], ["command"], argparse=True),
    "info-not-a-run": Case(
        ["info", "{tmp}/notarun"], ["notarun", "not a run folder"], setup=not_a_run
    ),
    "info-missing-folder": Case(["info", "{tmp}/nowhere"], ["nowhere", "not a run folder"]),
    "resume-not-a-run": Case(
        ["resume", "--no-progress", "{tmp}/notarun"],
        ["notarun", "not a run folder"],
        setup=not_a_run,
    ),
    "resume-iterations-zero": Case(
        ["resume", "--no-progress", "--iterations", "0", RUN], ["--iterations 0"], tiny_run=True
    ),
    "resume-iterations-below-checkpoint": Case(
        ["resume", "--no-progress", "--iterations", "1", RUN],
        ["--iterations 1", "2"],
        tiny_run=True,
    ),
    "resume-non-integer-iterations": Case(
        ["resume", "--no-progress", "--iterations", "many", RUN],
        ["--iterations", "'many'"],
        argparse=True,
        tiny_run=True,
    ),
}

PARAMS = [pytest.param(case, id=name, marks=case.marks) for name, case in CASES.items()]
SUBPROCESS = [
    "unknown-rule",
    "config-and-preset-together",
    "existing-output-folder",
    "task-with-nan-inputs",
]


@pytest.fixture(scope="module")
def tiny_run_template(tmp_path_factory):
    """A real, completed 2-iteration demo run (made once, copied into each case that needs it)."""
    path = tmp_path_factory.mktemp("template") / "r"
    argv = [
        "train",
        "--preset",
        "demo",
        "--iterations",
        "2",
        "--set",
        "task.delay_ms=50",
        "--no-progress",
        "--out",
        str(path),
    ]
    assert cli.main(argv) == 0
    assert (path / "checkpoints" / "ckpt_000002.pt").is_file()
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, and for files their bytes and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = ("file", p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else ("dir",)
    return out


@pytest.fixture
def prepare(request, tmp_path, monkeypatch):
    """Set a case up in ``tmp_path`` (also the working directory); return its argv."""

    def _prepare(case: Case) -> list[str]:
        monkeypatch.chdir(tmp_path)
        if case.tiny_run:
            template = request.getfixturevalue("tiny_run_template")
            shutil.copytree(template, tmp_path / "r")
        if case.setup:
            case.setup(tmp_path)
        return [arg.format(tmp=tmp_path) for arg in case.argv]

    return _prepare


def check_error_line(err: str, case: Case) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {err!r}"
    assert err.endswith("\n")
    assert lines[0].startswith(PREFIX), lines[0]
    for text in case.expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


def check_nothing_created(tmp_path: Path, before: dict, case: Case) -> None:
    assert snapshot(tmp_path) == before
    if case.setup is not existing_out and "--out" in case.argv:
        assert not (tmp_path / "out").exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_exits_2_with_one_error_line_and_creates_nothing(case, prepare, tmp_path, capsys):
    argv = prepare(case)
    before = snapshot(tmp_path)
    capsys.readouterr()
    if case.argparse:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        code = exc.value.code
    else:
        code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == cli.EXIT_USAGE == 2
    assert captured.out == ""
    check_error_line(captured.err, case)
    check_nothing_created(tmp_path, before, case)


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_from_the_command_line_exits_2_with_one_error_line(name, prepare, tmp_path):
    case = CASES[name]
    argv = prepare(case)
    before = snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mdgl_analysis", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    check_error_line(proc.stderr, case)
    check_nothing_created(tmp_path, before, case)


def test_a_failed_resume_leaves_metrics_and_checkpoints_of_the_run_unchanged(
    prepare, tmp_path, capsys
):
    case = CASES["resume-iterations-zero"]
    argv = prepare(case)
    run = tmp_path / "r"
    metrics = (run / "metrics.csv").read_bytes()
    checkpoints = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    meta = (run / "run.json").read_bytes()
    assert metrics.count(b"\n") > 1 and sorted(checkpoints) == ["ckpt_000000.pt", "ckpt_000002.pt"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(PREFIX)
    assert (run / "metrics.csv").read_bytes() == metrics
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == checkpoints
    assert (run / "run.json").read_bytes() == meta


def test_the_same_run_can_still_be_resumed_after_the_failed_attempts(prepare, tmp_path, capsys):
    """The error cases are not vacuous: a valid resume of the same copied run does work."""
    argv = prepare(CASES["resume-iterations-zero"])
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(PREFIX)
    assert cli.main(["resume", "--no-progress", "--iterations", "3", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "r" / "checkpoints" / "ckpt_000003.pt").is_file()
