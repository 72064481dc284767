# Run `make help` for the list of targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install vlmtui with its dev tools

run: $(STAMP)  ## set up and open the app on the embedded default (local host, tiny model, synthetic data)
	$(BIN)/vlmtui

test: $(STAMP)  ## set up and run the whole test suite (system packages first, once, as root)
	scripts/install-system-deps
	$(BIN)/pytest -n 2 -q

test-fast: $(STAMP)  ## the fast tier: no training, no sshd, no terminal, no cluster
	$(BIN)/pytest -n 2 -q -m "not slow and not ssh and not tmux and not slurm"

snapshot-update: $(STAMP)  ## re-record the app's snapshots (look at snapshot_report.html first)
	$(BIN)/pytest -q tests/tui/test_snapshots.py --snapshot-update

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(STAMP)  ## import-linter layering contracts and mypy over src/
	$(BIN)/lint-imports
	$(BIN)/mypy

check: lint types test  ## format, lint, layering, types, tests

bench: $(STAMP)  ## run the benchmarks (prints ratios against in-run baselines)
	for b in train_overhead inspect_speed inspect_cache dispatch gpu_watch tui_startup tui_logs tui_gpus; do \
		$(BIN)/python bench/$$b.py || exit 1; done

.PHONY: help setup run test test-fast snapshot-update lint types check bench
