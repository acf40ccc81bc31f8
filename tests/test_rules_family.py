"""Random e-prop and the k-hop truncations against autograd oracles built by graph surgery on the
unrolled network (tests/oracles.py), in float64, for the last-step and two per-step losses.

Every comparison checks that it is not vacuous (spikes, nonzero gradients) and that a deliberately
wrong variant fails it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from oracles import loss_hops, loss_of
from test_rules import TASKS, kind_of, nonvacuous, rel_err, small

from mdgl_analysis.config import RulesConfig
from mdgl_analysis.network.model import SpikingNetwork
from mdgl_analysis.rules import RULES
from mdgl_analysis.rules.truncated import truncated_signal

from helpers import make_small, small_config


def with_hops(snap, hops: int):
    return snap._replace(rules=RulesConfig(hops=hops))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_eprop_random_equals_autograd_with_the_feedback_surgery(seed, task):
    """Recurrent spike stopped (e-prop) and the readout's derivative sent back through B."""
    cfg, net, snap, fwd = small(seed, task)
    loss, w_in, w_rec, _ = loss_of(
        snap, fwd.x, fwd.target, fwd.mask, kind_of(fwd), stop_recurrent=True, feedback=snap.feedback
    )
    g_in, g_rec = torch.autograd.grad(loss, [w_in, w_rec])
    got = RULES["eprop_random"](snap, fwd)
    nonvacuous(fwd, g_in, g_rec)
    assert rel_err(got.w_in, g_in) < 1e-12
    assert rel_err(got.w_rec, g_rec) < 1e-12
    # wrong variant: symmetric feedback (plain e-prop) fails the oracle
    assert rel_err(RULES["eprop"](snap, fwd).w_rec, g_rec) > 1e-2
    # the readout keeps its exact gradient
    assert torch.equal(got.w_out, RULES["eprop"](snap, fwd).w_out)


def test_feedback_weights_are_the_runs_own_stream():
    """B depends on the run's seed only (not on the initialisation draws), has the stated scale,
    and is saved in the trainer's state."""
    cfg = small_config()
    a = SpikingNetwork(cfg, torch.Generator().manual_seed(0), torch.float64).feedback
    b = SpikingNetwork(cfg, torch.Generator().manual_seed(5), torch.float64).feedback
    assert torch.equal(a, b)
    other = replace(cfg, run=replace(cfg.run, seed=2))
    c = SpikingNetwork(other, torch.Generator().manual_seed(0), torch.float64).feedback
    assert not torch.equal(a, c)
    assert a.shape == (cfg.sized_network.n_out, cfg.network.n_rec)
    scaled = replace(cfg, rules=RulesConfig(feedback_scale=3.0))
    d = SpikingNetwork(scaled, torch.Generator().manual_seed(0), torch.float64).feedback
    torch.testing.assert_close(d, 3.0 * a)
    assert "feedback" in SpikingNetwork(cfg, torch.Generator(), torch.float64).state_dict()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_truncated_equals_autograd_through_hops_plus_one_copies(hops, task):
    cfg, net, snap, fwd = small(0, task)
    loss, w_in, w_rec = loss_hops(snap, fwd.x, fwd.target, fwd.mask, kind_of(fwd), hops)
    g_in, g_rec = torch.autograd.grad(loss, [w_in, w_rec])
    got = RULES["truncated"](with_hops(snap, hops), fwd)
    nonvacuous(fwd, g_in, g_rec)
    assert rel_err(got.w_in, g_in) < 1e-12
    assert rel_err(got.w_rec, g_rec) < 1e-12
    # wrong variants: one hop more or fewer fails the oracle
    for k in (hops - 1, hops + 1):
        assert rel_err(RULES["truncated"](with_hops(snap, k), fwd).w_rec, g_rec) > 1e-4


@pytest.mark.parametrize("task", TASKS)
def test_truncated_at_its_ends_is_eprop_and_bptt(task):
    cfg, net, snap, fwd = small(1, task)
    n_steps = fwd.x.shape[0]
    eprop, bptt = RULES["eprop"](snap, fwd), RULES["bptt"](snap, fwd)
    zero = RULES["truncated"](with_hops(snap, 0), fwd)
    for a, b in zip(zero, eprop, strict=True):
        assert rel_err(a, b) < 1e-12
    for hops in (n_steps - 1, n_steps, 10 * n_steps):  # a path crosses at most T - 1 synapses
        full = RULES["truncated"](with_hops(snap, hops), fwd)
        for a, b in zip(full, bptt, strict=True):
            assert rel_err(a, b) < 1e-12
    # k = 1 holds mdgl_exact's paths and more: it is neither
    one = RULES["truncated"](with_hops(snap, 1), fwd).w_rec
    assert rel_err(one, RULES["mdgl_exact"](snap, fwd).w_rec) > 1e-4
    assert rel_err(one, bptt.w_rec) > 1e-4
    nonvacuous(fwd, bptt.w_rec, one)


def test_truncated_signal_converges_to_bptts_total_signal():
    """The signal a record stores for ``truncated``: each hop more agrees with BPTT's L_tot
    (spec I.3) on at least as many steps, the last pass on all of them."""
    from mdgl_analysis.rules.bptt import bptt_credit

    cfg, net, snap, fwd = make_small(2)
    total = bptt_credit(snap, fwd)[1]
    n_steps = fwd.x.shape[0]
    exact_steps = []
    for hops in range(0, n_steps, 8):
        diff = (truncated_signal(snap, fwd, hops)[:-1] - total[:-1]).abs().amax((1, 2))
        exact_steps.append(int((diff <= 1e-12 * total.abs().max()).sum()))
    assert exact_steps == sorted(exact_steps) and exact_steps[0] < exact_steps[-1]
    torch.testing.assert_close(truncated_signal(snap, fwd, n_steps - 1)[:-1], total[:-1])


@pytest.mark.parametrize("rule", ["eprop_random", "truncated"])
def test_the_numba_core_gives_the_same_gradients(rule):
    pytest.importorskip("numba")
    cfg, net, snap, fwd = make_small(0)
    fast = with_hops(snap, 3)._replace(core="numba")
    ref = RULES[rule](with_hops(snap, 3), fwd)
    got = RULES[rule](fast, fwd)
    for a, b in zip(got, ref, strict=True):
        assert rel_err(a, b) < 1e-12


def test_a_checkpoint_from_before_the_feedback_weights_loads_with_the_runs_own():
    from mdgl_analysis.training.loop import Trainer

    cfg = small_config()
    state = Trainer(cfg, torch.device("cpu")).state()
    drawn = state["net"].pop("feedback")
    trainer = Trainer(cfg, torch.device("cpu"))
    trainer.load_state(state)
    assert torch.equal(trainer.net.feedback, drawn)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rules.hops", -1, "rules.hops = -1 is not allowed: an integer >= 0"),
        ("rules.hops", 1.5, "rules.hops = 1.5 is not allowed: an integer"),
        ("rules.feedback_scale", 0, "rules.feedback_scale = 0.0 is not allowed: a number > 0"),
    ],
)
def test_bad_rule_parameters_get_one_line_errors(key, value, message):
    from mdgl_analysis.config import ConfigError, set_value, validate

    with pytest.raises(ConfigError, match=message):
        validate(set_value(small_config(), key, value))
