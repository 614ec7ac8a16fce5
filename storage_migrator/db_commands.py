"""``storage-migrate db upgrade|downgrade|current``: Alembic's command API with the tool's URL
handling and errors, so the schema can be migrated wherever the wheel is installed."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from .db import create_database_engine, current_revision, display_url, first_line
from .errors import DatabaseUnavailable, UsageError
from .lock import DatabaseLock
from .schema import downgrade_schema, upgrade_schema


@contextmanager
def _alembic_errors(database_url: str) -> Iterator[None]:
    """Alembic's and the driver's failures as one-line usage errors."""
    from alembic.util.exc import CommandError as AlembicCommandError

    try:
        yield
    except AlembicCommandError as error:
        raise UsageError(f"alembic: {first_line(error)}") from None
    except sa.exc.DBAPIError as error:
        raise DatabaseUnavailable(f"the database {display_url(database_url)} failed: {first_line(error)}") from None


def _run(database_url: str, migrate: Callable[[], None], sql: bool) -> None:
    """Change the schema while holding the run lock's key exclusively (PostgreSQL), so a run —
    coordinated or not — and a schema change never overlap (exit 75 both ways). ``--sql``
    only prints, and takes no lock."""
    if sql:
        with _alembic_errors(database_url):
            migrate()
        return
    engine = create_database_engine(database_url, command="storage-migrate db")     # validates the URL
    try:
        with _alembic_errors(database_url), DatabaseLock(engine, "storage-migrate db"):
            migrate()
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head", sql: bool = False) -> None:
    _run(database_url, lambda: upgrade_schema(database_url, revision, sql=sql), sql)


def downgrade(database_url: str, revision: str, sql: bool = False) -> None:
    _run(database_url, lambda: downgrade_schema(database_url, revision, sql=sql), sql)


def current(database_url: str) -> str | None:
    """The revision the database is at (None for an empty one); creates nothing."""
    engine = create_database_engine(database_url, command="storage-migrate db current", create=False)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    except sa.exc.DBAPIError as error:
        raise DatabaseUnavailable(f"cannot connect to the database {display_url(database_url)}: {first_line(error)}") from None
    finally:
        engine.dispose()
