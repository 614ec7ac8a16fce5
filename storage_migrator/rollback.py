"""``storage-migrate rollback``: every generation back to ``<ROOT>/<generation_id>/`` byte for byte
and ``storage_path`` back to ``<prefix>/<generation_id>``, so ``storage-migrate db downgrade
e011ab9dd223`` can follow.

Crash-safe like ``run``: once a generation is known to be restorable (no symlink on its way,
``source/`` readable, nothing else at the legacy path) the backward-compatibility link goes first,
``source/`` goes back by one rename (or a verified copy), the tool's own files are removed after
it, and the database is written last, through the same batch writer as ``run``. Nothing the
application wrote (its manifest keys, its ``diff -ru`` patches, files in ``artifacts/``) is
deleted: such a target folder stays, without ``source/``. Only a generation whose files moved is
reported restored.

A pending or processing generation is the application's, still being written: it is reported
skipped and nothing of it — folder, files, row, flat link — is looked at or touched. A symlink at
any component on the way to a generation's folder (project folder, ``generations/``, the
``v<N>__<id>`` folder, ``source/``) fails that generation with a line naming the link; nothing
behind a link is read, changed or deleted.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .batch import BatchWriter
from .config import Settings
from .db import iter_project_records
from .errors import GenerationError
from .faults import checkpoint
from .installation import open_installation
from .lock import RunLock
from .plan import is_legacy_link_text
from .records import GenerationRow, GenerationUpdate, ProjectRecord
from .report import GenerationOutcome, Outcome, RunReport
from .storage.layout import (
    ARTIFACTS_DIR,
    MANIFEST_FILE,
    StorageLayout,
    UnsafePathComponent,
    is_tool_written,
    parse_patch_file_name,
    parse_target_dir_name,
    source_dir,
)
from .storage.manifest import read_manifest
from .storage.root import printable
from .storage.steps import (
    RootTempFiles,
    discard_tree,
    move_tree,
    prepare_state_dir,
    recover_project,
    remove_symlink,
    remove_tree,
    sweep_state,
)
from .storage.tree import anchored_path, is_real_dir, read_prefix, scan_tree

GIT_PATCH_START = b"diff --git "
UNFINISHED_REASON = "pending or processing: the application may still be writing it, so rollback leaves it as it is"


def rollback(settings: Settings, keep_all: bool = True) -> RunReport:
    report = RunReport(command="rollback", keep_all=keep_all)
    with open_installation(settings, "rollback") as installation:
        layout, engine = installation.layout, installation.engine
        with RunLock(layout.lock_file, engine, "storage-migrate rollback"):
            prepare_state_dir(layout.state_dir)
            root_temps = RootTempFiles.listed(layout.root)
            writer = BatchWriter(engine, report)
            try:
                for record in iter_project_records(engine):
                    recover_project(layout, record.project_id, [g.id for g in record.generations], root_temps)
                    for generation in record.generations:
                        writer.add(*_restore_generation(layout, generation))
                    _remove_project_links(layout, record)
                    writer.flush_if_full()
                sweep_state(layout)                     # rollback has ROOT to itself (the run lock)
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                writer.flush()
    return report.finish()


def _restore_generation(layout: StorageLayout, generation: GenerationRow) -> tuple[GenerationOutcome, GenerationUpdate | None]:
    """One generation back; any failure fails it alone."""
    def outcome(action: Outcome, storage_path: str | None, error: str | None = None,
                reason: str | None = None) -> GenerationOutcome:
        return GenerationOutcome(generation.id, generation.project_id, generation.version, action, storage_path,
                                 error=error, reason=reason)

    if generation.is_unfinished:
        return outcome(Outcome.SKIPPED, generation.storage_path, reason=UNFINISHED_REASON), None
    try:
        legacy_path = layout.legacy_storage_path(generation.id)
        target = find_target(layout, generation)
        moved = _move_back(layout, generation, target) if target is not None else False
        if target is not None:
            _remove_tool_files(target)
    except (GenerationError, UnsafePathComponent, OSError, ValueError) as error:
        return outcome(Outcome.FAILED, generation.storage_path, _one_line(error)), None
    update = GenerationUpdate.from_row(generation, storage_path=legacy_path if _has_folder(layout, generation)
                                       else generation.storage_path, file_count=0, total_size_bytes=None,
                                       diff_from_previous=None, changes_summary=None)
    if update == GenerationUpdate.from_row(generation):
        return outcome(Outcome.RESTORED if moved else Outcome.UNCHANGED, generation.storage_path), None
    return outcome(Outcome.RESTORED if moved else Outcome.REFRESHED, update.storage_path), update


def _one_line(error: Exception) -> str:
    """The first line of an error, printable (a link's text or a file name may hold newlines
    or bytes that are not UTF-8): a report line per generation stays one line."""
    lines = str(error).splitlines()
    return printable(lines[0]) if lines else type(error).__name__


def _has_folder(layout: StorageLayout, generation: GenerationRow) -> bool:
    legacy = layout.legacy_dir(generation.id)
    return os.path.isdir(legacy) and not os.path.islink(legacy)


def find_target(layout: StorageLayout, generation: GenerationRow) -> Path | None:
    """The generation's folder in the new layout: at its row's version, or — if the version was
    changed since — whichever ``v<N>__<id>`` holds it. A symlink on the way (project folder,
    ``generations/``, a folder of this generation's name) raises: what is behind it cannot be
    looked at, so the generation cannot be called restored or absent."""
    generations_dir = layout.generations_dir(generation.project_id)
    _refuse_symlinks_down_to(layout, generations_dir)
    expected = layout.generation_target(generation)
    _refuse_symlink(expected)
    if is_real_dir(expected):
        return expected
    if not is_real_dir(generations_dir):
        return None
    for name in sorted(os.listdir(generations_dir)):
        parsed = parse_target_dir_name(name)
        if parsed is not None and parsed[1] == generation.id:
            _refuse_symlink(generations_dir / name)
            if is_real_dir(generations_dir / name):
                return generations_dir / name
    return None


def _refuse_symlinks_down_to(layout: StorageLayout, path: Path) -> None:
    """Raise if any component of ``path`` below ROOT is a symlink, looking at each with
    ``lstat`` only after the one above it proved a real folder (nothing is followed)."""
    current = layout.root
    for part in path.relative_to(layout.root).parts:
        current = current / part
        _refuse_symlink(current)
        if not is_real_dir(current):
            return


def _refuse_symlink(path: Path) -> None:
    """Raise GenerationError naming ``path`` if it is a symlink; reads only the link's text."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        try:
            pointing = f" (to {printable(os.readlink(path))})"
        except OSError:
            pointing = ""
        raise GenerationError(f"{printable(os.fspath(path))} is a symlink{pointing}: rollback never follows it, "
                              "nothing behind it was read or changed — put the real folder there and rerun")


def _move_back(layout: StorageLayout, generation: GenerationRow, target: Path) -> bool:
    """``source/`` → the legacy folder; True if something moved. Everything that could refuse
    the move (a symlinked ``source/``, a symlink or unreadable file inside it, something else
    at the legacy path) is checked before the tool's flat link is removed, so a generation that
    fails keeps its link and the application keeps reading it."""
    source = source_dir(target)
    legacy = layout.legacy_dir(generation.id)
    _refuse_symlink(source)
    if not is_real_dir(source):
        return False
    snapshot = scan_tree(source, keep_contents=False)
    if os.path.islink(legacy) and is_legacy_link_text(layout, generation, os.readlink(legacy)):
        remove_symlink(legacy)                          # the tool's own link makes way for the folder
        checkpoint("legacy-link-removed")
    elif os.path.lexists(legacy):
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
    """The ``active`` link, then ``generations/`` and the project folder if nothing else is left.
    A symlinked project folder or ``generations/`` is left alone: the link and whatever is
    behind it are not the tool's (the generations beneath were failed for it)."""
    try:
        generations_dir = layout.generations_dir(record.project_id)
        _refuse_symlinks_down_to(layout, generations_dir)
    except (UnsafePathComponent, GenerationError):
        return
    if not is_real_dir(generations_dir):
        return
    try:
        _remove_link_confined(layout.active_link(record.project_id))
        for folder in (generations_dir, generations_dir.parent):
            _remove_empty_dir_confined(folder)
    except OSError:
        return                                          # not empty, or swapped for a link meanwhile


def _remove_link_confined(link: Path) -> None:
    """Unlink ``link`` if it is a symlink, its parents resolved from ROOT without following any
    link (a folder swapped for a link after the check above is refused, not followed)."""
    with anchored_path(link) as (root, parts):
        status = root.lstat(parts)
        if status is not None and stat.S_ISLNK(status.st_mode):
            root.unlink(parts)


def _remove_empty_dir_confined(folder: Path) -> None:
    """rmdir ``folder`` through its parent's descriptor: an entry that became a link is not a
    directory to rmdir(2), so nothing elsewhere is ever removed. Raises OSError if not empty."""
    with anchored_path(folder) as (root, parts):
        with root.open_dir(parts[:-1]) as parent:
            os.rmdir(parts[-1], dir_fd=parent.fileno())
