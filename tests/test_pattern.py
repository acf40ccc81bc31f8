"""The pattern-generation task (Bellec et al. 2020, Fig. 2): frozen input, sinusoid targets."""

from __future__ import annotations

import math

import pytest
import torch

from mdgl_analysis.tasks import TaskError, check_batch, check_task, make_task
from mdgl_analysis.tasks.pattern import PatternTask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_default_task_follows_the_protocol_with_shapes_dtypes_and_an_all_true_mask():
    task = PatternTask()
    check_task(task)
    assert (task.n_in, task.n_out, task.n_steps, task.loss) == (40, 3, 1000, "mse")
    assert task.frequency_list == (1.0, 2.0, 3.0, 5.0)
    batch = check_batch(task, task.sample(4, gen()), 4)
    assert batch.x.shape == (1000, 4, 40) and batch.x.is_floating_point()
    assert batch.target.shape == (1000, 4, 3) and batch.target.is_floating_point()
    assert batch.mask.dtype == torch.bool and batch.mask.shape == (1000, 4) and batch.mask.all()
    assert (batch.x >= 0).all() and torch.equal(batch.x, batch.x.round())  # Poisson counts


def test_the_target_is_the_sum_of_sinusoids_of_the_drawn_amplitudes_and_phases():
    task = PatternTask(normalise=False, dt=0.5, duration_ms=600, frequencies="0.5, 2,7")
    amp, phase = task.amplitudes, task.phases
    assert amp.shape == phase.shape == (3, 3)
    assert ((amp >= 0.5) & (amp <= 2.0)).all()
    assert ((phase >= 0) & (phase < 2 * math.pi)).all()
    target = task.sample(1, gen()).target[:, 0]
    assert target.shape == (1200, 3)
    for step in (0, 1, 417, 1199):
        t = step * 0.5 / 1000
        for k in range(3):
            want = sum(
                amp[k, i].item() * math.sin(2 * math.pi * f * t + phase[k, i].item())
                for i, f in enumerate((0.5, 2.0, 7.0))
            )
            assert target[step, k].item() == pytest.approx(want, abs=1e-12)


def test_the_normalised_target_starts_at_zero_and_peaks_at_one_with_the_same_shape():
    raw = PatternTask(normalise=False).sample(1, gen()).target[:, 0]
    norm = PatternTask().sample(1, gen()).target[:, 0]
    assert torch.equal(norm[0], torch.zeros(3))
    assert torch.allclose(norm.abs().amax(0), torch.ones(3, dtype=norm.dtype))
    shifted = raw - raw[0]
    assert torch.allclose(norm * shifted.abs().amax(0), shifted)


def test_the_input_and_target_are_frozen_across_calls_generators_and_trials():
    task = PatternTask()
    a = task.sample(3, gen(0))
    b = task.sample(2, gen(123))
    c = PatternTask().sample(1, gen(7))
    for field in ("x", "target"):
        first = getattr(a, field)[:, 0]
        for trial in range(3):
            assert torch.equal(getattr(a, field)[:, trial], first)
        assert torch.equal(getattr(b, field)[:, 1], first)
        assert torch.equal(getattr(c, field)[:, 0], first)
    a.x.zero_()  # the batch is a copy: changing it leaves the frozen pattern as it was
    assert torch.equal(task.sample(1, gen()).x[:, 0], b.x[:, 0])


def test_the_mean_input_rate_matches_input_rate_hz_within_sampling_error():
    for rate, dt in ((50.0, 1.0), (20.0, 0.5)):
        task = PatternTask(n_in=100, duration_ms=2000, input_rate_hz=rate, dt=dt)
        x = task.sample(1, gen()).x
        p = rate * dt / 1000
        assert abs(x.mean().item() - p) < 5 * math.sqrt(p / x.numel())
    assert PatternTask(input_rate_hz=0).sample(1, gen()).x.sum() == 0


