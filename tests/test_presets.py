"""The tracked experiment configs load and equal the built-in presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdgl_analysis import config as config_mod

CONFIGS = Path(__file__).resolve().parent.parent / "runs" / "configs"


@pytest.mark.parametrize("name", sorted(config_mod.PRESETS))
def test_config_file_of_each_preset_equals_the_preset(name):
    assert config_mod.load(CONFIGS / f"{name}.toml") == config_mod.PRESETS[name]


def test_fig3c_config_is_the_paper_preset_plus_alignment_recording():
    cfg = config_mod.load(CONFIGS / "fig3c.toml")
    assert cfg.network == config_mod.PRESETS["paper"].network
    assert cfg.task == config_mod.PRESETS["paper"].task
    assert cfg.train.reg_rate == 0.0 and cfg.train.iterations == 2000
    assert cfg.train.compare_every == 10
