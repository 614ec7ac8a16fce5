"""Engines: what every connection of the tool sets, and what it leaves in the application's file."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.db.connect import SQLITE_CACHE_KIB, create_database_engine
from storage_migrator.engine.execute import CLAIM_BATCH


def test_every_sqlite_connection_holds_a_claim_batch_of_large_rows_in_its_page_cache(tmp_path: Path) -> None:
    """A batch rewrites rows of hundreds of KiB each: with SQLite's default 2 MiB cache the dirty
    pages spill mid-transaction, one more journal fsync each time."""
    database = tmp_path / "codebegen.db"
    sqlite3.connect(database).close()
    engine = create_database_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert connection.execute(sa.text("PRAGMA cache_size")).scalar_one() == -SQLITE_CACHE_KIB
    finally:
        engine.dispose()
    assert SQLITE_CACHE_KIB * 1024 >= CLAIM_BATCH * 512 * 1024       # a batch of rows of 512 KiB
    application = sqlite3.connect(database)                 # per connection: nothing stored in the file
    try:
        assert application.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        application.close()
