"""Cosine similarity of each rule's gradient with BPTT at initialisation, over seeds.

    python analyses/alignment_at_init.py [--preset paper] [--seeds 1-5] [--batches 1] [--out F.csv]

For each seed: the network as `mdgl train --seed S` initialises it, a training batch from the run's
own task stream, and `compare.same_batch` (existing synapses, raw gradients). Prints mean and std
over seeds per rule and part; writes the per-seed table as CSV when --out is given.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from dataclasses import replace

import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis import runtime
from mdgl_analysis.network.model import forward
from mdgl_analysis.training.compare import same_batch
from mdgl_analysis.training.loop import Trainer


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(s) for s in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--seeds", default="1-5")
    ap.add_argument("--batches", type=int, default=1, help="batches averaged per seed")
    ap.add_argument("--rules", default="eprop,mdgl,mdgl_exact")
    ap.add_argument("--parts", default="rec,in")
    ap.add_argument("--out")
    args = ap.parse_args()
    base = config_mod.preset(args.preset)
    rules = args.rules.split(",")
    runtime.configure(base.run.threads)
    rows = []
    for seed in seeds_of(args.seeds):
        cfg = replace(base, run=replace(base.run, seed=seed))
        trainer = Trainer(cfg, runtime.resolve_device(cfg.run.device))
        snap = trainer.net.snapshot()
        acc: dict[str, list[float]] = {}
        for _ in range(args.batches):
            batch = trainer.batch("task", cfg.train.batch)
            _, cos = same_batch(snap, forward(snap, batch, trainer.loss, lean=True), rules)
            for key, value in cos.items():
                acc.setdefault(key, []).append(value)
        for key, values in acc.items():
            rows.append({"seed": seed, "key": key, "cosine": statistics.fmean(values)})
    parts = args.parts.split(",")
    print(f"{'rule':<14}" + "".join(f"{p:>20}" for p in parts))
    for rule in rules:
        cells = []
        for part in parts:
            vals = [r["cosine"] for r in rows if r["key"] == f"{rule}_{part}"]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):>12.3f} ± {sd:.3f}")
        print(f"{rule:<14}" + "".join(f"{c:>20}" for c in cells))
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["seed", "key", "cosine"])
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
