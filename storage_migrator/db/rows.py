"""The one database access layer: connecting, checking that the tables have the columns the
tool works with, reading a project's rows, the row claims that guard an irreversible step, and
conditional writes in batches.

A caller must know: reads stream project by project and are lenient (a row with an odd value
reads as "unknown" instead of ending the stream); timestamps come out timezone-aware in UTC on
every backend; writes are ``executemany`` batches, conditional on the row as the plan saw it."""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage_migrator.config import DB_UPGRADE_COMMAND, ensure_sqlite_parent, normalize_database_url
from storage_migrator.errors import DatabaseUnavailable, SchemaMissing
from storage_migrator.records import (
    OWNED_GENERATION_COLUMNS,
    GenerationRow,
    GenerationUpdate,
    ProjectRecord,
    ProjectUpdate,
    RowDrift,
    RowSeen,
    as_utc,
)

# Every PostgreSQL session of the tool: a statement that would wait on a row the application
# holds gives up after this (the generation is retried by the next resync), below the server's
# deadlock_timeout, so the application never waits on the tool, nor deadlocks with it, for long.
LOCK_TIMEOUT = "500ms"

# Rows per statement: the generations one batch writes (one executemany per transaction) and the
# names or ids one ``IN (...)`` lookup carries. Large enough that round trips stay few, small
# enough that an ``IN`` list stays below SQLite's oldest limit of 999 bound parameters.
ROWS_PER_STATEMENT = 500


