#!/usr/bin/env bash
# Every GPU check in one script (for a session that has a GPU): the paper-scale benchmark of every
# rule on CUDA, one recorded iteration, and a short sweep. Prints seconds per iteration per rule.
#   bash benchmarks/gpu.sh            (after `make install`; OUT=/some/dir for the sweep folder)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
nvidia-smi --query-gpu=name,memory.total --format=csv
$BIN/mdgl bench --device cuda --threads 1 --iterations 20 \
    --rules bptt,eprop,mdgl,mdgl_exact,mdgl_nonlocal,mdgl_online,bptt_autograd
$BIN/mdgl bench --device cuda --threads 1 --iterations 1 --rules record_list
$BIN/python -m pytest -q tests/test_rules.py -k cuda
time $BIN/mdgl sweep runs/configs/fig3c.toml --rules bptt,eprop,mdgl --seeds 1-2 --iterations 20 \
    --set run.device=cuda --jobs 1 --out "${OUT:-/tmp}/gpu-sweep"
