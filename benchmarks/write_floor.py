"""The least the database must do for what `run` writes: every generation's row given the
columns the tool owns, with the values a finished run left, one UPDATE per row, the rows of a
claim batch (8) per transaction, and nothing else — no reads, no disk, no conditions.

bench_run.py times it on a fresh copy of the legacy rows (at the head revision) beside the floors
that read the files: on SQLite each row holds the application's ``output_files`` (hundreds of KiB
of JSON) ahead of the tool's columns, and SQLite rewrites a record whose size changes whole, its
overflow pages and their journal copies; PostgreSQL leaves an unchanged TOASTed value where it is.
Whatever `run` does on top of reading and hashing the files, it pays at least this.

    python benchmarks/write_floor.py DONE_URL FRESH_URL     # prints the writes' wall seconds
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from storage_migrator.db.tables import generations  # noqa: E402
from storage_migrator.records import OWNED_GENERATION_COLUMNS  # noqa: E402

ROWS_PER_TRANSACTION = 8
"""The executor's claim batch (``engine.execute.CLAIM_BATCH``): one commit per batch."""


def final_values(done_url: str) -> list[dict[str, object]]:
    engine = sa.create_engine(done_url)
    columns = [generations.c.id, *(generations.c[name] for name in OWNED_GENERATION_COLUMNS)]
    with engine.connect() as connection:
        rows = connection.execute(sa.select(*columns).order_by(generations.c.project_id, generations.c.version))
        values = [{"b_id": row.id, **{name: getattr(row, name) for name in OWNED_GENERATION_COLUMNS}} for row in rows]
    engine.dispose()
    return values


def write_rows(fresh_url: str, values: list[dict[str, object]]) -> None:
    update = (generations.update().where(generations.c.id == sa.bindparam("b_id"))
              .values({name: sa.bindparam(name) for name in OWNED_GENERATION_COLUMNS}))
    engine = sa.create_engine(fresh_url)
    with engine.connect() as connection:
        for start in range(0, len(values), ROWS_PER_TRANSACTION):
            for row in values[start:start + ROWS_PER_TRANSACTION]:
                connection.execute(update, row)
            connection.commit()
    engine.dispose()


def main() -> None:
    done_url, fresh_url = sys.argv[1:3]
    values = final_values(done_url)
    started = time.perf_counter()
    write_rows(fresh_url, values)
    print(f"{time.perf_counter() - started:.3f}")


if __name__ == "__main__":
    main()
