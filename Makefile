# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test check lint typecheck unit contracts contracts-check install clean bench k8s

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Run the main job on the embedded stack (broker, S3 endpoint, services) on this machine.
demo: install
	$(BIN)/tunewire demo

## Lint, type-check, check the generated contracts and layers, and run every test.
test: install lint typecheck contracts-check
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

## The inner loop (under 90 s warm): lint, types, contracts, layers and the tests that start
## no stack (no broker, S3 endpoint, service or workload process).
check: install lint typecheck contracts-check
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not stack" -q

lint: install
	$(BIN)/ruff check services tests bench proto
	$(BIN)/ruff format --check services tests bench proto

typecheck: install
	$(BIN)/mypy

## Regenerate services/tunewire/contracts/v1 from proto/ (the only way to change it).
contracts: install
	$(BIN)/python proto/generate.py

contracts-check: install
	$(BIN)/python proto/generate.py --check

## Render k8s/ (plain manifests) from charts/tunewire; `make test` fails when they differ.
k8s: install
	$(BIN)/python -m tests.chart.render

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .tunewire .pytest_cache .mypy_cache .ruff_cache
