"""The plan: for every generation, what will happen to it and why, decided from the database rows
and a look at the disk (stat and manifests only, no file content).

``--dry-run`` prints this plan; ``run`` and ``resync`` hand the very same plan to the executor.
The decision itself (``decide_project``) is a pure function of the rows and the observed disk.
"""
from __future__ import annotations

import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from .db import GenerationRow, ProjectRecord
from .layout import (
    StorageLayout,
    UnsafePathComponent,
    check_path_component,
    manifest_path,
    parse_patch_file_name,
    source_dir,
)
from .manifest import Manifest, read_manifest
from .tree import fingerprint_tree
from .errors import GenerationError

UNFINISHED_STATUSES = frozenset({"pending", "processing"})


class Action(str, Enum):
    MOVE = "move"                  # legacy folder becomes source/ by one rename (or verified copy)
    FINISH_MOVE = "finish-move"    # a killed copy left both; the legacy copy goes once equal
    REBUILD = "rebuild"            # no folder: written from the output_files column
    REFRESH = "refresh"            # in the new layout; manifest, diff or metadata to redo
    UNCHANGED = "unchanged"        # nothing to do
    SKIP = "skip"                  # left alone on purpose (still being written, nothing to move)
    FAIL = "fail"                  # cannot be handled; the reason says what to fix

    @property
    def ends_on_disk(self) -> bool:
        return self not in (Action.SKIP, Action.FAIL)


@dataclass(frozen=True)
class DiskState:
    """What the disk shows for one generation, gathered with stats and one manifest read."""

    legacy_kind: str                 # "dir", "missing" or "other" (a symlink or a file: never followed)
    target_exists: bool
    source_exists: bool
    manifest: Manifest | None
    patch_versions: tuple[int, ...]  # the P of every diff_from_vP.patch in the target folder
    fingerprints_match: bool | None  # None when not checked


@dataclass(frozen=True)
class GenerationPlan:
    generation: GenerationRow
    action: Action
    reason: str | None = None
    legacy_dir: Path | None = None
    target_dir: Path | None = None
    storage_path: str | None = None       # what storage_path will be
    from_version: int | None = None       # P, the version the diff will be taken from
    content_changes: bool = False         # source/ is new or differs from its manifest
    manifest: Manifest | None = field(default=None, repr=False)   # as probed; the executor reuses it


    @property
    def id(self) -> str:
        return self.generation.id


@dataclass(frozen=True)
class ProjectPlan:
    record: ProjectRecord
    generations: tuple[GenerationPlan, ...]
    active_generation_id: str | None
    latest_version: int

    @property
    def project_id(self) -> str:
        return self.record.project_id

    @property
    def has_work(self) -> bool:
        return any(plan.action != Action.UNCHANGED for plan in self.generations)


def _is_safe(value: str, what: str) -> str | None:
    try:
        check_path_component(value, what)
    except UnsafePathComponent as error:
        return str(error)
    return None


