# Two entry points for a fresh machine: `make quickstart` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# CPU-only machines get PyTorch's CPU build (no CUDA packages): from a local wheel or the
# package index where one is offered, else from PyTorch's CPU wheel index. Machines with an
# NVIDIA driver get the default (CUDA) build. An installed torch is kept.
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell command -v nvidia-smi 2>/dev/null)

.PHONY: setup quickstart test bench clean

$(BIN)/vaekit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifdef HAS_GPU
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==$(TORCH_VERSION)
else
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==$(TORCH_VERSION)+cpu \
		|| $(BIN)/pip install torch==$(TORCH_VERSION)+cpu --extra-index-url $(CPU_INDEX)
endif
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
