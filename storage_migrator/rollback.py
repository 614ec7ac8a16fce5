"""``storage-migrate rollback``: every generation back to ``<ROOT>/<generation_id>/`` byte for byte
and ``storage_path`` back to ``<prefix>/<generation_id>``, so ``alembic downgrade e011ab9dd223``
can follow.

Crash-safe like ``run``: ``source/`` goes back by one rename (or a verified copy), the tool's own
files are removed after it, and the database is written last; a rerun finishes whatever a
killed one left.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .config import Settings
from .db import GenerationRow, GenerationUpdate, ProjectRecord, iter_project_records, write_updates
from .errors import GenerationError
from .faults import checkpoint
from .fsops import discard_tree, empty_trash, flush_to_disk, move_tree
from .layout import (
    ARTIFACTS_DIR,
    StorageLayout,
    UnsafePathComponent,
    is_tool_written,
    source_dir,
)
from .lock import RunLock
from .migrate import open_installation
from .report import GenerationOutcome, RunReport
from .tree import scan_tree

BATCH_SIZE = 500


def rollback(settings: Settings, keep_all: bool = True) -> RunReport:
    layout, engine = open_installation(settings, "rollback")
    report = RunReport(command="rollback", keep_all=keep_all)
    try:
        with RunLock(layout.lock_file, engine, "storage-migrate rollback"):
            empty_trash(layout.trash_dir)
            updates: list[GenerationUpdate] = []
            outcomes: list[GenerationOutcome] = []
            for record in iter_project_records(engine):
                for generation in record.generations:
                    outcome, update = _restore_generation(layout, generation, report)
                    outcomes.append(outcome)
                    if update is not None:
                        updates.append(update)
                _remove_project_folders(layout, record)
                if len(updates) >= BATCH_SIZE:
                    _flush(engine, updates, outcomes, report)
            _flush(engine, updates, outcomes, report)
    finally:
        engine.dispose()
    report.finished = report.started + report.seconds
    return report


def _flush(engine, updates: list[GenerationUpdate], outcomes: list[GenerationOutcome], report: RunReport) -> None:
    flush_to_disk()
    checkpoint("before-database-write")
    write_updates(engine, updates, [])
    checkpoint("after-database-write")
    for outcome in outcomes:
        report.add(outcome)
    updates.clear()
    outcomes.clear()


def _restore_generation(
    layout: StorageLayout, generation: GenerationRow, report: RunReport
) -> tuple[GenerationOutcome, GenerationUpdate | None]:
    def outcome(action: str, error: str | None = None) -> GenerationOutcome:
        storage_path = generation.storage_path if error else legacy_path
        return GenerationOutcome(generation.id, generation.project_id, generation.version, action, storage_path, error=error)

    try:
        legacy_path = layout.legacy_storage_path(generation.id)
        target = layout.target_dir(generation.project_id, generation.version or 0, generation.id)
    except UnsafePathComponent as error:
        legacy_path = generation.storage_path
        return outcome("failed", f"{error}; it cannot name a folder — fix the row"), None
    try:
        restored = _move_back(layout, generation, target)
        _remove_tool_files(target)
    except GenerationError as error:
        return outcome("failed", str(error)), None
    update = GenerationUpdate(
        generation_id=generation.id,
        storage_path=legacy_path,
        file_count=0,
        total_size_bytes=None,
        diff_from_previous=None,
        changes_summary=None,
        is_active=generation.is_active,
    )
    unchanged = not restored and generation.storage_path == legacy_path and generation.file_count == 0 \
        and generation.changes_summary is None and generation.diff_from_previous is None \
        and generation.total_size_bytes is None
    return outcome("unchanged" if unchanged else "restored"), (None if unchanged else update)


def _move_back(layout: StorageLayout, generation: GenerationRow, target: Path) -> bool:
    """``source/`` → the legacy folder; True if something moved."""
    source = source_dir(target)
    legacy = layout.legacy_dir(generation.id)
    if not source.is_dir() or source.is_symlink():
        return False
    artifacts = target / ARTIFACTS_DIR
    if artifacts.is_dir() and any(artifacts.iterdir()):
        raise GenerationError(f"{artifacts} holds files the application wrote; move them away before a rollback")
    snapshot = scan_tree(source)
    if legacy.exists() or legacy.is_symlink():
        if legacy.is_dir() and not legacy.is_symlink() and scan_tree(legacy, keep_contents=False).checksums() == snapshot.checksums():
            discard_tree(source, layout.trash_dir)       # an interrupted copy back: the legacy copy is whole
            checkpoint("source-discarded")
            return True
        raise GenerationError(f"{legacy} already exists with other content; move it away and rerun the rollback")
    move_tree(source, legacy, snapshot, layout.trash_dir)
    checkpoint("moved-back")
    return True


def _remove_tool_files(target: Path) -> None:
    """Remove what the tool wrote in the target folder (manifest, patches, empty artifacts/)."""
    if not target.is_dir() or target.is_symlink():
        return
    for entry in target.iterdir():
        is_folder = entry.is_dir() and not entry.is_symlink()
        if is_folder and entry.name == ARTIFACTS_DIR and not any(entry.iterdir()):
            entry.rmdir()
        elif is_folder and is_tool_written(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
        elif is_tool_written(entry.name):
            entry.unlink()
    try:
        target.rmdir()
        checkpoint("target-removed")
    except OSError as error:
        raise GenerationError(f"{target} still holds files the tool did not write; move them away and rerun") from error


def _remove_project_folders(layout: StorageLayout, record: ProjectRecord) -> None:
    """The ``active`` link, then ``generations/`` and the project folder if nothing else is left."""
    try:
        generations_dir = layout.generations_dir(record.project_id)
    except UnsafePathComponent:
        return
    link = generations_dir / "active"
    if link.is_symlink():
        link.unlink()
    for folder in (generations_dir, generations_dir.parent):
        try:
            folder.rmdir()
        except OSError:
            break
