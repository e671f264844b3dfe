# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
# Each builds its own virtual environment (.venv) first. torch is installed on its own
# first (pinned, CPU build here) so that the project's `torch>=2.1` never pulls another.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.odeflow-installed

.PHONY: demo test bench docs lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,experiments]"
	touch $@

demo: $(STAMP)  ## set up, then train the ODE-Net demo (digits, < 1 min on 2 cores)
	$(BIN)/odeflow demo

test: $(STAMP)  ## set up, then run the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## the side-by-side benchmarks (installs torchdiffeq and torchode)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks all

$(VENV)/.odeflow-docs: pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $@

docs: $(STAMP) $(VENV)/.odeflow-docs  ## set up, then build the documentation site into site/ (strict)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff
	$(BIN)/python -m ruff check odeflow tests benchmarks

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
