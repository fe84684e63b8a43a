# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project (with its test extra) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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
