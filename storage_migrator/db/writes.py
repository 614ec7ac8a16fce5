"""Writes, each conditional on what was read or only moving a value forward: the claim of a
batch of generations before an irreversible disk step, their publication, the batch
writer's updates, project updates and version reservations."""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage_migrator.db.connect import is_lock_timeout
from storage_migrator.db.reads import read_row_seen
from storage_migrator.db.tables import generations, projects
from storage_migrator.records import (
    OWNED_GENERATION_COLUMNS,
    GenerationUpdate,
    ProjectUpdate,
    RowDrift,
    RowSeen,
)


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
        return self.publish_updates([], places)

    def publish_updates(self, updates: Sequence[GenerationUpdate], places: dict[str, Place] | None = None) -> set[str]:
        """``publish`` with every column the tool owns (a new place and the metadata, known
        once the disk steps are done) for ``updates``, and the new place alone for ``places``
        (a move that stays where it is without its metadata), in one transaction: each row
        conditional on the row as claimed, then commit. Returns the ids written, as
        ``publish`` does."""
        written = self._write_places(places or {})
        ordered = sorted(updates, key=lambda update: update.generation_id)
        if ordered and self.connection.dialect.name == "postgresql":
            statement, parameters = _updates_statement(ordered)
            written |= set(self.connection.execute(statement, parameters).scalars())
        else:
            written |= {update.generation_id for update in ordered
                        if self.connection.execute(_UPDATE_GENERATION, _update_parameters(update)).rowcount == 1}
        self.connection.commit()
        return written

    def _write_places(self, places: dict[str, Place]) -> set[str]:
        if places and self.connection.dialect.name == "postgresql":
            statement, parameters = _place_statement(places, self.seen)
            return set(self.connection.execute(statement, parameters).scalars())
        return {generation_id for generation_id, place in places.items()
                if self.connection.execute(_RECORD_PLACE, _place_parameters(generation_id, place,
                                                                            self.seen[generation_id])
                                           ).rowcount == 1}


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


def _place_statement(places: dict[str, Place], seen: dict[str, RowSeen]) -> tuple[sa.UpdateBase, dict[str, Any]]:
    """Every row's new place, each written only where the row still shows what was claimed."""
    rows = [(generation_id, seen[generation_id], {"storage_path": storage_path, "version": version})
            for generation_id, (storage_path, version) in sorted(places.items())]
    return _conditional_update(("storage_path", "version"), len(rows)), _row_parameters(rows)


def _updates_statement(updates: Sequence[GenerationUpdate]) -> tuple[sa.UpdateBase, dict[str, Any]]:
    """Every owned column of each row, each written only where the row still shows what its
    update saw."""
    rows = [(update.generation_id, update.seen, update.column_values()) for update in updates]
    return _conditional_update(OWNED_GENERATION_COLUMNS, len(rows)), _row_parameters(rows)


def _row_parameters(rows: Sequence[tuple[str, RowSeen, dict[str, Any]]]) -> dict[str, Any]:
    """The parameters of ``_conditional_update``: ``<column>_<row index>``."""
    parameters: dict[str, Any] = {}
    for index, (generation_id, seen, values) in enumerate(rows):
        row = {"id": generation_id, "seen_status": seen.status, "seen_version": seen.version,
               "seen_storage_path": seen.storage_path, **values}
        parameters.update({f"{name}_{index}": value for name, value in row.items()})
    return parameters


_SEEN_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("id", sa.String()), ("seen_status", sa.String()), ("seen_version", sa.Integer()),
    ("seen_storage_path", sa.String()))


@functools.lru_cache(maxsize=64)
def _conditional_update(columns: tuple[str, ...], count: int) -> sa.UpdateBase:
    """``UPDATE generations … FROM (SELECT … UNION ALL SELECT …) AS written … RETURNING id`` for
    ``count`` rows: ``columns`` of each, where the row still shows what was seen. One statement
    per (columns, count), built and compiled once: its parameters are named, never inlined —
    and not a VALUES list, which SQLAlchemy never caches (every batch would be compiled anew)."""
    typed: list[tuple[str, sa.types.TypeEngine[Any]]] = [
        *_SEEN_COLUMNS, *((name, generations.c[name].type) for name in columns)]
    rows: list[sa.Select[Any]] = [
        sa.select(*(sa.bindparam(f"{name}_{index}", type_=type_).label(name) for name, type_ in typed))
        for index in range(count)]
    written = (sa.union_all(*rows) if count > 1 else rows[0]).subquery("written")
    return (
        generations.update()
        .where(generations.c.id == written.c.id, generations.c.status == written.c.seen_status,
               generations.c.version.is_not_distinct_from(written.c.seen_version),
               generations.c.storage_path.is_not_distinct_from(written.c.seen_storage_path))
        .values({name: written.c[name] for name in columns})
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
