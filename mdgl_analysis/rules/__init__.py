"""Learning rules by name. A rule is a pure function ``rule(snapshot, forward) -> Gradients``.

It returns dE/dW for the effective weights (shaped like the parameters, no autograd graph); the
training loop turns them into optimiser steps. Readout weights always get their exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable

from mdgl_analysis.config import Config, ConfigError, compare_rules
from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.rules.bptt import bptt
from mdgl_analysis.rules.local import eprop, mdgl, mdgl_exact, mdgl_nonlocal, mdgl_online

Rule = Callable[[Snapshot, Forward], Gradients]

RULES: dict[str, Rule] = {
    "bptt": bptt,
    "eprop": eprop,  # mode 1
    "mdgl": mdgl,  # mode 3, the paper's MDGL
    "mdgl_exact": mdgl_exact,  # mode 2
    "mdgl_nonlocal": mdgl_nonlocal,  # mode 5
    "mdgl_online": mdgl_online,  # mode 7
}


def get_rule(name: str) -> Rule:
    """Look a rule up by name; the error lists the known names."""
    try:
        return RULES[name]
    except KeyError:
        raise KeyError(f"unknown rule {name!r}; rules: {', '.join(RULES)}") from None


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def check_rules(cfg: Config) -> None:
    """Every rule a config names exists (``train.rule``, ``train.compare_rules``,
    ``record.rules``); ConfigError naming the field otherwise."""
    names = ", ".join(RULES)
    if cfg.train.rule not in RULES:
        raise ConfigError(f"train.rule = {cfg.train.rule!r} is not allowed: one of {names}")
    if any(n not in RULES for n in compare_rules(cfg)):
        raise ConfigError(
            f"train.compare_rules = {cfg.train.compare_rules!r} is not allowed: comma-separated "
            f"names among {names}"
        )
    if cfg.record.rules.strip() != "all" and any(n not in RULES for n in _items(cfg.record.rules)):
        raise ConfigError(
            f"record.rules = {cfg.record.rules!r} is not allowed: all, or comma-separated names "
            f"among {names}"
        )


def record_rules(cfg: Config) -> list[str]:
    """Rules recorded: BPTT first, then the local rules (all, or the listed ones)."""
    names = list(RULES) if cfg.record.rules.strip() == "all" else _items(cfg.record.rules)
    return ["bptt", *[n for i, n in enumerate(names) if n != "bptt" and n not in names[:i]]]
