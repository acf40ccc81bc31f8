"""The memory estimate of a config, and the refusal of sizes that cannot fit before allocation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import PRESETS, ConfigError, resolve
from mdgl_analysis.training import memory
from mdgl_analysis.training.memory import check_memory, estimate_bytes, format_bytes

ROOT = Path(__file__).resolve().parent.parent
GB = 10**9
# a short trial and a batch of one: the weights dominate
TINY_TRIAL = [
    "task.n_cues=1",
    "task.cue_ms=1",
    "task.delay_ms=0",
    "task.recall_ms=1",
    "train.batch=1",
    "train.val_batch=1",
    "train.compare_every=0",
    "record.every=0",
]


def cfg_of(*overrides, preset="paper"):
    return resolve(None, preset, list(overrides))


def cells(n):
    return [f"network.n_regular={n // 2}", f"network.n_adaptive={n - n // 2}"]


def with_memory(monkeypatch, available):
    monkeypatch.setattr(memory, "available_bytes", lambda device: available)


# ------------------------------------------------------------------------------------------------
# the estimate


def test_the_estimate_grows_quadratically_with_the_number_of_cells():
    small = estimate_bytes(cfg_of(*TINY_TRIAL, *cells(2000)))
    large = estimate_bytes(cfg_of(*TINY_TRIAL, *cells(4000)))
    assert 3.6 < large / small < 4.1


def test_the_estimate_grows_linearly_with_the_batch_and_the_trial_length():
    one = estimate_bytes(resolve(None, "paper", ["train.batch=1000"], {"task.name": "pattern"}))
    two = estimate_bytes(resolve(None, "paper", ["train.batch=2000"], {"task.name": "pattern"}))
    assert 1.8 < two / one < 2.05
    short = estimate_bytes(cfg_of("train.compare_every=0", "task.delay_ms=10000"))
    long = estimate_bytes(cfg_of("train.compare_every=0", "task.delay_ms=20850"))
    assert 1.8 < long / short < 2.05


def test_float64_recording_and_comparisons_cost_more():
    plain = estimate_bytes(cfg_of("train.compare_every=0"))
    assert estimate_bytes(cfg_of("train.compare_every=0", "run.dtype=float64")) > 1.5 * plain
    assert estimate_bytes(cfg_of("train.compare_every=0", "record.every=10")) > plain
    assert estimate_bytes(cfg_of("train.compare_every=10")) > plain


def test_a_dense_record_layout_costs_more_than_a_list_of_the_connected_synapses():
    recorded = [*TINY_TRIAL, *cells(2000), "record.every=10"]
    listed = estimate_bytes(cfg_of(*recorded))
    dense = estimate_bytes(cfg_of(*recorded, "record.layout=dense"))
    assert dense > listed + 16 * 2000 * 1999  # int64 post and pre of every pair, at least


def test_on_a_gpu_the_network_is_built_in_host_memory():
    cfg = cfg_of(*TINY_TRIAL, *cells(3000))
    assert estimate_bytes(cfg, "cuda") < estimate_bytes(cfg, "cpu")
    assert memory.host_bytes(cfg) > 9 * 3000**2 * 5  # dense float64 matrices of n x n


MEASURE = """
import json, sys, tempfile
from pathlib import Path
import torch
from mdgl_analysis import config as C, runtime
from mdgl_analysis.recording.writer import Recorder
from mdgl_analysis.training.loop import Trainer
from mdgl_analysis.training.memory import estimate_bytes

def peak():  # this process's high-water RSS (ru_maxrss would include its parent's at the fork)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

runtime.configure(1)
cfg = C.resolve(None, sys.argv[1], sys.argv[2:], {"run.device": "cpu"})
C.task_of(cfg)
warm = C.resolve(None, "demo", ["network.n_regular=5", "network.n_adaptive=5", "train.batch=2",
                                "train.val_batch=2", "record.trials=0-1"], {"run.device": "cpu"})
