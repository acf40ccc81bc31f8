"""The NeuroGym task plug-in (``neurogym:ENV``): sizes, dt, sequences, mask, targets, errors."""

from __future__ import annotations

import math
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch

ngym = pytest.importorskip("neurogym")

from mdgl_analysis.tasks.base import TaskError, check_batch, check_task  # noqa: E402
from mdgl_analysis.tasks.neurogym import NeuroGymTask  # noqa: E402

# Short trials (NeuroGym's defaults last 2.2 s and 3.2 s at 1 ms per step) keep the file fast.
TIMING = {
    "PerceptualDecisionMaking-v0": "fixation=100,stimulus=300,delay=0,decision=100",
    "DelayMatchSample-v0": "fixation=100,sample=100,delay=200,test=100,decision=100",
}
ENVS = sorted(TIMING)
N_STEPS = 1200  # two to three trials per sequence, the last one cut off


def make_task(env: str, **params):
    from mdgl_analysis.tasks import make_task as make

    return make(f"neurogym:{env}", {"timing": TIMING[env], "n_steps": N_STEPS, **params})


def env_sequence(env: str, seed: int, n_steps: int, periods: list[str]):
    """What NeuroGym itself gives for a sequence seeded with ``seed``: ob, gt and the mask of
    ``periods``, built from a fresh environment (trials concatenated, cut at ``n_steps``)."""
    timing = dict(item.split("=") for item in TIMING[env].split(","))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gymnasium: no render_modes in metadata
        raw = ngym.make(env, dt=1, timing={k: int(v) for k, v in timing.items()}).unwrapped
    raw.seed(seed)
    obs, gts, masks = [], [], []
    length = 0
    while length < n_steps:
        raw.new_trial()
        mask = np.zeros(raw.ob.shape[0], dtype=bool)
        for p in periods:
            mask[raw.start_ind[p] : raw.end_ind[p]] = True
        obs.append(raw.ob)
        gts.append(raw.gt)
        masks.append(mask)
        length += raw.ob.shape[0]
    return (
        np.concatenate(obs)[:n_steps],
        np.concatenate(gts)[:n_steps],
        np.concatenate(masks)[:n_steps],
    )


@pytest.mark.parametrize("env", ENVS)
def test_make_task_builds_the_environment_at_one_ms_per_step_with_its_sizes(env):
    task = make_task(env)
    check_task(task)
    raw = task.environment()
    assert isinstance(task, NeuroGymTask)
    assert raw.dt == 1 and task.dt == 1.0
    assert task.env == env and task.n_steps == N_STEPS
    assert task.n_in == raw.observation_space.shape[0] == 3
    assert task.n_out == raw.action_space.n == 3
    assert task.loss == "cross_entropy"
    assert not {"n_in", "n_out", "loss"} & set(task.parameters())
    assert task.input_names() == ["fixation", "stimulus 1", "stimulus 2"]


@pytest.mark.parametrize("env", ENVS)
def test_a_batch_passes_check_batch_with_float_currents_int64_targets_and_a_bool_mask(env):
    task = make_task(env)
    batch = check_batch(task, task.sample(8, torch.Generator().manual_seed(0)), 8)
    assert batch.x.shape == (N_STEPS, 8, 3) and batch.x.dtype == torch.float32
    assert batch.target.shape == (N_STEPS, 8) and batch.target.dtype == torch.int64
    assert batch.mask.shape == (N_STEPS, 8) and batch.mask.dtype == torch.bool
    assert batch.mask.all(0).logical_not().all()  # the fixation and stimulus periods do not count
    assert set(batch.target[batch.mask].tolist()) <= {1, 2}  # the choices, never "fixate"


@pytest.mark.parametrize("env", ENVS)
def test_inputs_targets_and_mask_are_the_env_s_own_trials_and_decision_periods(env):
    task = make_task(env, input_scale=0.1)
    batch, layout = task.sample_trials(4, torch.Generator().manual_seed(3))
    for b, (seed, trials) in enumerate(layout):
        ob, gt, mask = env_sequence(env, seed, N_STEPS, ["decision"])
        assert torch.equal(batch.x[:, b], torch.from_numpy(ob) * 0.1)
        assert torch.equal(batch.mask[:, b], torch.from_numpy(mask))
        assert torch.equal(batch.target[:, b], torch.from_numpy(gt.astype(np.int64)))
        assert len(trials) >= 2 and trials[0].start == 0
        for trial in trials:
            a, z = trial.periods["decision"]
            assert batch.mask[a : min(z, N_STEPS), b].all()
            assert not batch.mask[trial.start : a, b].any()
            # the ground truth of the trial is the target of its decision steps
            answer = trial.info["ground_truth"] + (1 if env.startswith("Perceptual") else 0)
            assert (batch.target[a : min(z, N_STEPS), b] == answer).all()


@pytest.mark.parametrize("env", ENVS)
def test_the_mask_can_add_the_fixation_period_or_count_every_step(env):
    gen = torch.Generator().manual_seed(1)
    batch, layout = make_task(env, mask="fixation,decision").sample_trials(3, gen)
    for b, (seed, _) in enumerate(layout):
        mask = env_sequence(env, seed, N_STEPS, ["fixation", "decision"])[2]
        assert torch.equal(batch.mask[:, b], torch.from_numpy(mask))
    assert make_task(env, mask="all").sample(3, gen).mask.all()


