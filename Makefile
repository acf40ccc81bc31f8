# make demo: train a small network on the built-in demo preset (recording a few iterations),
# verify its records, draw its figures and print where they are.
# make test: ruff, a strict build of the documentation site, then the whole test suite.
# make docs: the documentation site (mkdocs.yml, docs/) built into site/.
# Both create .venv when missing and install the project into it. torch is installed as
# torch==2.13.0 (the CPU wheel on this machine) unless the venv already has a torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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
	$(BIN)/mdgl bench

clean:
	rm -rf $(VENV) .pytest_cache
