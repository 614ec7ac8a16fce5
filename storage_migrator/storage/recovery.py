"""Recovery of what a killed run left, per project: held-aside sources in ``moving/`` go back,
trash entries are emptied, temp files of killed writes removed. Each entry's name says whose it
is (``layout.state_entry_name``), so whoever handles a project recovers it, on any host."""
from __future__ import annotations

import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from storage_migrator.errors import FAILS_ONE_GENERATION, UnsafePathComponent
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.layout import (
    MANIFEST_FILE,
    MOVING_DIR,
    SOURCE_DIR,
    parse_old_held_name,
    parse_state_entry_name,
    parse_target_dir_name,
    state_entry_id,
    state_entry_key,
    temp_name_kept,
    temp_name_original,
)
from storage_migrator.storage.manifest import read_manifest
from storage_migrator.storage.steps import (
    empty_trash,
    fingerprints_or_none,
    make_owned_dirs,
    remove_temp_files,
    rename_entry,
    state_entries,
    temp_names,
)
from storage_migrator.storage.tree import Fingerprint


@dataclass
class RootTempFiles:
    """The tool's temp links directly in ROOT (a killed write of a ``<ROOT>/<id>`` link), by the
    generation id they were written for, listed once and handed out per project: listing ROOT —
    one entry per generation — for every project would cost far more than the run.

    A temp file that appears after the listing (a write in progress, of this run or of another
    host) is not in it and so is never touched; one left by a kill after the listing waits for
    the next run."""

    by_generation: dict[str, list[str]]

    @classmethod
    def listed(cls, storage: Storage) -> RootTempFiles:
        found: dict[str, list[str]] = {}
        for name in temp_names(storage, storage.path):
            original = temp_name_original(name)
            if original is not None:
                found.setdefault(original, []).append(name)
        return cls(found)

    def remove_for(self, storage: Storage, generation_ids: Collection[str]) -> None:
        for generation_id in generation_ids:
            for name in self.by_generation.pop(temp_name_kept(generation_id), []):
                try:
                    storage.remove_entry(storage.path / name)
                except OSError:
                    pass


def recover_project(storage: Storage, project_id: str, generation_ids: Collection[str],
                    root_temps: RootTempFiles | None = None) -> None:
    """Undo or finish what a killed run left of one project: its held-aside sources go back
    where they came from (never over an existing entry), its trash entries are emptied, and the
    temp files of its generations' ``<ROOT>/<id>`` links and those in its project folder and
    ``generations/`` are removed. Entries are found by name alone (``layout.state_entry_name``;
    the previous version's names by their generation id, or for a ``source.held-…`` by the
    manifest of the target that lacks it).

    Call it before the project is planned (the planner must see a put-back folder) and only
    while holding the project: in ``moving/`` and ``trash/`` other projects' entries may be
    another host's move or discard in progress, and they are not looked at. ``root_temps`` is
    the run's listing of ROOT (listed now if None). Nothing here raises for one entry: what
    cannot be put back stays where it is for the next run."""
    ids = list(generation_ids)
    _put_back_held(storage, project_id, ids)
    key = state_entry_key(project_id)
    empty_trash(storage, lambda name: _is_trash_of(name, key, ids))
    (RootTempFiles.listed(storage) if root_temps is None else root_temps).remove_for(storage, ids)
    for folder in _project_folders(storage, project_id):
        remove_temp_files(storage, folder)


def sweep_state(storage: Storage) -> None:
    """The end of a run that has ROOT to itself (an uncoordinated ``run``/``resync`` over every
    project, a ``rollback``): put back every held-aside source whose origin its name spells,
    empty the trash, remove every temp file in ROOT.

    Safe there and only there: the run lock admits one such run at a time and excludes
    coordinated ones, so nothing in ``moving/``, ``trash/`` or ROOT is anyone's write in
    progress; and every project with rows was recovered before it was planned, so what is left
    belongs to projects or generations with no rows left (deleted), to an owner the name does
    not give, or to the previous version's names. A ``source.held-…`` of that version whose
    target was not found stays in ``moving/``: its name does not say where it belongs."""
    holding = storage.layout.state_dir / MOVING_DIR
    for name, _ in state_entries(storage, holding):
        origin = _swept_origin(storage, name)
        if origin is not None:
            _put_back(storage, holding / name, origin)
    empty_trash(storage)
    remove_temp_files(storage, storage.path)


def _put_back_held(storage: Storage, project_id: str, generation_ids: list[str]) -> None:
    holding = storage.layout.state_dir / MOVING_DIR
    by_key = {state_entry_key(generation_id): generation_id for generation_id in generation_ids}
    for name, _ in state_entries(storage, holding):
        origin = _held_origin(storage, project_id, by_key, holding / name)
        if origin is not None:
            _put_back(storage, holding / name, origin)


