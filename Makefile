# The two quick-start commands (README) and the benchmark. Everything runs from a local .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DATABASE_URL ?= sqlite:///storage/codebegen.db
export STORAGE_ROOT ?= ./storage/projects

.PHONY: demo test bench clean-demo

$(BIN)/storage-migrate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Sample data -> schema migration -> dry run -> migration -> diff of the demo project.
demo: $(BIN)/storage-migrate
	rm -rf storage
	$(BIN)/storage-migrate --json demo-data > .demo.json
	$(BIN)/storage-migrate db upgrade
	$(BIN)/storage-migrate --dry-run
	$(BIN)/storage-migrate run
	$(BIN)/storage-migrate run
	$(BIN)/storage-migrate diff "$$($(PYTHON) -c 'import json; print(json.load(open(".demo.json"))["demo_project_id"])')"
	$(BIN)/storage-migrate verify

# Lint and types first (seconds), then the suite.
test: $(BIN)/storage-migrate
	$(BIN)/ruff check storage_migrator tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(BIN)/storage-migrate
	$(BIN)/python benchmarks/bench_run.py

clean-demo:
	rm -rf storage .demo.json
