# Two entry points: `make serve` (set up, then serve the tiny default) and `make test` (set up, then every
# test). Both are safe to re-run: set-up is skipped while requirements.txt and pyproject.toml are unchanged.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# libb64: perf_analyzer; sox: qwen-tts imports it at start-up; postgresql: the voice-library tests start a
# throwaway server from its binaries (tests/postgres.py).
APT_PACKAGES := libb64-0d sox libsox-fmt-all postgresql
CHECKPOINTS := .cache/checkpoints/tiny
# The stamp's name is a hash of the dependency files, so a changed file (not a changed mtime) re-runs setup.
SETUP_KEY := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-$(SETUP_KEY)

.PHONY: help setup apt checkpoints serve test test-fast test-e2e lint bench

# Other areas keep their targets in mk/*.mk; TEST_STEPS run before the suite (mk/deploy.mk's deploy-lint also
# builds the tool venv that tests/deploy uses).
-include mk/*.mk
TEST_STEPS ?= $(if $(wildcard mk/deploy.mk),deploy-lint) $(if $(wildcard mk/playground.mk),playground-deps) $(if $(wildcard mk/typescript.mk),typescript-check)

help:
	@echo "make serve        set up, build tiny checkpoints, run Triton + gateway (Ctrl-C stops)"
	@echo "make test         set up, build tiny checkpoints, ruff + the whole pytest suite"
	@echo "make test-fast    ruff + the tests that start no server (the edit-test loop)"
	@echo "make test-e2e     only the end-to-end tests (real tritonserver, gateway, PostgreSQL, browser)"
	@echo "make setup        system packages, $(VENV), Python requirements (idempotent)"
	@echo "make checkpoints  tiny random checkpoints into $(CHECKPOINTS)"
	@echo "make lint         ruff check"
	@echo "make bench        benchmarks (python -m benchmarks.run)"

setup: $(STAMP)

$(STAMP):
	@$(MAKE) --no-print-directory apt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install -e . --no-deps
	rm -f $(VENV)/.setup-*
	touch $@

# Installs only what is missing, and only as root (elsewhere it says what to install).
apt:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "warning: missing system packages:$$missing (install them as root)"; exit 0; \
	fi; \
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y$$missing

checkpoints: setup
	$(BIN)/qwen3-tts-checkpoints --preset tiny --out $(CHECKPOINTS)

serve: setup checkpoints
	$(BIN)/qwen3-tts-serve

# The edit-test loop: unit, engine, gateway, client and agent tests that start no server (under 2 minutes on
# two cores). `make test` stays what CI runs.
FAST_TESTS := tests/unit tests/engine tests/gateway tests/client tests/agents

test-fast: setup checkpoints
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not e2e" $(FAST_TESTS)

# Every test that starts a server: all in tests/e2e/ (README, "Tests", lists them by what they start).
test-e2e: setup checkpoints $(TEST_STEPS)
	$(BIN)/pytest -q -m e2e tests/

test: setup checkpoints $(TEST_STEPS)
	$(BIN)/ruff check .
	$(BIN)/pytest -q tests/

lint: setup
	$(BIN)/ruff check .

bench: setup checkpoints
	$(BIN)/python -m benchmarks.run
