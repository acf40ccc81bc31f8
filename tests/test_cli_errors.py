"""Bad input to ``mdgl``: status 2, one ``mdgl: error:`` line on stderr, nothing created.

Every case runs in a fresh temporary folder that is also the working directory, so a run folder
created anywhere relative (the default ``runs/<time>-...``) or at ``--out`` would show up in the
before/after comparison of the folder's contents.

The table covers every subcommand; config files (TOML syntax, unknown sections and keys, wrong
types, out-of-range values of every section and of each built-in task's parameters); sizes that
cannot fit in memory; tasks in a user's file and NeuroGym environments; and damaged run folders
(run.json, metrics.csv, config.toml, checkpoints, manifest, records).
"""

import json
import os
import shutil
import socket
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


def pattern(*extra):
    return train_task("--task", "pattern", *extra)


def neurogym(*extra, env="PerceptualDecisionMaking-v0"):
    return train_task("--task", f"neurogym:{env}", *extra)


def with_config(name="c.toml"):
    """``train --config`` of a file the case writes (``toml``)."""
    return train("--config", "{tmp}/" + name, preset=None)


def resume(*extra):
    return ["resume", "--no-progress", "--iterations", "3", *extra, RUN]


def sweep(*extra, config="demo"):
    return ["sweep", config, *extra, "--out", OUT]


def bench(*extra):
    return ["bench", "--rules", "bptt", "--threads", "1", "--iterations", "1", *extra]


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
        "from mdgl_analysis.tasks import Task, TaskBatch, TaskError\n"
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
        "class Good(Task):\n"
        "    n_in, n_out, n_steps, loss = 4, 2, 20, 'cross_entropy'\n"
        "    def sample(self, batch, gen):\n"
        "        x = torch.zeros(self.n_steps, batch, self.n_in)\n"
        "        t = torch.zeros(self.n_steps, batch, dtype=torch.int64)\n"
        "        return TaskBatch(x, t, torch.ones(self.n_steps, batch, dtype=torch.bool))\n"
        "class NotATask:\n"
        "    pass\n"
        "class BadInit(Good):\n"
        "    def __init__(self, **params):\n"
        "        raise ValueError('first line\\nsecond line')\n"
        "class ZeroIn(Good):\n"
        "    n_in = 0\n"
        "class Hinge(Good):\n"
        "    loss = 'hinge'\n"
        "class OneClass(Good):\n"
        "    n_out = 1\n"
        "class WrongShape(Good):\n"
        "    def sample(self, batch, gen):\n"
        "        b = super().sample(batch, gen)\n"
        "        return TaskBatch(b.x[:, :, :2], b.target, b.mask)\n"
        "class Raises(Good):\n"
        "    def sample(self, batch, gen):\n"
        "        raise RuntimeError('boom\\nand more')\n"
        "class ClassOutOfRange(Good):\n"
        "    def sample(self, batch, gen):\n"
        "        b = super().sample(batch, gen)\n"
        "        return TaskBatch(b.x, b.target + 5, b.mask)\n"
        "class ReturnsDict(Good):\n"
        "    def sample(self, batch, gen):\n"
        "        return {'x': 1}\n"
        "class IntegerInputs(Good):\n"
        "    def sample(self, batch, gen):\n"
        "        b = super().sample(batch, gen)\n"
        "        return TaskBatch(b.x.long(), b.target, b.mask)\n"
        "class Checked(Good):\n"
        "    level = 3\n"
        "    def check(self):\n"
        "        if self.level > 2:\n"
        "            raise TaskError(f'task.level = {self.level} is not allowed: at most 2')\n"
        "class NoSample(Task):\n"
        "    n_in, n_out, n_steps, loss = 4, 2, 20, 'cross_entropy'\n"
        "class MseOfClasses(Good):\n"
        "    loss = 'mse'\n"
        "class Endless(Good):\n"
        "    n_steps = 10**9\n"
        "class FloatSteps(Good):\n"
        "    n_steps = 20.0\n"
    )


def garbage_metrics(tmp):
    with open(tmp / "r" / "metrics.csv", "a") as f:
        f.write("this is not a metric row\n")


def incomplete_run_json(tmp):
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


def files(contents):
    """Write ``{name: text or bytes}`` into the case's folder."""

    def setup(tmp):
        for name, data in contents.items():
            path = tmp / name
            path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)

    return setup


def toml(text):
    return files({"c.toml": text})


def folder(name):
    return lambda tmp: (tmp / name).mkdir()


def in_run(rel, data):
    """Overwrite a file of the copied run with ``data``."""

    def setup(tmp):
        path = tmp / "r" / rel
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)

    return setup


def removed(*rels):
    def setup(tmp):
        for rel in rels:
            path = tmp / "r" / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    return setup


def truncated(*rels):
    def setup(tmp):
        for rel in rels:
            path = tmp / "r" / rel
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return setup


def torch_saved(rel, obj):
    return lambda tmp: torch.save(obj, tmp / "r" / rel)


def run_json(**changes):
    def setup(tmp):
        path = tmp / "r" / "run.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return setup


def config_edit(old, new):
    def setup(tmp):
        path = tmp / "r" / "config.toml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    return setup


def both(*setups):
    def setup(tmp):
        for s in setups:
            s(tmp)

    return setup


def still_running(tmp):
    run_json(status="running", pid=os.getpid(), host=socket.gethostname())(tmp)


