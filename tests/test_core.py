"""The compiled core (``run.core = "numba"``) against the torch reference, in float64 and float32.

Every rule on every loss kind: same spikes, states and gradients to 1e-12 in float64; the same
spikes in float32 on the demo network. Each comparison is checked not to be vacuous (spikes and
gradients nonzero) and to fail for a deliberately wrong variant (a kernel given a perturbed
constant). The oracle tests of ``test_rules.py`` and ``test_bptt.py`` run on the torch core;
``test_numba_bptt_equals_autograd`` ties the compiled core to autograd directly.
"""

from __future__ import annotations

import pytest
import torch
from test_rules import TASKS, kind_of, nonvacuous, rel_err

from mdgl_analysis import config as config_mod
from mdgl_analysis import kernels, runtime
from mdgl_analysis.network.model import SpikingNetwork, forward, loss_of
from mdgl_analysis.network.neuron import rollout
from mdgl_analysis.rules import RULES
from mdgl_analysis.rules.adjoint import adjoint
from mdgl_analysis.rules.bptt import bptt_autograd, bptt_credit
from mdgl_analysis.rules.local import modulatory_weights
from mdgl_analysis.tasks import TaskBatch

from helpers import make_small

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")


def pair(seed: int, task: str):
    """The same network and batch run through the torch and the numba loops (float64)."""
    cfg, net, snap, fwd = make_small(seed, task=TASKS[task])
    fast = snap._replace(core="numba")
    batch = TaskBatch(fwd.x, fwd.target, fwd.mask)
    return snap, fwd, fast, forward(fast, batch, loss_of(cfg, kind_of(fwd)))


