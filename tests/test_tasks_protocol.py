"""The task protocol: parameters, a user's task from a file, one-line errors for bad tasks."""

from __future__ import annotations

import textwrap

import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import ConfigError
from mdgl_analysis.tasks import TASKS, Task, TaskBatch, TaskError, draw, make_task

from helpers import USER_TASK


@pytest.fixture
def user_task(tmp_path):
    path = tmp_path / "my_task.py"
    path.write_text(USER_TASK)
    return path


def test_class_attributes_of_plain_types_are_parameters_and_properties_are_not():
    params = TASKS["evidence"].parameters()
    assert params["n_cues"] == 7 and params["n_in"] == 40
    assert "n_steps" not in params and "n_out" not in params and "loss" not in params
    task = make_task("evidence", {"n_cues": "5", "cue_rate_hz": 20})
    assert task.n_cues == 5 and task.cue_rate_hz == 20.0 and isinstance(task.cue_rate_hz, float)
    assert TASKS["evidence"].n_cues == 7  # the class default is untouched


def test_a_users_task_loads_from_its_file_with_parameters(user_task):
    task = make_task(f"{user_task}:MyTask", {"n_steps": "120"})
    assert (task.n_in, task.n_out, task.n_steps, task.loss) == (8, 2, 120, "cross_entropy")
    batch = draw(task, 4, torch.Generator().manual_seed(0))
    assert batch.x.shape == (120, 4, 8) and batch.mask[-50:].all()


def test_a_users_task_in_a_config_resolves_to_an_absolute_path_and_its_sizes(user_task, tmp_path):
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = config_mod.resolve(
            None, "demo", ["task.n_steps=200"], {"task.name": "my_task.py:MyTask"}
        )
    finally:
        os.chdir(here)
    assert cfg.task.name == f"{user_task.resolve()}:MyTask"
    assert cfg.task.params["n_steps"] == 200
    assert (cfg.sized_network.n_in, cfg.sized_network.n_out, cfg.n_steps) == (8, 2, 200)
    assert (cfg.network.n_in, cfg.network.n_out) == (0, 0)  # "the task's"
    again = config_mod.from_dict(config_mod.to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("nope", {}, "task.name = 'nope' is not allowed: evidence, pattern"),
        ("evidence", {"n_cue": 3}, "task.n_cue is not a parameter of task evidence"),
        ("evidence", {"n_cues": "many"}, "task.n_cues = 'many' is not allowed: an integer"),
        ("evidence", {"n_in": 42}, "task.n_in = 42 is not allowed: a multiple of 4"),
        ("evidence", {"n_cues": 2000}, "task.n_cues = 2000 is not allowed: at most 30"),
        ("missing.py:MyTask", {}, "no such file 'missing.py'"),
    ],
)
def test_bad_task_names_and_parameters_get_one_line_errors(name, params, message):
    with pytest.raises(TaskError) as err:
        make_task(name, params)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_class_and_a_class_that_is_no_task_are_named(user_task):
    with pytest.raises(TaskError, match="has no class 'Other'; tasks there: MyTask"):
        make_task(f"{user_task}:Other", {})
    with pytest.raises(TaskError, match="TaskBatch is not a subclass"):
        make_task(f"{user_task}:TaskBatch", {})


def test_a_broken_file_is_reported_in_one_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\nraise RuntimeError('oops')\n")
    with pytest.raises(TaskError, match="importing .* failed: RuntimeError: oops"):
        make_task(f"{path}:T", {})


class _Good(Task):
    n_in, n_out, n_steps, loss = 3, 2, 10, "cross_entropy"
    broken = ""

    def sample(self, batch, gen):
        x = torch.zeros(self.n_steps, batch, self.n_in)
        target = torch.zeros(self.n_steps, batch, dtype=torch.int64)
        mask = torch.ones(self.n_steps, batch, dtype=torch.bool)
        if self.broken == "shape":
            x = x[:, :, :2]
        elif self.broken == "dtype":
            target = target.float()
        elif self.broken == "empty":
            mask[:] = False
        elif self.broken == "nan":
            x[0, 0, 0] = float("nan")
        elif self.broken == "class":
            target[0] = 5
        elif self.broken == "tuple":
            return x, target
        elif self.broken == "raise":
            raise ValueError("bad draw")
        return TaskBatch(x, target, mask)


@pytest.mark.parametrize(
    "broken, message",
    [
        ("shape", "x has shape (10, 2, 2), expected (10, 2, 3)"),
        ("dtype", "target is torch.float32 (10, 2), expected torch.int64"),
        ("empty", "mask selects no step"),
        ("nan", "x has NaN or infinite values"),
        ("class", "target has class 0..5 at masked steps, expected 0..1"),
        ("tuple", "returned tuple, not TaskBatch"),
        ("raise", "raised ValueError: bad draw"),
    ],
)
def test_batches_that_break_the_protocol_are_named_in_one_line(broken, message):
    task = _Good(broken=broken)
    with pytest.raises(TaskError) as err:
        draw(task, 2, torch.Generator())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_network_sizes_follow_the_task_and_a_disagreement_is_an_error(user_task):
    cfg = config_mod.resolve(None, "paper", [], {})
    assert (cfg.sized_network.n_in, cfg.sized_network.n_out) == (40, 2)
    assert config_mod.resolve(None, "paper", ["task.n_in=80"], {}).sized_network.n_in == 80
    with pytest.raises(ConfigError, match="network.n_in = 40 is not allowed: the task's size .80"):
        config_mod.resolve(None, "paper", ["network.n_in=40", "task.n_in=80"], {})
    with pytest.raises(ConfigError, match="network.n_out = 3"):
        config_mod.resolve(None, "paper", ["network.n_out=3"], {})


def test_a_task_file_edit_in_a_config_keeps_old_configs_working(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text(
        textwrap.dedent(
            """
            [network]
            n_in = 40
            n_out = 2
            [task]
            n_cues = 6
            """
        )
    )
    cfg = config_mod.load(old)
    assert cfg.task.name == "evidence" and cfg.task.params["n_cues"] == 6
    assert cfg.network.n_in == 40


def test_the_finite_check_is_exact_for_infinities_and_for_huge_finite_inputs():
    from mdgl_analysis.tasks.base import _finite

    huge = torch.full((4,), 1e308, dtype=torch.float64)  # their sum overflows, each is finite
    assert _finite(huge)
    assert not _finite(torch.tensor([1.0, float("inf"), float("-inf")]))
    assert not _finite(torch.tensor([0.0, float("nan")]))
    assert _finite(torch.zeros(3))