RANDOM_BYTES = bytes(range(256)) * 16
CHECKPOINT = "checkpoints/ckpt_000002.pt"
FIRST_CHECKPOINT = "checkpoints/ckpt_000000.pt"
RECORD = "records/iter_000000.h5"
MEMORY = "needs about"  # the start of the refusal of sizes that cannot fit in memory


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
    "tensorboard-not-a-boolean": Case(
        train("--set", "run.tensorboard=maybe"), ["run.tensorboard = 'maybe'", "true or false"]
    ),
    "resume-task-file-for-a-built-in-task": Case(
        ["resume", "--no-progress", "--iterations", "3", "--task", "{tmp}/t.py:T", RUN],
        ["--task", "t.py:T", "built-in task 'evidence'"],
        tiny_run=True,
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
    # -- network sizes and parameters --------------------------------------------------------
    "network-beyond-memory": Case(
        train("--set", "network.n_regular=1000000"),
        ["network.n_regular=1000000", MEMORY, "TB of memory", "n_rec=1000050"],
    ),
    "readout-size-disagrees-with-task": Case(
        train("--set", "network.n_out=1"), ["network.n_out = 1", "the task's size (2"]
    ),
    "fewer-than-two-cells": Case(
        train("--set", "network.n_regular=1", "--set", "network.n_adaptive=0"),
        ["network.n_regular = 1", "n_regular + n_adaptive >= 2"],
    ),
    "no-inhibitory-cell": Case(
        train(
            *["--set", "network.n_regular=2", "--set", "network.n_adaptive=0"],
            *["--set", "network.exc_fraction=0.9"],
        ),
        ["network.n_regular = 2", "one excitatory and one inhibitory"],
    ),
    "excitatory-fraction-one": Case(
        train("--set", "network.exc_fraction=1"), ["network.exc_fraction = 1.0", "(0, 1)"]
    ),
    "zero-time-step": Case(train("--set", "network.dt=0"), ["network.dt = 0.0", "> 0"]),
    "zero-membrane-time-constant": Case(
        train("--set", "network.tau_m=0"), ["network.tau_m = 0.0", "> 0"]
    ),
    "negative-readout-time-constant": Case(
        train("--set", "network.tau_out=-1"), ["network.tau_out = -1.0", "> 0"]
    ),
    "zero-adaptation-time-constant": Case(
        train("--set", "network.tau_a=0"), ["network.tau_a = 0.0", "> 0"]
    ),
    "nan-membrane-time-constant": Case(
        train("--set", "network.tau_m=nan"), ["network.tau_m", "'nan'", "finite"]
    ),
    "zero-threshold": Case(train("--set", "network.v_th=0"), ["network.v_th = 0.0", "> 0"]),
    "negative-adaptation-strength": Case(
        train("--set", "network.beta=-1"), ["network.beta = -1.0", ">= 0"]
    ),
    "negative-pseudo-derivative-dampening": Case(
        train("--set", "network.gamma=-0.5"), ["network.gamma = -0.5", ">= 0"]
    ),
    "negative-refractory-steps": Case(
        train("--set", "network.n_ref=-1"), ["network.n_ref = -1", ">= 0"]
    ),
    "fractional-refractory-steps": Case(
        train("--set", "network.n_ref=1.5"), ["network.n_ref", "'1.5'", "an integer"]
    ),
    "readout-probability-above-one": Case(
        train("--set", "network.p_out=2"), ["network.p_out = 2.0", "[0, 1]"]
    ),
    "negative-input-size": Case(train("--set", "network.n_in=-4"), ["network.n_in = -4", ">= 0"]),
    # -- the evidence task ---------------------------------------------------------------------
    "too-many-cues": Case(train("--set", "task.n_cues=2000"), ["task.n_cues = 2000", "at most 30"]),
    "zero-cues": Case(train("--set", "task.n_cues=0"), ["task.n_cues = 0", ">= 1"]),
    "task-inputs-not-a-multiple-of-four": Case(
        train("--set", "task.n_in=42"), ["task.n_in = 42", "a multiple of 4"]
    ),
    "zero-task-inputs": Case(train("--set", "task.n_in=0"), ["task.n_in = 0", ">= 1"]),
    "zero-cue-duration": Case(train("--set", "task.cue_ms=0"), ["task.cue_ms = 0", ">= 1"]),
    "fractional-cue-duration": Case(
        train("--set", "task.cue_ms=1.5"), ["task.cue_ms", "'1.5'", "an integer"]
    ),
    "negative-gap": Case(train("--set", "task.gap_ms=-1"), ["task.gap_ms = -1", ">= 0"]),
    "negative-delay": Case(train("--set", "task.delay_ms=-10"), ["task.delay_ms = -10", ">= 0"]),
    "zero-recall": Case(train("--set", "task.recall_ms=0"), ["task.recall_ms = 0", ">= 1"]),
    "negative-cue-rate": Case(
        train("--set", "task.cue_rate_hz=-1"), ["task.cue_rate_hz = -1.0", ">= 0"]
    ),
    "cue-rate-above-one-spike-per-step": Case(
        train("--set", "task.cue_rate_hz=5000"), ["task.cue_rate_hz = 5000.0", "at most 1000 Hz"]
    ),
    "noise-rate-above-one-spike-per-step": Case(
        train("--set", "task.noise_rate_hz=2000"), ["task.noise_rate_hz = 2000.0", "at most 1000"]
    ),
    "zero-task-dt": Case(train("--set", "task.dt=0"), ["task.dt = 0.0", "> 0"]),
    "task-dt-differs-from-network-dt": Case(
        train("--set", "task.dt=0.5"), ["task.dt = 0.5", "network.dt = 1.0"]
    ),
    "boolean-for-integer-task-parameter": Case(
        train("--set", "task.n_cues=true"), ["task.n_cues", "'true'", "an integer"]
    ),
    "empty-task-name": Case(train_task("--task", ""), ["task.name = ''", "evidence, pattern"]),
    "task-parameter-named-params": Case(
        train("--set", "task.params=3"), ["'task.params'", "identifiers"]
    ),
    "task-parameter-not-an-identifier": Case(
        train("--set", "task.1x=3"), ["'task.1x'", "identifiers"]
    ),
    "trial-beyond-memory": Case(
        train("--set", "task.delay_ms=100000000"),
        ["task.delay_ms=100000000", MEMORY, "steps=100000600"],
    ),
    # -- the pattern task ----------------------------------------------------------------------
    "pattern-zero-outputs": Case(pattern("--set", "task.n_out=0"), ["task.n_out = 0", ">= 1"]),
    "pattern-one-step": Case(
        pattern("--set", "task.duration_ms=1"), ["task.duration_ms = 1", "at least 2 steps"]
    ),
    "pattern-frequency-not-a-number": Case(
        pattern("--set", "task.frequencies=abc"), ["task.frequencies = 'abc'", "positive numbers"]
    ),
    "pattern-no-frequency": Case(
        pattern("--set", "task.frequencies="), ["task.frequencies = ''", "positive numbers"]
    ),
    "pattern-frequency-above-nyquist": Case(
        pattern("--set", "task.frequencies=1,600"), ["task.frequencies = '1,600'", "Nyquist"]
    ),
    "pattern-negative-amplitude": Case(
        pattern("--set", "task.amplitude_min=-1"), ["task.amplitude_min = -1.0", ">= 0"]
    ),
    "pattern-largest-amplitude-below-smallest": Case(
        pattern("--set", "task.amplitude_max=0.1"),
        ["task.amplitude_max = 0.1", ">= task.amplitude_min = 0.5"],
    ),
    "pattern-negative-input-rate": Case(
        pattern("--set", "task.input_rate_hz=-5"), ["task.input_rate_hz = -5.0", ">= 0"]
    ),
    "pattern-input-rate-above-one-spike-per-step": Case(
        pattern("--set", "task.input_rate_hz=5000"), ["task.input_rate_hz = 5000.0", "at most"]
    ),
    "pattern-negative-seed": Case(
        pattern("--set", "task.pattern_seed=-1"), ["task.pattern_seed = -1", "[0, 2**63)"]
    ),
    "pattern-seed-beyond-2-to-the-63": Case(
        pattern("--set", "task.pattern_seed=9223372036854775808"),
        ["task.pattern_seed = 9223372036854775808", "[0, 2**63)"],
    ),
    "pattern-cross-entropy-loss": Case(
        pattern("--set", "task.loss=cross_entropy"), ["task.loss = 'cross_entropy'", "mse"]
    ),
    "pattern-bad-boolean": Case(
        pattern("--set", "task.normalise=maybe"), ["task.normalise", "'maybe'", "true or false"]
    ),
    "pattern-parameter-of-evidence": Case(
        pattern("--set", "task.n_cues=3"),
        ["task.n_cues is not a parameter of task pattern", "duration_ms"],
    ),
    "pattern-readout-size-disagrees": Case(
        pattern("--set", "network.n_out=2"), ["network.n_out = 2", "3 for task pattern"]
    ),
    "pattern-batch-beyond-memory": Case(
        pattern("--set", "train.batch=10000000"), ["train.batch=10000000", MEMORY]
    ),
    "pattern-validation-batch-beyond-memory": Case(
        pattern("--set", "train.val_batch=10000000"), ["train.val_batch=10000000", MEMORY]
    ),
    "pattern-trial-beyond-memory": Case(
        pattern("--set", "task.duration_ms=1000000000"), ["task.duration_ms=1000000000", MEMORY]
    ),
    "pattern-inputs-beyond-memory": Case(
        pattern("--set", "task.n_in=100000000"), ["task.n_in=100000000", MEMORY]
    ),
    "pattern-outputs-beyond-memory": Case(
        pattern("--set", "task.n_out=10000000"), ["task.n_out=10000000", MEMORY, "readout"]
    ),
    # -- NeuroGym environments -------------------------------------------------------------------
    "neurogym-zero-input-scale": Case(
        neurogym("--set", "task.input_scale=0"), ["task.input_scale = 0.0", "> 0"]
    ),
    "neurogym-zero-copies": Case(neurogym("--set", "task.copies=0"), ["task.copies = 0", ">= 1"]),
    "neurogym-unknown-mask-period": Case(
        neurogym("--set", "task.mask=bogus"),
        ["task.mask = 'bogus'", "no period 'bogus'", "decision, or all"],
    ),
    "neurogym-empty-mask": Case(
        neurogym("--set", "task.mask=,"), ["task.mask = ','", "period names, or all"]
    ),
    "neurogym-mask-all-and-a-period": Case(
        neurogym("--set", "task.mask=all,decision"), ["task.mask = 'all,decision'", "or all"]
    ),
    "neurogym-timing-without-duration": Case(
        neurogym("--set", "task.timing=stimulus"), ["task.timing = 'stimulus'", "PERIOD=MS"]
    ),
    "neurogym-negative-timing": Case(
        neurogym("--set", "task.timing=stimulus=-5"), ["task.timing = 'stimulus=-5'", "MS >= 0"]
    ),
    "neurogym-timing-of-no-period": Case(
        neurogym("--set", "task.timing=bogus=100"),
        ["task.timing = 'bogus=100'", "no period 'bogus'", "stimulus"],
    ),
    "neurogym-env-kwargs-not-json": Case(
        neurogym("--set", "task.env_kwargs=notjson"), ["task.env_kwargs = 'notjson'", "JSON"]
    ),
    "neurogym-env-kwargs-not-an-object": Case(
        neurogym("--set", "task.env_kwargs=[1]"), ["task.env_kwargs = '[1]'", "a JSON object"]
    ),
    "neurogym-env-kwargs-set-dt": Case(
        neurogym("--set", 'task.env_kwargs={{"dt": 2}}'), ["task.env_kwargs may not set dt"]
    ),
    "neurogym-env-kwargs-unknown-argument": Case(
        neurogym("--set", 'task.env_kwargs={{"bogus": 1}}'),
        ["task.env = 'PerceptualDecisionMaking-v0' could not be made", "'bogus'"],
    ),
    "neurogym-negative-steps": Case(
        neurogym("--set", "task.n_steps=-1"), ["task.n_steps = -1", "0 for auto"]
    ),
    "neurogym-steps-end-before-the-decision": Case(
        neurogym("--set", "task.n_steps=5"), ["task.n_steps = 5", "n_steps > 2100"]
    ),
    "neurogym-zero-dt": Case(neurogym("--set", "task.dt=0"), ["task.dt = 0.0", "> 0"]),
    "neurogym-parameter-of-evidence": Case(
        neurogym("--set", "task.n_cues=3"), ["task.n_cues is not a parameter of task neurogym"]
    ),
    "neurogym-env-parameter-contradicts-name": Case(
        neurogym("--set", "task.env=Nope-v0"),
        ["task.env = 'Nope-v0'", "task.name = 'neurogym:PerceptualDecisionMaking-v0'"],
    ),
    "neurogym-empty-env": Case(
        train_task("--task", "neurogym:"), ["task.env = ''", "a NeuroGym environment id"]
    ),
    "neurogym-gymnasium-env": Case(
        train_task("--task", "neurogym:CartPole-v1"),
        ["'CartPole-v1'", "not a NeuroGym trial environment"],
    ),
    "neurogym-misspelt-env": Case(
        train_task("--task", "neurogym:PerceptualDecisionMaking-v1"),
        ["'PerceptualDecisionMaking-v1'", "did you mean PerceptualDecisionMaking-v0?"],
    ),
    "neurogym-env-without-whole-trials": Case(
        neurogym(env="DawTwoStep-v0"), ["task.env = 'DawTwoStep-v0'", "no whole trials"]
    ),
    "neurogym-env-without-ground-truth": Case(
        neurogym(env="Bandit-v0"), ["task.env = 'Bandit-v0'", "no ground truth"]
    ),
    "neurogym-env-with-one-action": Case(
        neurogym(env="Null-v0"), ["task.env = 'Null-v0'", "at least 2 actions"]
    ),
    "neurogym-env-with-continuous-actions": Case(
        neurogym(env="ReachingDelayResponse-v0"), ["'ReachingDelayResponse-v0'", "discrete"]
    ),
    "neurogym-env-without-a-decision-period": Case(
        neurogym(env="ReadySetGo-v0"),
        ["task.mask = 'decision'", "ReadySetGo-v0 has no period 'decision'", "production"],
    ),
    "neurogym-inputs-beyond-memory": Case(
        neurogym("--set", "task.copies=100000000"), ["task.copies=100000000", MEMORY]
    ),
    "neurogym-steps-beyond-memory": Case(
        neurogym("--set", "task.n_steps=1000000000"), ["task.n_steps=1000000000", MEMORY]
    ),
    # -- a task in a user's file -------------------------------------------------------------------
    "task-file-with-a-syntax-error": Case(
        train_task("--task", "bad.py:Task"),
        ["bad.py", "SyntaxError"],
        setup=files({"bad.py": "def oops(:\n"}),
    ),
    "task-file-raising-a-multi-line-error": Case(
        train_task("--task", "boom.py:Task"),
        ["boom.py' failed: ValueError: line one line two"],
        setup=files({"boom.py": "raise ValueError('line one\\nline two')\n"}),
    ),
    "task-file-importing-a-missing-module": Case(
        train_task("--task", "imports.py:Task"),
        ["imports.py", "No module named 'no_such_module_xyz'"],
        setup=files({"imports.py": "import no_such_module_xyz\n"}),
    ),
    "task-file-not-text": Case(
        train_task("--task", "binary.py:Task"),
        ["binary.py", "failed"],
        setup=files({"binary.py": b"\xff\xfe\x00\x00"}),
    ),
    "task-file-not-python": Case(
        train_task("--task", "tasks.txt:Good"), ["task.name = 'tasks.txt:Good'", "FILE.py:CLASS"]
    ),
    "task-file-is-a-folder": Case(
        train_task("--task", "dir.py:Good"), ["no such file", "dir.py'"], setup=folder("dir.py")
    ),
    "task-file-without-class-name": Case(
        train_task("--task", "tasks.py:"), ["task.name = 'tasks.py:'", "FILE.py:CLASS"]
    ),
    "task-class-not-a-task": Case(
        train_task("--task", "tasks.py:NotATask"),
        ["NotATask is not a subclass of mdgl_analysis.tasks.Task"],
        setup=task_files,
    ),
    "task-constructor-raising-a-multi-line-error": Case(
        train_task("--task", "tasks.py:BadInit"),
        ["could not be created: ValueError: first line second line"],
        setup=task_files,
    ),
    "task-with-zero-inputs": Case(
        train_task("--task", "tasks.py:ZeroIn"), ["task ZeroIn: n_in = 0", ">= 1"], setup=task_files
    ),
    "task-with-an-unknown-loss": Case(
        train_task("--task", "tasks.py:Hinge"),
        ["loss = 'hinge'", "cross_entropy, mse"],
        setup=task_files,
    ),
    "task-with-one-class": Case(
        train_task("--task", "tasks.py:OneClass"),
        ["n_out = 1", "at least 2 classes"],
        setup=task_files,
    ),
    "task-with-float-steps": Case(
        train_task("--task", "tasks.py:FloatSteps"),
        ["n_steps = 20.0", "an integer >= 1"],
        setup=task_files,
    ),
    "task-without-sample": Case(
        train_task("--task", "tasks.py:NoSample"),
        ["NoSample", "does not implement sample"],
        setup=task_files,
    ),
    "task-batch-of-the-wrong-shape": Case(
        train_task("--task", "tasks.py:WrongShape"),
        ["x has shape (20, 32, 2)", "expected (20, 32, 4)"],
        setup=task_files,
    ),
    "task-sample-raising-a-multi-line-error": Case(
        train_task("--task", "tasks.py:Raises"),
        ["sample(32, gen) raised RuntimeError: boom and more"],
        setup=task_files,
    ),
    "task-class-out-of-range": Case(
        train_task("--task", "tasks.py:ClassOutOfRange"),
        ["target has class 5..5", "expected 0..1"],
        setup=task_files,
    ),
    "task-sample-returning-a-dict": Case(
        train_task("--task", "tasks.py:ReturnsDict"),
        ["returned dict", "TaskBatch(x, target, mask)"],
        setup=task_files,
    ),
    "task-with-integer-inputs": Case(
        train_task("--task", "tasks.py:IntegerInputs"),
        ["x has dtype torch.int64", "floating-point"],
        setup=task_files,
    ),
    "task-mse-with-class-targets": Case(
        train_task("--task", "tasks.py:MseOfClasses"),
        ["target is torch.int64", "for loss mse"],
        setup=task_files,
    ),
    "task-rejecting-its-parameter": Case(
        train_task("--task", "tasks.py:Checked"), ["task.level = 3", "at most 2"], setup=task_files
    ),
    "task-file-unknown-parameter": Case(
        train_task("--task", "tasks.py:Good", "--set", "task.bogus=1"),
        ["task.bogus is not a parameter of task Good", "n_steps"],
        setup=task_files,
    ),
    "task-trial-beyond-memory": Case(
        train_task("--task", "tasks.py:Endless"),
        ["n_steps=1000000000 of task Endless", MEMORY],
        setup=task_files,
    ),
    # -- training ------------------------------------------------------------------------------
    "negative-iterations": Case(train("--iterations", "-1"), ["train.iterations = -1", ">= 0"]),
    "non-integer-iterations": Case(
        train("--iterations", "abc"), ["train.iterations", "'abc'", "an integer"]
    ),
    "zero-validation-batch": Case(
        train("--set", "train.val_batch=0"), ["train.val_batch = 0", ">= 1"]
    ),
    "validation-batch-above-cue-patterns": Case(
        train("--set", "train.val_batch=200"), ["train.val_batch = 200", "at most 128"]
    ),
    "zero-validation-interval": Case(
        train("--set", "train.val_every=0"), ["train.val_every = 0", ">= 1"]
    ),
    "zero-learning-rate": Case(train("--set", "train.lr=0"), ["train.lr = 0.0", "> 0"]),
    "infinite-learning-rate": Case(train("--set", "train.lr=inf"), ["train.lr", "'inf'", "finite"]),
    "adam-beta1-above-one": Case(
        train("--set", "train.adam_beta1=1.5"), ["train.adam_beta1 = 1.5", "[0, 1]"]
    ),
    "adam-beta2-below-zero": Case(
        train("--set", "train.adam_beta2=-0.1"), ["train.adam_beta2 = -0.1", "[0, 1]"]
    ),
    "zero-adam-epsilon": Case(train("--set", "train.adam_eps=0"), ["train.adam_eps = 0.0", "> 0"]),
    "negative-l1": Case(train("--set", "train.l1=-0.1"), ["train.l1 = -0.1", ">= 0"]),
    "zero-reconnection-epsilon": Case(
        train("--set", "train.reconnect_eps=0"), ["train.reconnect_eps = 0.0", "> 0"]
    ),
    "learning-rate-decay-above-one": Case(
        train("--set", "train.lr_decay=2"), ["train.lr_decay = 2.0", "[0, 1]"]
    ),
    "zero-learning-rate-decay-interval": Case(
        train("--set", "train.lr_decay_every=0"), ["train.lr_decay_every = 0", ">= 1"]
    ),
    "negative-rate-regulariser": Case(
        train("--set", "train.reg_rate=-1"), ["train.reg_rate = -1.0", ">= 0"]
    ),
    "negative-target-rate": Case(
        train("--set", "train.reg_target_hz=-5"), ["train.reg_target_hz = -5.0", ">= 0"]
    ),
    "negative-comparison-interval": Case(
        train("--set", "train.compare_every=-1"), ["train.compare_every = -1", ">= 0"]
    ),
    "unknown-comparison-rule": Case(
        train("--set", "train.compare_rules=eprop,bogus"),
        ["train.compare_rules = 'eprop,bogus'", "mdgl_online"],
    ),
    "zero-divergence-loss-ratio": Case(
        train("--set", "train.divergence_loss_ratio=0"), ["train.divergence_loss_ratio = 0.0"]
    ),
    "negative-divergence-rate": Case(
        train("--set", "train.divergence_rate_hz=-1"), ["train.divergence_rate_hz = -1.0", "> 0"]
    ),
    "empty-rule": Case(train("--rule", ""), ["train.rule = ''", "bptt, eprop"]),
    "benchmark-only-rule": Case(
        train("--rule", "bptt_autograd"), ["train.rule = 'bptt_autograd'", "bptt, eprop"]
    ),
    "fractional-seed": Case(train("--seed", "1.5"), ["run.seed", "'1.5'", "an integer"]),
    # -- run -------------------------------------------------------------------------------------
    "empty-device": Case(train("--device", ""), ["run.device = ''", "auto, cpu, cuda"]),
    "unknown-device-set": Case(
        train("--set", "run.device=gpu"), ["run.device = 'gpu'", "auto, cpu, cuda"]
    ),
    "half-precision-run": Case(
        train("--set", "run.dtype=float16"), ["run.dtype = 'float16'", "float32, float64"]
    ),
    "zero-threads": Case(train("--set", "run.threads=0"), ["run.threads = 0", ">= 1"]),
    "zero-checkpoint-interval": Case(
        train("--set", "run.checkpoint_every=0"), ["run.checkpoint_every = 0", ">= 1"]
    ),
    # -- --set syntax -----------------------------------------------------------------------------
    "set-without-key": Case(train("--set", "=3"), ["--set '=3'", "KEY=VALUE"]),
    "set-without-field": Case(train("--set", "network.=3"), ["'network.'", "SECTION.FIELD"]),
    "set-without-section": Case(train("--set", "n_regular=3"), ["'n_regular'", "SECTION.FIELD"]),
    "bad-value-in-a-later-set": Case(
        train("--set", "network.p_rec=0.2", "--set", "network.p_rec=3"),
        ["network.p_rec = 3.0", "[0, 1]"],
    ),
    # -- recording -----------------------------------------------------------------------------
    "negative-record-interval": Case(train("--record-every", "-1"), ["record.every = -1", ">= 0"]),
    "non-integer-record-interval": Case(
        train("--record-every", "abc"), ["record.every", "'abc'", "an integer"]
    ),
    "record-iterations-not-integers": Case(
        train("--set", "record.iterations=abc"), ["record.iterations = 'abc'", "first or last"]
    ),
    "negative-record-iteration": Case(
        train("--set", "record.iterations=-3"), ["record.iterations = '-3'", ">= 0"]
    ),
    "record-trials-beyond-the-batch": Case(
        train("--set", "record.trials=0-200"), ["record.trials = '0-200'", "0..31"]
    ),
    "record-trials-not-a-range": Case(
        train("--set", "record.trials=x"), ["record.trials = 'x'", "all, A-B or i,j,k"]
    ),
    "record-trial-twice": Case(
        train("--set", "record.trials=1,1"), ["record.trials = '1,1'", "each trial once"]
    ),
    "record-no-trial": Case(
        train("--set", "record.trials="), ["record.trials = ''", "at least one trial"]
    ),
    "record-unknown-quantity": Case(
        train("--set", "record.quantities=bogus"), ["record.quantities = 'bogus'", "eligibility"]
    ),
    "record-no-quantity": Case(
        train("--set", "record.quantities="), ["record.quantities = ''", "traces"]
    ),
    "record-negative-start": Case(
        train("--set", "record.t_start_ms=-1"), ["error: record.t_start_ms = -1.0", "t_stop_ms"]
    ),
    "record-negative-stop": Case(
        train("--set", "record.t_stop_ms=-5"),
        ["error: record.t_stop_ms = -5.0", "0 <= t_stop_ms <= 650"],
    ),
    "record-stop-beyond-the-trial": Case(
        train("--set", "record.t_stop_ms=99999"), ["record.t_stop_ms = 99999.0", "<= 650"]
    ),
    "record-start-after-stop": Case(
        train("--set", "record.t_start_ms=300", "--set", "record.t_stop_ms=100"),
        ["record.t_start_ms = 300.0", "(here 100 ms)"],
    ),
    "record-unknown-layout": Case(
        train("--set", "record.layout=sparse"), ["record.layout = 'sparse'", "list or dense"]
    ),
    "record-float64": Case(
        train("--set", "record.dtype=float64"), ["record.dtype = 'float64'", "float32 or float16"]
    ),
    "record-unknown-codec": Case(
        train("--set", "record.codec=bzip2"), ["record.codec = 'bzip2'", "lz4, zstd"]
    ),
    "record-zero-chunk": Case(
        train("--set", "record.chunk_mb=0"), ["record.chunk_mb = 0.0", "> 0"]
    ),
    "record-unknown-rule": Case(
        train("--set", "record.rules=bogus"), ["record.rules = 'bogus'", "mdgl_online"]
    ),
    "record-no-rule": Case(train("--set", "record.rules="), ["record.rules = ''", "all, or"]),
    "dense-record-beyond-memory": Case(
        train("--set", "network.n_regular=200000", "--set", "record.layout=dense"),
        ["network.n_regular=200000", MEMORY],
    ),
    # -- where the config comes from, where the run goes ------------------------------------------
    "empty-output-folder": Case(
        ["train", *FAST, "--preset", "demo", "--out", ""], ["--out ''", "new run folder"]
    ),
    "output-folder-inside-a-file": Case(
        ["train", *FAST, "--preset", "demo", "--out", "{tmp}/f.txt/out"],
        ["f.txt'", "is a file, not a folder"],
        setup=files({"f.txt": "x"}),
    ),
    "empty-preset": Case(
        ["train", *FAST, "--out", OUT, "--preset", ""], ["unknown preset ''", "paper, demo"]
    ),
    "empty-config-path": Case(
        ["train", *FAST, "--out", OUT, "--config", ""], ["config file ''", "TOML file"]
    ),
    "config-path-without-toml-suffix": Case(
        train("--config", "{tmp}/settings", preset=None), ["settings'", "does not exist"]
    ),
    "config-path-is-a-folder": Case(
        with_config("d.toml"), ["d.toml'", "is a folder, not a TOML file"], setup=folder("d.toml")
    ),
    "config-file-not-utf8": Case(
        with_config(), ["c.toml'", "not valid TOML", "utf-8"], setup=toml(b"\xff\xfe\x00bad")
    ),
    "toml-duplicate-key": Case(
        with_config(), ["c.toml'", "not valid TOML"], setup=toml("[train]\nbatch = 4\nbatch = 5\n")
    ),
    "toml-string-for-an-integer": Case(
        with_config(),
        ["network.n_regular = 'fifty'", "an integer"],
        setup=toml('[network]\nn_regular = "fifty"\n'),
    ),
    "toml-fraction-for-an-integer": Case(
        with_config(),
        ["network.n_regular = 50.5", "an integer"],
        setup=toml("[network]\nn_regular = 50.5\n"),
    ),
    "toml-boolean-for-an-integer": Case(
        with_config(), ["train.batch = True", "an integer"], setup=toml("[train]\nbatch = true\n")
    ),
    "toml-array-for-a-number": Case(
        with_config(),
        ["network.p_rec = [0.1, 0.2]", "a finite number"],
        setup=toml("[network]\np_rec = [0.1, 0.2]\n"),
    ),
    "toml-date-for-a-number": Case(
        with_config(),
        ["train.lr = datetime.date(1979, 5, 27)", "a finite number"],
        setup=toml("[train]\nlr = 1979-05-27\n"),
    ),
    "toml-integer-for-a-string": Case(
        with_config(), ["record.trials = 5", "a string"], setup=toml("[record]\ntrials = 5\n")
    ),
    "toml-section-not-a-table": Case(
        with_config(), ["c.toml", "[network] must be a table"], setup=toml("network = 5\n")
    ),
    "toml-description-not-a-string": Case(
        with_config(), ["c.toml", "description = 5", "a string"], setup=toml("description = 5\n")
    ),
    "toml-unknown-key": Case(
        with_config(),
        ["'train.bogus'", "fields of [train]", "batch"],
        setup=toml("[train]\nbogus = 1\n"),
    ),
    "toml-subtable": Case(
        with_config(),
        ["'network.sub'", "fields of [network]"],
        setup=toml("[network.sub]\nx = 1\n"),
    ),
    "toml-task-name-not-a-string": Case(
        with_config(), ["task.name = 5", "a string"], setup=toml("[task]\nname = 5\n")
    ),
    "toml-parameter-of-another-task": Case(
        with_config(),
        ["task.n_cues is not a parameter of task pattern", "duration_ms"],
        setup=toml('[task]\nname = "pattern"\nn_cues = 3\n'),
    ),
    "toml-table-for-a-task-parameter": Case(
        with_config(),
        ["task.n_cues = {'a': 1}", "an integer"],
        setup=toml("[task]\nn_cues = { a = 1 }\n"),
    ),
    "toml-device-with-an-index": Case(
        with_config(),
        ["run.device = 'cuda:0'", "auto, cpu, cuda"],
        setup=toml('[run]\ndevice = "cuda:0"\n'),
    ),
    "toml-negative-batch": Case(
        with_config(), ["train.batch = -4", ">= 1"], setup=toml("[train]\nbatch = -4\n")
    ),
    "toml-infinite-number": Case(
        with_config(), ["train.lr = inf", "finite"], setup=toml("[train]\nlr = inf\n")
    ),
    "toml-nan-task-parameter": Case(
        with_config(),
        ["task.cue_rate_hz = nan", "finite"],
        setup=toml("[task]\ncue_rate_hz = nan\n"),
    ),
    "toml-size-beyond-any-memory": Case(
        with_config(),
        ["network.n_regular=100000000000000000000", MEMORY],
        setup=toml("[network]\nn_regular = 100000000000000000000\n"),
    ),
    # -- damaged run folders: run.json ---------------------------------------------------------
    "info-run-json-not-json": Case(
        ["info", RUN],
        ["run.json'", "not valid JSON"],
        setup=in_run("run.json", "{x"),
        tiny_run=True,
    ),
    "resume-run-json-not-json": Case(
        resume(), ["run.json'", "not valid JSON"], setup=in_run("run.json", "{x"), tiny_run=True
    ),
    "info-run-json-not-an-object": Case(
        ["info", RUN],
        ["run.json'", "not a run description"],
        setup=in_run("run.json", "[1, 2]"),
        tiny_run=True,
    ),
    "resume-run-json-not-an-object": Case(
        resume(),
        ["run.json'", "not a run description"],
        setup=in_run("run.json", '"completed"'),
        tiny_run=True,
    ),
    "info-run-json-not-utf8": Case(
        ["info", RUN],
        ["run.json'", "not valid JSON", "utf-8"],
        setup=in_run("run.json", b"\xff\xfe{}"),
        tiny_run=True,
    ),
    "info-run-json-git-not-an-object": Case(
        ["info", RUN],
        ["run.json'", "git = 'abc'", "an object"],
        setup=run_json(git="abc"),
        tiny_run=True,
    ),
    "info-run-json-install-of-an-unknown-kind": Case(
        ["info", RUN],
        ["run.json'", "install = {'kind': 'pip'}", 'an object {"kind"'],
        setup=run_json(install={"kind": "pip"}),
        tiny_run=True,
    ),
    "info-run-json-status-not-a-string": Case(
        ["info", RUN],
        ["status = 3", "one of running, completed"],
        setup=run_json(status=3),
        tiny_run=True,
    ),
    "info-run-json-iteration-not-an-integer": Case(
        ["info", RUN],
        ["iteration = 'two'", "an integer >= 0"],
        setup=run_json(iteration="two"),
        tiny_run=True,
    ),
    "info-run-json-task-not-an-object": Case(
        ["info", RUN], ["task = 'x'", "an object"], setup=run_json(task="x"), tiny_run=True
    ),
    "resume-run-json-pid-not-an-integer": Case(
        resume(),
        ["pid = 'abc'", "a process id"],
        setup=run_json(status="running", pid="abc"),
        tiny_run=True,
    ),
    "resume-run-json-resumed-not-a-list": Case(
        resume(), ["resumed = 'x'", "a list"], setup=run_json(resumed="x"), tiny_run=True
    ),
    "resume-run-json-unknown-status": Case(
        resume(),
        ["status = 'bogus'", "one of running, completed"],
        setup=run_json(status="bogus"),
        tiny_run=True,
    ),
    "resume-a-running-run": Case(
        resume(), ["is still running", f"pid {os.getpid()}"], setup=still_running, tiny_run=True
    ),
    # -- damaged run folders: metrics.csv ------------------------------------------------------
    "info-metrics-bad-header": Case(
        ["info", RUN],
        ["metrics.csv'", "header ['a', 'b']", "iteration,split,name,value"],
        setup=in_run("metrics.csv", "a,b\n1,2\n"),
        tiny_run=True,
    ),
    "resume-metrics-bad-header": Case(
        resume(),
        ["metrics.csv'", "header", "iteration,split,name,value"],
        setup=in_run("metrics.csv", "iteration;split;name;value\n"),
        tiny_run=True,
    ),
    "info-metrics-empty": Case(
        ["info", RUN],
        ["metrics.csv'", "header None"],
        setup=in_run("metrics.csv", ""),
        tiny_run=True,
    ),
    "info-metrics-short-row": Case(
        ["info", RUN],
        ["metrics.csv'", "line 2", "not iteration,split,name,value"],
        setup=in_run("metrics.csv", "iteration,split,name,value\n1,val\n"),
        tiny_run=True,
    ),
    "info-metrics-missing": Case(
        ["info", RUN], ["metrics.csv'", "is missing"], setup=removed("metrics.csv"), tiny_run=True
    ),
    "resume-metrics-missing": Case(
        resume(), ["metrics.csv'", "is missing"], setup=removed("metrics.csv"), tiny_run=True
    ),
    "info-metrics-not-utf8": Case(
        ["info", RUN],
        ["metrics.csv'", "not text", "UTF-8"],
        setup=in_run("metrics.csv", b"iteration,split,name,value\n\xff\xfe\n"),
        tiny_run=True,
    ),
    "resume-metrics-not-utf8": Case(
        resume(),
        ["metrics.csv'", "not text", "UTF-8"],
        setup=in_run("metrics.csv", b"iteration,split,name,value\n0,val,loss,\xe9\n"),
        tiny_run=True,
    ),
    # -- damaged run folders: config.toml, checkpoints, manifest -------------------------------
    "resume-config-not-toml": Case(
        resume(),
        ["config.toml'", "not valid TOML"],
        setup=in_run("config.toml", "[[[garbage"),
        tiny_run=True,
    ),
    "resume-config-unknown-key": Case(
        resume(),
        ["'network.n_regulars'", "fields of [network]"],
        setup=config_edit("n_regular = 50", "n_regulars = 50"),
        tiny_run=True,
    ),
    "resume-config-bad-value": Case(
        resume(),
        ["train.batch = 0", ">= 1"],
        setup=config_edit("batch = 32", "batch = 0"),
        tiny_run=True,
    ),
    "resume-config-edited-seed": Case(
        resume(),
        ["run.seed = 7", "trained with 1"],
        setup=config_edit("seed = 1", "seed = 7"),
        tiny_run=True,
    ),
    "resume-config-edited-readout-size": Case(
        resume(),
        ["network.n_out = 1", "the task's size (2"],
        setup=config_edit("# n_out", "n_out = 1\n# n_out"),
        tiny_run=True,
    ),
    "resume-config-beyond-memory": Case(
        resume(),
        ["network.n_regular=1000000", MEMORY],
        setup=config_edit("n_regular = 50", "n_regular = 1000000"),
        tiny_run=True,
    ),
    "resume-config-missing": Case(
        resume(), ["r'", "not a run folder"], setup=removed("config.toml"), tiny_run=True
    ),
    "resume-checkpoint-without-network": Case(
        resume(),
        ["ckpt_000002.pt does not fit", "KeyError: 'net'"],
        # a run made before checksums (no manifest.json), whose checkpoint holds no network
        setup=both(removed("manifest.json"), torch_saved(CHECKPOINT, {"iteration": 2})),
        tiny_run=True,
    ),
    "resume-manifest-not-json": Case(
        resume(),
        ["manifest.json'", "not a manifest"],
        setup=in_run("manifest.json", "{garbage"),
        tiny_run=True,
    ),
    "resume-every-checkpoint-truncated": Case(
        resume(),
        ["no intact checkpoint", "ckpt_000002.pt", "ckpt_000000.pt"],
        setup=truncated(CHECKPOINT, FIRST_CHECKPOINT),
        tiny_run=True,
    ),
    "resume-only-checkpoint-random-bytes": Case(
        resume(),
        ["no intact checkpoint", "ckpt_000002.pt"],
        setup=both(removed(FIRST_CHECKPOINT), in_run(CHECKPOINT, RANDOM_BYTES)),
        tiny_run=True,
    ),
    "resume-only-checkpoint-not-a-dict": Case(
        resume(),
        ["no intact checkpoint", "not a training state"],
        setup=both(removed("manifest.json", FIRST_CHECKPOINT), torch_saved(CHECKPOINT, [1, 2, 3])),
        tiny_run=True,
    ),
    "resume-missing-folder": Case(
        ["resume", "--no-progress", "{tmp}/nowhere"], ["nowhere'", "not a run folder"]
    ),
    # -- damaged records; verify, analyze, figures ---------------------------------------------
    "info-record-random-bytes": Case(
        ["info", RUN],
        ["iter_000000.h5'", "not a readable HDF5 file", "mdgl verify"],
        setup=in_run(RECORD, RANDOM_BYTES),
        tiny_run=True,
    ),
    "analyze-record-random-bytes": Case(
        ["analyze", "alignment", RUN],
        ["iter_000000.h5'", "not a readable HDF5 file"],
        setup=in_run(RECORD, RANDOM_BYTES),
        tiny_run=True,
    ),
    "analyze-record-truncated": Case(
        ["analyze", "alignment", RUN],
        ["iter_000000.h5'", "not a readable HDF5 file", "truncated"],
        setup=truncated(RECORD),
        tiny_run=True,
    ),
    "analyze-config-not-toml": Case(
        ["analyze", "alignment", RUN],
        ["config.toml'", "not valid TOML"],
        setup=in_run("config.toml", "[[[garbage"),
        tiny_run=True,
    ),
    "analyze-out-not-csv-or-nc": Case(
        ["analyze", "alignment", RUN, "--out", "{tmp}/a.txt"],
        ["--out", "a.txt'", ".csv or .nc"],
        tiny_run=True,
    ),
    "analyze-out-inside-a-file": Case(
        ["analyze", "alignment", RUN, "--out", "{tmp}/r/run.json/a.csv"],
        ["run.json'", "is a file, not a folder"],
        tiny_run=True,
    ),
    "analyze-zero-workers": Case(
        ["analyze", "alignment", RUN, "--workers", "0"], ["--workers 0", ">= 1"], tiny_run=True
    ),
    "analyze-zero-window": Case(
        ["analyze", "alignment", RUN, "--by", "time", "--window-ms", "0"],
        ["--window-ms 0.0", "> 0"],
        tiny_run=True,
    ),
    "analyze-missing-folder": Case(
        ["analyze", "alignment", "{tmp}/nowhere"], ["nowhere'", "does not exist"]
    ),
    "analyze-run-without-records": Case(
        ["analyze", "alignment", RUN],
        ["no recorded runs", "--record-every"],
        setup=removed("records"),
        tiny_run=True,
    ),
    "analyze-unknown-grouping": Case(
        ["analyze", "alignment", RUN, "--by", "bogus"],
        ["--by", "'bogus'", "iteration"],
        argparse=True,
        tiny_run=True,
    ),
    "analyze-unknown-analysis": Case(
        ["analyze", "bogus", RUN], ["'bogus'", "alignment"], argparse=True, tiny_run=True
    ),
    "analyze-non-integer-workers": Case(
        ["analyze", "alignment", RUN, "--workers", "two"],
        ["--workers", "'two'"],
        argparse=True,
        tiny_run=True,
    ),
    "analyze-without-a-run": Case(["analyze", "alignment"], ["RUN"], argparse=True),
    "figures-record-random-bytes": Case(
        ["figures", RUN, "--out", "{tmp}/figs"],
        ["iter_000000.h5'", "not a readable HDF5 file"],
        setup=in_run(RECORD, RANDOM_BYTES),
        tiny_run=True,
    ),
    "figures-garbage-in-metrics": Case(
        ["figures", RUN, "--out", "{tmp}/figs"],
        ["metrics.csv'", "not iteration,split,name,value"],
        setup=garbage_metrics,
        tiny_run=True,
    ),
    "figures-config-not-toml": Case(
        ["figures", RUN, "--out", "{tmp}/figs"],
        ["config.toml'", "not valid TOML"],
        setup=in_run("config.toml", "x = = 1"),
        tiny_run=True,
    ),
    "figures-out-is-a-file": Case(
        ["figures", RUN, "--out", "{tmp}/r/run.json"],
        ["--out", "is a file, not a folder"],
        tiny_run=True,
    ),
    "figures-missing-folder": Case(
        ["figures", "{tmp}/nowhere", "--out", "{tmp}/figs"], ["nowhere'", "does not exist"]
    ),
    "figures-folder-without-runs": Case(
        ["figures", "{tmp}/empty", "--out", "{tmp}/figs"],
        ["no run folder", "empty"],
        setup=folder("empty"),
    ),
    "figures-without-out": Case(["figures", RUN], ["--out"], argparse=True, tiny_run=True),
    "verify-missing-folder": Case(
        ["verify", "{tmp}/nowhere"], ["no record files", "nowhere'", "--record-every"]
    ),
    "verify-tolerance-not-a-number": Case(
        ["verify", RUN, "--tolerance", "abc"],
        ["--tolerance", "'abc'"],
        argparse=True,
        tiny_run=True,
    ),
    # -- sweep ---------------------------------------------------------------------------------
    "sweep-unknown-preset": Case(sweep(config="nope"), ["unknown preset 'nope'", "paper, demo"]),
    "sweep-empty-config": Case(sweep(config=""), ["config file ''", "TOML file"]),
    "sweep-missing-config-file": Case(
        sweep(config="{tmp}/missing.toml"), ["missing.toml'", "does not exist"]
    ),
    "sweep-invalid-toml": Case(
        sweep(config="{tmp}/c.toml"), ["c.toml'", "not valid TOML"], setup=toml("[x\n")
    ),
    "sweep-unknown-rule": Case(
        sweep("--rules", "bptt,nope"), ["--rules 'bptt,nope'", "mdgl_online"]
    ),
    "sweep-no-rule": Case(sweep("--rules", ","), ["--rules ','", "names among"]),
    "sweep-seeds-not-integers": Case(sweep("--seeds", "abc"), ["--seeds 'abc'", "integers"]),
    "sweep-repeated-seed": Case(sweep("--seeds", "1,1"), ["--seeds '1,1'", "distinct"]),
    "sweep-zero-jobs": Case(sweep("--jobs", "0"), ["--jobs 0", ">= 1"]),
    "sweep-non-integer-jobs": Case(sweep("--jobs", "two"), ["--jobs", "'two'"], argparse=True),
    "sweep-bad-override": Case(
        sweep("--set", "network.p_rec=2"), ["network.p_rec = 2.0", "[0, 1]"]
    ),
    "sweep-unknown-task": Case(sweep("--task", "nope"), ["task.name = 'nope'", "evidence"]),
    "sweep-negative-iterations": Case(
        sweep("--iterations", "-1"), ["train.iterations = -1", ">= 0"]
    ),
    "sweep-non-integer-record-interval": Case(
        sweep("--record-every", "x"), ["record.every = 'x'", "an integer"]
    ),
    "sweep-out-is-a-file": Case(
        ["sweep", "demo", "--out", "{tmp}/f.txt"],
        ["f.txt'", "is a file, not a folder"],
        setup=files({"f.txt": "x"}),
    ),
    "sweep-beyond-memory": Case(
        sweep("--set", "network.n_regular=1000000"), ["network.n_regular=1000000", MEMORY]
    ),
    "sweep-parallel-runs-beyond-memory": Case(
        sweep("--set", "network.n_regular=30000", "--jobs", "15"),
        ["network.n_regular=30000", "of memory to train 15 runs at once", "fewer runs"],
    ),
    # -- bench ---------------------------------------------------------------------------------
    "bench-unknown-rule": Case(
        ["bench", "--rules", "nope"], ["--rules", "'nope'", "bptt_autograd"]
    ),
    "bench-threads-not-integers": Case(
        bench("--threads", "abc"), ["--threads 'abc'", "integers >= 1"]
    ),
    "bench-zero-threads": Case(bench("--threads", "1,0"), ["--threads '1,0'", "integers >= 1"]),
    "bench-zero-iterations": Case(bench("--iterations", "0"), ["--iterations 0", ">= 1"]),
    "bench-non-integer-iterations": Case(
        bench("--iterations", "many"), ["--iterations", "'many'"], argparse=True
    ),
    "bench-unknown-preset": Case(bench("--preset", "nope"), ["unknown preset 'nope'"]),
    "bench-set-without-equals": Case(bench("--set", "x"), ["--set 'x'", "KEY=VALUE"]),
    "bench-unknown-device": Case(bench("--device", "tpu"), ["run.device = 'tpu'", "auto, cpu"]),
    "bench-beyond-memory": Case(
        bench("--set", "network.n_regular=1000000"), ["network.n_regular=1000000", MEMORY]
    ),
    # -- the command line itself ------------------------------------------------------------------
    "unknown-option": Case(
        ["train", "--bogus"], ["unrecognized arguments: --bogus"], argparse=True
    ),
    "info-without-a-run": Case(["info"], ["RUN_DIR"]),
    "info-of-a-file": Case(
        ["info", "{tmp}/r/run.json"], ["run.json'", "not a run folder"], tiny_run=True
    ),
    "presets-unknown-name": Case(["presets", "nope"], ["unknown preset 'nope'", "paper, demo"]),
    "presets-two-names": Case(
        ["presets", "demo", "paper"], ["unrecognized arguments: paper"], argparse=True
    ),
}

