"""``storage-migrate db upgrade|downgrade|current``: Alembic's command API with the tool's URL
handling and errors, so the schema can be migrated wherever the wheel is installed.

At a revision these scripts do not know (the application migrated further), nothing is handed to
Alembic: ``upgrade`` has nothing to do when the tool's columns are there (``db.tables.check_schema``)
and says so, exit 0; ``downgrade`` refuses in one line, exit 2 — the schema stays, and the undo is
the storage rollback alone."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import NoReturn

import sqlalchemy as sa

from storage_migrator.config import HEAD_REVISION, Settings
from storage_migrator.db.connect import create_database_engine, display_url, first_line
from storage_migrator.db.revisions import downgrade_schema, known_revisions, upgrade_schema
from storage_migrator.db.tables import current_revision, missing_columns
from storage_migrator.engine.lock import DatabaseLock, RunLock
from storage_migrator.errors import DatabaseUnavailable, UsageError
from storage_migrator.storage.handle import open_storage
from storage_migrator.storage.layout import StorageLayout


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


UnknownRevision = Callable[[sa.Engine, str], "str | None"]
"""What a command does at a database revision this tool does not know: raise, or return the
one line to print."""


def _run(settings: Settings, migrate: Callable[[], None], sql: bool, at_unknown_revision: UnknownRevision) -> str | None:
    """Change the schema while holding the run lock (``_schema_lock``), unless the database is
    at a revision this tool does not know (``at_unknown_revision`` decides). ``--sql`` only
    prints, and takes no lock and reads no database. Returns a line to print, if any."""
    if sql:
        if settings.database_url.startswith("sqlite"):
            raise UsageError("--sql prints PostgreSQL's SQL only: on SQLite, Alembic rebuilds each altered table "
                             "from the live database; back up the SQLite file and run `db upgrade` without --sql")
        with _alembic_errors(settings.database_url):
            migrate()
        return None
    engine = create_database_engine(settings.database_url, command="storage-migrate db")   # validates the URL
    try:
        with _alembic_errors(settings.database_url), _schema_lock(settings, engine):
            revision = _unknown_revision(engine)
            if revision is not None:
                return at_unknown_revision(engine, revision)
            migrate()
            return None
    finally:
        engine.dispose()


def _unknown_revision(engine: sa.Engine) -> str | None:
    """The database's revision if this tool's scripts do not know it (None for a known one or
    an empty database)."""
    with engine.connect() as connection:
        revision = current_revision(connection)
    if revision is None or set(revision.split(",")) <= known_revisions():
        return None
    return revision


def _past_head(engine: sa.Engine, revision: str) -> str:
    """``upgrade`` at an unknown revision: nothing to do if the tool's columns are there."""
    with engine.connect() as connection:
        missing = missing_columns(connection)
    if missing:
        listed = "; ".join(f"{table} lacks {', '.join(columns)}" for table, columns in missing.items())
        raise UsageError(f"the database is at revision {revision}, which this tool does not know, and {listed}: "
                         "it is not a later revision of the application's schema this tool can work with; "
                         "check DATABASE_URL")
    return (f"the schema is already past this tool's head {HEAD_REVISION}: the database is at {revision} (a later "
            "revision of the application's) and has every column the tool needs; nothing to do")


def _refuse_downgrade(engine: sa.Engine, revision: str) -> NoReturn:
    raise UsageError(f"the database is at revision {revision}, which this tool does not know (a later migration of "
                     "the application's): do not downgrade — the schema stays, the application's code at that revision "
                     "needs those columns; undo the storage only with `storage-migrate rollback` "
                     "(`rollback --project ID` for one project)")


def upgrade(settings: Settings, revision: str = "head", sql: bool = False) -> str | None:
    """Returns the line to print when there was nothing to do (the schema is past this tool's head)."""
    return _run(settings, lambda: upgrade_schema(settings.database_url, revision, sql=sql), sql, _past_head)


def downgrade(settings: Settings, revision: str, sql: bool = False) -> None:
    _run(settings, lambda: downgrade_schema(settings.database_url, revision, sql=sql), sql, _refuse_downgrade)


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
