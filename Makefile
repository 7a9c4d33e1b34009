# The one place where commands are defined: people, pre-commit and CI call these targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build that lies on this disk; a plain `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install browser lint mypy test test-slow bench bench-gpu soak clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[models,test]"
	touch $@

install: $(VENV)/.installed

# Headless Chromium renders the report gallery in its test; where it cannot be installed
# (no root, no apt) that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1; } || \
		echo "chromium not installed: the browser test will skip"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

mypy: install
	$(VENV)/bin/mypy

test: install browser lint mypy
	$(VENV)/bin/pytest -q

test-slow: install
	$(VENV)/bin/pytest -q -m slow

bench: install
	$(VENV)/bin/pytest -q -s -m benchmark tests/benchmarks

bench-gpu: install
	$(PY) tests/benchmarks/gpu_bench.py

soak: install
	$(PY) -m tests.soak.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
