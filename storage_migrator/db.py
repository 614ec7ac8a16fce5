"""The one database access layer: connecting, checking the schema revision, reading a project's
rows and writing metadata back in batches.

Reads stream project by project (a project's generations, never their ``output_files`` unless a
folder must be rebuilt), and writes are ``executemany`` batches, so the number of round trips
grows with the number of batches, not with generations or files.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .config import HEAD_REVISION, ensure_sqlite_parent, normalize_database_url
from .errors import DatabaseNotAtHead, DatabaseUnavailable

metadata = sa.MetaData()

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("active_generation_id", sa.String(36)),
    sa.Column("latest_version", sa.Integer),
)

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("project_id", sa.String(36)),
    sa.Column("status", sa.String(20)),
    sa.Column("output_files", sa.JSON(none_as_null=True)),
    sa.Column("version", sa.Integer),
    sa.Column("is_active", sa.Boolean),
    sa.Column("storage_path", sa.String(500)),
    sa.Column("file_count", sa.Integer),
    sa.Column("total_size_bytes", sa.BigInteger),
    sa.Column("diff_from_previous", sa.Text),
    sa.Column("changes_summary", sa.JSON(none_as_null=True)),
)


def display_url(database_url: str) -> str:
    """The URL as it may be printed: never with its password."""
    try:
        return sa.make_url(database_url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def create_database_engine(database_url: str, command: str = "storage-migrate") -> Engine:
    """An engine whose PostgreSQL sessions carry ``application_name`` = who and where, so a
    second run can name the holder of the lock."""
    url = normalize_database_url(database_url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as error:
        raise DatabaseUnavailable(f"database URL {url!r} is not valid: {error}; fix --database-url / DATABASE_URL")
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {
            "application_name": f"{command} pid={os.getpid()} host={socket.gethostname()}"[:63],
            "connect_timeout": 10,
        }
    elif parsed.get_backend_name() == "sqlite":
        ensure_sqlite_parent(url)
        connect_args = {"timeout": 30}
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def first_line(error: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's SQL dump and background link."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def current_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at (None for an empty database). Plain SQL on
    Alembic's table: importing Alembic's runtime would cost every command a third of a second."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    revisions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(revisions)) or None


def check_at_head(engine: Engine) -> None:
    """Refuse to work on a database that cannot be reached or is not at this tool's head."""
    try:
        with engine.connect() as connection:
            revision = current_revision(connection)
    except sa.exc.DBAPIError as error:
        raise DatabaseUnavailable(
            f"cannot connect to the database {display_url(str(engine.url))}: {first_line(error)}; "
            "check --database-url / DATABASE_URL and that the server is up"
        ) from None
    if revision != HEAD_REVISION:
        raise DatabaseNotAtHead(
            f"the database {display_url(str(engine.url))} is at revision {revision or 'none'}, not "
            f"{HEAD_REVISION}: run `alembic upgrade head` (with DATABASE_URL set to it) first"
        )


@dataclass(frozen=True)
class GenerationRow:
    """A generation as the tool needs it; ``output_files`` is fetched only to rebuild a folder."""

    id: str
    project_id: str
    version: int | None
    status: str
    created_at: datetime | None
    storage_path: str | None
    file_count: int
    total_size_bytes: int | None
    diff_from_previous: str | None
    changes_summary: dict | None
    is_active: bool
    has_output_files: bool


@dataclass(frozen=True)
class ProjectRecord:
    """One project's row (None if the row is gone) and its generations in version order."""

    project_id: str
    exists: bool
    active_generation_id: str | None
    latest_version: int
    generations: tuple[GenerationRow, ...]


def iter_project_ids(connection: Connection) -> list[str]:
    """Every project id that has a row or generations, sorted: the unit of streaming."""
    from_projects = sa.select(projects.c.id)
    from_generations = sa.select(generations.c.project_id).distinct()
    ids = {row[0] for row in connection.execute(from_projects)} | {row[0] for row in connection.execute(from_generations)}
    return sorted(project_id for project_id in ids if project_id is not None)


_GENERATION_COLUMNS = (
    generations.c.id,
    generations.c.project_id,
    generations.c.version,
    generations.c.status,
    generations.c.created_at,
    generations.c.storage_path,
    generations.c.file_count,
    generations.c.total_size_bytes,
    generations.c.diff_from_previous,
    generations.c.changes_summary,
    generations.c.is_active,
    generations.c.output_files.is_not(None).label("has_output_files"),
)


def _generation_row(row: sa.Row) -> GenerationRow:
    return GenerationRow(
        id=row.id,
        project_id=row.project_id,
        version=row.version,
        status=row.status,
        created_at=row.created_at,
        storage_path=row.storage_path,
        file_count=row.file_count or 0,
        total_size_bytes=row.total_size_bytes,
        diff_from_previous=row.diff_from_previous,
        changes_summary=row.changes_summary,
        is_active=bool(row.is_active),
        has_output_files=bool(row.has_output_files),
    )


