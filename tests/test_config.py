"""Configuration: published defaults, presets, TOML round trips, overrides and validation."""

from dataclasses import fields, replace

import pytest

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import (
    PRESETS,
    SECTIONS,
    Config,
    ConfigError,
    dumps,
    load,
    resolve,
    set_value,
    validate,
)


def with_value(cfg, key, value):
    """``cfg`` with ``section.field`` (or a task parameter) set to ``value`` as is (no parsing,
    no validation)."""
    section, name = key.split(".")
    if section == "task" and name != "name":
        return replace(cfg, task=replace(cfg.task, params={**cfg.task.params, name: value}))
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})


def get_value(cfg, key):
    section, name = key.split(".")
    if section == "task" and name != "name":
        return cfg.task.params[name]
    return getattr(getattr(cfg, section), name)


def all_keys(cfg):
    """Every key of ``cfg``: each field of the sections and each parameter of its task."""
    keys = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls) if s != "task"]
    return keys + [f"task.{name}" for name in cfg.task.params]


PAPER = PRESETS["paper"]


# ------------------------------------------------------------------------------------------------
# defaults and presets


def test_the_default_config_is_the_paper_preset():
    assert validate(Config()) == PRESETS["paper"]


PUBLISHED = {
    "network.n_in": 40,
    "network.n_regular": 50,
    "network.n_adaptive": 50,
    "network.tau_m": 20.0,
    "network.tau_a": 2000.0,
    "network.v_th": 0.01,
    "network.beta": 1.8,
    "network.gamma": 0.3,
    "network.n_ref": 5,
    "network.p_in": 0.1,
    "network.p_rec": 0.1,
    "network.p_out": 0.1,
    "train.rule": "bptt",
    "train.lr": 0.0025,
    "train.batch": 64,
    "train.iterations": 2000,
    "train.val_every": 10,
    "train.l1": 0.01,
    "task.n_cues": 7,
    "task.cue_ms": 100,
    "task.gap_ms": 50,
    "task.delay_ms": 850,
    "task.recall_ms": 150,
}


@pytest.mark.parametrize("key, expected", PUBLISHED.items(), ids=list(PUBLISHED))
def test_the_default_config_has_the_published_value(key, expected):
    value = get_value(PAPER, key)
    if key in ("network.n_in", "network.n_out"):  # 0: the task's
        value = get_value(replace(PAPER, network=PAPER.sized_network), key)
    assert value == expected
    assert type(value) is type(expected)


def test_the_paper_trial_is_seven_cues_gaps_delay_and_recall_2000_steps_long():
    cfg = PAPER
    assert cfg.network.dt == 1.0
    assert cfg.n_steps == 7 * 100 + 6 * 50 + 850 + 150 == 2000


def test_the_trial_length_follows_the_task_timeline_and_dt():
    cfg = with_value(with_value(PRESETS["demo"], "network.dt", 0.5), "task.dt", 0.5)
    ms = 7 * 50 + 6 * 25 + 200 + 100
    assert PRESETS["demo"].n_steps == ms
    assert validate(cfg).n_steps == 2 * ms


def test_the_demo_preset_is_shorter_than_the_paper_but_has_the_same_network():
    demo, paper = PRESETS["demo"], PRESETS["paper"]
    assert demo.network == paper.network
    assert demo.n_steps < paper.n_steps
    assert demo.train.batch < paper.train.batch


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_passes_validation(name):
    assert validate(PRESETS[name]) == PRESETS[name]


def test_an_unknown_preset_is_rejected_with_the_list_of_presets():
    with pytest.raises(ConfigError, match="nope") as err:
        config_mod.preset("nope")
    assert "paper" in str(err.value) and "demo" in str(err.value)


# ------------------------------------------------------------------------------------------------
# TOML files


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_survives_dumps_then_load_exactly(name, tmp_path):
    cfg = PRESETS[name]
    path = tmp_path / "config.toml"
    path.write_text(dumps(cfg))
    loaded = load(path)
    assert loaded == cfg
    for key in all_keys(cfg):  # 2 == 2.0 for dataclass equality; the types must survive too
        assert type(get_value(loaded, key)) is type(get_value(cfg, key)), key


def test_a_config_with_changed_values_survives_dumps_then_load(tmp_path):
    cfg = PRESETS["demo"]
    for key, value in [
        ("network.n_adaptive", 30),
        ("network.tau_a", 1234.5),
        ("train.lr", 1e-5),
        ("train.reconnect_eps", 3e-15),
        ("run.seed", 12345),
        ("run.dtype", "float64"),
    ]:
        cfg = with_value(cfg, key, value)
    path = tmp_path / "config.toml"
    path.write_text(dumps(cfg))
    assert load(path) == cfg


