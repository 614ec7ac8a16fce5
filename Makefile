# The two quick-start commands (README) and the benchmark. Everything runs from a local .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DATABASE_URL ?= sqlite:///storage/codebegen.db
export STORAGE_ROOT ?= ./storage/projects

.PHONY: demo test test-latest test-fast lock bench clean-demo

UV_VERSION := 0.13.9
UV := $(BIN)/uv
# uv installs into this venv (not one of its own), and --inexact keeps uv itself in it.
# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set
# every process the tests start would compile SQLAlchemy, Alembic and Click again (~1.5 s each).
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --inexact --extra test --compile-bytecode

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv==$(UV_VERSION)'

# Exactly the versions in uv.lock (the ones CI passed with); --locked fails if pyproject.toml
# moved without the lock. Refresh the lock with `make lock`.
$(BIN)/storage-migrate: pyproject.toml uv.lock $(UV)
	$(SYNC) --locked --quiet
	$(BIN)/python -m compileall -q storage_migrator
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

# Tests in parallel processes (pytest-xdist): most of the suite waits on the processes it starts,
# so two workers on two cores about halve the wall time. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2

# Lint and types first (seconds), then the suite.
test: $(BIN)/storage-migrate
	$(BIN)/ruff check storage_migrator tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(TEST_WORKERS)

# The fast lane: lint, types, then the unit tests and the commands end to end, on SQLite only.
# `make test` is the whole suite (PostgreSQL, the scenarios, packaging).
test-fast: $(BIN)/storage-migrate
	$(BIN)/ruff check storage_migrator tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow and not postgres" tests/unit tests/commands

# The newest versions pyproject.toml's ranges allow (what a wheel user may get), in a venv of its
# own, through the same checks. The lock is not touched.
test-latest: $(UV)
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	$(UV) pip install --quiet --python .venv-latest/bin/python --upgrade --no-cache -e '.[test]'
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(sqlalchemy|psycopg|alembic|click|tqdm|watchdog|pygit2|prometheus)'
	.venv-latest/bin/ruff check storage_migrator tests benchmarks
	.venv-latest/bin/mypy
	.venv-latest/bin/pytest -q -n $(TEST_WORKERS)

# Refresh uv.lock to the newest versions the ranges allow; commit it once `make test` passes.
lock: $(UV)
	$(UV) lock --upgrade

# Every corpus, the application-shaped one (app) first, then real, long and synthetic, each on SQLite
# and PostgreSQL (TEST_DATABASE_URL's server). The first call fetches the pinned sdists (about a minute).
bench: $(BIN)/storage-migrate
	$(BIN)/python benchmarks/bench_run.py --corpus all --database sqlite,postgresql

clean-demo:
	rm -rf storage .demo.json
