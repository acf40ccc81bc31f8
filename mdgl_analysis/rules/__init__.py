"""Learning rules by name. A rule is a pure function ``rule(snapshot, forward) -> Gradients``.

It returns dE/dW for the effective weights (shaped like the parameters, no autograd graph); the
training loop turns them into optimiser steps. Readout weights always get their exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable

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
