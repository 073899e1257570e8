# Two commands: `make run` serves the API on SQLite; `make test` runs every gate.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint typecheck pytest bench chromium clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Billfold needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/billfold init --plans examples/plans.yaml
	$(BIN)/billfold serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| { echo "make bench needs wrk (Debian/Ubuntu: apt-get install wrk)"; exit 2; }
	$(BIN)/python bench/check.py
	$(BIN)/python bench/metering.py

# The browser tests of /docs and /redoc (tests/http/test_docs.py) drive the system's
# Chromium; without it `make test` skips them, and .ci/run installs it and requires it.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium) \
		|| { echo "the browser tests need Chromium (Debian/Ubuntu: apt-get install chromium)"; exit 2; }

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache
