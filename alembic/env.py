"""Alembic runtime: takes the URL from DATABASE_URL (or the embedded SQLite default) and uses
batch mode on SQLite, whose ALTER TABLE cannot change columns or constraints in place."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, make_url, pool

from alembic import context
from storage_migrator.config import database_url_from_env, ensure_sqlite_parent, normalize_database_url

config = context.config


def _database_url() -> str:
    # A URL set programmatically (tests, storage-migrate demo-data) wins over the environment.
    explicit = config.attributes.get("database_url")
    return normalize_database_url(explicit) if explicit else database_url_from_env()


def run_migrations_offline() -> None:
    url = _database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = make_url(_database_url())
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        ensure_sqlite_parent(Path(url.database))
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