class LenientDateTime(sa.types.TypeDecorator):
    """A timestamp that reads as a timezone-aware UTC datetime, or as None when the stored value
    is not one (SQLite keeps whatever it is given, e.g. an integer), instead of raising for the
    whole result set. The one place where naive timestamps are taken as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        # On SQLite the stored text is parsed here, not by SQLAlchemy's strict processor.
        return dialect.type_descriptor(sa.Text() if dialect.name == "sqlite" else sa.DateTime(timezone=True))

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return None
        return as_utc(value) if isinstance(value, datetime) else None


class LenientJSON(sa.types.TypeDecorator):
    """JSON that reads as the string ``MALFORMED_JSON`` when the stored text does not parse."""

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        strict = super().result_processor(dialect, coltype)
        if strict is None:
            return None

        def process(value: Any) -> Any:
            try:
                return strict(value)
            except (ValueError, TypeError, RecursionError):
                return MALFORMED_JSON

        return process


MALFORMED_JSON = "<malformed JSON>"

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
    sa.Column("created_at", LenientDateTime()),
    sa.Column("project_id", sa.String(36)),
    sa.Column("status", sa.String(20)),
    sa.Column("output_files", LenientJSON()),
    sa.Column("version", sa.Integer),
    sa.Column("is_active", sa.Boolean),
    sa.Column("storage_path", sa.String(500)),
    sa.Column("file_count", sa.Integer),
    sa.Column("total_size_bytes", sa.BigInteger),
    sa.Column("diff_from_previous", sa.Text),
    sa.Column("changes_summary", LenientJSON()),
)


# The tables above are the schema the tool knows; they must cover every column the records name.
assert set(OWNED_GENERATION_COLUMNS) <= set(generations.c.keys()), "db.generations lacks an owned column"

# The columns the tool writes, which ``check_schema`` requires (one place per fact, nothing
# spelled again): per generation the owned columns of ``GenerationUpdate`` and ``is_active``
# (which follows the project's active generation, see ``_make_is_active_follow``); per project
# every column of ``projects`` but its key (the table holds only what the tool uses of it).
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "generations": frozenset({*OWNED_GENERATION_COLUMNS, generations.c.is_active.name}),
    "projects": frozenset(column.name for column in projects.c if not column.primary_key),
}


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


def missing_columns(connection: Connection) -> dict[str, list[str]]:
    """Per table, the required columns it lacks (a missing table lacks them all)."""
    inspector = sa.inspect(connection)
    missing: dict[str, list[str]] = {}
    for table, required in REQUIRED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)} if inspector.has_table(table) else set()
        if required - present:
            missing[table] = sorted(required - present)
    return missing


def check_schema(engine: Engine) -> None:
    """The precondition of every command is a capability, not a revision: the tables have the
    columns this tool reads and writes. A database at any later revision of the application's
    own history passes; one that cannot be reached or lacks a column gets the fix."""
    try:
        with engine.connect() as connection:
            missing = missing_columns(connection)
    except sa.exc.DBAPIError as error:
        raise DatabaseUnavailable(
            f"cannot connect to the database {display_url(str(engine.url))}: {first_line(error)}; "
            "check --database-url / DATABASE_URL and that the server is up"
        ) from None
    if missing:
        listed = "; ".join(f"{table} lacks {', '.join(columns)}" for table, columns in missing.items())
        raise SchemaMissing(
            f"the database {display_url(str(engine.url))} does not have the versioning columns ({listed}): "
            f"run `{DB_UPGRADE_COMMAND}` (with DATABASE_URL set to it) first"
        )


def has_active_generation_key(engine: Engine) -> bool:
    """True if some foreign key runs projects.active_generation_id → generations.id, whatever
    its name or ON DELETE rule (the application's later revisions replace the seed's key)."""
    for key in sa.inspect(engine).get_foreign_keys("projects"):
        if key.get("constrained_columns") == ["active_generation_id"] and key.get("referred_table") == "generations":
            return True
    return False


def count_generations(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(generations)).scalar_one()


def iter_project_ids(connection: Connection) -> list[str]:
    """Every project id that has a row or generations, sorted: the unit of streaming."""
    from_projects = sa.select(projects.c.id)
    from_generations = sa.select(generations.c.project_id).distinct()
    ids = {row[0] for row in connection.execute(from_projects)} | {row[0] for row in connection.execute(from_generations)}
    return sorted(project_id for project_id in ids if project_id is not None)


# The select list is GenerationRow's fields, in order: each the column of the same name, but
# the computed ones below. ``has_output_files`` asks only whether the (possibly large) column is
# set; ``output_files`` itself is read by ``load_output_files`` when a folder must be rebuilt.
_COMPUTED_ROW_FIELDS: dict[str, sa.ColumnElement[Any]] = {
    "has_output_files": generations.c.output_files.is_not(None),
}
# Fields whose stored value is normalised on the way out (NULL is not a count, nor a flag).
# ``created_at`` needs nothing here: ``LenientDateTime`` already reads it as aware UTC.
_ROW_COERCIONS: dict[str, Callable[[Any], Any]] = {
    "file_count": lambda value: value or 0,
    "is_active": bool,
    "has_output_files": bool,
}
_ROW_FIELDS = tuple(field.name for field in fields(GenerationRow))
assert set(_ROW_FIELDS) - set(_COMPUTED_ROW_FIELDS) <= set(generations.c.keys()), \
    "db.generations lacks a column GenerationRow reads"
assert set(_COMPUTED_ROW_FIELDS) | set(_ROW_COERCIONS) <= set(_ROW_FIELDS)
_GENERATION_COLUMNS = tuple(
    _COMPUTED_ROW_FIELDS[name].label(name) if name in _COMPUTED_ROW_FIELDS else generations.c[name]
    for name in _ROW_FIELDS
)


def _generation_row(row: sa.Row) -> GenerationRow:
    """One row of ``_GENERATION_COLUMNS`` as a GenerationRow (``created_at`` aware UTC)."""
    values = dict(zip(_ROW_FIELDS, row, strict=True))
    for name, coerce in _ROW_COERCIONS.items():
        values[name] = coerce(values[name])
    return GenerationRow(**values)


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


def adopt_failed_generation(engine: Engine, generation_id: str, seen: RowSeen, file_count: int,
                            total_size_bytes: int | None) -> bool:
    """``status`` failed → completed for a generation whose files are the application's own
    record (``resync --adopt-complete``), only while the row still shows what was read: failed,
    the same version, ``storage_path``, ``file_count`` and ``total_size_bytes``. False if the
    application changed or deleted it meanwhile (nothing is written then)."""
    if seen.status != "failed":
        return False
    with engine.begin() as connection:
        written = connection.execute(
            generations.update()
            .where(generations.c.id == generation_id, generations.c.status == "failed",
                   generations.c.version.is_not_distinct_from(seen.version),
                   generations.c.storage_path.is_not_distinct_from(seen.storage_path),
                   sa.func.coalesce(generations.c.file_count, 0) == file_count,
                   generations.c.total_size_bytes.is_not_distinct_from(total_size_bytes))
            .values(status="completed")
        ).rowcount
    return written == 1


_UPDATE_GENERATION = (
    generations.update()
    .where(
        generations.c.id == sa.bindparam("b_id"),
        generations.c.status == sa.bindparam("b_seen_status", type_=generations.c.status.type),
        generations.c.version.is_not_distinct_from(sa.bindparam("b_seen_version", type_=sa.Integer)),
        generations.c.storage_path.is_not_distinct_from(sa.bindparam("b_seen_storage_path", type_=sa.String)),
    )
    .values({
        name: sa.bindparam(f"b_{name}", type_=generations.c[name].type)
        for name in OWNED_GENERATION_COLUMNS
    })
)

_RAISE_LATEST_VERSION = (
    projects.update()
    .where(projects.c.id == sa.bindparam("b_id"))
    .values(latest_version=sa.case(
        (sa.func.coalesce(projects.c.latest_version, 0) < sa.bindparam("b_latest_version", type_=sa.Integer),
         sa.bindparam("b_latest_version", type_=sa.Integer)),
        else_=projects.c.latest_version,
    ))
)



def _update_parameters(update: GenerationUpdate) -> dict[str, Any]:
    return {"b_id": update.generation_id, "b_seen_status": update.seen.status,
            "b_seen_version": update.seen.version, "b_seen_storage_path": update.seen.storage_path,
            **{f"b_{name}": value for name, value in update.column_values().items()}}


def is_lock_timeout(error: sa.exc.DBAPIError) -> bool:
    """PostgreSQL's lock_not_available (55P03): a row the application holds; not a lost database."""
    return getattr(error.orig, "sqlstate", None) == "55P03"


