"""Learning rules by name. A rule is a pure function ``rule(snapshot, forward) -> Gradients``.

It returns dE/dW for the effective weights (shaped like the parameters, no autograd graph); the
training loop turns them into optimiser steps. Readout weights always get their exact gradient.
A rule is a name of :data:`RULES` or ``path/to/file.py:function``, a function of that contract in
a user's own file (``docs/rules.md``), which may call the built-in ones through :func:`get_rule`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache

import torch

from mdgl_analysis.config import Config, ConfigError, compare_rules
from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.plugins import Kind, is_file_name, load, one_line
from mdgl_analysis.rules.bptt import bptt
from mdgl_analysis.rules.feedback import eprop_random
from mdgl_analysis.rules.local import eprop, mdgl, mdgl_exact, mdgl_nonlocal, mdgl_online
from mdgl_analysis.rules.truncated import truncated

Rule = Callable[[Snapshot, Forward], Gradients]

RULES: dict[str, Rule] = {
    "bptt": bptt,
    "eprop": eprop,  # mode 1
    "mdgl": mdgl,  # mode 3, the paper's MDGL
    "mdgl_exact": mdgl_exact,  # mode 2
    "mdgl_nonlocal": mdgl_nonlocal,  # mode 5
    "mdgl_online": mdgl_online,  # mode 7
    "eprop_random": eprop_random,  # e-prop with random feedback (Bellec et al. 2020)
    "truncated": truncated,  # exact through at most rules.hops recurrent synapses
}


class RuleError(ValueError):
    """A rule from a user's file broke its contract (one line naming the rule)."""


def _two_arguments(obj: object) -> bool:
    if not callable(obj):
        return False
    try:
        inspect.signature(obj).bind(None, None)
    except (TypeError, ValueError):
        return False
    return True


_RULE_FUNCTION = Kind("function", "rules", "a function rule(snapshot, forward)", _two_arguments)


def get_rule(name: str) -> Rule:
    """The rule ``name``: one of :data:`RULES`, or ``FILE.py:FUNCTION`` (the file is imported
    here, once; the function's results are checked at every call, :class:`RuleError`). KeyError
    listing the known names otherwise; RuleError when a file cannot give its rule."""
    if name in RULES:
        return RULES[name]
    if is_file_name(name):
        return _file_rule(name)
    raise KeyError(f"unknown rule {name!r}; rules: {', '.join(RULES)} or FILE.py:FUNCTION")


def short_name(name: str) -> str:
    """How metrics and figures name a rule: ``FUNCTION`` for ``FILE.py:FUNCTION``, else ``name``."""
    return name.rpartition(":")[2] if is_file_name(name) else name


@cache
def _file_rule(name: str) -> Rule:
    fn = load(name, "rule", RuleError, _RULE_FUNCTION)

    def rule(snap: Snapshot, fwd: Forward) -> Gradients:
        try:
            grads = fn(snap, fwd)
        except RuleError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's code: say what broke, in one line
            raise RuleError(f"rule {name!r} raised {type(err).__name__}: {one_line(err)}") from None
        return check_gradients(name, grads, snap)

    rule.__name__ = rule.__qualname__ = name
    rule.__doc__ = fn.__doc__
    return rule


def check_gradients(name: str, grads: object, snap: Snapshot) -> Gradients:
    """``grads`` as :class:`Gradients` if it keeps the contract (four finite tensors shaped like
    the weights, of their dtype and device); RuleError naming the first field that does not."""
    if not (isinstance(grads, tuple) and len(grads) == len(Gradients._fields)):
        raise RuleError(
            f"rule {name!r} returned {type(grads).__name__}: a rule returns "
            "mdgl_analysis.network.model.Gradients(w_in, w_rec, w_out, b_out)"
        )
    for field, got, like in zip(Gradients._fields, grads, snap.weights, strict=True):
        if not isinstance(got, torch.Tensor):
            raise RuleError(f"rule {name!r}: {field} is a {type(got).__name__}, not a tensor")
        if got.shape != like.shape or got.dtype != like.dtype or got.device != like.device:
            raise RuleError(
                f"rule {name!r}: {field} is {tuple(got.shape)} {got.dtype} on {got.device}; "
                f"allowed: {tuple(like.shape)} {like.dtype} on {like.device}, as the weights"
            )
        if not bool(torch.isfinite(got).all()):
            raise RuleError(f"rule {name!r}: {field} has non-finite values")
    return Gradients(*grads)


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _known(name: str) -> bool:
    """A built-in rule, or a rule a user's file gives (imported here: ConfigError if not)."""
    if name in RULES:
        return True
    if not is_file_name(name):
        return False
    try:
        get_rule(name)
    except RuleError as err:
        raise ConfigError(str(err)) from None
    return True


def check_rules(cfg: Config) -> None:
    """Every rule a config names exists (``train.rule``, ``train.compare_rules``: a built-in
    name or a user's ``FILE.py:FUNCTION``; ``record.rules``: built-in names); ConfigError naming
    the field otherwise."""
    names = f"{', '.join(RULES)} or FILE.py:FUNCTION"
    if not _known(cfg.train.rule):
        raise ConfigError(f"train.rule = {cfg.train.rule!r} is not allowed: one of {names}")
    if not all(_known(n) for n in compare_rules(cfg)):
        raise ConfigError(
            f"train.compare_rules = {cfg.train.compare_rules!r} is not allowed: comma-separated "
            f"names among {names}"
        )
    if cfg.record.rules.strip() != "all" and any(n not in RULES for n in _items(cfg.record.rules)):
        raise ConfigError(
            f"record.rules = {cfg.record.rules!r} is not allowed: all, or comma-separated names "
            f"among {', '.join(RULES)} (a rule from a file is trained and compared, not recorded)"
        )


def record_rules(cfg: Config) -> list[str]:
    """Rules recorded: BPTT first, then the local rules (all, or the listed ones)."""
    names = list(RULES) if cfg.record.rules.strip() == "all" else _items(cfg.record.rules)
    return ["bptt", *[n for i, n in enumerate(names) if n != "bptt" and n not in names[:i]]]