PARAMS = [pytest.param(case, id=name, marks=case.marks) for name, case in CASES.items()]
SUBPROCESS = [
    "unknown-rule",
    "network-beyond-memory",
    "config-and-preset-together",
    "existing-output-folder",
    "task-with-nan-inputs",
]


@pytest.fixture(scope="module")
def tiny_run_template(tmp_path_factory):
    """A real, completed 2-iteration demo run (made once, copied into each case that needs it);
    its record of iteration 0 holds one trial, so that copying the run costs little."""
    path = tmp_path_factory.mktemp("template") / "r"
    argv = [
        "train",
        "--preset",
        "demo",
        "--iterations",
        "2",
        "--set",
        "task.delay_ms=50",
        "--set",
        "record.trials=0",
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
        if p.name == "run.lock":  # names the holder while a writer holds it, empty otherwise
            continue
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


def test_version_and_help_name_every_command_and_rule(capsys):
    from mdgl_analysis import __version__
    from mdgl_analysis.rules import RULES

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"mdgl-analysis {__version__}\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert ", ".join(RULES) in " ".join(capsys.readouterr().out.split())


def test_every_command_and_every_option_has_a_help_text():
    import argparse

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in commands._choices_actions}
    assert set(helps) == set(cli.COMMANDS) and all(helps.values()), helps
    missing = [
        f"mdgl {name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert missing == []
