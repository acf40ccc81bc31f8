"""The event sampler of Poisson inputs, the old per-cell sampler kept bit for bit, and old runs
resuming with the values they were made with (config.LEGACY).

Statistical checks use fixed seeds and a tolerance of 5 standard deviations (Poisson counts: the
variance equals the mean), so they are deterministic and would fail by chance with probability
below 1e-4 for any seed; each is shown not to be vacuous by a deliberately wrong expectation that
fails the same check.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import LEGACY, ConfigError, with_legacy
from mdgl_analysis.tasks import TaskError, make_task
from mdgl_analysis.tasks.evidence import EvidenceTask, cue_bits
from mdgl_analysis.tasks.pattern import PatternTask
from mdgl_analysis.tasks.sampling import SAMPLERS, Stretches, dense_rate, event_counts
from mdgl_analysis.training import loop
from mdgl_analysis.training.runs import RunFolder

from helpers import SMALL_TASK
from helpers import small_config as helpers_small_config

SMALL = {k: v for k, v in SMALL_TASK.items() if k != "sampler"}  # the default sampler


def small_config():
    """The helpers' small network with the defaults a new config gets: events sampler, auto core."""
    cfg = config_mod.set_value(helpers_small_config(), "task.sampler", "events")
    return config_mod.validate(replace(cfg, run=replace(cfg.run, core="auto")))


SIGMAS = 5.0


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def old_evidence_sample(task: EvidenceTask, batch: int, g: torch.Generator):
    """``EvidenceTask.sample_patterns`` before the event sampler (commit of issue 13), verbatim."""
    tl = task.timeline()
    pop = task.n_in // 4
    pattern = torch.randperm(2**task.n_cues, generator=g)[:batch]
    bits = cue_bits(pattern, task.n_cues)
    side = (bits.sum(1) > task.n_cues / 2).long()
    p_cue, p_noise = task.cue_rate_hz * task.dt / 1000, task.noise_rate_hz * task.dt / 1000
    rate = torch.zeros(tl.n_steps, batch, task.n_in, dtype=torch.float64)
    for c, (start, stop) in enumerate(tl.cues):
        left = bits[:, c].bool()
        rate[start:stop, left, 0:pop] = p_cue
        rate[start:stop, ~left, pop : 2 * pop] = p_cue
    rate[tl.recall[0] : tl.recall[1], :, 2 * pop : 3 * pop] = p_cue
    rate[:, :, 3 * pop :] = p_noise
    x = torch.poisson(rate, generator=g)
    target = side.expand(tl.n_steps, batch).contiguous()
    mask = torch.zeros(tl.n_steps, batch, dtype=torch.bool)
    mask[-1] = True
    return x, target, mask, pattern


def old_pattern_input(task: PatternTask) -> torch.Tensor:
    """The frozen input of ``PatternTask`` before the event sampler, verbatim."""
    g = gen(task.pattern_seed)
    shape = (task.n_out, len(task.frequency_list))
    torch.rand(shape, generator=g, dtype=torch.float64)  # amplitudes
    torch.rand(shape, generator=g, dtype=torch.float64)  # phases
    rate = torch.full((task.n_steps, task.n_in), task.input_rate_hz * task.dt / 1000)
    return torch.poisson(rate.double(), generator=g)


def draws(task: EvidenceTask, n: int, batch: int, seed: int = 0):
    """``n`` batches: the summed counts and summed probabilities ``[time, batch, n_in]``, the
    count histogram per probability, and whether any count fell where the rate is 0."""
    g = gen(seed)
    sum_x = torch.zeros(task.n_steps, batch, task.n_in, dtype=torch.float64)
    sum_p = torch.zeros_like(sum_x)
    hist: dict[float, torch.Tensor] = {}
    outside = 0.0
    for _ in range(n):
        b, pattern = task.sample_patterns(batch, g)
        p = task._dense_rate(cue_bits(pattern, task.n_cues))
        sum_x += b.x
        sum_p += p
        outside += float(b.x[p == 0].sum())
        for value in p.unique().tolist():
            counts = b.x[p == value].long().clamp(max=4)
            hist[value] = hist.get(value, torch.zeros(5, dtype=torch.int64)) + torch.bincount(
                counts, minlength=5
            )
    return sum_x, sum_p, hist, outside


