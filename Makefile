# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export PYTHONUNBUFFERED := 1

.PHONY: run test install services services-stop services-status migrate seed lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# A development machine gets the runtime and the tools; production installs requirements.txt alone.
$(VENV)/.installed: requirements.txt requirements-dev.txt $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

services:
	scripts/services start

services-stop:
	scripts/services stop

services-status:
	scripts/services status

migrate: install services
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

## Web server, outbox relay and every consumer in the foreground; Ctrl-C stops them all.
run: seed
	@echo "API on http://127.0.0.1:$${PORT:-8000}/api/ (admin: /admin/). Ctrl-C stops everything."
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --port $${PORT:-8000}

## The whole suite against the real Redis and FerretDB that `services` starts.
test: install services
	scripts/run-tests

## ruff (lint and format) and mypy (strict for eventing/ and core/), as CI runs them.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	scripts/services stop
	rm -rf .services db.sqlite3 db.sqlite3-wal db.sqlite3-shm