def test_a_different_pattern_seed_gives_a_different_input_and_target():
    a = PatternTask(pattern_seed=1).sample(1, gen())
    b = PatternTask(pattern_seed=2).sample(1, gen())
    assert not torch.equal(a.x, b.x)
    assert not torch.allclose(a.target, b.target)
    assert not torch.equal(PatternTask(pattern_seed=1).phases, PatternTask(pattern_seed=2).phases)


def test_amplitudes_and_phases_do_not_depend_on_the_input_size_rate_or_duration():
    base = PatternTask()
    other = PatternTask(n_in=8, input_rate_hz=10.0, duration_ms=300)
    assert torch.equal(base.amplitudes, other.amplitudes)
    assert torch.equal(base.phases, other.phases)


def test_changing_a_parameter_on_the_instance_rebuilds_the_pattern():
    task = PatternTask()
    before = task.sample(1, gen()).x
    task.pattern_seed = 5
    assert not torch.equal(task.sample(1, gen()).x, before)
    task.n_in = 12
    assert task.sample(2, gen()).x.shape == (1000, 2, 12)


def test_parameters_given_as_strings_work_through_make_task():
    task = make_task(
        "pattern",
        {
            "frequencies": "1,2",
            "n_in": "16",
            "n_out": "2",
            "duration_ms": "500",
            "input_rate_hz": "20",
            "amplitude_min": "1",
            "amplitude_max": "1.5",
            "normalise": "false",
            "pattern_seed": "9",
            "dt": "0.5",
        },
    )
    assert isinstance(task, PatternTask)
    assert task.frequency_list == (1.0, 2.0) and task.normalise is False
    assert (task.n_in, task.n_out, task.n_steps, task.pattern_seed) == (16, 2, 1000, 9)
    assert task.amplitudes.shape == (2, 2)
    assert ((task.amplitudes >= 1.0) & (task.amplitudes <= 1.5)).all()
    check_batch(task, task.sample(2, gen()), 2)
    assert make_task("pattern", {"frequencies": "3"}).frequency_list == (3.0,)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"n_in": 0}, "task.n_in"),
        ({"n_out": 0}, "task.n_out"),
        ({"duration_ms": 0}, "task.duration_ms"),
        ({"duration_ms": 1}, "task.duration_ms"),  # a single step: the target cannot vary
        ({"dt": 0}, "task.dt"),
        ({"dt": -1.0}, "task.dt"),
        ({"input_rate_hz": -1.0}, "task.input_rate_hz"),
        ({"input_rate_hz": 1500.0}, "task.input_rate_hz"),
        ({"input_rate_hz": "inf"}, "task.input_rate_hz"),
        ({"frequencies": ""}, "task.frequencies"),
        ({"frequencies": " , "}, "task.frequencies"),
        ({"frequencies": "1,,2"}, "task.frequencies"),
        ({"frequencies": "1,two"}, "task.frequencies"),
        ({"frequencies": "0"}, "task.frequencies"),
        ({"frequencies": "-1,2"}, "task.frequencies"),
        ({"frequencies": "1,nan"}, "task.frequencies"),
        ({"frequencies": "1,inf"}, "task.frequencies"),
        ({"frequencies": "500"}, "task.frequencies"),  # the Nyquist frequency at dt = 1 ms
        ({"amplitude_min": -0.5}, "task.amplitude_min"),
        ({"amplitude_min": 2.0, "amplitude_max": 1.0}, "task.amplitude_max"),
        ({"amplitude_min": 0.0, "amplitude_max": 0.0}, "task.amplitude_max"),
        ({"pattern_seed": -1}, "task.pattern_seed"),
        ({"pattern_seed": 2**63}, "task.pattern_seed"),
        ({"pattern_seed": "1.5"}, "task.pattern_seed"),
        ({"normalise": "maybe"}, "task.normalise"),
        ({"loss": "cross_entropy"}, "task.loss"),
        ({"n_cues": 3}, "task.n_cues"),
    ],
)
def test_bad_parameters_raise_a_one_line_task_error_naming_the_parameter(params, named):
    with pytest.raises(TaskError) as err:
        make_task("pattern", params)
    message = str(err.value)
    assert named in message and "\n" not in message
