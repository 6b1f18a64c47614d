# reasonlab — set-up, demo and tests. Both `make demo` and `make test` create .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-quick test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# torch first (the CPU build), so no dependency pulls a CUDA build
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

demo: setup
	OMP_NUM_THREADS=1 $(BIN)/reasonlab demo --out runs/demo

demo-quick: setup
	OMP_NUM_THREADS=1 $(BIN)/reasonlab demo --quick --out runs/demo-quick

test: setup
	$(BIN)/python -m pytest -n 2

test-slow: setup
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) runs
