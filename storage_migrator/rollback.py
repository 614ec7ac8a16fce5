"""``storage-migrate rollback``: every generation back to ``<ROOT>/<generation_id>/`` byte for byte
and ``storage_path`` back to ``<prefix>/<generation_id>``, so ``storage-migrate db downgrade
e011ab9dd223`` can follow.

Crash-safe like ``run``: the backward-compatibility link goes first, ``source/`` goes back by one
rename (or a verified copy), the tool's own files are removed after it, and the database is
written last, through the same batch writer as ``run``. Nothing the application wrote (its
manifest keys, its ``diff -ru`` patches, files in ``artifacts/``) is deleted: such a target
folder stays, without ``source/``. Only a generation whose files moved is reported restored.
"""
from __future__ import annotations

import os
from pathlib import Path

from .batch import BatchWriter
from .config import Settings
from .db import iter_project_records
from .errors import GenerationError
from .faults import checkpoint
from .fsops import discard_tree, empty_trash, move_tree, prepare_state_dir, recover_moving, remove_symlink, remove_tree
from .installation import open_installation
from .layout import (
    ARTIFACTS_DIR,
    MANIFEST_FILE,
    StorageLayout,
    UnsafePathComponent,
    is_tool_written,
    parse_patch_file_name,
    parse_target_dir_name,
    source_dir,
)
from .lock import RunLock
from .manifest import read_manifest
from .plan import is_legacy_link_text
from .records import GenerationRow, GenerationUpdate, ProjectRecord
from .report import GenerationOutcome, Outcome, RunReport
from .tree import is_real_dir, read_prefix, scan_tree

GIT_PATCH_START = b"diff --git "


def rollback(settings: Settings, keep_all: bool = True) -> RunReport:
    report = RunReport(command="rollback", keep_all=keep_all)
    with open_installation(settings, "rollback") as installation:
        layout, engine = installation.layout, installation.engine
        with RunLock(layout.lock_file, engine, "storage-migrate rollback"):
            prepare_state_dir(layout.state_dir)
            recover_moving(layout.root, layout.state_dir)
            empty_trash(layout.trash_dir)
            writer = BatchWriter(engine, report)
            try:
                for record in iter_project_records(engine):
                    for generation in record.generations:
                        writer.add(*_restore_generation(layout, generation))
                    _remove_project_links(layout, record)
                    writer.flush_if_full()
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                writer.flush()
    return report.finish()


def _restore_generation(layout: StorageLayout, generation: GenerationRow) -> tuple[GenerationOutcome, GenerationUpdate | None]:
    """One generation back; any failure fails it alone."""
    def outcome(action: Outcome, storage_path: str | None, error: str | None = None) -> GenerationOutcome:
        return GenerationOutcome(generation.id, generation.project_id, generation.version, action, storage_path, error=error)

    try:
        legacy_path = layout.legacy_storage_path(generation.id)
        target = find_target(layout, generation)
        moved = _move_back(layout, generation, target) if target is not None else False
        if target is not None:
            _remove_tool_files(target)
    except (GenerationError, UnsafePathComponent, OSError, ValueError) as error:
        return outcome(Outcome.FAILED, generation.storage_path, str(error).splitlines()[0]), None
    if generation.is_unfinished and not moved:
        return outcome(Outcome.SKIPPED, generation.storage_path), None
    update = GenerationUpdate.from_row(generation, storage_path=legacy_path if _has_folder(layout, generation)
                                       else generation.storage_path, file_count=0, total_size_bytes=None,
                                       diff_from_previous=None, changes_summary=None)
    if update == GenerationUpdate.from_row(generation):
        return outcome(Outcome.RESTORED if moved else Outcome.UNCHANGED, generation.storage_path), None
    return outcome(Outcome.RESTORED if moved else Outcome.REFRESHED, update.storage_path), update


def _has_folder(layout: StorageLayout, generation: GenerationRow) -> bool:
    legacy = layout.legacy_dir(generation.id)
    return os.path.isdir(legacy) and not os.path.islink(legacy)


def find_target(layout: StorageLayout, generation: GenerationRow) -> Path | None:
    """The generation's folder in the new layout: at its row's version, or — if the version was
    changed since — whichever ``v<N>__<id>`` holds it."""
    expected = layout.generation_target(generation)
    if is_real_dir(expected):
        return expected
    generations_dir = layout.generations_dir(generation.project_id)
    if not is_real_dir(generations_dir):
        return None
    for name in sorted(os.listdir(generations_dir)):
        parsed = parse_target_dir_name(name)
        if parsed is not None and parsed[1] == generation.id and is_real_dir(generations_dir / name):
            return generations_dir / name
    return None


def _move_back(layout: StorageLayout, generation: GenerationRow, target: Path) -> bool:
    """``source/`` → the legacy folder; True if something moved."""
    source = source_dir(target)
    legacy = layout.legacy_dir(generation.id)
    if not is_real_dir(source):
        return False
    if os.path.islink(legacy) and is_legacy_link_text(layout, generation, os.readlink(legacy)):
        remove_symlink(legacy)                          # the tool's own link makes way for the folder
        checkpoint("legacy-link-removed")
    snapshot = scan_tree(source, keep_contents=False)
    if os.path.lexists(legacy):
        if is_real_dir(legacy) and scan_tree(legacy, keep_contents=False).checksums() == snapshot.checksums():
            discard_tree(source, layout.trash_dir)       # an interrupted copy back: the legacy copy is whole
            checkpoint("source-discarded")
            return True
        raise GenerationError(f"{legacy} already exists with other content (the application's scratch copy?); "
                              "move it away and rerun the rollback")
    move_tree(source, legacy, snapshot, layout.state_dir)
    checkpoint("moved-back")
    return True


def _remove_tool_files(target: Path) -> None:
    """Remove what the tool wrote in the target folder — its manifest (if the application added
    nothing to it), its git-style patches, temp files, an empty ``artifacts/`` — and the folder
    if that empties it. Whatever the application wrote stays."""
    for name in os.listdir(target):
        entry = target / name
        if name == ARTIFACTS_DIR and is_real_dir(entry) and not os.listdir(entry):
            os.rmdir(entry)
        elif is_real_dir(entry):
            if is_tool_written(name) and name.startswith("."):
                remove_tree(entry)                      # a staging copy
        elif os.path.islink(entry):
            continue
        elif name == MANIFEST_FILE:
            manifest = read_manifest(entry)
            if manifest is not None and not (set(manifest.extra) - {"created_at"}):
                os.unlink(entry)
        elif parse_patch_file_name(name) is not None:
            if read_prefix(target, name, len(GIT_PATCH_START)) == GIT_PATCH_START:
                os.unlink(entry)
        elif is_tool_written(name):
            os.unlink(entry)
    try:
        os.rmdir(target)
        checkpoint("target-removed")
    except OSError:
        pass                                            # the application's files keep the folder


def _remove_project_links(layout: StorageLayout, record: ProjectRecord) -> None:
    """The ``active`` link, then ``generations/`` and the project folder if nothing else is left."""
    try:
        generations_dir = layout.generations_dir(record.project_id)
    except UnsafePathComponent:
        return
    if not is_real_dir(generations_dir):
        return
    remove_symlink(layout.active_link(record.project_id))
    for folder in (generations_dir, generations_dir.parent):
        try:
            os.rmdir(folder)
        except OSError:
            break


