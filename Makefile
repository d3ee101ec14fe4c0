# make run: the service on the embedded default (SQLite, in-process store, demo data, dev keys).
# make test: the whole suite, on SQLite and on PostgreSQL + Redis (127.0.0.1, or throwaway ones
# started for the run when none answers: tests/services.py), after installing what it lacks.
# make bench: the benchmark harness (bench/run.py).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: install run test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Development: invitation emails are printed, with their activation link, not sent.
run: export TOKEN_SERVICE_SMTP_URL ?= console
run: install
	$(BIN)/token-service migrate
	$(BIN)/token-service keys generate --if-absent
	$(BIN)/token-service demo
	$(BIN)/token-service serve

# As root with apt: Debian's chromium if missing, PostgreSQL or Redis binaries if none answers
# and they are absent; otherwise one line says what to run.
test: install
	$(BIN)/python tests/services.py --install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# make bench: loads against node-oidc-provider (bench/peer, installed with npm ci) and their
# floors, PostgreSQL + Redis then SQLite (docs/performance.md). Needs wrk, taskset, node and npm;
# BENCH_ARGS="--no-growth --no-memory --rounds 1 --duration 5" for a shorter run.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache
