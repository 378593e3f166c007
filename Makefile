# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines pin torch to the CPU wheel; GPU users: `make setup CONSTRAINTS=`.
CONSTRAINTS ?= constraints-cpu.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test test-fast lint bench bundle clean

setup: $(VENV)/.installed

# --no-compile: byte-compiling all 2 GB of packages at install took most of the install's CPU time
# (docs/RESULTS.md section 3); Python compiles the modules a run imports, once, when it first runs.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile $(PIP_C) -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/python launch.py --sweep scarcity

test: setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

# The unit lane: every test but the end-to-end ones (marked e2e: they start Ray or a sweep).
test-fast: setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -m "not e2e"

lint: setup
	$(BIN)/python -m ruff check .

bench: setup
	$(BIN)/python -m bench.throughput --encoder cnn6 --json

# An offline install bundle for a GPU node that has Python and CUDA torch but no package index
# (scripts/bundle.py; README, "Offline GPU nodes"). For another Python: make bundle BUNDLE_ARGS='--python-version 3.12'
bundle: setup
	$(BIN)/python scripts/bundle.py $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
