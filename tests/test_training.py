"""Training constraints (spec E), run folders and bit-identical resume."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.training.loop import Trainer, resume, start
from mdgl_analysis.training.optim import TFAdam
from mdgl_analysis.training.runs import METRICS_HEADER, RunFolder

from helpers import small_config, train_process


def tiny_config(iterations: int, **run):
    cfg = small_config()
    cfg = replace(
        cfg,
        train=replace(cfg.train, iterations=iterations, val_every=4),
        run=replace(cfg.run, checkpoint_every=5, **run),
    )
    return config_mod.validate(cfg)


def test_constraints_hold_after_50_training_steps():
    cfg = replace(small_config(), train=replace(small_config().train, lr=0.02))
    trainer = Trainer(cfg, torch.device("cpu"))
    net = trainer.net
    with torch.no_grad():
        net.theta_in.mul_(3.0)
    init = {m: getattr(net, f"init_{m}").clone() for m in ("in", "rec", "out")}
    start_theta = [t.detach().clone() for t in (net.theta_in, net.theta_rec, net.theta_out)]
    eps = cfg.train.reconnect_eps
    for _ in range(50):
        was_off = {m: getattr(net, f"theta_{m}").detach() <= 0 for m in ("in", "rec", "out")}
        trainer.step()
        w = net.weights()
        for m, weight, sign in zip(
            ("in", "rec", "out"), w[:3], (net.sign_in, net.sign_rec, net.sign_out), strict=True
        ):
            theta = getattr(net, f"theta_{m}")
            on = theta > 0
            assert (torch.sign(weight[on]) == sign[on]).all(), "Dale sign flipped"
            assert (weight[~on] == 0).all(), "a magnitude <= 0 is no connection (spec E)"
            assert not (on & ~init[m]).any(), "connection outside the initial mask"
            # spec E.5: a magnitude <= 0 before the step is reset to 0 (or reconnected at eps);
            # one the step itself takes below 0 stays there until the next step's guard
            off = theta[was_off[m]]
            assert ((off == 0) | (off == eps)).all(), "disconnected magnitudes are reset to 0"
        assert sum(net.connected().values()) <= net.budget
        assert (w.w_rec.diagonal() == 0).all()
    moved = [
        not torch.equal(a, b)
        for a, b in zip(start_theta, (net.theta_in, net.theta_rec, net.theta_out), strict=True)
    ]
    assert all(moved), "training must change every matrix"


def test_tf_adam_matches_the_tensorflow_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = TFAdam([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    grads = [torch.tensor([0.5, -1e-9]), torch.tensor([0.25, 3e-9])]
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    expected = p.detach().clone()
    for t, g in enumerate(grads, start=1):
        g = g.double()
        p.grad = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        lr_t = 0.1 * (1 - 0.999**t) ** 0.5 / (1 - 0.9**t)
        expected = expected - lr_t * m / (v.sqrt() + 1e-8)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0)


def read_bytes(run: RunFolder) -> tuple[str, dict]:
    ckpt = torch.load(run.latest_checkpoint(), weights_only=False)
    return run.metrics_path.read_text(), ckpt


def assert_same_run(a: RunFolder, b: RunFolder) -> None:
    metrics_a, ckpt_a = read_bytes(a)
    metrics_b, ckpt_b = read_bytes(b)
    assert metrics_a == metrics_b
    assert ckpt_a["iteration"] == ckpt_b["iteration"]
    for key, value in ckpt_a["net"].items():
        assert torch.equal(value, ckpt_b["net"][key]), key
    for n, g in ckpt_a["generators"].items():
        assert torch.equal(g, ckpt_b["generators"][n])


def test_resume_after_a_finished_run_is_bit_identical_to_one_long_run(tmp_path):
    full, status = start(tiny_config(18), tmp_path / "full", ["test"], progress=False)
    assert status == "completed"
    short, _ = start(tiny_config(11), tmp_path / "short", ["test"], progress=False)
    resumed, status = resume(short.path, iterations=18, progress=False)
    assert status == "completed"
    assert_same_run(full, resumed)
    meta = resumed.meta()
    assert meta["status"] == "completed" and meta["iteration"] == 18
    assert meta["resumed"][0]["from_iteration"] == 11
    rows = full.read_metrics()
    assert list(rows[0]) == list(METRICS_HEADER)
    names = {(r["split"], r["name"]) for r in rows}
    for split in ("train", "val"):
        assert {(split, "loss"), (split, "accuracy"), (split, "rate_hz")} <= names
    assert {("train", "n_conn_rec"), ("train", "n_conn_in"), ("train", "n_conn_out")} <= names


def test_run_folder_records_config_status_and_provenance(tmp_path):
    cfg = tiny_config(3)
    run, _ = start(cfg, tmp_path / "run", ["mdgl", "train"], progress=False)
    assert run.config() == cfg
    meta = run.meta()
    for key in ("status", "git", "versions", "host", "device", "seed", "started", "ended"):
        assert key in meta
    assert meta["status"] == "completed" and meta["device"] == "cpu"
    assert {"commit", "dirty"} <= set(meta["git"])
    assert "torch" in meta["versions"]
    assert not list(run.path.rglob("*.tmp"))


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = tiny_config(40)
    cfg = config_mod.set_value(cfg, "task.delay_ms", 400)  # slower iterations to kill mid-run
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(config_mod.dumps(cfg))
    killed = tmp_path / "killed"
    proc = train_process(cfg_file, killed)
    run = RunFolder(killed)
    deadline = time.time() + 120
    while time.time() < deadline and not (
        run.checkpoint_dir.exists() and len(run.checkpoints()) >= 2
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(run.checkpoints()) >= 2, "the run must have checkpointed before it was killed"
    assert run.meta()["status"] == "running"
    assert run.latest_checkpoint() != run.checkpoint_path(40), "killed before the end"
    resumed, status = resume(killed, progress=False)
    assert status == "completed"
    full, _ = start(cfg, tmp_path / "full", ["test"], progress=False)
    assert_same_run(full, resumed)