def read_row_seen(connection: Connection, generation_id: str, for_update: bool = False) -> RowSeen | None:
    """The row's status, version and storage_path now (None if the application deleted it);
    ``for_update`` locks it on PostgreSQL until the transaction ends."""
    query = sa.select(generations.c.status, generations.c.version, generations.c.storage_path).where(
        generations.c.id == generation_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = connection.execute(query).first()
    return None if row is None else RowSeen(row.status, row.version, row.storage_path)


Place = tuple[str | None, int | None]
"""A generation's ``storage_path`` and ``version`` once its folder has moved or been renamed."""


@dataclass
class GenerationClaims:
    """Generations' rows, held together for their irreversible disk steps (a claim batch: a few
    generations of one project, never a project or a run). ``drift(id)`` is None if the row
    still shows what the plan saw; ``publish`` writes the folders' new places in the same
    transaction and ends it, so a row never names a folder that is gone for longer than the
    batch's disk steps."""

    connection: Connection
    seen: dict[str, RowSeen]
    drifts: dict[str, RowDrift | None]

    def drift(self, generation_id: str) -> RowDrift | None:
        return self.drifts[generation_id]

    def number_taken(self, generation_id: str, project_id: str, version: int) -> bool:
        """Another row of the project holds ``version`` now: the application's lock-free
        ``latest_version + 1`` read the value just before a reservation and took the same number."""
        return self.connection.execute(
            sa.select(sa.func.count()).select_from(generations).where(
                generations.c.project_id == project_id, generations.c.version == version,
                generations.c.id != generation_id)
        ).scalar_one() > 0

    def publish(self, places: dict[str, Place]) -> set[str]:
        """Write each row's new place (the disk made durable first), conditional on the row as
        claimed, and commit: the rows are released. Returns the ids written; one missing drifted
        meanwhile (SQLite, where rows are not locked). On PostgreSQL one statement for the whole
        batch, a round trip; on SQLite one per row (a local file: only the commit costs)."""
        if places and self.connection.dialect.name == "postgresql":
            written = set(self.connection.execute(_place_statement(places, self.seen)).scalars())
        else:
            written = {generation_id for generation_id, place in places.items()
                       if self.connection.execute(_RECORD_PLACE, _place_parameters(generation_id, place,
                                                                                   self.seen[generation_id])
                                                  ).rowcount == 1}
        self.connection.commit()
        return written


_RECORD_PLACE = (
    generations.update()
    .where(generations.c.id == sa.bindparam("b_id"),
           generations.c.status == sa.bindparam("b_seen_status", type_=generations.c.status.type),
           generations.c.version.is_not_distinct_from(sa.bindparam("b_seen_version", type_=sa.Integer)),
           generations.c.storage_path.is_not_distinct_from(sa.bindparam("b_seen_storage_path", type_=sa.String)))
    .values(storage_path=sa.bindparam("b_storage_path", type_=sa.String),
            version=sa.bindparam("b_version", type_=sa.Integer))
)


def _place_parameters(generation_id: str, place: Place, seen: RowSeen) -> dict[str, Any]:
    return {"b_id": generation_id, "b_seen_status": seen.status, "b_seen_version": seen.version,
            "b_seen_storage_path": seen.storage_path, "b_storage_path": place[0], "b_version": place[1]}


def _place_statement(places: dict[str, Place], seen: dict[str, RowSeen]) -> sa.UpdateBase:
    """``UPDATE generations … FROM (VALUES …) RETURNING id``: every row's new place, each written
    only where the row still shows what was claimed."""
    placed = sa.values(
        sa.column("id", sa.String), sa.column("seen_status", sa.String), sa.column("seen_version", sa.Integer),
        sa.column("seen_storage_path", sa.String), sa.column("storage_path", sa.String),
        sa.column("version", sa.Integer), name="placed",
    ).data([(generation_id, seen[generation_id].status, seen[generation_id].version,
             seen[generation_id].storage_path, storage_path, version)
            for generation_id, (storage_path, version) in sorted(places.items())])
    return (
        generations.update()
        .where(generations.c.id == placed.c.id, generations.c.status == placed.c.seen_status,
               generations.c.version.is_not_distinct_from(placed.c.seen_version),
               generations.c.storage_path.is_not_distinct_from(placed.c.seen_storage_path))
        .values(storage_path=placed.c.storage_path, version=placed.c.version)
        .returning(generations.c.id)
    )


def _rows_seen(connection: Connection, generation_ids: Sequence[str], lock: str | None) -> dict[str, RowSeen]:
    """The rows' status, version and storage_path now (a deleted row is absent). ``lock``
    "wait" or "skip" takes them FOR UPDATE on PostgreSQL, in id order (the order the
    application's ORM locks rows in, so the two never wait on each other in a cycle); "skip"
    leaves out the rows another transaction holds."""
    query = (sa.select(generations.c.id, generations.c.status, generations.c.version, generations.c.storage_path)
             .where(generations.c.id.in_(generation_ids)).order_by(generations.c.id))
    if lock is not None and connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=lock == "skip")
    return {row.id: RowSeen(row.status, row.version, row.storage_path) for row in connection.execute(query)}


