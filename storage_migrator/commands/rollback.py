"""``storage-migrate rollback [--project ID]``: every generation (or one project's) back to
``<ROOT>/<generation_id>/`` byte for byte and ``storage_path`` back to ``<prefix>/<generation_id>``,
so ``storage-migrate db downgrade e011ab9dd223`` can follow.

Crash-safe like ``run`` and under the same run lock: files move first, the database is written
last through the same batch writer; nothing the application wrote is deleted, pending and
processing generations are not looked at, and a symlink on the way fails its generation. The
order of the steps: ``docs/design.md``, "Rolling back"."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from storage_migrator.config import Settings
from storage_migrator.db.reads import iter_project_records, load_projects
from storage_migrator.engine.batch import BatchWriter
from storage_migrator.engine.installation import open_installation
from storage_migrator.engine.lock import RunLock
from storage_migrator.errors import (
    FAILS_ONE_GENERATION,
    GenerationError,
    UnsafePathComponent,
    UsageError,
    failure_line,
    printable,
)
from storage_migrator.faults import checkpoint
from storage_migrator.records import GenerationRow, GenerationUpdate, ProjectRecord
from storage_migrator.report import GenerationOutcome, Outcome, RunReport
from storage_migrator.storage.handle import Storage, is_archived
from storage_migrator.storage.layout import (
    ARTIFACTS_DIR,
    MANIFEST_FILE,
    is_tool_written,
    parse_legacy_link_text,
    parse_patch_file_name,
    parse_target_dir_name,
    source_dir,
)
from storage_migrator.storage.manifest import read_manifest
from storage_migrator.storage.recovery import RootTempFiles, recover_project, sweep_state
from storage_migrator.storage.steps import discard_tree, move_tree, prepare_state_dir, remove_symlink, remove_tree
from storage_migrator.storage.tree import read_prefix, scan_tree

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

GIT_PATCH_START = b"diff --git "
UNFINISHED_REASON = "pending or processing: the application may still be writing it, so rollback leaves it as it is"
ARCHIVED_REASON = ("archived by the application (<project>/archive/v<N>__<id>/): its folder and row are the "
                   "application's, so rollback leaves both as they are")


def rollback(settings: Settings, keep_all: bool = True, project_id: str | None = None) -> RunReport:
    """Every project back to the legacy layout, or only ``project_id``'s (``UsageError``, exit 2,
    if the database knows no such project: neither its row nor a generation of it)."""
    report = RunReport(command="rollback", keep_all=keep_all)
    with open_installation(settings, "rollback") as installation:
        storage, engine = installation.storage, installation.engine
        with RunLock(storage, engine, "storage-migrate rollback"):
            records = iter_project_records(engine) if project_id is None else iter(_one_project(engine, project_id))
            prepare_state_dir(storage)
            root_temps = RootTempFiles.listed(storage)
            writer = BatchWriter(storage, engine, report)
            try:
                for record in records:
                    recover_project(storage, record.project_id, [g.id for g in record.generations], root_temps)
                    for generation in record.generations:
                        writer.add(*_restore_generation(storage, generation))
                    _remove_project_links(storage, record)
                    writer.flush_if_full()
                if project_id is None:
                    sweep_state(storage)                 # rollback has ROOT to itself (the run lock)
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                writer.flush()
    return report.finish()


def _one_project(engine: Engine, project_id: str) -> list[ProjectRecord]:
    """``project_id``'s record, read under the run lock; ``UsageError`` if the database has no
    trace of it (checked before anything on disk is touched)."""
    with engine.connect() as connection:
        records = load_projects(connection, [project_id])
    if not records or (not records[0].exists and not records[0].generations):
        raise UsageError(f"project {project_id!r} not found in the database (no project row, no generation); "
                         "check the id — nothing was rolled back")
    return records


def _restore_generation(storage: Storage, generation: GenerationRow) -> tuple[GenerationOutcome, GenerationUpdate | None]:
    """One generation back; any failure fails it alone."""
    def outcome(action: Outcome, storage_path: str | None, error: str | None = None,
                reason: str | None = None) -> GenerationOutcome:
        return GenerationOutcome.of_row(generation, action, storage_path, error=error, reason=reason)

    if generation.is_unfinished:
        return outcome(Outcome.SKIPPED, generation.storage_path, reason=UNFINISHED_REASON), None
    if is_archived(storage, generation):
        return outcome(Outcome.SKIPPED, generation.storage_path, reason=ARCHIVED_REASON), None
    try:
        legacy_path = storage.layout.legacy_storage_path(generation.id)
        target = find_target(storage, generation)
        moved = _move_back(storage, generation, target) if target is not None else False
        if target is not None:
            _remove_tool_files(storage, target)
    except FAILS_ONE_GENERATION as error:
        return outcome(Outcome.FAILED, generation.storage_path, failure_line(error)), None
    update = GenerationUpdate.from_row(generation, storage_path=legacy_path if _has_folder(storage, generation)
                                       else generation.storage_path, file_count=0, total_size_bytes=None,
                                       diff_from_previous=None, changes_summary=None)
    if update == GenerationUpdate.from_row(generation):
        return outcome(Outcome.RESTORED if moved else Outcome.UNCHANGED, generation.storage_path), None
    return outcome(Outcome.RESTORED if moved else Outcome.REFRESHED, update.storage_path), update


def _has_folder(storage: Storage, generation: GenerationRow) -> bool:
    return storage.is_folder(storage.layout.legacy_dir(generation.id))


def find_target(storage: Storage, generation: GenerationRow) -> Path | None:
    """The generation's folder in the new layout: at its row's version, or — if the version was
    changed since — whichever ``v<N>__<id>`` holds it. A symlink on the way (project folder,
    ``generations/``, a folder of this generation's name) raises: what is behind it cannot be
    looked at, so the generation cannot be called restored or absent."""
    generations_dir = storage.layout.generations_dir(generation.project_id)
    _refuse_symlinks_down_to(storage, generations_dir)
    expected = storage.layout.generation_target(generation)
    _refuse_symlink(storage, expected)
    if storage.is_folder(expected):
        return expected
    if not storage.is_folder(generations_dir):
        return None
    for name in storage.names(generations_dir):
        parsed = parse_target_dir_name(name)
        if parsed is not None and parsed[1] == generation.id:
            _refuse_symlink(storage, generations_dir / name)
            if storage.is_folder(generations_dir / name):
                return generations_dir / name
    return None


def _refuse_symlinks_down_to(storage: Storage, path: Path) -> None:
    """Raise if any component of ``path`` below ROOT is a symlink, looking at each with
    ``lstat`` only after the one above it proved a real folder (nothing is followed)."""
    current = storage.path
    for part in path.relative_to(storage.path).parts:
        current = current / part
        _refuse_symlink(storage, current)
        if not storage.is_folder(current):
            return


def _refuse_symlink(storage: Storage, path: Path) -> None:
    """Raise GenerationError naming ``path`` if it is a symlink; reads only the link's text."""
    text = storage.link_text(path)
    if text is not None:
        pointing = f" (to {printable(text)})"
        raise GenerationError(f"{printable(os.fspath(path))} is a symlink{pointing}: rollback never follows it, "
                              "nothing behind it was read or changed — put the real folder there and rerun")


def _move_back(storage: Storage, generation: GenerationRow, target: Path) -> bool:
    """``source/`` → the legacy folder; True if something moved. Everything that could refuse
    the move (a symlinked ``source/``, a symlink or unreadable file inside it, something else
    at the legacy path) is checked before the tool's flat link is removed, so a generation that
    fails keeps its link and the application keeps reading it."""
    source = source_dir(target)
    legacy = storage.layout.legacy_dir(generation.id)
    _refuse_symlink(storage, source)
    if not storage.is_folder(source):
        return False
    snapshot = scan_tree(storage, source)
    place = parse_legacy_link_text(storage.link_text(legacy) or "")
    if place is not None and place[0] == generation.project_id and place[2] == generation.id:
        remove_symlink(storage, legacy)                          # the tool's own link makes way for the folder
        checkpoint("legacy-link-removed")
    elif storage.occupied(legacy):
        if storage.is_folder(legacy) and scan_tree(storage, legacy).checksums() == snapshot.checksums():
            discard_tree(storage, source)       # an interrupted copy back: the legacy copy is whole
            checkpoint("source-discarded")
            return True
        raise GenerationError(f"{legacy} already exists with other content (the application's scratch copy?); "
                              "move it away and rerun the rollback")
    move_tree(storage, source, legacy, snapshot)
    checkpoint("moved-back")
    return True


def _remove_tool_files(storage: Storage, target: Path) -> None:
    """Remove what the tool wrote in the target folder — its manifest (if the application added
    nothing to it), its git-style patches, temp files, an empty ``artifacts/`` — and the folder
    if that empties it. Whatever the application wrote stays."""
    for name, status in storage.entries(target):
        entry = target / name
        if name == ARTIFACTS_DIR and stat.S_ISDIR(status.st_mode) and not storage.names(entry):
            storage.remove_empty_folder(entry)
        elif stat.S_ISDIR(status.st_mode):
            if is_tool_written(name) and name.startswith("."):
                remove_tree(storage, entry)                      # a staging copy
        elif stat.S_ISLNK(status.st_mode):
            continue
        elif name == MANIFEST_FILE:
            manifest = read_manifest(storage, entry)
            if manifest is not None and not (set(manifest.extra) - {"created_at"}):
                storage.remove_entry(entry)
        elif parse_patch_file_name(name) is not None:
            if read_prefix(storage, target, name, len(GIT_PATCH_START)) == GIT_PATCH_START:
                storage.remove_entry(entry)
        elif is_tool_written(name):
            storage.remove_entry(entry)
    try:
        storage.remove_empty_folder(target)
        checkpoint("target-removed")
    except OSError:
        pass                                            # the application's files keep the folder


def _remove_project_links(storage: Storage, record: ProjectRecord) -> None:
    """The ``active`` link, then ``generations/`` and the project folder if nothing else is left.
    A symlinked project folder or ``generations/`` is left alone: the link and whatever is
    behind it are not the tool's (the generations beneath were failed for it)."""
    try:
        generations_dir = storage.layout.generations_dir(record.project_id)
        _refuse_symlinks_down_to(storage, generations_dir)
    except (UnsafePathComponent, GenerationError):
        return
    if not storage.is_folder(generations_dir):
        return
    try:
        remove_symlink(storage, storage.layout.active_link(record.project_id))
        for folder in (generations_dir, generations_dir.parent):
            storage.remove_empty_folder(folder)     # through its parent's descriptor: a link is never rmdir'ed
    except OSError:
        return                                          # not empty, or swapped for a link meanwhile
