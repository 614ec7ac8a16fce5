"""Deterministic sample data: ``generate_installation`` builds a LEGACY installation (rows at the
base revision plus ``<ROOT>/<generation_id>/`` folders) with every edge case the migration must
survive, and reports where each edge case sits. Same seed and size, same ids, rows, bytes, mtimes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.demo.blueprint import GenerationKind, ProjectBlueprint, ProjectRole, plan_projects
from storage_migrator.demo.disk import WrittenFolder, write_folder
from storage_migrator.demo.projects import GeneratedGeneration, build_project
from storage_migrator.demo.rows import LEGACY_TABLES, build_account_rows, reflect_legacy_tables
from storage_migrator.demo.sizes import DEFAULT_SIZE, SampleSize


@dataclass(frozen=True)
class SampleInstallation:
    """What was generated, and where each edge case sits, so tests need not rediscover it."""

    project_ids: tuple[str, ...]
    """Every project inserted, in insertion order."""
    generation_ids: tuple[str, ...]
    """Every generation inserted, in insertion order (the tied pair is inserted in reverse id order)."""
    demo_project_id: str
    """Only completed generations, with edits, adds, deletes, a rename, binary, CRLF and latin-1 changes."""
    file_count: int
    """Files written to disk."""
    total_bytes: int
    """Sum of the sizes of those files."""
    folder_generation_ids: tuple[str, ...]
    """Generations that have a folder ``<ROOT>/<id>/`` (completed, failed partial, processing)."""
    missing_folder_generation_id: str
    """Completed, folder missing on disk, text files held in ``output_files``."""
    processing_generation_id: str
    """Status ``processing``; a partial folder exists (the application may still be writing)."""
    pending_generation_id: str
    """Status ``pending``; no folder."""
    tied_generation_ids: tuple[str, str]
    """Two completed generations of one project with the same ``created_at``, sorted by id (the
    migration's version order). They were inserted in the opposite order."""
    failed_without_folder_generation_ids: tuple[str, ...]
    """Status ``failed``, no folder, ``output_files`` NULL, ``error_message`` set."""
    failed_with_partial_folder_generation_ids: tuple[str, ...]
    """Status ``failed`` with a partial folder (a subset of files, one of them truncated)."""
    project_without_generations_id: str
    project_without_completed_generation_id: str
    """Only failed generations (one with a partial folder, one without)."""


def generate_installation(
    engine: sa.Engine,
    storage_root: Path,
    size: SampleSize = DEFAULT_SIZE,
    seed: int = 0,
    *,
    store_output_files: bool = True,
) -> SampleInstallation:
    """Insert users, organizations, projects and generations into a database at revision
    e011ab9dd223 and write each generation's legacy folder ``<storage_root>/<generation_id>/``.

    Refuses (ValueError) a database that already has rows or is at another revision, and a
    ``storage_root`` that already contains anything, so demo data never mixes with a real
    installation. Works project by project: memory does not grow with ``size``. The rows go in
    one transaction; a failure leaves the folders written so far on disk.

    ``store_output_files=False`` leaves ``output_files`` NULL for completed generations (the
    benchmark corpus), except the missing-folder generation, which always keeps its files there.
    """
    tables = reflect_legacy_tables(engine)
    with engine.connect() as connection:
        _refuse_non_empty_database(connection, tables)
    _refuse_non_empty_storage(storage_root)
    storage_root.mkdir(parents=True, exist_ok=True)
    blueprints = plan_projects(size, seed)
    tally = _Tally()
    with engine.begin() as connection:
        users, organizations = build_account_rows(seed)
        connection.execute(tables["users"].insert(), users)
        connection.execute(tables["organizations"].insert(), organizations)
        for blueprint in blueprints:
            project = build_project(blueprint, seed, size, users, organizations, store_output_files)
            connection.execute(tables["projects"].insert(), [project.row])
            generation_rows: list[dict[str, object]] = []
            for generation in project.generations:
                generation_rows.append(generation.row)
                tally.record(generation, write_folder(storage_root, generation))
            if generation_rows:
                connection.execute(tables["generations"].insert(), generation_rows)
            tally.project_ids.append(blueprint.project_id)
    return tally.installation(blueprints)


def _refuse_non_empty_database(connection: sa.Connection, tables: dict[str, sa.Table]) -> None:
    for name in LEGACY_TABLES:
        if connection.execute(sa.select(sa.literal(1)).select_from(tables[name]).limit(1)).first():
            raise ValueError(
                f"refusing to add sample data: table {name!r} already has rows "
                "(sample data goes into an empty database only)"
            )


def _refuse_non_empty_storage(storage_root: Path) -> None:
    if storage_root.exists() and not storage_root.is_dir():
        raise ValueError(f"refusing to add sample data: {storage_root} exists and is not a directory")
    if storage_root.is_dir() and any(storage_root.iterdir()):
        raise ValueError(
            f"refusing to add sample data: {storage_root} is not empty "
            "(sample data goes into an empty storage root only)"
        )


@dataclass
class _Tally:
    """Collects what the caller needs to know while generations stream past."""

    project_ids: list[str] = field(default_factory=list)
    generation_ids: list[str] = field(default_factory=list)
    folder_generation_ids: list[str] = field(default_factory=list)
    tied_generation_ids: list[str] = field(default_factory=list)
    by_kind: dict[GenerationKind, list[str]] = field(default_factory=dict)
    file_count: int = 0
    total_bytes: int = 0

    def record(self, generation: GeneratedGeneration, written: WrittenFolder) -> None:
        self.generation_ids.append(generation.generation_id)
        if generation.kind.has_folder:
            self.folder_generation_ids.append(generation.generation_id)
        if generation.tied:
            self.tied_generation_ids.append(generation.generation_id)
        self.by_kind.setdefault(generation.kind, []).append(generation.generation_id)
        self.file_count += written.file_count
        self.total_bytes += written.total_bytes

    def of_kind(self, kind: GenerationKind) -> tuple[str, ...]:
        return tuple(self.by_kind.get(kind, ()))

    def installation(self, blueprints: list[ProjectBlueprint]) -> SampleInstallation:
        by_role = {blueprint.role: blueprint for blueprint in blueprints}
        tied = sorted(self.tied_generation_ids)
        return SampleInstallation(
            project_ids=tuple(self.project_ids),
            generation_ids=tuple(self.generation_ids),
            demo_project_id=by_role[ProjectRole.DEMO].project_id,
            file_count=self.file_count,
            total_bytes=self.total_bytes,
            folder_generation_ids=tuple(self.folder_generation_ids),
            missing_folder_generation_id=self.of_kind(GenerationKind.COMPLETED_MISSING_FOLDER)[0],
            processing_generation_id=self.of_kind(GenerationKind.PROCESSING)[0],
            pending_generation_id=self.of_kind(GenerationKind.PENDING)[0],
            tied_generation_ids=(tied[0], tied[1]),
            failed_without_folder_generation_ids=self.of_kind(GenerationKind.FAILED_NO_FOLDER),
            failed_with_partial_folder_generation_ids=self.of_kind(GenerationKind.FAILED_PARTIAL_FOLDER),
            project_without_generations_id=by_role[ProjectRole.NO_GENERATIONS].project_id,
            project_without_completed_generation_id=by_role[ProjectRole.NO_COMPLETED].project_id,
        )
