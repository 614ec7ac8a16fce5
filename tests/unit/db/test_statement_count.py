"""Database round trips grow with batches, projects and generations moved (a guard and a publish each), never
with files: counted SQL statements of a whole `run` (executemany counts once, as it is one round trip)."""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.commands.run import run
from storage_migrator.demo import SampleSize
from tests.support.sandbox import build_installation, empty_public_schema


@contextmanager
def counted_statements() -> Iterator[list[str]]:
    statements: list[str] = []

    def count(connection, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)


def empty_database(database_url: str, folder: Path) -> str:
    """A fresh SQLite file, or the PostgreSQL test database emptied."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{folder / 'codebegen.db'}"
    empty_public_schema(database_url)
    return database_url


def statements_for(database_url: str, folder: Path, size: SampleSize) -> tuple[int, int]:
    folder.mkdir()
    installation = build_installation(empty_database(database_url, folder), folder / "projects", size)
    with counted_statements() as statements:
        report = run(installation.settings)
    assert report.failed == 0 and report.migrated > 0
    return len(statements), report.migrated


def test_statements_do_not_grow_with_files_or_generations(database_url: str, tmp_path: Path) -> None:
    few_files, migrated_small = statements_for(database_url, tmp_path / "a", SampleSize(projects=5, generations_per_project=3, files_per_generation=10))
    many_files, _ = statements_for(database_url, tmp_path / "b", SampleSize(projects=5, generations_per_project=3, files_per_generation=80))
    many_generations, migrated_large = statements_for(database_url, tmp_path / "c", SampleSize(projects=5, generations_per_project=12, files_per_generation=10))
    assert many_files == few_files, "statements must not depend on the number of files"
    assert migrated_large > 3 * migrated_small
    # Per project at most a lookup of output_files for a folder to rebuild; the writes are batched.
    # Moves are guarded by one look at their rows just before them (the application may have
    # deleted or changed one since the plan), a claim batch at a time, and publish their new places
    # in the same transaction (one statement a batch on PostgreSQL, one a row on SQLite): at most
    # two statements per generation moved, never per file.
    assert many_generations <= few_files + 2 * (migrated_large - migrated_small) + 2, (few_files, many_generations)


def _round_trip_counter() -> type:
    """benchmarks/round_trips.py's relay: round trips counted on the wire, as the benchmark does."""
    path = next(folder / "benchmarks" / "round_trips.py" for folder in Path(__file__).resolve().parents
                if (folder / "benchmarks" / "round_trips.py").is_file())
    spec = importlib.util.spec_from_file_location("round_trips", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RoundTripCounter


def round_trips_for(postgres_url: str, folder: Path, size: SampleSize) -> tuple[int, int]:
    """A run's round trips on the wire and the generations it moved, on a fresh installation."""
    installation = build_installation(empty_database(postgres_url, folder), folder / "projects", size)
    server = sa.make_url(postgres_url)
    with _round_trip_counter()(server.host or "127.0.0.1", server.port or 5432) as relay:
        relayed = server.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        report = run(replace(installation.settings, database_url=relayed))
        round_trips = relay.round_trips
    assert report.failed == 0 and report.migrated > 0
    return round_trips, report.migrated


@pytest.mark.postgres
def test_a_run_of_many_small_generations_costs_at_most_one_round_trip_per_generation(postgres_url: str,
                                                                                     tmp_path: Path) -> None:
    """Moves are claimed, moved and published in batches (one lock, one publishing statement, one
    commit for several generations), so each generation more costs less than one round trip
    (log-ins, pre-pings and commits included), on the application's shape of data: projects of
    many small generations. A run's own start (log-in, schema check, lock) is not per generation."""
    few, moved_few = round_trips_for(postgres_url, tmp_path / "a",
                                     SampleSize(projects=5, generations_per_project=8, files_per_generation=10))
    many, moved_many = round_trips_for(postgres_url, tmp_path / "b",
                                       SampleSize(projects=5, generations_per_project=32, files_per_generation=10))
    assert moved_many > 3 * moved_few
    assert many - few <= moved_many - moved_few, (few, moved_few, many, moved_many)