@pytest.mark.parametrize("env", ENVS)
def test_the_same_generator_state_gives_the_same_batch_and_another_a_different_one(env):
    task = make_task(env)
    first = task.sample(4, torch.Generator().manual_seed(7))
    again = make_task(env).sample(4, torch.Generator().manual_seed(7))
    other = task.sample(4, torch.Generator().manual_seed(8))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.x, other.x)
    gen = torch.Generator().manual_seed(7)
    task.sample(4, gen)
    assert not torch.equal(task.sample(4, gen).x, first.x)  # the generator moved on


@pytest.mark.parametrize("env", ENVS)
def test_n_steps_zero_means_auto_long_enough_for_a_whole_trial(env):
    task = make_task(env, n_steps=0)
    length = sum(int(v.split("=")[1]) for v in TIMING[env].split(","))
    assert task.n_steps == 100 * math.ceil(length / 100) and task.values()["n_steps"] > 0
    check_batch(task, task.sample(2, torch.Generator().manual_seed(0)), 2)


@pytest.mark.parametrize("env", ENVS)
def test_epochs_list_the_periods_of_every_trial_within_the_sequence(env):
    task = make_task(env)
    raw = task.environment()
    raw.new_trial()
    first = [(p, raw.start_ind[p], raw.end_ind[p]) for p in raw.start_ind]
    first = [e for e in first if e[2] > e[1]]  # PerceptualDecisionMaking's delay lasts 0 ms
    length = raw.ob.shape[0]
    expected = [
        (p, k * length + a, min(k * length + z, N_STEPS))
        for k in range(math.ceil(N_STEPS / length))
        for p, a, z in first
        if k * length + a < N_STEPS
    ]
    assert task.epochs() == expected


def test_string_parameters_from_the_command_line_are_coerced():
    task = make_task(
        "PerceptualDecisionMaking-v0", n_steps="900", input_scale="0.1", copies="2", dt="1"
    )
    assert (task.n_steps, task.input_scale, task.copies, task.dt) == (900, 0.1, 2, 1.0)
    batch = task.sample(2, torch.Generator().manual_seed(0))
    check_batch(task, batch, 2)
    assert task.n_in == 6 and torch.equal(batch.x[:, :, 0], batch.x[:, :, 1])
    assert task.input_names()[:2] == ["fixation", "fixation"]


def test_env_kwargs_reach_the_environment_and_the_task_pickles_without_it():
    task = make_task("PerceptualDecisionMaking-v0", env_kwargs='{"sigma": 0.0}')
    assert task.environment().sigma == 0.0
    first = task.sample(2, torch.Generator().manual_seed(0))
    copy = pickle.loads(pickle.dumps(task))
    assert torch.equal(copy.sample(2, torch.Generator().manual_seed(0)).x, first.x)


def one_line_error(env: str, **params) -> str:
    with pytest.raises(TaskError) as err:
        make_task(env, **params)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["NoSuchTask-v0", "PerceptualDecisionMakin-v0", "bad id!"])
def test_an_unknown_environment_is_a_one_line_task_error_naming_it(name):
    from mdgl_analysis.tasks import make_task as make

    with pytest.raises(TaskError) as err:
        make(f"neurogym:{name}", {})
    message = str(err.value)
    assert "\n" not in message and repr(name) in message and "DelayMatchSample-v0" in message


def test_a_gymnasium_environment_that_is_not_a_neurogym_trial_env_is_refused():
    from mdgl_analysis.tasks import make_task as make

    with pytest.raises(TaskError, match="not a NeuroGym trial environment"):
        make("neurogym:CartPole-v1", {})


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"n_steps": -1}, "task.n_steps = -1"),
        ({"n_steps": 300}, "task.n_steps = 300"),  # ends before the first decision period
        ({"input_scale": 0.0}, "task.input_scale = 0.0"),
        ({"input_scale": -0.5}, "task.input_scale = -0.5"),
        ({"input_scale": "inf"}, "task.input_scale"),
        ({"copies": 0}, "task.copies = 0"),
        ({"dt": 0}, "task.dt = 0"),
        ({"mask": "response"}, "no period 'response'"),
        ({"mask": " , "}, "task.mask"),
        ({"timing": "stimulus"}, "task.timing = 'stimulus'"),
        ({"timing": "stimulus=-5"}, "task.timing"),
        ({"env_kwargs": "[1, 2]"}, "task.env_kwargs"),
        ({"env_kwargs": "{sigma: 1}"}, "task.env_kwargs"),
        ({"env_kwargs": '{"dt": 10}'}, "task.env_kwargs may not set dt"),
        ({"env_kwargs": '{"no_such_argument": 1}'}, "could not be made"),
        ({"n_in": 4}, "task.n_in is not a parameter"),
    ],
)
def test_bad_parameters_are_one_line_task_errors_naming_the_parameter(params, needle):
    assert needle in one_line_error("PerceptualDecisionMaking-v0", **params)


def test_without_neurogym_the_error_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "neurogym", None)  # import neurogym raises ImportError
    message = one_line_error("PerceptualDecisionMaking-v0")
    assert "pip install mdgl-analysis[neurogym]" in message
