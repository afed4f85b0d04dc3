# One place for every command a newcomer needs. torch is pinned to the CPU build on this machine's disk
# (pyproject only states the range), so installing never pulls a multi-GB CUDA wheel.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
DEMO_DIR ?= demo

.PHONY: install test test-fast demo bench clean

install: $(BIN)/rnm

$(BIN)/rnm: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/rnm

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	bash scripts/demo.sh $(DEMO_DIR)

bench: install
	$(BIN)/pip install -q -e ".[test,bench]"
	$(BIN)/python bench/bench.py --out bench-results/bench.json

clean:
	rm -rf $(VENV) build *.egg-info
