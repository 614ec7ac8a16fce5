"""Connections: the database URL as the operator gives it, engines for both backends (lock
timeout, SQLite's file), and the one-line wording of a database error."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage_migrator.config import ensure_sqlite_parent, normalize_database_url
from storage_migrator.errors import DatabaseUnavailable

# Every PostgreSQL session of the tool: a statement that would wait on a row the application
# holds gives up after this (the generation is retried by the next resync), below the server's
# deadlock_timeout, so the application never waits on the tool, nor deadlocks with it, for long.
LOCK_TIMEOUT = "500ms"

# Every SQLite connection of the tool: its page cache, in KiB (SQLite's default is 2 MiB). A claim
# batch's transaction rewrites each row whole (its output_files with it, hundreds of KiB a row);
# a cache smaller than that spills dirty pages into the database file mid-transaction, each spill
# after one more journal fsync. Per connection, never stored in the application's file.
SQLITE_CACHE_KIB = 16 * 1024


def display_url(database_url: str) -> str:
    """The URL as it may be printed: never with its password."""
    try:
        return sa.make_url(database_url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<unparseable database URL>"


def _parse_url(url: str) -> sa.URL:
    """The URL parsed and its driver importable, or a one-line UsageError naming what is wrong."""
    fix = "fix --database-url / DATABASE_URL"
    try:
        parsed = sa.make_url(url)
        parsed.get_dialect()            # an unknown dialect or driver fails here, not at first use
        if parsed.port is not None and not 0 < parsed.port < 65536:     # a non-numeric port fails here too
            raise ValueError(f"port {parsed.port} is out of range")
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError, ImportError) as error:
        raise DatabaseUnavailable(f"database URL {display_url(url)!r} is not usable ({first_line(error)}); {fix}") from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise DatabaseUnavailable(f"database URL {display_url(url)!r}: only PostgreSQL and SQLite are supported; {fix}")
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise DatabaseUnavailable(f"database URL {display_url(url)!r}: the driver {parsed.get_driver_name()} is not "
                                  f"installed with this tool; write postgresql:// (psycopg 3) — {fix}")
    return parsed


def sqlite_file(parsed: sa.URL) -> Path | None:
    """The file of a file-based SQLite URL (None for PostgreSQL or an in-memory database)."""
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_database_engine(database_url: str, command: str = "storage-migrate", *, create: bool = False) -> Engine:
    """An engine whose PostgreSQL sessions carry ``application_name`` = who and where, so a
    second run can name the holder of the lock.

    A SQLite file that does not exist is an error (a forgotten ``DATABASE_URL`` must not
    become a new empty database that every later command reads as "nothing to do"); only
    ``create=True`` (``demo-data``) creates it.
    """
    parsed = _parse_url(normalize_database_url(database_url))
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {
            "application_name": f"{command} pid={os.getpid()} host={socket.gethostname()}"[:63],
            "connect_timeout": 10,
            "options": f"-c lock_timeout={LOCK_TIMEOUT}",
        }
    else:
        database_file = sqlite_file(parsed)
        if database_file is not None and not database_file.exists():  # not below ROOT: the SQLite file
            if not create:
                raise DatabaseUnavailable(f"the SQLite database {database_file} does not exist; set DATABASE_URL "
                                          "(or --database-url) to the application's database")
            ensure_sqlite_parent(database_file)
        connect_args = {"timeout": 30}
    engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _size_sqlite_cache)
    return engine


def _size_sqlite_cache(connection: Any, _: Any) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def first_line(error: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's SQL dump and background link."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_lock_timeout(error: sa.exc.DBAPIError) -> bool:
    """PostgreSQL's lock_not_available (55P03): a row the application holds; not a lost database."""
    return getattr(error.orig, "sqlstate", None) == "55P03"
