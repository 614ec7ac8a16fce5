"""Reads: projects and their generations streamed in id order, one row's state as the plan saw
it, and the small lookups the commands need."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage_migrator.db.tables import GENERATION_COLUMNS, generation_row, generations, projects
from storage_migrator.records import (
    GenerationRow,
    ProjectRecord,
    RowSeen,
)


def count_generations(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(generations)).scalar_one()


def iter_project_ids(connection: Connection) -> list[str]:
    """Every project id that has a row or generations, sorted: the unit of streaming."""
    from_projects = sa.select(projects.c.id)
    from_generations = sa.select(generations.c.project_id).distinct()
    ids = {row[0] for row in connection.execute(from_projects)} | {row[0] for row in connection.execute(from_generations)}
    return sorted(project_id for project_id in ids if project_id is not None)


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
        sa.select(*GENERATION_COLUMNS)
        .where(generations.c.project_id.in_(project_ids))
        .order_by(generations.c.project_id, generations.c.version, generations.c.created_at, generations.c.id)
    )
    for row in connection.execute(query):
        by_project[row.project_id].append(generation_row(row))
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


def read_row_seen(connection: Connection, generation_id: str, for_update: bool = False) -> RowSeen | None:
    """The row's status, version and storage_path now (None if the application deleted it);
    ``for_update`` locks it on PostgreSQL until the transaction ends."""
    query = sa.select(generations.c.status, generations.c.version, generations.c.storage_path).where(
        generations.c.id == generation_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = connection.execute(query).first()
    return None if row is None else RowSeen(row.status, row.version, row.storage_path)