t = Trainer(warm, torch.device("cpu"))  # first use of every kernel, not counted
t.validate(); t.step(Recorder(warm, t.net, Path(tempfile.mkdtemp()), "warm")); t.step()
del t
base = peak()
t = Trainer(cfg, torch.device("cpu"))
recorder = Recorder(cfg, t.net, Path(tempfile.mkdtemp()), "m")
recorder = recorder if recorder.enabled else None
t.validate()
t.step(recorder)
print(json.dumps({"measured": peak() - base, "estimate": estimate_bytes(cfg)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    "preset, overrides",
    [
        pytest.param("paper", [], id="paper"),
        pytest.param("paper", [*TINY_TRIAL, *cells(1200)], id="1200-cells-short-trial"),
        pytest.param("demo", ["task.delay_ms=50"], id="demo-recorded"),
    ],
)
def test_the_estimate_bounds_the_measured_peak_of_training_from_above_within_a_factor(
    preset, overrides, tmp_path
):
    """Peak RSS of a fresh process (above its state after a warm-up) while it builds the network
    and runs a validation and a training iteration (recorded in the demo preset)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, preset, *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["measured"] > 20 * 2**20, result  # the measurement saw the run
    assert result["measured"] <= result["estimate"] <= 2.5 * result["measured"], result


# ------------------------------------------------------------------------------------------------
# what ships fits a 24 GB machine


CONFIGS = sorted((ROOT / "runs" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_shipped_configs_pass_the_check_on_a_24_gb_machine(path, monkeypatch):
    with_memory(monkeypatch, 24 * GB)
    cfg = config_mod.load(path)
    for device in ("cpu", "cuda"):
        check_memory(cfg, device)
        assert estimate_bytes(cfg, device) < 2 * GB


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_presets_pass_the_check_on_a_24_gb_machine(name, monkeypatch):
    with_memory(monkeypatch, 24 * GB)
    check_memory(PRESETS[name], "cpu")
    check_memory(PRESETS[name], "cpu", runs=5)  # mdgl sweep --jobs 5
    assert estimate_bytes(PRESETS[name]) < 2 * GB


def test_the_check_uses_the_available_ram_on_the_cpu(monkeypatch):
    import psutil

    class Memory:
        available = 12345

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    assert memory.available_bytes("cpu") == 12345
    with pytest.raises(ConfigError, match="this machine has 12.3 kB available"):
        check_memory(PRESETS["paper"], "cpu")


def test_the_check_uses_the_free_memory_of_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 10**6, 80 * GB))
    assert memory.available_bytes("cuda") == 3 * 10**6
    with pytest.raises(ConfigError, match=r"GPU cuda has 3.0 MB free") as err:
        check_memory(PRESETS["paper"], "cuda")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# the refusal names the fields that make a config large


@pytest.mark.parametrize(
    "overrides, task, field, what",
    [
        (["network.n_regular=1000000"], None, "network.n_regular=1000000", "recurrent"),
        (["network.n_adaptive=700000"], None, "network.n_adaptive=700000", "recurrent"),
        (["task.delay_ms=100000000"], None, "task.delay_ms=100000000", "trajectory"),
        (["train.batch=10000000"], "pattern", "train.batch=10000000", "trajectory"),
        (["task.duration_ms=1000000000"], "pattern", "task.duration_ms=1000000000", "trajectory"),
        (["task.n_in=100000000"], "pattern", "task.n_in=100000000", "input weights"),
        (["task.n_out=10000000"], "pattern", "task.n_out=10000000", "readout"),
    ],
)
def test_a_config_beyond_memory_is_refused_naming_the_field_that_makes_it_large(
    overrides, task, field, what, monkeypatch
):
    with_memory(monkeypatch, 24 * GB)
    cfg = resolve(None, "paper", overrides, {"task.name": task})
    with pytest.raises(ConfigError) as err:
        check_memory(cfg, "cpu")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{field} needs about ")
    assert what in message and "this machine has 24.0 GB available" in message
    assert f"n_rec={cfg.network.n_rec}" in message and f"steps={cfg.n_steps}" in message


def test_a_config_large_in_every_size_names_them_all(monkeypatch):
    with_memory(monkeypatch, 10**6)
    with pytest.raises(ConfigError) as err:
        check_memory(PRESETS["paper"], "cpu")
    message = str(err.value)
    assert message.startswith(
        "network.n_regular=50, network.n_adaptive=50, train.batch=64, n_steps=2000 of task "
        "evidence need about "
    )


def test_parallel_runs_multiply_the_estimate(monkeypatch):
    cfg = PRESETS["demo"]
    with_memory(monkeypatch, 3 * estimate_bytes(cfg))
    check_memory(cfg, "cpu", runs=3)
    with pytest.raises(ConfigError, match="to train 4 runs at once .* fewer runs at once"):
        check_memory(cfg, "cpu", runs=4)


def test_the_trainer_refuses_a_network_beyond_memory_before_allocating_it():
    from mdgl_analysis.training.loop import Trainer

    cfg = cfg_of("network.n_regular=1000000")
    with pytest.raises(ConfigError, match="network.n_regular=1000000 needs about .* TB"):
        Trainer(cfg, torch.device("cpu"))


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0 bytes"),
        (999, "999 bytes"),
        (1000, "1.0 kB"),
        (21_300_000_000, "21.3 GB"),
        (8 * 10**12, "8.0 TB"),
        (10**30, "1.0e30 bytes"),
    ],
)
def test_sizes_are_shown_in_decimal_units(value, text):
    assert format_bytes(value) == text
