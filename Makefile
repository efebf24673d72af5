# scaleplan: `make demo` sets up and plans a bundled example; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
EXAMPLE ?= specs/examples/h100x8-week.yaml

.PHONY: demo test test-fast setup setup-engines system-deps lint clean

$(VENV)/.core-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'
	touch $@

# torch first, pinned, so that pip takes the CPU wheel and never a multi-GB CUDA build.
$(VENV)/.engines-installed: $(VENV)/.core-installed
	$(PIP) install torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) install -e '.[engines,dev]'
	$(PY) -c 'from scaleplan.executor.ds_backend import prebuild_cpu_ops; prebuild_cpu_ops()'
	touch $@

setup: $(VENV)/.core-installed
setup-engines: $(VENV)/.engines-installed

system-deps:
	bash .ci/system-deps.sh

demo: setup
	$(VENV)/bin/scaleplan plan $(EXAMPLE) --out out/plan.json

test: system-deps setup-engines
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) out build *.egg-info