def assert_trajectories_agree(a, b, tol=1e-12):
    assert torch.equal(a.z, b.z) and torch.equal(a.refractory, b.refractory)
    for name in ("v", "a", "threshold", "psi"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None:
            assert rel_err(y, x) < tol, name


@pytest.mark.parametrize("task", TASKS)
def test_numba_rollout_equals_torch(task):
    snap, fwd, fast, fwd_fast = pair(0, task)
    nonvacuous(fwd, fwd.traj.psi)
    assert_trajectories_agree(fwd.traj, fwd_fast.traj)
    w, p = snap.weights, snap.params
    lean = rollout(fwd.x, w.w_in, w.w_rec, p, lean=True, core="numba")
    assert lean.v is None and torch.equal(lean.z, fwd.traj.z)
    assert rel_err(lean.psi, fwd.traj.psi) < 1e-12
    # a wrong variant (membrane decay off by 1e-6) fails the same comparison
    wrong = rollout(fwd.x, w.w_in, w.w_rec, p._replace(alpha=p.alpha * (1 + 1e-6)), core="numba")
    with pytest.raises(AssertionError):
        assert_trajectories_agree(fwd.traj, wrong)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("rule", RULES)
def test_numba_rule_equals_torch(rule, task):
    snap, fwd, fast, fwd_fast = pair(1, task)
    ref, got = RULES[rule](snap, fwd), RULES[rule](fast, fwd_fast)
    nonvacuous(fwd, ref.w_in, ref.w_rec)
    for name, a, b in zip(ref._fields, ref, got, strict=True):
        assert rel_err(b, a) < 1e-12, name
    # a wrong variant: the adaptation decay off by 1e-3 in the compiled backward pass
    wrong = RULES[rule](fast._replace(params=fast.params._replace(rho=fast.params.rho - 1e-3)), fwd)
    assert rel_err(wrong.w_rec, ref.w_rec) > 1e-9


@pytest.mark.parametrize("task", TASKS)
def test_numba_adjoint_keeps_lam_and_total(task):
    snap, fwd, fast, fwd_fast = pair(2, task)
    lam, total = bptt_credit(snap, fwd)
    lam_f, total_f = bptt_credit(fast, fwd_fast)
    assert lam.abs().max() > 0 and total.abs().max() > 0
    assert rel_err(lam_f, lam) < 1e-12 and rel_err(total_f, total) < 1e-12
    # MDGL's modulatory term inside the pass: torch and numba agree, and it is not e-prop's
    p, w = snap.params, snap.weights
    w_hat = modulatory_weights(w.w_rec, snap.inhibitory, "type")
    m_t, _ = adjoint(fwd.signal, fwd.traj.psi, p, w_hat=w_hat)
    m_n, none = adjoint(fwd.signal, fwd.traj.psi, p, w_hat=w_hat, core="numba")
    assert none is None and rel_err(m_n, m_t) < 1e-12
    assert rel_err(m_t, adjoint(fwd.signal, fwd.traj.psi, p)[0]) > 1e-6


def test_numba_bptt_equals_autograd():
    snap, fwd, fast, fwd_fast = pair(3, "ce_steps")
    cfg, *_ = make_small(3, task=TASKS["ce_steps"])
    oracle = bptt_autograd(
        snap, TaskBatch(fwd.x, fwd.target, fwd.mask), loss_of(cfg, "cross_entropy")
    )
    got = RULES["bptt"](fast, fwd_fast)
    nonvacuous(fwd, oracle.w_rec)
    for a, b in zip(oracle, got, strict=True):
        assert rel_err(b, a) < 1e-12


def test_threads_give_the_same_gradients():
    snap, fwd, fast, fwd_fast = pair(4, "evidence")
    one = RULES["mdgl"](fast, fwd_fast)
    try:
        kernels.set_threads(2)
        fwd_two = forward(fast, TaskBatch(fwd.x, fwd.target, fwd.mask), loss_of(*_cfg_kind(fwd)))
        two = RULES["mdgl"](fast, fwd_two)
    finally:
        kernels.set_threads(1)
    assert torch.equal(fwd_two.traj.z, fwd_fast.traj.z)
    for a, b in zip(one, two, strict=True):
        assert rel_err(b, a) < 1e-12


def _cfg_kind(fwd):
    cfg, *_ = make_small(4)
    return cfg, kind_of(fwd)


def test_float32_demo_network_has_the_same_spikes():
    """float32: the compiled and torch loops give the same spikes on the demo network's batch,
    and gradients that agree to float32 rounding."""
    cfg = config_mod.set_value(config_mod.PRESETS["demo"], "train.batch", 8)
    task = config_mod.task_of(cfg)
    gen = torch.Generator().manual_seed(0)
    net = SpikingNetwork(cfg, gen, torch.float32)
    batch = task.sample(cfg.train.batch, gen)
    batch = TaskBatch(batch.x.float(), batch.target, batch.mask)
    snap = net.snapshot()._replace(core="torch")
    loss = loss_of(cfg, task.loss)
    ref, got = forward(snap, batch, loss), forward(snap._replace(core="numba"), batch, loss)
    assert ref.traj.z.sum() > 100
    assert torch.equal(ref.traj.z, got.traj.z)
    for rule in ("bptt", "eprop", "mdgl"):
        a, b = RULES[rule](snap, ref), RULES[rule](snap._replace(core="numba"), got)
        assert rel_err(b.w_rec, a.w_rec) < 1e-4 and rel_err(b.w_in, a.w_in) < 1e-4


def test_resolve_core():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.resolve_core("auto", cpu) == "numba"
    assert runtime.resolve_core("auto", cuda) == "cuda_graph"
    assert runtime.resolve_core("torch", cuda) == "torch"
    with pytest.raises(RuntimeError, match="numba"):
        runtime.resolve_core("numba", cuda)
    with pytest.raises(RuntimeError, match="cuda_graph"):
        runtime.resolve_core("cuda_graph", cpu)
    with pytest.raises(config_mod.ConfigError, match="run.core"):
        config_mod.resolve(None, "demo", ["run.core=fast"], {})