def load_projects(connection: Connection, project_ids: Sequence[str]) -> list[ProjectRecord]:
    """Rows of several projects in two queries (a batch of the stream)."""
    if not project_ids:
        return []
    project_rows = {
        row.id: row
        for row in connection.execute(
            sa.select(projects.c.id, projects.c.active_generation_id, projects.c.latest_version).where(
                projects.c.id.in_(project_ids)
            )
        )
    }
    by_project: dict[str, list[GenerationRow]] = {project_id: [] for project_id in project_ids}
    query = (
        sa.select(*_GENERATION_COLUMNS)
        .where(generations.c.project_id.in_(project_ids))
        .order_by(generations.c.project_id, generations.c.version, generations.c.created_at, generations.c.id)
    )
    for row in connection.execute(query):
        by_project[row.project_id].append(_generation_row(row))
    records = []
    for project_id in project_ids:
        project_row = project_rows.get(project_id)
        records.append(
            ProjectRecord(
                project_id=project_id,
                exists=project_row is not None,
                active_generation_id=project_row.active_generation_id if project_row else None,
                latest_version=(project_row.latest_version or 0) if project_row else 0,
                generations=tuple(by_project[project_id]),
            )
        )
    return records


def iter_project_records(
    engine: Engine, batch_size: int = 200, only: Sequence[str] | None = None
) -> Iterator[ProjectRecord]:
    """Stream every project (or those in ``only``), ``batch_size`` projects per query pair."""
    with engine.connect() as connection:
        project_ids = iter_project_ids(connection) if only is None else sorted(set(only))
    for start in range(0, len(project_ids), batch_size):
        with engine.connect() as connection:
            batch = load_projects(connection, project_ids[start : start + batch_size])
        yield from batch     # outside the connection: a consumer may take its time, or stop


def project_ids_for_names(engine: Engine, names: Sequence[str]) -> set[str]:
    """The projects that folder names under ROOT belong to: a name is a project id (new layout)
    or a generation id (legacy layout)."""
    if not names:
        return set()
    with engine.connect() as connection:
        found = {row[0] for row in connection.execute(sa.select(projects.c.id).where(projects.c.id.in_(names)))}
        found |= {
            row[0]
            for row in connection.execute(
                sa.select(generations.c.project_id).where(generations.c.id.in_(names))
            )
        }
    return found


def existing_generation_ids(engine: Engine, candidates: Sequence[str]) -> set[str]:
    """Which of ``candidates`` are generation ids in the database (one query)."""
    if not candidates:
        return set()
    with engine.connect() as connection:
        return set(connection.execute(sa.select(generations.c.id).where(generations.c.id.in_(candidates))).scalars())


def load_output_files(engine: Engine, generation_id: str) -> dict[str, str] | None:
    """The ``output_files`` JSON of one generation: only read when its folder must be rebuilt."""
    with engine.connect() as connection:
        value = connection.execute(
            sa.select(generations.c.output_files).where(generations.c.id == generation_id)
        ).scalar_one_or_none()
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class GenerationUpdate:
    """Every column the tool owns for one generation, as it must be after this run."""

    generation_id: str
    storage_path: str | None
    file_count: int
    total_size_bytes: int | None
    diff_from_previous: str | None
    changes_summary: dict | None
    is_active: bool


@dataclass(frozen=True)
class ProjectUpdate:
    project_id: str
    latest_version: int
    active_generation_id: str | None


_UPDATE_GENERATION = (
    generations.update()
    .where(generations.c.id == sa.bindparam("b_id"))
    .values(
        storage_path=sa.bindparam("b_storage_path"),
        file_count=sa.bindparam("b_file_count"),
        total_size_bytes=sa.bindparam("b_total_size_bytes"),
        diff_from_previous=sa.bindparam("b_diff_from_previous"),
        changes_summary=sa.bindparam("b_changes_summary", type_=sa.JSON(none_as_null=True)),
        is_active=sa.bindparam("b_is_active"),
    )
)

_UPDATE_PROJECT = (
    projects.update()
    .where(projects.c.id == sa.bindparam("b_id"))
    .values(
        latest_version=sa.bindparam("b_latest_version"),
        active_generation_id=sa.bindparam("b_active_generation_id"),
    )
)


def write_updates(
    engine: Engine, generation_updates: Sequence[GenerationUpdate], project_updates: Sequence[ProjectUpdate]
) -> None:
    """Write one batch in one transaction: at most two executemany statements.

    Generations are written before projects so that ``active_generation_id`` never names a row
    whose ``is_active`` disagrees for longer than the transaction.
    """
    if not generation_updates and not project_updates:
        return
    with engine.begin() as connection:
        if generation_updates:
            connection.execute(
                _UPDATE_GENERATION,
                [
                    {
                        "b_id": update.generation_id,
                        "b_storage_path": update.storage_path,
                        "b_file_count": update.file_count,
                        "b_total_size_bytes": update.total_size_bytes,
                        "b_diff_from_previous": update.diff_from_previous,
                        "b_changes_summary": update.changes_summary,
                        "b_is_active": update.is_active,
                    }
                    for update in generation_updates
                ],
            )
        if project_updates:
            connection.execute(
                _UPDATE_PROJECT,
                [
                    {
                        "b_id": update.project_id,
                        "b_latest_version": update.latest_version,
                        "b_active_generation_id": update.active_generation_id,
                    }
                    for update in project_updates
                ],
            )
