# trackformers — the two commands: `make demo` and `make test`.
#
# Overridable: PYTHON (interpreter that creates the venv), VENV, TORCH_VERSION / TORCH_SPEC
# (torch is pinned so a CPU machine takes its CPU wheel and a GPU machine the CUDA build of
# the same version), DEMO_DIR, PYTEST_ARGS.

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC    ?= torch==$(TORCH_VERSION)
PIP_FLAGS     ?= --prefer-binary --disable-pip-version-check
DEMO_DIR      ?= outputs/demo
PYTEST_ARGS   ?=

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip

export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: demo test install install-dev lint format clean-demo help

help:
	@echo "make demo   simulate -> train -> evaluate a small model, print metrics"
	@echo "make test   install test dependencies and run the CPU test suite"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PIP_FLAGS) --upgrade pip

# stamps make the installs idempotent; they are redone when pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q $(PIP_FLAGS) "$(TORCH_SPEC)"
	$(PIP) install -q $(PIP_FLAGS) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q $(PIP_FLAGS) -e ".[dev]"
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(PY) -m trackformers.demo --out $(DEMO_DIR)

test: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	WANDB_MODE=disabled $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
