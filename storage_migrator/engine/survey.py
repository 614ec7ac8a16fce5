"""The look at the disk a plan is made from — stats, link texts and manifests, never file
content — and ``plan_project``, which hands the rows and that look to the pure
``plan.decide_project``. Nothing here follows a symlink."""
from __future__ import annotations

import stat
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from storage_migrator.engine.plan import (
    UNPROBED,
    Action,
    DiskState,
    LegacyKind,
    ProjectPlan,
    decide_project,
    has_no_folder,
    renumber_duplicates,
    unsafe_reason,
)
from storage_migrator.engine.scan_ahead import ScanAhead, SummaryOrError, summarize_trees
from storage_migrator.errors import FAILS_ONE_GENERATION, GenerationError, UnsafePathComponent, failure_line
from storage_migrator.records import GenerationRow, ProjectRecord
from storage_migrator.storage.handle import Storage, archived_folder_names, is_archived
from storage_migrator.storage.layout import (
    SOURCE_DIR,
    check_path_component,
    is_temp_name,
    manifest_path,
    parse_legacy_link_text,
    parse_patch_file_name,
    parse_target_dir_name,
    source_dir,
)
from storage_migrator.storage.manifest import TreeSummary, read_manifest, read_manifest_head

NumberSource = Callable[[str, int], "int | None"]
"""``reserve(project_id, at_least)``: the project's next version number, taken for good (run)."""


def _legacy_kind(storage: Storage, generation: GenerationRow) -> LegacyKind:
    path = storage.layout.legacy_dir(generation.id)
    status = storage.status(path)
    if status is None:
        return LegacyKind.MISSING
    if stat.S_ISDIR(status.st_mode):
        return LegacyKind.DIR
    if not stat.S_ISLNK(status.st_mode):
        return LegacyKind.OTHER
    place = parse_legacy_link_text(storage.link_text(path) or "")
    if place is None or place[0] != generation.project_id or place[2] != generation.id:
        return LegacyKind.OTHER
    return LegacyKind.OUR_LINK if place[1] == (generation.version or 0) else LegacyKind.STALE_LINK


def probe_disk(storage: Storage, generation: GenerationRow, archived_names: frozenset[str] | None = None) -> DiskState:
    """Look at one generation's folders: stats and its manifest if intact (``read_manifest_head``:
    the head parsed and the rest hashed), never file content; resync's fingerprint check comes
    after (``plan_project``). ``archived_names``: the project's ``archive/`` as listed for all its
    generations (``archived_folder_names``); None: looked up for this one. Nothing here follows
    a symlink."""
    legacy_kind = _legacy_kind(storage, generation)
    target = storage.layout.generation_target(generation)
    marks = _folder_marks(storage, target)
    target_exists = marks is not None
    source_exists = bool(marks and marks.get(SOURCE_DIR))     # a real folder, as the listing says
    manifest = read_manifest_head(storage, manifest_path(target)) if source_exists else None
    patch_versions = tuple(sorted(
        version for name in marks or () if (version := parse_patch_file_name(name)) is not None
    ))
    has_temp_files = any(is_temp_name(name) for name in marks or ())
    archived = is_archived(storage, generation, archived_names)
    application = source_exists and legacy_kind == LegacyKind.DIR and has_application_manifest(storage, target)
    return DiskState(legacy_kind, target_exists, source_exists, manifest, patch_versions, None, archived,
                     has_temp_files, application)


def _folder_marks(storage: Storage, target: Path) -> dict[str, bool] | None:
    """Name -> is a real folder, of every entry of ``target`` (one listing tells both whether
    ``source/`` is there and which patches and temp files are); None where ``target`` is not a
    real folder reached through real folders (``Storage.is_folder``). A folder that cannot be
    listed raises, as listing it always did."""
    try:
        return dict(storage.folder_marks(target))
    except OSError:
        if storage.is_folder(target):
            raise
        return None


def has_application_manifest(storage: Storage, target: Path) -> bool:
    """``target`` holds a ``manifest.json`` the application wrote, or one the tool merged keys of
    the application's into (its ``metadata``): the application wrote this folder (it writes its
    manifest before the files). The tool's own interrupted copy has none, or only the tool's
    (its manifest is written after the move). Reads the whole manifest: called only where both
    a flat folder and ``source/`` exist."""
    path = manifest_path(target)
    if not storage.occupied(path):
        return False
    manifest = read_manifest(storage, path)
    return manifest is None or bool(set(manifest.extra) - {"created_at"})


def _fingerprints_checked(disks: dict[str, DiskState], sources: Mapping[str, Path], summaries: Mapping[Path, SummaryOrError],
                          unprobed: dict[str, str]) -> None:
    """Resync's check, in place: each probed generation with a manifest gets ``fingerprints_match``
    (its files' stat digest against the manifest head's). A walk stopped by a link or an
    unreadable file counts as changed (the executor then reads the folder and reports it); any
    other error leaves the generation unprobed, as an error while probing does."""
    for generation_id, folder in sources.items():
        disk, summary = disks[generation_id], summaries[folder]
        if isinstance(summary, TreeSummary):
            matches = summary.fingerprint_digest == disk.manifest.fingerprint_digest   # type: ignore[union-attr]
        elif isinstance(summary, GenerationError):
            matches = False
        else:
            del disks[generation_id]
            unprobed[generation_id] = f"cannot look at its folders: {failure_line(summary)}"
            continue
        disks[generation_id] = replace(disk, fingerprints_match=matches)


