"""The application's inconsistent rows and its files at ROOT's top level: facts the tool reports
(``application_states`` in every report) and, but for the opt-in ``--adopt-complete``, never
changes.

The keys — ``failed_but_complete``, ``completed_without_storage_path``,
``flat_and_hierarchical_without_storage_path``, ``root_zips``, ``root_files`` and ``adopted`` —
and what the tool does with each are in the README's table ("Running beside the application")."""
from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import Engine

from storage_migrator.db.writes import adopt_failed_generation
from storage_migrator.engine.survey import has_application_manifest
from storage_migrator.errors import FAILS_ONE_GENERATION
from storage_migrator.records import GenerationRow, ProjectRecord, RowSeen
from storage_migrator.report import ROOT_FILES, ROOT_ZIPS, ApplicationState, empty_states
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.layout import (
    STATE_DIR,
    check_path_component,
    is_temp_name,
    manifest_path,
    parse_legacy_link_text,
    source_dir,
)
from storage_migrator.storage.tree import fingerprint_tree, scan_tree

OutputFiles = Callable[[str], "Mapping[str, Any] | None"]


def application_state(storage: Storage, generation: GenerationRow, output_files: OutputFiles) -> ApplicationState | None:
    """Which of the application's inconsistent states ``generation`` (as read) is in, from its
    row and a look at its folders (stats, one manifest head; a failed row's ``source/`` is
    walked and its ``output_files`` read). None for any other state. Nothing is followed."""
    if generation.is_unfinished or not isinstance(generation.version, int) or generation.version < 1:
        return None
    try:
        check_path_component(generation.id, "generation id")
        check_path_component(generation.project_id, "project id")
        target = storage.layout.generation_target(generation)
        if not storage.is_folder(source_dir(target)):
            return None
        flat_folder = storage.is_folder(storage.layout.legacy_dir(generation.id))
        if generation.storage_path is None and flat_folder:
            return ApplicationState.FLAT_AND_HIERARCHICAL if has_application_manifest(storage, target) else None
        if generation.status == "completed" and generation.storage_path is None:
            return ApplicationState.COMPLETED_WITHOUT_STORAGE_PATH
        if generation.status == "failed" and generation.has_output_files \
                and storage.occupied(manifest_path(target)):
            files = output_files(generation.id)
            if _paths_match(files, set(fingerprint_tree(storage, source_dir(target)))):
                return ApplicationState.FAILED_BUT_COMPLETE
    except FAILS_ONE_GENERATION:         # an unsafe id (InvalidInput) included
        return None
    return None


def _paths_match(files: Mapping[str, Any] | None, on_disk: set[str]) -> bool:
    if not files:
        return False
    return all(isinstance(content, str) for content in files.values()) and set(files) == on_disk


def _utf8_checksums(files: Mapping[str, Any]) -> dict[str, str] | None:
    """The sha256 of each ``output_files`` content as the application writes it (UTF-8); None
    if one cannot be UTF-8 (a lone surrogate, legal in JSON): then no file on disk matches it."""
    try:
        return {path: hashlib.sha256(content.encode("utf-8")).hexdigest() for path, content in files.items()}
    except UnicodeEncodeError:
        return None


def project_states(storage: Storage, record: ProjectRecord, output_files: OutputFiles) -> dict[str, list[str]]:
    """``application_states`` of one project's generations (ids per state)."""
    found = empty_states()
    for generation in record.generations:
        state = application_state(storage, generation, output_files)
        if state is not None:
            found[state.value].append(generation.id)
    return found


def adopt_complete(storage: Storage, engine: Engine, record: ProjectRecord,
                   output_files: OutputFiles) -> tuple[ProjectRecord, list[str]]:
    """``resync --adopt-complete``: each failed-but-complete generation whose files are byte for
    byte the application's own record (``output_files``, UTF-8 as it writes them) is marked
    completed, conditional on the row being as read. Returns the record as it now is and the
    adopted ids; a generation that does not match, or whose row changed, stays as it is."""
    adopted: list[str] = []
    for generation in record.generations:
        if application_state(storage, generation, output_files) is not ApplicationState.FAILED_BUT_COMPLETE:
            continue
        files = output_files(generation.id) or {}
        try:
            on_disk = scan_tree(storage, source_dir(storage.layout.generation_target(generation))).checksums()
        except FAILS_ONE_GENERATION:
            continue
        if on_disk != _utf8_checksums(files):
            continue
        if adopt_failed_generation(engine, generation.id, RowSeen.of(generation), generation.file_count,
                                   generation.total_size_bytes):
            adopted.append(generation.id)
    if not adopted:
        return record, adopted
    return replace(record, generations=tuple(
        replace(generation, status="completed") if generation.id in adopted else generation
        for generation in record.generations
    )), adopted


def root_files(storage: Storage) -> dict[str, list[str]]:
    """What lies at ROOT's top level that is not a folder, by kind: the application's
    ``<id>.zip`` downloads, and anything else (files, foreign symlinks, sockets). The tool's own
    flat links and temp files are not listed. One listing of ROOT; nothing is opened."""
    zips: list[str] = []
    others: list[str] = []
    try:
        entries = storage.entries(storage.path)
    except OSError:
        return {ROOT_ZIPS: zips, ROOT_FILES: others}
    for name, status in entries:
        if stat.S_ISDIR(status.st_mode) or name == STATE_DIR or is_temp_name(name):
            continue
        if stat.S_ISLNK(status.st_mode) and parse_legacy_link_text(storage.link_text(storage.path / name) or "") \
                is not None:
            continue                                    # the tool's flat link
        if stat.S_ISREG(status.st_mode) and name.endswith(".zip") and len(name) > len(".zip"):
            zips.append(name)
        else:
            others.append(name)
    return {ROOT_ZIPS: sorted(zips), ROOT_FILES: sorted(others)}
