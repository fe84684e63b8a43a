# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project (with its test extra) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Linux: glibc's malloc backs large blocks (XLA:CPU's per-call temporaries) with 2 MB
# transparent huge pages: ~70x fewer page faults, a TTT step ~15-20% faster on a CPU
# (docs/PERFORMANCE.md). Elsewhere, or with THP off, it changes nothing.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

.PHONY: install demo test test-all format
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m launch.demo $(ARGS)

test: $(STAMP)
	$(BIN)/pyink --check --quiet .
	$(BIN)/python -m pytest -n 2 --dist loadfile

format: $(STAMP)
	$(BIN)/pyink .

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m ''
