# make demo: train a small network on the built-in demo preset (recording a few iterations),
# verify its records, draw its figures and print where they are.
# make test: ruff, then the whole test suite.
# Both create .venv when missing and install the project into it. torch is installed as
# torch==2.13.0 (the CPU wheel on this machine) unless the venv already has a torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,neurogym,tensorboard]"
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
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/mdgl bench

clean:
	rm -rf $(VENV) .pytest_cache
