"""``storage-migrate db upgrade|downgrade|current``: Alembic's command API with the tool's URL
handling and errors, so the schema can be migrated wherever the wheel is installed."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import sqlalchemy as sa

from .config import Settings
from .db import create_database_engine, current_revision, display_url, first_line
from .errors import DatabaseUnavailable, UsageError
from .lock import DatabaseLock, RunLock
from .schema import downgrade_schema, upgrade_schema
from .storage.layout import StorageLayout
from .storage.opened import open_storage


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


def _schema_lock(settings: Settings, engine: sa.Engine) -> AbstractContextManager[object]:
    """What a schema change holds so that it and a run never overlap (exit 75 both ways): the
    run lock itself when ROOT is there (its file lock is all SQLite has; on PostgreSQL the
    advisory key comes with it), else the advisory key alone (PostgreSQL; on SQLite no run can
    work without ROOT)."""
    try:
        storage = open_storage(StorageLayout(settings.storage_root, settings.path_prefix))
    except UsageError:
        return DatabaseLock(engine, "storage-migrate db")
    stack = ExitStack()
    stack.enter_context(storage)
    stack.enter_context(RunLock(storage, engine, "storage-migrate db"))
    return stack


def _run(settings: Settings, migrate: Callable[[], None], sql: bool) -> None:
    """Change the schema while holding the run lock (``_schema_lock``). ``--sql`` only prints,
    and takes no lock."""
    if sql:
        if settings.database_url.startswith("sqlite"):
            raise UsageError("--sql prints PostgreSQL's SQL only: on SQLite, Alembic rebuilds each altered table "
                             "from the live database; back up the SQLite file and run `db upgrade` without --sql")
        with _alembic_errors(settings.database_url):
            migrate()
        return
    engine = create_database_engine(settings.database_url, command="storage-migrate db")   # validates the URL
    try:
        with _alembic_errors(settings.database_url), _schema_lock(settings, engine):
            migrate()
    finally:
        engine.dispose()


def upgrade(settings: Settings, revision: str = "head", sql: bool = False) -> None:
    _run(settings, lambda: upgrade_schema(settings.database_url, revision, sql=sql), sql)


def downgrade(settings: Settings, revision: str, sql: bool = False) -> None:
    _run(settings, lambda: downgrade_schema(settings.database_url, revision, sql=sql), sql)


def current(database_url: str) -> str | None:
    """The revision the database is at (None for an empty one); creates nothing."""
    engine = create_database_engine(database_url, command="storage-migrate db current")
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    except sa.exc.DBAPIError as error:
        raise DatabaseUnavailable(f"cannot connect to the database {display_url(database_url)}: {first_line(error)}") from None
    finally:
        engine.dispose()
