"""The tracked experiment configs load and equal the built-in presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdgl_analysis import config as config_mod

CONFIGS = Path(__file__).resolve().parent.parent / "runs" / "configs"


@pytest.mark.parametrize("name", sorted(config_mod.PRESETS))
def test_config_file_of_each_preset_equals_the_preset(name):
    assert config_mod.load(CONFIGS / f"{name}.toml") == config_mod.PRESETS[name]
