# The two set-up commands of the README:
#   make demo   runs the main job (for now the central registry, on SQLite)
#   make test   runs the checks and the test suite
# Both create the virtualenv in .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data
DEMO_PORT ?= 8080

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@test -f $(DEMO_DIR)/anchor.json || $(BIN)/shahrah registry init --data-dir $(DEMO_DIR) \
		--instance PK --url http://127.0.0.1:$(DEMO_PORT)/globalconf --no-passphrase \
		> $(DEMO_DIR).operator-token
	@echo "operator token: $$(cat $(DEMO_DIR).operator-token 2>/dev/null)"
	$(BIN)/shahrah registry serve --data-dir $(DEMO_DIR) --port $(DEMO_PORT) --no-passphrase

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.signatures
	$(BIN)/python -m bench.schemas
	$(BIN)/python -m bench.adapters
	$(BIN)/python -m bench.consent
	$(BIN)/python -m bench.audit
