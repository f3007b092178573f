# steam_ray developer entry points. `make quickstart` and `make test` are all a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines get the CPU build of torch pinned: PyPI's Linux torch is the CUDA build (GBs of
# nvidia-* wheels). PyTorch's CPU-only index is used where it answers within
# TORCH_PROBE_TIMEOUT seconds; elsewhere the configured index / find-links (tools/torch_cpu_args.py).
TORCH_CPU_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PROBE_TIMEOUT ?= 5
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
QUICKSTART_DIR ?= artifacts/quickstart
STAMP := $(VENV)/.steam_ray-installed

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install test test-full lint typecheck pytest quickstart clean bench-data bench-train \
	cluster-serve-config

install: $(STAMP)

# Re-runs only when the package metadata changes, so `make test` is quick on a warm tree.
$(STAMP): pyproject.toml Makefile tools/torch_cpu_args.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	$(BIN)/python -m pip install -q -e '.[dev]'
else
	torch_args="$$($(BIN)/python tools/torch_cpu_args.py $(TORCH_CPU_VERSION) $(TORCH_CPU_INDEX) $(TORCH_PROBE_TIMEOUT))" && \
	$(BIN)/python -m pip install -q $$torch_args && \
	$(BIN)/python -m pip install -q -e '.[dev]' $$torch_args
endif
	touch $(STAMP)

lint: install
	$(BIN)/ruff check steam_ray tests benchmarks jobs cluster
	$(BIN)/ruff format --check steam_ray tests benchmarks jobs cluster
	$(BIN)/hadolint Dockerfile

typecheck: install
	$(BIN)/mypy --strict steam_ray

pytest: install
	$(BIN)/pytest tests

test: lint typecheck pytest

# Also the heavier fault chains (tests marked `full`; 6 min more on a quiet 2-core VM).
test-full: lint typecheck
	STEAM_RAY_FULL=1 $(BIN)/pytest tests

quickstart: install
	$(BIN)/steam-ray quickstart --workdir $(QUICKSTART_DIR)

bench-data: install
	$(BIN)/python benchmarks/bench_data_prepare.py --rows 1000000

bench-train: install
	$(BIN)/python benchmarks/bench_train_overhead.py
	$(BIN)/python benchmarks/bench_bucketing.py

# Regenerate cluster/rayservice.yaml's serveConfigV2 with `steam-ray serve build`
# (tests/unit/test_cluster.py fails while the checked-in copy is stale).
cluster-serve-config: install
	$(BIN)/python cluster/serve_config.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache .mypy_cache .ruff_cache
