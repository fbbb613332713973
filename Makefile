# The two set-up commands of the README:
#   make demo   runs the main job: the embedded federation, on SQLite
#   make test   runs the checks and the test suite
# Both create the virtualenv in .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data
DEMO_PORT ?= 8400

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shahrah demo --data-dir $(DEMO_DIR) --base-port $(DEMO_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n auto --dist worksteal

bench: $(STAMP)
	$(BIN)/python -m bench.signatures
	$(BIN)/python -m bench.schemas
	$(BIN)/python -m bench.adapters
	$(BIN)/python -m bench.consent
	$(BIN)/python -m bench.audit
	$(BIN)/python -m bench.consoles
	$(BIN)/python -m bench.exchange