def test_a_partial_section_in_a_toml_file_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "partial.toml"
    path.write_text("[network]\nn_adaptive = 30\n\n[train]\nlr = 0.001\n")
    cfg = load(path)
    expected = with_value(with_value(PAPER, "network.n_adaptive", 30), "train.lr", 0.001)
    assert cfg == expected
    assert cfg.network.n_regular == 50
    assert cfg.task == PAPER.task
    assert cfg.run == PAPER.run


def test_a_partial_toml_file_on_top_of_a_base_keeps_the_base_values(tmp_path):
    path = tmp_path / "partial.toml"
    path.write_text("[train]\nbatch = 16\n")
    cfg = load(path, base=PRESETS["demo"])
    assert cfg == with_value(PRESETS["demo"], "train.batch", 16)


def test_an_integer_in_a_toml_file_for_a_float_field_becomes_a_float(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[network]\ntau_m = 25\n")
    value = load(path).network.tau_m
    assert value == 25.0 and type(value) is float


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[bogus]\nx = 1\n", "bogus"),
        ("[network]\nn_bogus = 1\n", "network.n_bogus"),
        ("network = 3\n", "[network]"),
        ("[train]\nbatch = 2.5\n", "train.batch"),
        ("[train]\nbatch = true\n", "train.batch"),
        ("[train]\nlr = true\n", "train.lr"),
        ("[train]\nrule = 3\n", "train.rule"),
        ("[network]\np_rec = 1.5\n", "network.p_rec"),
    ],
    ids=[
        "unknown-section",
        "unknown-field",
        "section-not-a-table",
        "float-for-int",
        "bool-for-int",
        "bool-for-float",
        "int-for-string",
        "probability-above-one",
    ],
)
def test_a_bad_toml_file_is_rejected_naming_the_key(text, expected, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert expected in str(err.value)


def test_a_missing_config_file_is_rejected_naming_the_path(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist") as err:
        load(path)
    assert str(path) in str(err.value)


def test_an_invalid_toml_file_is_rejected_naming_the_path(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[network\nn_in = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------------
# overrides


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("network.n_adaptive", "30", 30),
        ("train.batch", " 16 ", 16),
        ("train.lr", "0.5", 0.5),
        ("network.tau_m", "2", 2.0),
        ("train.reconnect_eps", "1e-10", 1e-10),
        ("train.rule", "bptt", "bptt"),
        ("run.device", "cpu", "cpu"),
    ],
    ids=[
        "int",
        "int-with-spaces",
        "float",
        "integral-text-for-float",
        "exponent",
        "rule",
        "device",
    ],
)
def test_set_value_parses_a_string_to_the_field_type(key, text, expected):
    cfg = set_value(PAPER, key, text)
    value = get_value(cfg, key)
    assert value == expected
    assert type(value) is type(expected)


def test_set_value_returns_a_new_config_and_leaves_the_original_alone():
    before = PAPER
    after = set_value(before, "network.n_adaptive", "30")
    assert before.network.n_adaptive == 50
    assert after.network.n_adaptive == 30
    assert after.network.n_regular == before.network.n_regular
    assert after.train == before.train


@pytest.mark.parametrize(
    "key",
    ["network.n_bogus", "bogus.n_in", "network", "network.", "train.lr.x", ""],
    ids=["unknown-field", "unknown-section", "no-field", "empty-field", "too-deep", "empty"],
)
def test_set_value_rejects_an_unknown_key_naming_it(key):
    with pytest.raises(ConfigError, match="unknown config key") as err:
        set_value(PAPER, key, "1")
    assert repr(key) in str(err.value)


@pytest.mark.parametrize(
    "key, text",
    [
        ("train.lr", "fast"),
        ("train.batch", "many"),
        ("train.batch", "2.5"),
        ("network.n_in", ""),
        ("train.batch", "inf"),
    ],
    ids=["non-numeric-float", "non-numeric-int", "non-integer-int", "empty", "infinite-int"],
)
def test_set_value_rejects_text_that_is_not_a_number_of_the_field_type(key, text):
    with pytest.raises(ConfigError) as err:
        set_value(PAPER, key, text)
    assert key in str(err.value)
    assert repr(text) in str(err.value)


def test_resolve_applies_set_overrides_and_shortcuts_on_the_preset():
    cfg = resolve(
        preset_name="demo",
        overrides=["network.n_adaptive=30", "train.lr=0.001"],
        shortcuts={"run.seed": "7", "train.rule": None},
    )
    expected = PRESETS["demo"]
    for key, value in [("network.n_adaptive", 30), ("train.lr", 0.001), ("run.seed", 7)]:
        expected = with_value(expected, key, value)
    assert cfg == expected


@pytest.mark.parametrize(
    "override, expected",
    [
        ("network.n_bogus=3", "network.n_bogus"),
        ("bogus.n_in=3", "bogus.n_in"),
        ("network.n_adaptive", "network.n_adaptive"),
        ("=3", "=3"),
        ("network.n_adaptive=-3", "network.n_adaptive"),
    ],
    ids=["unknown-key", "unknown-section", "no-equals", "no-key", "negative-size"],
)
def test_resolve_rejects_a_bad_set_override_naming_it(override, expected):
    with pytest.raises(ConfigError) as err:
        resolve(preset_name="demo", overrides=[override])
    assert expected in str(err.value)


def test_resolve_rejects_a_config_file_and_a_preset_together(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(dumps(PAPER))
    with pytest.raises(ConfigError, match="--config.*--preset"):
        resolve(config_file=str(path), preset_name="demo")


# ------------------------------------------------------------------------------------------------
# validation


BAD_VALUES = [
    # sizes
    ("network.n_in", 41),
    ("network.n_in", -4),
    ("network.n_regular", -1),
    ("network.n_adaptive", -3),
    ("network.n_out", 5),
    ("network.n_ref", -1),
    ("task.n_cues", 0),
    ("task.cue_ms", 0),
    ("task.delay_ms", -10),
    ("train.batch", 0),
    ("train.batch", -1),
    ("train.val_batch", 0),
    ("train.val_every", 0),
    ("train.iterations", -1),
    ("run.threads", 0),
    ("run.checkpoint_every", 0),
    # positive reals
    ("network.tau_m", 0.0),
    ("network.tau_a", -1.0),
    ("network.v_th", 0.0),
    ("train.lr", -0.001),
    # probabilities
    ("network.p_in", 1.5),
    ("network.p_in", -0.1),
    ("network.p_rec", 1.5),
    ("network.p_rec", -0.1),
    ("network.p_out", 1.0001),
    ("train.adam_beta1", 1.5),
    ("train.lr_decay", -0.1),
    ("network.exc_fraction", 1.0),
    # wrong types
    ("network.n_in", "forty"),
    ("network.tau_m", "fast"),
    ("train.lr", "fast"),
    ("train.batch", "64"),
    ("train.batch", 2.5),
    ("train.batch", True),
    ("train.lr", float("nan")),
    ("train.lr", float("inf")),
    # names
    ("run.device", "tpu"),
    ("run.dtype", "float16"),
]


@pytest.mark.parametrize(
    "key, value", BAD_VALUES, ids=[f"{key}={value!r}" for key, value in BAD_VALUES]
)
def test_validate_rejects_a_bad_value_naming_the_field_and_the_value(key, value):
    with pytest.raises(ConfigError) as err:
        validate(with_value(PAPER, key, value))
    message = str(err.value)
    assert key in message
    assert repr(value) in message


def test_an_unknown_rule_is_rejected_with_the_list_of_rules():
    from mdgl_analysis.rules import check_rules

    with pytest.raises(ConfigError) as err:
        check_rules(with_value(PAPER, "train.rule", "nope"))
    message = str(err.value)
    assert "train.rule" in message and "'nope'" in message
    assert "bptt" in message


def test_an_unknown_device_is_rejected_with_the_list_of_devices():
    with pytest.raises(ConfigError) as err:
        validate(with_value(PAPER, "run.device", "tpu"))
    message = str(err.value)
    assert "run.device" in message and "'tpu'" in message
    assert all(name in message for name in ("auto", "cpu", "cuda"))


@pytest.mark.parametrize("key", ["train.batch", "train.val_batch"])
def test_a_batch_larger_than_the_number_of_cue_patterns_is_rejected(key):
    assert 2 ** PAPER.task.params["n_cues"] == 128
    validate(with_value(PAPER, key, 128))  # exactly every pattern once is fine
    with pytest.raises(ConfigError) as err:
        validate(with_value(PAPER, key, 129))
    message = str(err.value)
    assert key in message and "129" in message and "128" in message


def test_fewer_cues_shrink_the_largest_allowed_batch():
    cfg = with_value(PAPER, "task.n_cues", 5)  # 32 patterns < default batch 64
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "train.batch" in str(err.value) and "64" in str(err.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("network.p_in", 0.0),
        ("network.p_rec", 1.0),
        ("network.n_regular", 0),
        ("train.iterations", 0),
        ("train.l1", 0.0),
        ("network.n_in", 40),
    ],
    ids=[
        "probability-0",
        "probability-1",
        "no-regular-cells",
        "no-iterations",
        "no-l1",
        "stated-task-size",
    ],
)
def test_validate_accepts_values_on_the_boundary(key, value):
    cfg = with_value(PAPER, key, value)
    assert validate(cfg) == cfg


def test_a_task_dt_that_differs_from_the_network_dt_is_rejected():
    with pytest.raises(ConfigError, match="task.dt = 1.0 differs from network.dt = 0.5"):
        validate(with_value(PAPER, "network.dt", 0.5))
    assert (
        validate(with_value(with_value(PAPER, "network.dt", 0.5), "task.dt", 0.5)).n_steps == 4000
    )


def test_a_network_with_fewer_than_two_recurrent_cells_is_rejected():
    cfg = with_value(with_value(PAPER, "network.n_regular", 0), "network.n_adaptive", 1)
    with pytest.raises(ConfigError, match="network.n_regular"):
        validate(cfg)