def _kind_of(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "missing"
    return "dir" if stat.S_ISDIR(mode) else "other"


def probe_disk(layout: StorageLayout, generation: GenerationRow, check_fingerprints: bool) -> DiskState:
    """Look at one generation's folders. Reads at most its manifest; with ``check_fingerprints``
    also one lstat per file (resync), never file content."""
    legacy_kind = _kind_of(layout.legacy_dir(generation.id))
    target = layout.target_dir(generation.project_id, generation.version or 0, generation.id)
    target_exists = _kind_of(target) == "dir"
    source_exists = target_exists and _kind_of(source_dir(target)) == "dir"
    manifest = read_manifest(manifest_path(target)) if source_exists else None
    patch_versions: tuple[int, ...] = ()
    if target_exists:
        patch_versions = tuple(
            sorted(version for entry in target.iterdir() if (version := parse_patch_file_name(entry.name)) is not None)
        )
    fingerprints_match: bool | None = None
    if check_fingerprints and manifest is not None:
        try:
            fingerprints_match = fingerprint_tree(source_dir(target)) == manifest.fingerprints
        except GenerationError:
            fingerprints_match = False
    return DiskState(legacy_kind, target_exists, source_exists, manifest, patch_versions, fingerprints_match)


def _problem(generation: GenerationRow, record: ProjectRecord, duplicate_versions: set[int]) -> str | None:
    """Why a generation cannot be handled at all, before the disk is even looked at."""
    unsafe = _is_safe(generation.id, "generation id") or _is_safe(generation.project_id, "project id")
    if unsafe:
        return f"{unsafe}; it cannot name a folder — fix the row"
    if not record.exists:
        return f"project {generation.project_id} has no row in projects; restore it or delete the generation"
    if generation.version is None or generation.version < 1:
        return "has no version; run `alembic upgrade head` or set one"
    if generation.version in duplicate_versions:
        return f"version {generation.version} is used by more than one generation of this project; renumber them"
    return None


def _decide_on_disk(
    generation: GenerationRow, disk: DiskState, expected_storage_path: str, expected_from: int | None
) -> tuple[Action, str | None]:
    """The decision for a generation whose target folder holds a ``source/``."""
    if disk.legacy_kind == "dir":
        return Action.FINISH_MOVE, "both the legacy folder and source/ exist (an interrupted copy)"
    if disk.manifest is None:
        return Action.REFRESH, "manifest missing or unreadable"
    if disk.fingerprints_match is False:
        return Action.REFRESH, "files changed on disk"
    if generation.storage_path != expected_storage_path:
        return Action.REFRESH, "storage_path not written yet"
    if disk.manifest.file_count != generation.file_count or disk.manifest.total_size_bytes != generation.total_size_bytes:
        return Action.REFRESH, "file_count or total_size_bytes disagree with the manifest"
    summary = generation.changes_summary or {}
    if not generation.changes_summary or summary.get("from_version") != expected_from:
        return Action.REFRESH, f"diff must be taken from {'v%d' % expected_from if expected_from else 'nothing'}"
    if disk.patch_versions != ((expected_from,) if expected_from else ()):
        return Action.REFRESH, "patch file missing or stale"
    return Action.UNCHANGED, None


def decide_project(
    record: ProjectRecord, layout: StorageLayout, disks: dict[str, DiskState], keep_active: bool = True
) -> ProjectPlan:
    """Decide every generation of one project, in version order. Pure: ``disks`` holds what
    ``probe_disk`` saw. ``P`` (from_version) is the nearest lower version that will have a folder
    in the new layout after the run; a generation whose P's content is rewritten is refreshed too."""
    versions = Counter(generation.version for generation in record.generations)
    duplicate_versions = {version for version, count in versions.items() if count > 1 and version is not None}
    plans: list[GenerationPlan] = []
    previous_on_disk: GenerationPlan | None = None
    for generation in record.generations:
        problem = _problem(generation, record, duplicate_versions)
        if problem:
            plans.append(GenerationPlan(generation, Action.FAIL, problem))
            continue
        plan = _decide_generation(generation, layout, disks[generation.id], previous_on_disk)
        plans.append(plan)
        if plan.action.ends_on_disk:
            previous_on_disk = plan
    active_id = record.active_generation_id if keep_active else None
    if active_id is None:
        completed = [g for g in record.generations if g.status == "completed" and g.version is not None]
        active_id = max(completed, key=lambda g: g.version).id if completed else None
    latest = max((g.version or 0 for g in record.generations), default=0)
    return ProjectPlan(record, tuple(plans), active_id, latest)


def _decide_generation(
    generation: GenerationRow, layout: StorageLayout, disk: DiskState, previous: GenerationPlan | None
) -> GenerationPlan:
    version = generation.version or 0
    target = layout.target_dir(generation.project_id, version, generation.id)
    base = GenerationPlan(
        generation,
        Action.SKIP,
        legacy_dir=layout.legacy_dir(generation.id),
        target_dir=target,
        storage_path=layout.target_storage_path(generation.project_id, version, generation.id),
        from_version=previous.generation.version if previous else None,
    )
    if generation.status in UNFINISHED_STATUSES and not disk.source_exists:
        return replace(base, reason=f"status is {generation.status}: the application may still be writing it; "
                       "a later resync picks it up", storage_path=generation.storage_path, from_version=None)
    if disk.legacy_kind == "other":
        return replace(base, action=Action.FAIL, reason=f"{base.legacy_dir} is not a folder (a symlink or a file); "
                       "it is never followed — replace it with the real folder")
    if disk.source_exists:
        action, reason = _decide_on_disk(generation, disk, base.storage_path or "", base.from_version)
        if action == Action.UNCHANGED and previous is not None and previous.content_changes:
            action, reason = Action.REFRESH, f"v{previous.generation.version} changed, so the diff from it is redone"
        changes = action == Action.FINISH_MOVE or (
            action == Action.REFRESH and (disk.manifest is None or disk.fingerprints_match is False)
        )
        return replace(base, action=action, reason=reason, content_changes=changes, manifest=disk.manifest)
    if disk.legacy_kind == "dir":
        return replace(base, action=Action.MOVE, content_changes=True)
    if generation.has_output_files:
        return replace(base, action=Action.REBUILD, reason="folder missing; rebuilt from the output_files column",
                       content_changes=True)
    if generation.status == "completed":
        return replace(base, action=Action.FAIL, storage_path=generation.storage_path, from_version=None,
                       reason=f"completed, but {base.legacy_dir} is missing and output_files is empty: "
                       "restore the folder from a backup")
    return replace(base, reason=f"status is {generation.status} and there are no files to move",
                   storage_path=generation.storage_path, from_version=None)


def plan_project(
    record: ProjectRecord,
    layout: StorageLayout,
    check_fingerprints: bool = False,
    has_output_files: Callable[[str], bool] | None = None,
) -> ProjectPlan:
    """Probe the disk for every generation of ``record`` and decide.

    ``has_output_files(generation_id)`` confirms, for a generation without any folder, that its
    ``output_files`` holds files: the row query only knows the column is not SQL NULL, and a
    JSON ``null`` or ``{}`` must not be planned as a rebuild.
    """
    disks: dict[str, DiskState] = {}
    for generation in record.generations:
        if _is_safe(generation.id, "generation id") or _is_safe(generation.project_id, "project id"):
            continue
        disks[generation.id] = probe_disk(layout, generation, check_fingerprints)
    if has_output_files is not None:
        record = replace(record, generations=tuple(
            replace(generation, has_output_files=has_output_files(generation.id))
            if generation.id in disks and _has_no_folder(disks[generation.id]) and generation.has_output_files
            else generation
            for generation in record.generations
        ))
    return decide_project(record, layout, disks)


def _has_no_folder(disk: DiskState) -> bool:
    return disk.legacy_kind == "missing" and not disk.source_exists
