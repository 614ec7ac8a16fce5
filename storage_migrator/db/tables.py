"""The tables the tool reads and writes (the one column list, derived from the records), the
lenient types for what the application stores, and the schema check before any command works."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage_migrator.config import DB_UPGRADE_COMMAND
from storage_migrator.db.connect import display_url, first_line
from storage_migrator.errors import DatabaseUnavailable, SchemaMissing
from storage_migrator.records import (
    OWNED_GENERATION_COLUMNS,
    GenerationRow,
    as_utc,
)

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


GENERATION_COLUMNS = tuple(
    _COMPUTED_ROW_FIELDS[name].label(name) if name in _COMPUTED_ROW_FIELDS else generations.c[name]
    for name in _ROW_FIELDS
)


def generation_row(row: sa.Row) -> GenerationRow:
    """One row of ``GENERATION_COLUMNS`` as a GenerationRow (``created_at`` aware UTC)."""
    values = dict(zip(_ROW_FIELDS, row, strict=True))
    for name, coerce in _ROW_COERCIONS.items():
        values[name] = coerce(values[name])
    return GenerationRow(**values)
