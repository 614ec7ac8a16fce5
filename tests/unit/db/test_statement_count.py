"""Database round trips grow with batches, projects and generations moved (a guard and a publish each), never
with files: counted SQL statements of a whole `run` (executemany counts once, as it is one round trip)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    # Each move is guarded by one look at its row just before it (the application may have deleted
    # or changed it since the plan) and publishes its new place in the same transaction: two
    # statements per generation moved, never per file.
    assert many_generations <= few_files + 2 * (migrated_large - migrated_small) + 2, (few_files, many_generations)
