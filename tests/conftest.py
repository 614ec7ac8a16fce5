"""Shared fixtures: real SQLite files and a throwaway database on a real PostgreSQL server.

PostgreSQL comes from TEST_DATABASE_URL (default: the local trust-auth server). Without a server
the PostgreSQL tests skip and say why — unless STORAGE_MIGRATOR_REQUIRE_PG=1 (set by .ci/run),
which turns the skip into a failure.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.config import normalize_database_url

from .sandbox import empty_public_schema

DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _server_url() -> sa.URL:
    return sa.make_url(normalize_database_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """Create one throwaway database for the session, drop it at the end."""
    server_url = _server_url()
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"storage_migrator_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        reason = f"no PostgreSQL server at {server_url.render_as_string(hide_password=True)}: {error.orig}"
        if os.environ.get("STORAGE_MIGRATOR_REQUIRE_PG") == "1":
            pytest.fail(f"STORAGE_MIGRATOR_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    try:
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """The session's database, emptied before each test (faster than a database per test)."""
    empty_public_schema(postgres_database)
    yield postgres_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'codebegen.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'codebegen.db'}"
    return request.getfixturevalue("postgres_url")
