"""The database layer's one-place-per-fact derivations: the select list and the schema check come
from the records, and every timestamp comes out aware UTC whatever the backend stores."""
from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import sqlalchemy as sa

from storage_migrator.commands import watch
from storage_migrator.db import connect, reads, tables
from storage_migrator.engine import batch, orphans
from storage_migrator.records import OWNED_GENERATION_COLUMNS, GenerationRow


def test_the_select_list_is_generation_rows_fields_in_order() -> None:
    names = [column.name if isinstance(column, sa.Column) else column.key for column in tables.GENERATION_COLUMNS]
    assert names == [field.name for field in fields(GenerationRow)]


def test_required_columns_are_the_owned_ones_and_is_active_and_the_projects_non_key_columns() -> None:
    assert tables.REQUIRED_COLUMNS == {
        "generations": frozenset({*OWNED_GENERATION_COLUMNS, "is_active"}),
        "projects": frozenset({"active_generation_id", "latest_version"}),
    }
    assert set(OWNED_GENERATION_COLUMNS) == {
        "storage_path", "file_count", "total_size_bytes", "diff_from_previous", "changes_summary", "version",
    }


def test_one_rows_per_statement_constant() -> None:
    assert batch.DEFAULT_BATCH_SIZE == orphans.ORPHAN_LOOKUP_BATCH == watch.NAMES_PER_QUERY == tables.ROWS_PER_STATEMENT


def _insert(connection: sa.Connection, generation_id: str, created_at: object) -> None:
    connection.execute(tables.generations.insert().values(id=generation_id, project_id="p", status="completed",
                                                      version=1, created_at=created_at))


def test_sqlite_naive_text_reads_as_aware_utc(sqlite_url: str) -> None:
    engine = connect.create_database_engine(sqlite_url, create=True)
    tables.metadata.create_all(engine)
    with engine.begin() as connection:
        _insert(connection, "naive", None)
        _insert(connection, "offset", None)
        _insert(connection, "junk", None)
        _insert(connection, "number", None)
        for generation_id, stored in [("naive", "2025-03-01 10:00:00.000000"), ("offset", "2025-03-01T12:00:00+02:00"),
                                      ("junk", "not a time"), ("number", 12345)]:
            connection.execute(sa.text("UPDATE generations SET created_at = :v WHERE id = :id"),
                               {"v": stored, "id": generation_id})
    with engine.connect() as connection:
        (record,) = reads.load_projects(connection, ["p"])
    by_id = {generation.id: generation.created_at for generation in record.generations}
    expected = datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert by_id["naive"] == expected and by_id["naive"].tzinfo is UTC
    assert by_id["offset"] == expected and by_id["offset"].tzinfo is UTC
    assert by_id["junk"] is None and by_id["number"] is None
    engine.dispose()


def test_postgresql_reads_aware_utc_whatever_the_session_time_zone(postgres_url: str) -> None:
    engine = connect.create_database_engine(postgres_url)
    tables.metadata.create_all(engine)
    moment = datetime(2025, 3, 1, 10, tzinfo=timezone(timedelta(hours=5)))
    with engine.begin() as connection:
        _insert(connection, "g", moment)
    with engine.connect() as connection:
        connection.execute(sa.text("SET TIME ZONE 'America/New_York'"))
        (record,) = reads.load_projects(connection, ["p"])
    (generation,) = record.generations
    assert generation.created_at == moment and generation.created_at.tzinfo is UTC
    engine.dispose()
