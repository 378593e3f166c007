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

.PHONY: setup setup-run demo test test-fast lint bench bundle clean

# Two installs in one .venv: `make demo` needs the package and the MLflow UI only; the tests, lint,
# benchmarks and the bundle add the dev tools and a Ray head's extras (ray[default], pytest, ruff),
# which a first run does without (docs/RESULTS.md section 3).
setup: $(VENV)/.installed-dev
setup-run: $(VENV)/.installed

# pip installs without byte-compiling (--no-compile: it compiles on one core), then compileall compiles
# the installed packages on every core. Runs read the .pyc files even where PYTHONDONTWRITEBYTECODE is
# set (Python images often set it): without them every run, and every Ray worker in it, compiled torch,
# Ray and MLflow from source again (docs/RESULTS.md section 3). As with pip, a file this Python cannot
# compile (newer syntax in torch's test helpers) is no install error; compileall skips .pyc up to date.
# The run's install leaves out what a CPU run never imports (test suites, pip, Ray's RLlib and Serve,
# torch.compile's inductor and sympy: 30 s instead of 44 s on 2 cores); the dev install adds the compiler's.
SITE = $$($(BIN)/python -c 'import sysconfig as s; print(*{s.get_path("purelib"), s.get_path("platlib")})')
COMPILE = $(BIN)/python -m compileall -qq -j 0 -x
NOT_RUN = '/(tests?|pip|setuptools|rllib|serve|llm|onnx|_inductor|sympy|networkx)/'
NOT_DEV = '/(tests?|pip|setuptools|rllib|serve|llm)/'

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile $(PIP_C) -e '.[ui]'
	$(COMPILE) $(NOT_RUN) $(SITE) ssrl || true
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-compile $(PIP_C) -e '.[dev]'
	$(COMPILE) $(NOT_DEV) $(SITE) ssrl || true
	touch $@

demo: setup-run
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
