"""The presets are the experiment configs of runs/configs/, shipped as mdgl_analysis.presets:
paper and demo are exactly what they were as Python objects; ``mdgl presets`` lists and prints
them; a preset name works wherever a config file does."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from mdgl_analysis import cli
from mdgl_analysis import config as config_mod
from mdgl_analysis.config import (
    Config,
    ConfigError,
    RecordConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    validate,
)

CONFIGS = Path(__file__).resolve().parent.parent / "runs" / "configs"

# The demo preset as it was written in config.py (version 0.2.0) before the presets became the
# TOML files of runs/configs/; the paper preset was Config() itself.
DEMO_0_2 = Config(
    task=TaskConfig(params={"cue_ms": 50, "gap_ms": 25, "delay_ms": 200, "recall_ms": 100}),
    train=TrainConfig(iterations=300, batch=32, val_batch=32, val_every=10, compare_every=10),
    record=RecordConfig(every=100, trials="0-7"),
    run=RunConfig(checkpoint_every=50),
)


def test_the_paper_preset_is_the_published_defaults_exactly():
    assert config_mod.preset("paper") == validate(Config())


def test_the_demo_preset_is_the_demo_of_version_0_2_exactly():
    assert config_mod.preset("demo") == validate(DEMO_0_2)


def test_the_presets_are_the_toml_files_of_runs_configs_paper_first():
    assert list(config_mod.PRESETS) == ["paper", "demo", "fig3c", "neurogym", "pattern"]
    assert set(config_mod.PRESETS) == {p.stem for p in CONFIGS.glob("*.toml")}
    folder = importlib.resources.files(config_mod.PRESET_PACKAGE)
    assert Path(str(folder)).resolve() == CONFIGS.resolve()  # a checkout reads runs/configs/


@pytest.mark.parametrize("name", sorted(config_mod.PRESETS))
def test_each_preset_is_its_file_in_runs_configs(name):
    assert config_mod.load(CONFIGS / f"{name}.toml") == config_mod.PRESETS[name]


def test_fig3c_config_is_the_paper_preset_plus_alignment_recording():
    cfg = config_mod.preset("fig3c")
    assert cfg.network == config_mod.PRESETS["paper"].network
    assert cfg.task == config_mod.PRESETS["paper"].task
    assert cfg.train.reg_rate == 0.0 and cfg.train.iterations == 2000
    assert cfg.train.compare_every == 10


@pytest.mark.parametrize("name", sorted(config_mod.PRESETS))
def test_each_preset_has_a_one_line_description(name):
    text = config_mod.preset_description(name)
    assert 20 < len(text) <= 90 and "\n" not in text


def test_an_unknown_preset_is_refused_with_every_preset_named():
    with pytest.raises(ConfigError) as err:
        config_mod.preset("nope")
    assert str(err.value) == (
        "unknown preset 'nope'; presets: paper, demo, fig3c, neurogym, pattern"
    )


def test_listing_the_presets_reads_no_preset_and_presets_are_read_once():
    presets = config_mod._Presets()
    assert list(presets) == list(config_mod.PRESETS) and "demo" in presets
    assert presets._resolved == {}
    assert presets["demo"] is presets["demo"]
    assert list(presets._resolved) == ["demo"]


def test_a_description_in_a_config_file_is_allowed_and_must_be_a_string(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('description = "mine"\n[train]\nbatch = 16\n')
    assert config_mod.load(path).train.batch == 16
    path.write_text("description = 5\n")
    with pytest.raises(ConfigError, match="description = 5 is not allowed: a string"):
        config_mod.load(path)


# ------------------------------------------------------------------------------------------------
# mdgl presets


def test_mdgl_presets_lists_every_preset_with_its_description(capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in config_mod.PRESETS:
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert line.endswith(config_mod.preset_description(name))


@pytest.mark.parametrize("name", ["paper", "fig3c", "pattern"])
def test_mdgl_presets_name_prints_toml_that_loads_back_to_the_preset(name, capsys, tmp_path):
    assert cli.main(["presets", name]) == 0
    path = tmp_path / "copy.toml"
    path.write_text(capsys.readouterr().out)
    assert tomllib.loads(path.read_text())["description"] == config_mod.preset_description(name)
    assert config_mod.load(path) == config_mod.PRESETS[name]


def test_mdgl_presets_of_an_unknown_name_exits_2_with_the_list(capsys):
    assert cli.main(["presets", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "mdgl: error: unknown preset 'nope'; presets: paper, demo, fig3c, neurogym, pattern\n"
    )


def test_a_sweep_of_a_preset_name_is_named_after_the_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "fig3c", "--rules", "bptt", "--seeds", "1", "--iterations", "1"]
    monkeypatch.setattr("mdgl_analysis.training.sweep.Sweep.run", lambda *a, **k: [])
    assert cli.main([*argv, "--set", "task.delay_ms=50"]) == 0
    assert (tmp_path / "runs" / "sweep-fig3c" / "config.toml").is_file()
    saved = config_mod.load(tmp_path / "runs" / "sweep-fig3c" / "config.toml")
    assert saved.train.compare_every == 10 and saved.train.iterations == 1


def test_mdgl_help_lists_the_presets_quickly():
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mdgl_analysis", "train", "--help"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0
    assert "paper, demo, fig3c, neurogym, pattern" in " ".join(done.stdout.split())
    assert seconds < 10  # about 1.3 s here: importing torch; no preset is read