def _claim_rows(connection: Connection, seen: dict[str, RowSeen]) -> dict[str, RowDrift | None]:
    """Lock the rows and say how each differs from what was seen. A row the application holds
    for longer than the lock timeout counts as changed; the others are still claimed."""
    ids = sorted(seen)
    try:
        current = _rows_seen(connection, ids, lock="wait")
        held: set[str] = set()
    except sa.exc.DBAPIError as error:
        if not is_lock_timeout(error):
            raise
        connection.rollback()
        current = _rows_seen(connection, ids, lock="skip")
        missing = [generation_id for generation_id in ids if generation_id not in current]
        held = set(_rows_seen(connection, missing, lock=None)) if missing else set()
    return {generation_id: RowDrift.CHANGED if generation_id in held else RowDrift.of(current.get(generation_id), row)
            for generation_id, row in seen.items()}


@contextmanager
def claimed_generations(connection: Connection, seen: dict[str, RowSeen]) -> Iterator[GenerationClaims]:
    """Hold generations' rows (``seen``: what the plan saw of each) for their irreversible disk
    steps (a move, a rebuild, a rename, a discard); each one's ``drift`` says whether its row
    still shows what the plan saw.

    On PostgreSQL the rows are locked (one ``SELECT … FOR UPDATE``) until ``publish`` or the
    block's end, so the application's delete or update of one of these rows waits for the
    batch's disk steps, never for the run; on SQLite (one writer for the whole file) the rows
    are read again just before the steps instead. Without ``publish`` the block ends in a
    rollback: nothing is written. ``connection`` is one the caller keeps for its claims (no
    pool check-out, so no pre-ping, per batch).
    """
    try:
        drifts = _claim_rows(connection, seen)
        yield GenerationClaims(connection, dict(seen), drifts)
    finally:
        connection.rollback()