def plan_project(
    record: ProjectRecord,
    storage: Storage,
    check_fingerprints: bool = False,
    output_files: Callable[[str], Mapping[str, Any] | None] | None = None,
    reserve: NumberSource | None = None,
    ahead: ScanAhead | None = None,
) -> ProjectPlan:
    """Probe the disk for every generation of ``record`` and decide.

    ``output_files(generation_id)`` reads, for a generation without any folder, its
    ``output_files`` column: the row query only knows the column is not SQL NULL, and a JSON
    ``null`` or ``{}`` must not be planned as a rebuild. What it read goes with a rebuild's plan
    (``GenerationPlan.output_files``), so the executor writes what was planned from and reads
    nothing in the middle of disk work. A generation whose disk cannot even be probed
    (permission denied, a name the filesystem refuses) fails alone.

    A duplicate version gets a new number only if it has something on disk to rename or move:
    with ``reserve`` (a real run) the number is taken from the database at once, so the
    application never hands it out too; without it (a dry run) the number is predicted. A folder
    ``v<K>__<id>`` already renamed by an earlier, interrupted run keeps its number K.

    With ``check_fingerprints`` (resync) every generation's files are stat'ed after all are
    probed, half of the walks by ``ahead``'s reader when there is one (``summarize_trees``).
    """
    renamed = _renamed_folders(storage, record)
    numbers = assign_numbers(record, storage, renamed, reserve)
    disks: dict[str, DiskState] = {}
    unprobed: dict[str, str] = {}
    sources: dict[str, Path] = {}          # resync: the source/ folders whose stats are checked
    archived_names = archived_folder_names(storage, record.project_id)
    for generation in record.generations:
        if unsafe_reason(generation) or not isinstance(generation.version, int):
            continue
        if generation.id in numbers:
            moved = replace(generation, version=numbers[generation.id])
            if storage.is_folder(storage.layout.generation_target(moved)):
                generation = moved
        try:
            disks[generation.id] = probe_disk(storage, generation, archived_names)
        except FAILS_ONE_GENERATION as error:
            unprobed[generation.id] = f"cannot look at its folders: {failure_line(error)}"
            continue
        if check_fingerprints and disks[generation.id].manifest is not None:
            sources[generation.id] = source_dir(storage.layout.generation_target(generation))
    if sources:
        _fingerprints_checked(disks, sources, summarize_trees(storage, list(sources.values()), ahead), unprobed)
    files: dict[str, Mapping[str, Any] | None] = {}
    if output_files is not None:
        files = {generation.id: output_files(generation.id) for generation in record.generations
                 if generation.id in disks and has_no_folder(disks[generation.id]) and generation.has_output_files}
        record = replace(record, generations=tuple(
            replace(generation, has_output_files=bool(files[generation.id])) if generation.id in files else generation
            for generation in record.generations
        ))
    plan = decide_project(record, storage.layout, {**disks, **{gid: UNPROBED for gid in unprobed}}, numbers=numbers)
    return replace(plan, generations=tuple(
        replace(p, action=Action.FAIL, reason=unprobed[p.id]) if p.id in unprobed
        else replace(p, output_files=files.get(p.id)) if p.action == Action.REBUILD
        else p
        for p in plan.generations
    ))


def _renamed_folders(storage: Storage, record: ProjectRecord) -> dict[str, int]:
    """Generation id → K for each ``generations/v<K>__<id>`` folder whose row has another
    version: a renumbering whose database write was lost (recognised from the disk alone)."""
    try:
        check_path_component(record.project_id, "project id")
    except UnsafePathComponent:
        return {}
    generations_dir = storage.layout.generations_dir(record.project_id)
    if not storage.is_folder(generations_dir):
        return {}
    versions = {generation.id: generation.version for generation in record.generations}
    found: dict[str, int] = {}
    for name, status in storage.entries(generations_dir):
        parsed = parse_target_dir_name(name)
        if parsed is None or parsed[1] not in versions or versions[parsed[1]] == parsed[0]:
            continue
        if stat.S_ISDIR(status.st_mode):
            found.setdefault(parsed[1], parsed[0])
    return {gid: version for gid, version in found.items()
            if not storage.is_folder(storage.layout.target_dir(record.project_id, versions[gid] or 0, gid))}


def assign_numbers(record: ProjectRecord, storage: Storage, renamed: dict[str, int],
                   reserve: NumberSource | None) -> dict[str, int]:
    """New versions: a folder already renamed keeps its number; every other duplicate gets the
    next number (reserved, or predicted in a dry run) — one with nothing on disk too, whose row
    alone is renumbered (the executor writes its version at once, so the next run finds no
    duplicate and takes no other number) — but an archived one, whose ``archive/v<N>__<id>``
    folder the application named by its number and the tool never renames."""
    numbers = dict(renamed)
    floor = max([record.latest_version, *renamed.values(),
                 *(g.version for g in record.generations if isinstance(g.version, int))], default=0)
    by_id = {generation.id: generation for generation in record.generations}
    for generation_id in renumber_duplicates(record):
        if generation_id in numbers:
            continue
        if is_archived(storage, by_id[generation_id]):
            continue
        number = reserve(record.project_id, floor) if reserve is not None else floor + 1
        if number is None:
            break                               # the project row is gone
        numbers[generation_id] = number
        floor = max(floor, number)
    return numbers
