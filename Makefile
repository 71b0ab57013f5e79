# Two entry points for a fresh machine: `make quickstart` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# Where no local torch wheel exists: CPU-only machines take PyTorch's CPU wheels (no CUDA
# packages); machines with an NVIDIA driver take the default (CUDA) build.
TORCH_PIP_ARGS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,--index-url https://download.pytorch.org/whl/cpu)

.PHONY: setup quickstart test bench clean

$(BIN)/vaekit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --no-index $(TORCH) \
		|| $(BIN)/pip install $(TORCH) $(TORCH_PIP_ARGS)
	$(BIN)/pip install -e '.[dev]'
	touch $@

setup: $(BIN)/vaekit

quickstart: setup
	$(BIN)/vaekit train mnist --seed 1 --out runs/quickstart --overwrite

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/seed_speed.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