def reserve_version(engine: Engine, project_id: str, at_least: int) -> int | None:
    """Take the project's next version number in one committed statement, so the application's
    next ``latest_version + 1`` does not hand it out again. ``at_least`` is the highest version
    the tool knows of (a stale ``latest_version`` must not give out a number in use). None if
    the project row is gone."""
    statement = (
        projects.update()
        .where(projects.c.id == project_id)
        .values(latest_version=sa.case(
            (sa.func.coalesce(projects.c.latest_version, 0) < at_least, at_least),
            else_=projects.c.latest_version,
        ) + 1)
        .returning(projects.c.latest_version)
    )
    with engine.begin() as connection:
        return connection.execute(statement).scalar_one_or_none()


def write_generation_updates(engine: Engine, updates: Sequence[GenerationUpdate]) -> dict[str, RowDrift]:
    """Write one batch in one transaction; a row is written only if it still shows what its
    plan saw (status, version, storage_path). Returns the rows that were not written and why.

    One executemany in the common case; only when some row drifted is the batch redone row by
    row to tell which. Rows are written in id order, the order the application's ORM locks
    them in, so the two never wait on each other in a cycle.
    """
    ordered = sorted(updates, key=lambda update: update.generation_id)
    if not ordered:
        return {}
    try:
        with engine.begin() as connection:
            written = connection.execute(_UPDATE_GENERATION, [_update_parameters(u) for u in ordered]).rowcount
            if written == len(ordered):
                return {}
            connection.rollback()
    except sa.exc.DBAPIError as error:
        if not is_lock_timeout(error):
            raise
    return _write_row_by_row(engine, ordered)


def _write_row_by_row(engine: Engine, ordered: Sequence[GenerationUpdate]) -> dict[str, RowDrift]:
    drifted: dict[str, RowDrift] = {}
    with engine.begin() as connection:
        for update in ordered:
            savepoint = connection.begin_nested() if connection.dialect.name == "postgresql" else None
            try:
                written = connection.execute(_UPDATE_GENERATION, _update_parameters(update)).rowcount
            except sa.exc.DBAPIError as error:
                if savepoint is None or not is_lock_timeout(error):
                    raise
                savepoint.rollback()
                drifted[update.generation_id] = RowDrift.CHANGED
                continue
            if savepoint is not None:
                savepoint.commit()
            if written != 1:
                exists = read_row_seen(connection, update.generation_id) is not None
                drifted[update.generation_id] = RowDrift.CHANGED if exists else RowDrift.GONE
    return drifted


def write_project_update(engine: Engine, update: ProjectUpdate) -> bool:
    """Bring one project's row forward in one short transaction; False if it had to give way.

    ``latest_version`` only rises (in the statement itself). ``active_generation_id`` is set
    only where it still is what the plan saw and only to a completed generation of the project
    that still exists. ``is_active`` then follows the active generation as stored, read under
    the project row's lock — the application's choice is never reverted. The first statement
    writes, so on SQLite the transaction holds the write lock from the start and reads nothing
    stale.
    """
    try:
        with engine.begin() as connection:
            connection.execute(_RAISE_LATEST_VERSION, {"b_id": update.project_id,
                                                       "b_latest_version": update.latest_version})
            if update.active_generation_id != update.seen_active_generation_id:
                _set_active_if_unchanged(connection, update)
            _make_is_active_follow(connection, update.project_id)
        return True
    except sa.exc.DBAPIError as error:
        if not is_lock_timeout(error) and not isinstance(error, sa.exc.IntegrityError):
            raise
        return False


def _set_active_if_unchanged(connection: Connection, update: ProjectUpdate) -> None:
    candidate = sa.select(generations.c.id).where(
        generations.c.id == update.active_generation_id,
        generations.c.project_id == update.project_id,
        generations.c.status == "completed",
    ).exists()  # not below ROOT: SQL EXISTS, no file
    connection.execute(
        projects.update()
        .where(projects.c.id == update.project_id,
               projects.c.active_generation_id.is_not_distinct_from(update.seen_active_generation_id),
               candidate if update.active_generation_id is not None else sa.true())
        .values(active_generation_id=update.active_generation_id)
    )


def _make_is_active_follow(connection: Connection, project_id: str) -> None:
    query = sa.select(projects.c.active_generation_id).where(projects.c.id == project_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    active = connection.execute(query).scalar_one_or_none()
    should_be = generations.c.id == active if active is not None else sa.false()
    connection.execute(
        generations.update()
        .where(generations.c.project_id == project_id,
               sa.func.coalesce(generations.c.is_active, sa.false()) != should_be)
        .values(is_active=should_be)
    )