def _held_origin(storage: Storage, project_id: str, by_key: dict[str, str], held: Path) -> Path | None:
    """Where the held-aside ``held`` came from, if it is this project's."""
    entry = parse_state_entry_name(held.name)
    if entry is not None:
        if not entry.belongs_to(project_id):
            return None
        generation_id = by_key.get(entry.generation_key) or state_entry_id(entry.generation_key)
        return None if generation_id is None else _entry_origin(storage, project_id, generation_id, entry.version)
    original = parse_old_held_name(held.name)
    if original is not None and original in by_key.values():
        return _entry_origin(storage, project_id, original, None)
    if original == SOURCE_DIR:
        return _target_missing(storage, project_id, set(by_key.values()), held)
    return None


def _swept_origin(storage: Storage, name: str) -> Path | None:
    entry = parse_state_entry_name(name)
    if entry is not None:
        generation_id = state_entry_id(entry.generation_key)
        project_id = state_entry_id(entry.project_key)
        if generation_id is None or (entry.version is not None and project_id is None):
            return None
        return _entry_origin(storage, project_id or "", generation_id, entry.version)
    original = parse_old_held_name(name)
    if original is None or original == SOURCE_DIR:
        return None
    return _entry_origin(storage, "", original, None)


def _entry_origin(storage: Storage, project_id: str, generation_id: str, version: int | None) -> Path | None:
    """The legacy folder (``version`` None) or ``generations/v<N>__<id>/source``; None for an
    id that is no safe folder name."""
    try:
        if version is None:
            return storage.layout.legacy_dir(generation_id)
        return storage.layout.target_dir(project_id, version, generation_id) / SOURCE_DIR
    except UnsafePathComponent:
        return None


def _target_missing(storage: Storage, project_id: str, generation_ids: set[str], held: Path) -> Path | None:
    """The ``source/`` place of this project's target folder that lacks it and whose manifest
    lists exactly the held folder's files (sizes and mtimes): the previous version named a
    held-aside ``source/`` for its folder alone."""
    try:
        generations_dir = storage.layout.generations_dir(project_id)
    except UnsafePathComponent:
        return None
    if not storage.is_folder(generations_dir.parent):
        return None                                   # a linked project folder is never read
    entries = state_entries(storage, generations_dir)
    found = fingerprints_or_none(storage, held) if entries else None
    if found is None:
        return None
    for name, status in entries:
        parsed = parse_target_dir_name(name)
        target = generations_dir / name
        if parsed is None or parsed[1] not in generation_ids or not stat.S_ISDIR(status.st_mode) \
                or storage.occupied(target / SOURCE_DIR):
            continue
        manifest = read_manifest(storage, target / MANIFEST_FILE)
        if manifest is not None and _sizes_and_mtimes(manifest.fingerprints) == _sizes_and_mtimes(found):
            return target / SOURCE_DIR
    return None


def _sizes_and_mtimes(fingerprints: Mapping[str, Fingerprint]) -> dict[str, tuple[int, int]]:
    """What names a held folder's files in a manifest of any format (older ones kept no more)."""
    return {path: (fingerprint[0], fingerprint[1]) for path, fingerprint in fingerprints.items()}


def _put_back(storage: Storage, held: Path, origin: Path) -> None:
    """``held`` → ``origin`` by one rename that never replaces an entry (the application may
    have put something there meanwhile); the tool's folders above ``origin`` are made if a
    killed rollback removed them. Whatever refuses leaves ``held`` where it is."""
    if storage.occupied(origin):
        return
    try:
        if not storage.occupied(origin.parent):
            make_owned_dirs(storage, origin.parent)
        rename_entry(storage, held, origin, replace=False)
    except FAILS_ONE_GENERATION:
        return


def _is_trash_of(name: str, project_key: str, generation_ids: list[str]) -> bool:
    """A trash entry of this project: by its name, or by the previous version's
    ``<generation id>[.held-<ns>].<pid>.<ns>``."""
    entry = parse_state_entry_name(name)
    if entry is not None:
        return entry.project_key == project_key
    original, *stamps = name.rsplit(".", 2)
    if len(stamps) != 2 or not all(stamp.isdigit() for stamp in stamps):
        return False
    return (parse_old_held_name(original) or original) in generation_ids


def _project_folders(storage: Storage, project_id: str) -> list[Path]:
    try:
        return [storage.layout.project_dir(project_id), storage.layout.generations_dir(project_id)]
    except UnsafePathComponent:
        return []
