# Two commands: `make run` serves the API on SQLite; `make test` runs every gate.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

# The extras `make install` puts in the venv, and that requirements.lock is compiled for.
EXTRAS := dev nats

.PHONY: install lock run test lint typecheck pytest bench chromium clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Billfold needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The exact versions (and hashes) of requirements.lock, then Billfold itself on top.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# Re-resolve requirements.lock from pyproject.toml after its dependencies change, keeping
# every pin that still fits (UPGRADE=1 moves them all to the newest allowed), then
# install what it pins. docs/decisions/0028.
lock: $(BIN)/python
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.13.9,<0.14'
	$(BIN)/uv pip compile pyproject.toml $(foreach extra,$(EXTRAS),--extra $(extra)) \
		--universal --python-version 3.11 --generate-hashes --quiet \
		$(if $(UPGRADE),--upgrade) --custom-compile-command 'make lock' -o requirements.lock
	$(MAKE) install

run: install
	$(BIN)/billfold init --plans examples/plans.yaml
	$(BIN)/billfold serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# The suite on every core (TEST_WORKERS=0 runs it in this one process); each worker
# has its own SQLite file and PostgreSQL database. docs/decisions/0045.
TEST_WORKERS ?= auto
pytest: install
	$(BIN)/pytest -n $(TEST_WORKERS)

test: lint typecheck pytest

bench: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| { echo "make bench needs wrk (Debian/Ubuntu: apt-get install wrk)"; exit 2; }
	$(BIN)/python bench/check.py
	$(BIN)/python bench/metering.py
	$(BIN)/python bench/access_log.py
	$(BIN)/python bench/period_close.py
	$(BIN)/python bench/ledger.py

# The browser tests of /docs and /redoc (tests/http/test_docs.py) drive the system's
# Chromium; without it `make test` skips them, and .ci/run installs it and requires it.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium) \
		|| { echo "the browser tests need Chromium (Debian/Ubuntu: apt-get install chromium)"; exit 2; }

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache
