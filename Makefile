# make demo: train a small network on the built-in demo preset (recording a few iterations),
# verify its records, draw its figures and print where they are.
# make test: ruff, a strict build of the documentation site, then the whole test suite.
# make docs: the documentation site (mkdocs.yml, docs/) built into site/.
# Both create .venv when missing and install the project into it. torch is installed as
# torch==2.13.0 (the CPU wheel on this machine) unless the venv already has a torch.
# make bench: the README's speed numbers (long: about 200 processes, tens of minutes on 2 cores):
# every rule at paper scale beside the autograd reference on each core, 5 interleaved rounds,
# into $(BENCH_DIR)/paper.jsonl (the table is printed); the N scaling into scaling_n.jsonl and
# its figure scaling_n.png.
# Every setting below can be given on the command line; a quick check that it works:
#   make bench BENCH_DIR=/tmp/bench BENCH_PRESET=demo BENCH_ROUNDS=1 BENCH_ITERATIONS=1 \
#     BENCH_RULES=bptt SCALING_RULES=bptt SCALING_N=20,40 SCALING_ROUNDS=1
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_DIR ?= analyses/results/bench
BENCH_PRESET ?= paper
BENCH_RULES ?= bptt,eprop,mdgl,mdgl_exact,mdgl_nonlocal,mdgl_online,bptt_autograd
BENCH_CORES ?= torch,auto
BENCH_THREADS ?= 1,2
BENCH_ITERATIONS ?= 5
BENCH_ROUNDS ?= 5
BENCH_FLAGS ?=
SCALING_RULES ?= bptt,eprop,mdgl
SCALING_N ?= 100,200,400,800
SCALING_ROUNDS ?= 3

.PHONY: demo test docs install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,neurogym,tensorboard,docs,nwb]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@run=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/mdgl train --preset demo --out $$run && \
	$(BIN)/mdgl verify $$run && \
	$(BIN)/mdgl figures $$run --out $$run/figures && \
	echo "figures of the demo run: $$run/figures"

test: $(STAMP)
	$(BIN)/ruff check .
	@# the strict docs build, its log shown only when it fails (--quiet would hide the warnings
	@# that --strict counts, and pass)
	@site=$$(mktemp -d); log=$$(NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d $$site 2>&1); \
	status=$$?; rm -rf $$site; [ $$status = 0 ] || echo "$$log"; exit $$status
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	mkdir -p $(BENCH_DIR)
	$(BIN)/mdgl bench --preset $(BENCH_PRESET) --rules $(BENCH_RULES) --cores $(BENCH_CORES) \
		--threads $(BENCH_THREADS) --iterations $(BENCH_ITERATIONS) --rounds $(BENCH_ROUNDS) \
		$(BENCH_FLAGS) --out $(BENCH_DIR)/paper.jsonl
	$(BIN)/mdgl bench --preset $(BENCH_PRESET) --rules $(SCALING_RULES) --cores $(BENCH_CORES) \
		--threads 1 --iterations $(BENCH_ITERATIONS) --rounds $(SCALING_ROUNDS) \
		--scaling n=$(SCALING_N) $(BENCH_FLAGS) --out $(BENCH_DIR)/scaling_n.jsonl
	$(BIN)/python analyses/bench_scaling.py $(BENCH_DIR)/scaling_n.jsonl \
		--out $(BENCH_DIR)/scaling_n.png

clean:
	rm -rf $(VENV) .pytest_cache