def max_z(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |observed - expected| / sqrt(expected) over cells with expected > 0 (Poisson)."""
    on = expected > 0
    return float(((observed[on] - expected[on]) / expected[on].sqrt()).abs().max())


@pytest.fixture(scope="module")
def small_draws():
    """2000 batches of 8 trials of the small evidence task (p = 0.3 on cues, 0.1 noise)."""
    return draws(EvidenceTask(**SMALL), 2000, 8)


# ------------------------------------------------------------------------------------------------
# rates and counts


def test_the_mean_count_per_step_and_channel_matches_the_configured_probability(small_draws):
    sum_x, sum_p, _, _ = small_draws
    x, p = sum_x.sum(1), sum_p.sum(1)  # [time, n_in], over trials and draws
    assert (p > 0).sum() >= 300 and p[p > 0].min() > 1000  # enough draws per cue or noise cell
    assert max_z(x, p) < SIGMAS
    assert max_z(x, 1.1 * p) > SIGMAS  # not vacuous: a rate 10 % off fails
    for p_cell, hist in small_draws[2].items():  # pooled over the cells of each rate
        if p_cell == 0:
            continue
        cells = int(hist.sum())
        mean = float((hist * torch.arange(5)).sum()) / cells  # counts >= 4 are rare, count as 4
        assert abs(mean - p_cell) < SIGMAS * math.sqrt(p_cell / cells), (p_cell, mean)


def test_counts_of_two_or_more_occur_at_the_poisson_frequency(small_draws):
    hist = small_draws[2]
    for p in (0.3, 0.1):
        total = int(hist[p].sum())
        for k in range(4):
            expected = math.exp(-p) * p**k / math.factorial(k)
            observed = int(hist[p][k]) / total
            sd = math.sqrt(expected * (1 - expected) / total)
            assert abs(observed - expected) < SIGMAS * sd, (p, k, observed, expected)
        two_or_more = int(hist[p][2:].sum()) / total
        assert two_or_more > 0.8 * p**2 / 2  # ~p^2/2: counts, not Bernoulli spikes
    # not vacuous: Bernoulli(p) events would have no count of 2 at all
    assert int(hist[0.1][2]) > 100


def test_at_paper_scale_counts_of_two_occur_about_p_squared_over_two_of_the_time():
    task = EvidenceTask()
    x = task.sample(64, gen(3)).x
    noise = x[:, :, 30:]  # 1.28 million cells at p = 0.01
    expected = noise.numel() * (1 - math.exp(-0.01) * 1.01)  # ~63.7, about p^2 / 2 per cell
    assert abs(int((noise >= 2).sum()) - expected) < SIGMAS * math.sqrt(expected)
    assert abs(float(noise.mean()) - 0.01) < SIGMAS * math.sqrt(0.01 / noise.numel())


def test_no_count_falls_where_the_rate_is_zero(small_draws):
    sum_x, sum_p, _, outside = small_draws
    assert outside == 0
    assert sum_x[sum_p == 0].sum() == 0 and (sum_p == 0).sum() > 1000


def test_the_event_sampler_and_the_poisson_sampler_draw_from_the_same_rates():
    for params in (SMALL, {}):
        task = EvidenceTask(**params)
        bits = cue_bits(torch.randperm(2**task.n_cues, generator=gen(4))[:8], task.n_cues)
        shape = (task.n_steps, 8, task.n_in)
        assert torch.equal(dense_rate(shape, task.stretches(bits)), task._dense_rate(bits))


def test_event_counts_fill_each_stretch_of_any_shape_and_nothing_else():
    parts = Stretches.of(
        [(0, 10, 0, 2, 0, 3), (5, 20, 1, 3, 3, 4), (2, 30, 0, 3, 4, 6), (0, 0, 0, 3, 0, 6)],
        [0.3, 0.1, 0.05, 0.5],
    )
    shape = (30, 3, 6)
    p = dense_rate(shape, parts)
    g = gen(5)
    x = sum(event_counts(shape, parts, g) for _ in range(4000))
    assert x[p == 0].sum() == 0
    assert max_z(x, 4000 * p) < SIGMAS
    assert max_z(x, 4000 * p.flip(0)) > SIGMAS  # not vacuous: the stretches in the wrong place
    assert event_counts(shape, Stretches.of([], []), gen()).sum() == 0


def test_a_stretch_outside_the_tensor_is_a_one_line_error():
    with pytest.raises(TaskError, match=r"^stretch \[0, 31, 0, 1, 0, 1\] is not allowed"):
        event_counts((30, 1, 1), Stretches.of([(0, 31, 0, 1, 0, 1)], [0.1]), gen())
    with pytest.raises(TaskError, match="finite and >= 0"):
        event_counts((30, 1, 1), Stretches.of([(0, 30, 0, 1, 0, 1)], [-0.1]), gen())


def test_trials_targets_and_masks_are_the_same_with_either_sampler():
    events = EvidenceTask(sampler="events").sample_patterns(32, gen(6))
    poisson = EvidenceTask(sampler="poisson").sample_patterns(32, gen(6))
    assert torch.equal(events[1], poisson[1])  # the cue patterns, drawn first
    assert torch.equal(events[0].target, poisson[0].target)
    assert torch.equal(events[0].mask, poisson[0].mask)
    assert events[0].x.dtype == poisson[0].x.dtype == torch.float64
    assert events[0].x.shape == poisson[0].x.shape == (2000, 32, 40)
    assert not torch.equal(events[0].x, poisson[0].x)  # other draws from the same seed


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    task = EvidenceTask()
    a, b, c = (task.sample(16, gen(s)).x for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(PatternTask().pattern()[0], PatternTask().pattern()[0])
    assert not torch.equal(PatternTask().pattern()[0], PatternTask(pattern_seed=2).pattern()[0])


# ------------------------------------------------------------------------------------------------
# the old sampler, unchanged


@pytest.mark.parametrize("params", [SMALL, {}], ids=["small", "paper"])
def test_the_poisson_sampler_reproduces_the_old_draws_bit_for_bit(params):
    task = EvidenceTask(**params, sampler="poisson")
    g_new, g_old = gen(9), gen(9)
    for _ in range(2):  # the generators stay in step too
        batch, pattern = task.sample_patterns(8, g_new)
        x, target, mask, old_pattern = old_evidence_sample(task, 8, g_old)
        assert torch.equal(batch.x, x) and batch.x.dtype == x.dtype
        assert torch.equal(batch.target, target) and torch.equal(batch.mask, mask)
        assert torch.equal(pattern, old_pattern)
    assert torch.equal(g_new.get_state(), g_old.get_state())


def test_the_pattern_task_keeps_its_old_frozen_input_with_the_poisson_sampler():
    old = PatternTask(sampler="poisson")
    new = PatternTask()
    assert torch.equal(old.pattern()[0], old_pattern_input(old))
    assert not torch.equal(new.pattern()[0], old.pattern()[0])
    assert torch.equal(new.amplitudes, old.amplitudes) and torch.equal(new.phases, old.phases)
    assert abs(float(new.pattern()[0].mean()) - 0.05) < SIGMAS * math.sqrt(0.05 / 40000)


# ------------------------------------------------------------------------------------------------
# the parameter


@pytest.mark.parametrize("name", ["evidence", "pattern"])
def test_a_bad_sampler_is_a_one_line_error_naming_the_value_and_the_choices(name):
    message = "task.sampler = 'dense' is not allowed: one of events, poisson"
    with pytest.raises(TaskError) as err:
        make_task(name, {"sampler": "dense"})
    assert str(err.value) == message
    cfg = config_mod.resolve(preset_name="paper", overrides=[f"task.name={name}"])
    with pytest.raises(ConfigError) as err:
        config_mod.validate(config_mod.set_value(cfg, "task.sampler", "dense"))
    assert str(err.value) == message
    assert make_task(name).sampler == "events" and SAMPLERS == ("events", "poisson")


# ------------------------------------------------------------------------------------------------
# old runs: keys their saved config lacks get their legacy values


def test_the_legacy_table_fills_only_absent_keys_and_task_keys_of_tasks_that_have_them():
    assert LEGACY == {"run.core": "torch", "task.sampler": "poisson"}
    old = {"task": {"name": "evidence", "n_cues": 7}, "run": {"seed": 3}}
    filled = with_legacy(old)
    assert filled["task"]["sampler"] == "poisson" and filled["run"]["core"] == "torch"
    assert "sampler" not in old["task"]  # the input is not changed
    stated = {"task": {"name": "pattern", "sampler": "events"}, "run": {"core": "numba"}}
    assert with_legacy(stated) == stated
    gym = with_legacy({"task": {"name": "neurogym:PerceptualDecisionMaking-v0"}})
    assert "sampler" not in gym["task"] and gym["run"] == {"core": "torch"}


def test_a_users_task_gets_a_legacy_key_only_when_it_is_imported_and_has_the_parameter(tmp_path):
    source = tmp_path / "mine.py"
    source.write_text(
        "from mdgl_analysis.tasks.evidence import EvidenceTask\n"
        "from mdgl_analysis.tasks.base import Task\n"
        "class Mine(EvidenceTask):\n    pass\n"
        "class Plain(Task):\n    n_in, n_out, n_steps, loss = 2, 2, 5, 'cross_entropy'\n"
    )
    mine = {"task": {"name": f"{source}:Mine"}}
    assert "sampler" not in with_legacy(mine)["task"]  # reading a run never imports its task
    assert with_legacy(mine, resolve_task=True)["task"]["sampler"] == "poisson"
    plain = {"task": {"name": f"{source}:Plain"}}
    assert "sampler" not in with_legacy(plain, resolve_task=True)["task"]


def test_a_new_config_file_without_the_keys_gets_the_new_defaults(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('[task]\nname = "evidence"\n[run]\nseed = 2\n')
    cfg = config_mod.load(path)
    assert cfg.task.params["sampler"] == "events" and cfg.run.core == "auto"


def tiny(iterations: int, sampler: str | None = None):
    cfg = small_config()
    if sampler is not None:
        cfg = config_mod.set_value(cfg, "task.sampler", sampler)
    cfg = replace(
        cfg,
        train=replace(cfg.train, iterations=iterations, val_every=4),
        run=replace(cfg.run, checkpoint_every=5, core="torch"),
    )
    return config_mod.validate(cfg)


def metrics_and_weights(run: RunFolder) -> tuple[str, dict]:
    ckpt = torch.load(run.latest_checkpoint(), weights_only=False)
    return run.metrics_path.read_text(), ckpt["net"]


def test_a_run_saved_without_the_keys_resumes_with_the_poisson_sampler_and_the_torch_core(
    tmp_path,
):
    old_full, _ = loop.start(tiny(12, "poisson"), tmp_path / "old-full", ["test"], progress=False)
    short, _ = loop.start(tiny(6, "poisson"), tmp_path / "old", ["test"], progress=False)
    text = short.config_path.read_text()
    assert 'sampler = "poisson"' in text and 'core = "torch"' in text
    stripped = re.sub(r"(?m)^(sampler|core) = .*\n", "", text)
    assert "sampler" not in stripped and "core" not in stripped
    short.config_path.write_text(stripped)  # as a run folder made before either key existed
    assert short.config().task.params["sampler"] == "poisson"
    assert short.config().run.core == "torch"

    resumed, status = loop.resume(short.path, iterations=12, progress=False)
    assert status == "completed"
    metrics, weights = metrics_and_weights(resumed)
    old_metrics, old_weights = metrics_and_weights(old_full)
    assert metrics == old_metrics
    assert all(torch.equal(weights[k], old_weights[k]) for k in old_weights)
    text = resumed.config_path.read_text()  # the resumed run now states them
    assert 'sampler = "poisson"' in text and 'core = "torch"' in text

    # not vacuous: the same run on the new default sampler has other numbers
    new, _ = loop.start(tiny(12), tmp_path / "new", ["test"], progress=False)
    assert metrics_and_weights(new)[0] != old_metrics
    text = new.config_path.read_text()
    assert 'sampler = "events"' in text and 'core = "torch"' in text


def test_a_new_run_states_the_sampler_and_the_core_in_its_config(tmp_path):
    cfg = config_mod.set_value(small_config(), "train.iterations", 1)
    run, _ = loop.start(cfg, tmp_path / "run", ["test"], progress=False)
    text = run.config_path.read_text()
    assert re.search(r'(?m)^sampler = "events"$', text)
    assert re.search(r'(?m)^core = "auto"$', text)
    assert run.config() == cfg
