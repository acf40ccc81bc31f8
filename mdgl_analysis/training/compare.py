"""Same-batch comparison of learning rules with exact BPTT (spec H.2: the project's protocol).

On one batch and the current weights, every rule's raw gradient (not the Adam update) is compared
with BPTT's by cosine similarity, per weight matrix and per cell-type block:

* ``rec``: recurrent synapses that exist now (nonzero weight; the diagonal never exists);
* ``in``: input synapses that exist now;
* blocks ``rec_EE``, ``rec_EI``, ``rec_IE``, ``rec_II`` (named pre->post) and ``in_E``, ``in_I``
  (input synapses onto E or I cells).

Multiplying by the sign matrix does not change a cosine, so it is computed on dE/dW.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from mdgl_analysis.network.model import Forward, Gradients, Snapshot
from mdgl_analysis.rules import get_rule, short_name
from mdgl_analysis.rules.local import block_masks


def comparison_masks(snap: Snapshot) -> dict[str, tuple[str, Tensor]]:
    """Name -> (matrix, bool mask of the compared synapses) for every matrix and block."""
    w = snap.weights
    rec = w.w_rec != 0
    inp = w.w_in != 0
    masks: dict[str, tuple[str, Tensor]] = {"rec": ("w_rec", rec), "in": ("w_in", inp)}
    for name, block in block_masks(snap.inhibitory).items():
        masks[f"rec_{name}"] = ("w_rec", rec & block)
    inh = snap.inhibitory[:, None]
    masks["in_E"] = ("w_in", inp & ~inh)
    masks["in_I"] = ("w_in", inp & inh)
    return masks


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two vectors; NaN when either is zero (nothing to compare)."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return (torch.dot(a, b) / (na * nb)).item()


def same_batch(
    snap: Snapshot, fwd: Forward, rules: Iterable[str], known: dict[str, Gradients] | None = None
) -> tuple[dict[str, Gradients], dict[str, float]]:
    """Gradients of ``rules`` and of BPTT on one batch, and their cosines with BPTT.

    Args:
        known: gradients already computed on this batch (e.g. the training rule's), reused.
    Returns:
        ``(gradients, cosines)``: rule -> :class:`Gradients` (``"bptt"`` included), and
        ``"{rule}_{part}"`` -> cosine with BPTT for every part of :func:`comparison_masks` (a
        rule from a user's file by its function's name, :func:`~mdgl_analysis.rules.short_name`).
    """
    grads = dict(known or {})
    for name in ["bptt", *rules]:
        if name not in grads:
            grads[name] = get_rule(name)(snap, fwd)
    ref = grads["bptt"]
    cosines = {}
    for name in rules:
        if name == "bptt":
            continue
        for part, (matrix, mask) in comparison_masks(snap).items():
            g, r = getattr(grads[name], matrix)[mask], getattr(ref, matrix)[mask]
            cosines[f"{short_name(name)}_{part}"] = cosine(g, r)
    return grads, cosines
