# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export PYTHONUNBUFFERED := 1
# Every target here is a local development run (DJANGO_DEBUG defaults to off everywhere else).
export DJANGO_DEBUG ?= true

.PHONY: run run-dev test install services services-stop services-status migrate seed static lint clean

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

## The admin's and the browsable API's static files, into STATIC_ROOT (build/static) for gunicorn to serve.
static: install
	$(PY) manage.py collectstatic --noinput

# Every process of a run writes its metrics here and the web server's /metrics adds them up
# (prometheus-client's multiprocess mode); emptied at each start.
METRICS_DIR := $(CURDIR)/.services/metrics

## Web server (gunicorn), outbox relay and every consumer in the foreground; Ctrl-C stops them all.
run: seed static
	@echo "API on http://127.0.0.1:$${PORT:-8000}/api/ (admin: /admin/, metrics: /metrics). Ctrl-C stops everything."
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --port $${PORT:-8000}

## The same with Django's development server in place of gunicorn (the Procfile's WEB_COMMAND).
run-dev: seed
	@echo "API on http://127.0.0.1:$${PORT:-8000}/api/ (runserver). Ctrl-C stops everything."
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) PATH="$(CURDIR)/$(BIN):$$PATH" WEB_COMMAND="python manage.py runserver --noreload 127.0.0.1:$${PORT:-8000}" \
		$(BIN)/honcho start --port $${PORT:-8000}

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
