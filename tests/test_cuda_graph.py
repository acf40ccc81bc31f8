"""The CUDA-graph loops against the torch loops (issue 13, item 4).

On CUDA: float64 equivalence for the lean and the full rollout and both adjoint forms, repeated
calls with new weights, a float32 paper-shape smoke case. On the CPU: the one-line refusal of CPU
tensors, and the static-buffer plumbing with a stand-in for the graph (a "graph" that reruns the
captured closure on its static buffers), which also checks that the captured loops compute exactly
what the torch loops compute.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.network import cuda_graph, neuron
from mdgl_analysis.network.cuda_graph import rollout_graphed
from mdgl_analysis.network.model import SpikingNetwork, forward, loss_of
from mdgl_analysis.rules import adjoint as adjoint_mod
from mdgl_analysis.rules.adjoint import adjoint_graphed
from mdgl_analysis.tasks import TaskBatch

from helpers import make_small

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
FIELDS = ("z", "v", "a", "threshold", "refractory", "psi")


def torch_core(fn):
    """``fn`` on the plain torch loops (``core="torch"`` where ``fn`` takes a core)."""
    if "core" in inspect.signature(fn).parameters:
        return functools.partial(fn, core="torch")
    return fn


def torch_rollout(x, w_in, w_rec, p, lean=False):
    with torch.no_grad():
        return torch_core(neuron.rollout)(x, w_in, w_rec, p, lean=lean)


def torch_adjoint(signal, psi, p, w_rec=None, w_hat=None):
    if w_hat is None:
        return torch_core(adjoint_mod.adjoint)(signal, psi, p, w_rec)
    return torch_core(adjoint_mod.adjoint)(signal, psi, p, w_rec, w_hat=w_hat)


def modulatory(w_rec):
    """A stand-in for MDGL's modulatory weights: any [post, pre] matrix of the weights' scale."""
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(w_rec.shape, generator=gen, dtype=torch.float64)
    return noise.to(w_rec.device, w_rec.dtype) * w_rec.abs().mean()


FORMS = ["bptt", "local", "mdgl"]  # w_rec; neither; w_hat


def form_weights(form, w_rec):
    """``(w_rec, w_hat)`` of an adjoint form."""
    if form == "mdgl" and "w_hat" not in inspect.signature(adjoint_mod.adjoint).parameters:
        pytest.skip("adjoint has no w_hat here")
    return (w_rec if form == "bptt" else None), (modulatory(w_rec) if form == "mdgl" else None)


def inputs(device: str, seed: int = 0):
    """``x, w_in, w_rec, p, signal, psi`` of the small float64 test network on ``device``."""
    cfg, net, snap, fwd = make_small(seed)
    net = net.to(device)
    snap = net.snapshot()
    w = snap.weights
    x = fwd.x.to(device)
    return x, w.w_in, w.w_rec, snap.params, fwd.signal.to(device), fwd.traj.psi.to(device)


def assert_same_trajectory(got, want, lean: bool) -> None:
    assert torch.equal(got.z, want.z)
    assert torch.equal(got.refractory, want.refractory)
    for name in ("v", "a", "threshold", "psi"):
        g, w = getattr(got, name), getattr(want, name)
        if lean and name != "psi":
            assert g is None and w is None
            continue
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12, msg=name)


# ------------------------------------------------------------------------------------------------
# on the CPU


@pytest.mark.parametrize("which", ["rollout", "adjoint"])
def test_cuda_graph_functions_refuse_cpu_tensors_in_one_line(which):
    x, w_in, w_rec, p, signal, psi = inputs("cpu")
    with pytest.raises(RuntimeError) as err:
        if which == "rollout":
            rollout_graphed(x, w_in, w_rec, p)
        else:
            adjoint_graphed(signal, psi, p, w_rec)
    message = str(err.value)
    assert "\n" not in message
    assert f"{which}_graphed" in message and "CUDA" in message and "cpu" in message


class StandInGraph:
    """Replays like a CUDA graph: reruns the captured closure (which reads the static inputs) and
    writes its results into the tensors the capture returned."""

    def __init__(self, body, outputs):
        self.body, self.outputs = body, outputs

    def replay(self) -> None:
        for out, new in zip(self.outputs, self.body(), strict=True):
            if out is not None:
                out.copy_(new)


@pytest.fixture
def stand_in(monkeypatch):
    """The graph functions on CPU tensors, with :class:`StandInGraph` for the CUDA graph."""

    def capture(device, body):
        body()  # the warm-up
        outputs = body()
        return StandInGraph(body, outputs), outputs

    monkeypatch.setattr(cuda_graph, "_device_of", lambda caller, **t: torch.device("cpu"))
    monkeypatch.setattr(cuda_graph, "_stream_id", lambda device: 0)
    monkeypatch.setattr(cuda_graph, "_capture", capture)
    cuda_graph.clear_cache()
    yield
    cuda_graph.clear_cache()


@pytest.mark.parametrize("lean", [False, True], ids=["full", "lean"])
def test_the_captured_rollout_loop_computes_what_the_torch_loop_computes(stand_in, lean):
    x, w_in, w_rec, p, _, _ = inputs("cpu")
    got = rollout_graphed(x, w_in, w_rec, p, lean=lean)
    want = torch_rollout(x, w_in, w_rec, p, lean=lean)
    assert got.z.sum() > 0, "the test must exercise spikes"
    assert_same_trajectory(got, want, lean)


def check_adjoint_form(device: str, form: str) -> None:
    """The graphed adjoint of ``form`` equals the torch loop to 1e-12 (float64) on ``device``."""
    _, _, w_rec, p, signal, psi = inputs(device)
    w, w_hat = form_weights(form, w_rec)
    lam, total = adjoint_graphed(signal, psi, p, w, w_hat)
    lam_want, total_want = torch_adjoint(signal, psi, p, w, w_hat)
    assert lam.device.type == device and lam.dtype == torch.float64
    assert lam.abs().max() > 0, "the test must produce a gradient"
    torch.testing.assert_close(lam, lam_want, rtol=0, atol=1e-12)
    if form == "bptt":
        torch.testing.assert_close(total, total_want, rtol=0, atol=1e-12)
    else:
        assert total is None and total_want is None


@pytest.mark.parametrize("form", FORMS)
def test_the_captured_adjoint_loop_computes_what_the_torch_loop_computes(stand_in, form):
    check_adjoint_form("cpu", form)


def test_repeated_calls_read_the_new_inputs_and_keep_earlier_results(stand_in):
    x, w_in, w_rec, p, signal, psi = inputs("cpu")
    x2, w_in2, w_rec2, p2, signal2, psi2 = inputs("cpu", seed=1)
    p2 = p2._replace(beta=p2.beta.flip(0))  # another adaptation pattern, same constants
    first = rollout_graphed(x, w_in, w_rec, p)
    kept = first.z.clone()
    second = rollout_graphed(x2, w_in2, w_rec2, p2)
    assert len(cuda_graph._CACHE) == 1, "the same shapes must reuse the captured graph"
    want = torch_rollout(x2, w_in2, w_rec2, p2)
    assert not torch.equal(want.z, kept), "the two calls must differ for the test to mean anything"
    assert_same_trajectory(second, want, lean=False)
    assert torch.equal(first.z, kept), "an earlier result must not change with a later call"
    lam, _ = adjoint_graphed(signal, psi, p, w_rec)
    lam2, _ = adjoint_graphed(signal2, psi2, p2, w_rec2)
    torch.testing.assert_close(lam2, torch_adjoint(signal2, psi2, p2, w_rec2)[0], rtol=0, atol=0)
    torch.testing.assert_close(lam, torch_adjoint(signal, psi, p, w_rec)[0], rtol=0, atol=0)


def test_graphs_are_cached_by_shape_and_constants_and_the_oldest_dropped(stand_in, monkeypatch):
    monkeypatch.setattr(cuda_graph, "MAX_GRAPHS", 2)
    x, w_in, w_rec, p, _, _ = inputs("cpu")
    rollout_graphed(x, w_in, w_rec, p)
    rollout_graphed(x[:50], w_in, w_rec, p)  # another trial length
    assert len(cuda_graph._CACHE) == 2
    rollout_graphed(x, w_in, w_rec, p)  # used again: now the shorter trial's is the oldest
    other = p._replace(v_th=0.02)  # a constant the graph bakes in
    got = rollout_graphed(x, w_in, w_rec, other)
    assert_same_trajectory(got, torch_rollout(x, w_in, w_rec, other), lean=False)
    # key: (caller, input signatures, constants, lean, device, stream) -> (time, v_th)
    kept = {(key[1][0][0][0], key[2][3]) for key in cuda_graph._CACHE}
    assert kept == {(75, p.v_th), (75, 0.02)}, "the least recently used graph goes first"


# ------------------------------------------------------------------------------------------------
# on CUDA


@pytest.fixture
def fresh_cache():
    cuda_graph.clear_cache()
    yield
    cuda_graph.clear_cache()


@CUDA
@pytest.mark.parametrize("lean", [False, True], ids=["full", "lean"])
def test_cuda_graph_rollout_equals_the_torch_rollout_in_float64(fresh_cache, lean):
    x, w_in, w_rec, p, _, _ = inputs("cuda")
    got = rollout_graphed(x, w_in, w_rec, p, lean=lean)
    want = torch_rollout(x, w_in, w_rec, p, lean=lean)
    assert got.z.is_cuda and got.z.dtype == torch.float64
    assert got.z.sum() > 0, "the test must exercise spikes"
    assert_same_trajectory(got, want, lean)


@CUDA
@pytest.mark.parametrize("form", FORMS)
def test_cuda_graph_adjoint_equals_the_torch_adjoint_in_float64(fresh_cache, form):
    check_adjoint_form("cuda", form)


@CUDA
def test_cuda_graph_calls_with_new_weights_give_the_new_answers(fresh_cache):
    x, w_in, w_rec, p, signal, psi = inputs("cuda")
    x2, w_in2, w_rec2, p2, signal2, psi2 = inputs("cuda", seed=1)
    p2 = p2._replace(beta=p2.beta.flip(0))
    for lean in (False, True):
        first = rollout_graphed(x, w_in, w_rec, p, lean=lean)
        kept = first.z.clone()
        second = rollout_graphed(x2, w_in2, w_rec2, p2, lean=lean)
        want = torch_rollout(x2, w_in2, w_rec2, p2, lean=lean)
        assert not torch.equal(want.z, kept), "the two calls must differ"
        assert_same_trajectory(second, want, lean)
        assert torch.equal(first.z, kept), "an earlier result must not change with a later call"
        assert_same_trajectory(first, torch_rollout(x, w_in, w_rec, p, lean=lean), lean)
    for form in FORMS:
        w, w_hat = form_weights(form, w_rec)
        w2, w_hat2 = form_weights(form, w_rec2)
        lam, total = adjoint_graphed(signal, psi, p, w, w_hat)
        kept = lam.clone()
        lam2, total2 = adjoint_graphed(signal2, psi2, p2, w2, w_hat2)
        want2 = torch_adjoint(signal2, psi2, p2, w2, w_hat2)
        torch.testing.assert_close(lam2, want2[0], rtol=0, atol=1e-12)
        assert torch.equal(lam, kept)
        torch.testing.assert_close(
            lam, torch_adjoint(signal, psi, p, w, w_hat)[0], rtol=0, atol=1e-12
        )
        if w is not None:
            torch.testing.assert_close(total2, want2[1], rtol=0, atol=1e-12)
    assert len(cuda_graph._CACHE) == 2 + len(FORMS), "one graph per loop and form, both calls"


@CUDA
def test_cuda_graph_paper_shape_in_float32_matches_the_torch_loops(fresh_cache):
    cfg = config_mod.preset("paper")
    gen = torch.Generator().manual_seed(0)
    net = SpikingNetwork(cfg, gen, torch.float32).to("cuda")
    task = config_mod.task_of(cfg)
    b = task.sample(cfg.train.batch, gen)
    batch = TaskBatch(b.x.to("cuda", torch.float32), b.target.to("cuda"), b.mask.to("cuda"))
    snap = net.snapshot()
    w, p = snap.weights, snap.params
    got = rollout_graphed(batch.x, w.w_in, w.w_rec, p, lean=True)
    want = torch_rollout(batch.x, w.w_in, w.w_rec, p, lean=True)
    assert got.z.shape == (cfg.n_steps, cfg.train.batch, cfg.network.n_rec)
    assert got.z.sum() > 0 and torch.isfinite(got.psi).all()
    assert torch.equal(got.z[:200], want.z[:200]), "same spikes on a short trial"
    assert (got.z != want.z).float().mean() < 1e-3
    fwd = forward(snap, batch, loss_of(cfg, task.loss))
    for w_rec in (w.w_rec, None):
        lam, _ = adjoint_graphed(fwd.signal, fwd.traj.psi, p, w_rec)
        lam_want, _ = torch_adjoint(fwd.signal, fwd.traj.psi, p, w_rec)
        assert lam.abs().max() > 0 and torch.isfinite(lam).all()
        scale = lam_want.abs().max()
        torch.testing.assert_close(lam / scale, lam_want / scale, rtol=0, atol=1e-4)
