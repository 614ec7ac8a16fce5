"""The plan: for every generation, what will happen to it and why — a pure function of the
database rows and the look at the disk ``engine.survey`` took (stat, readlink and manifests only).

``--dry-run`` prints this plan; ``run`` and ``resync`` hand the very same plan to the executor.
The decision itself (``decide_project``) is a pure function of the rows and the observed disk;
the rules it applies beside the running application are in ``docs/design.md``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from storage_migrator.errors import UnsafePathComponent
from storage_migrator.records import GenerationRow, Outcome, ProjectRecord, RowSeen, Tally, as_utc
from storage_migrator.storage.layout import (
    StorageLayout,
    check_path_component,
)
from storage_migrator.storage.manifest import MANIFEST_FORMAT, Manifest, ManifestHead


class Action(str, Enum):
    MOVE = "move"                  # legacy folder becomes source/ by one rename (or verified copy)
    FINISH_MOVE = "finish-move"    # a killed copy left both; the legacy copy goes once equal
    REBUILD = "rebuild"            # no folder: written from the output_files column
    REFRESH = "refresh"            # in the new layout; manifest, diff or metadata to redo
    UNCHANGED = "unchanged"        # nothing to do
    SKIP = "skip"                  # left alone on purpose (still being written, archived, nothing to move)
    FAIL = "fail"                  # cannot be handled; the reason says what to fix

    @property
    def ends_on_disk(self) -> bool:
        return self not in (Action.SKIP, Action.FAIL)

    @property
    def tally(self) -> Tally:
        """Counted as the outcome it ends in: one counting rule (``Outcome.tally``)."""
        return self.done.tally

    @property
    def done(self) -> Outcome:
        """The outcome a real run reports when this action succeeds."""
        return _DONE[self]


_DONE = {
    Action.MOVE: Outcome.MOVED,
    Action.FINISH_MOVE: Outcome.FINISHED_MOVE,
    Action.REBUILD: Outcome.REBUILT,
    Action.REFRESH: Outcome.REFRESHED,
    Action.UNCHANGED: Outcome.UNCHANGED,
    Action.SKIP: Outcome.SKIPPED,
    Action.FAIL: Outcome.FAILED,
}


class LegacyKind(str, Enum):
    """What ``<ROOT>/<generation_id>`` is."""

    MISSING = "missing"
    DIR = "dir"                # a real folder: legacy, an interrupted copy, or the application's scratch copy
    OUR_LINK = "our-link"      # the tool's backward-compatibility link, pointing where it should
    STALE_LINK = "stale-link"  # a link of the tool's shape pointing at another version of this generation
    OTHER = "other"            # a file or a foreign symlink: never followed, never touched


@dataclass(frozen=True)
class DiskState:
    """What the disk shows for one generation, gathered with stats and one manifest read."""

    legacy_kind: LegacyKind
    target_exists: bool
    source_exists: bool
    manifest: Manifest | ManifestHead | None
    patch_versions: tuple[int, ...]  # the P of every diff_from_vP.patch in the target folder
    fingerprints_match: bool | None  # None when not checked
    archived: bool = False           # <ROOT>/<project>/archive/v<N>__<id>/ exists
    has_temp_files: bool = False     # a killed write left a temp file beside source/
    application_manifest: bool = False   # manifest.json beside source/ is not the tool's (the application wrote it)


@dataclass(frozen=True)
class GenerationPlan:
    generation: GenerationRow             # with its version as it will be (renumbered if so)
    action: Action
    reason: str | None = None
    legacy_dir: Path | None = None
    target_dir: Path | None = None
    storage_path: str | None = None       # what storage_path will be
    from_version: int | None = None       # P, the version the diff will be taken from
    content_changes: bool = False         # source/ is new or differs from its manifest
    patch_current: bool = False           # its patch and changes_summary are from_version's (_patch_is_current)
    renumbered_from: int | None = None    # the duplicate version it had; its folder is renamed
    leftover: Path | None = None          # the application's scratch copy beside the target
    manifest: Manifest | ManifestHead | None = field(default=None, repr=False)   # as probed; reused
    seen: RowSeen | None = None           # the row as read; None: ``generation`` as it is
    output_files: Mapping[str, Any] | None = field(default=None, repr=False)   # what a rebuild writes

    @property
    def id(self) -> str:
        return self.generation.id

    @property
    def row_seen(self) -> RowSeen:
        """What the row showed when planned: every write and disk step checks it again first."""
        return self.seen or RowSeen.of(self.generation)

    @property
    def is_diff_base(self) -> bool:
        """Only a completed generation that ends on disk can be the next version's P."""
        return self.action.ends_on_disk and self.generation.status == "completed"


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


def unsafe_reason(generation: GenerationRow) -> str | None:
    try:
        check_path_component(generation.id, "generation id")
        check_path_component(generation.project_id, "project id")
    except UnsafePathComponent as error:
        return str(error)
    return None


def _sort_key(generation: GenerationRow) -> tuple[datetime, str]:
    created = generation.created_at
    return (datetime.max.replace(tzinfo=UTC) if created is None else as_utc(created)), generation.id


def renumber_duplicates(record: ProjectRecord) -> dict[str, int]:
    """New versions for rows that share a version with an older row of the same project: the
    oldest keeps it; each later completed or failed one gets the next free number above
    ``latest_version``. Pending/processing rows keep theirs until they finish (the application
    may still be writing them). Returns generation id → new version."""
    by_version: dict[int, list[GenerationRow]] = defaultdict(list)
    for generation in record.generations:
        if isinstance(generation.version, int) and generation.version >= 1 and not unsafe_reason(generation):
            by_version[generation.version].append(generation)
    next_free = max([record.latest_version, *by_version.keys()], default=0) + 1
    renumbered: dict[str, int] = {}
    for version in sorted(by_version):
        later = sorted(by_version[version], key=_sort_key)[1:]
        for generation in later:
            if generation.is_unfinished:
                continue
            renumbered[generation.id] = next_free
            next_free += 1
    return renumbered


def _problem(generation: GenerationRow, record: ProjectRecord) -> str | None:
    """Why a generation cannot be handled at all, before the disk is even looked at."""
    unsafe = unsafe_reason(generation)
    if unsafe:
        return f"{unsafe}; it cannot name a folder — fix the row"
    if not record.exists:
        return f"project {generation.project_id} has no row in projects; restore it or delete the generation"
    if not isinstance(generation.version, int) or generation.version < 1:
        return "has no version; run `storage-migrate db upgrade` or set one"
    return None


def _summary_is_ours(generation: GenerationRow, expected_from: int | None) -> bool:
    summary = generation.summary
    counts_ok = all(isinstance(summary.get(key), int) for key in ("added", "modified", "deleted"))
    to_version_ok = "to_version" not in summary or summary["to_version"] == generation.version
    return counts_ok and to_version_ok and "from_version" in summary and summary.get("from_version") == expected_from


def _patch_is_current(generation: GenerationRow, disk: DiskState, expected_from: int | None) -> bool:
    """The patch file beside the folder and the row's ``changes_summary`` are the ones taken from
    ``expected_from``, by their names and keys. Their content is right as long as neither side's
    bytes changed since they were written: the executor keeps them, instead of writing them again,
    when it finds both folders' checksums as their manifests record them (a ``chown -R`` or a
    hard-link backup moves every file's ctime, so its fingerprint, and changes no byte)."""
    return generation.status == "completed" and expected_from is not None \
        and _summary_is_ours(generation, expected_from) and disk.patch_versions == (expected_from,)


def _decide_on_disk(
    generation: GenerationRow, disk: DiskState, path_is_right: bool, expected_from: int | None
) -> tuple[Action, str | None]:
    """The decision for a generation whose target folder holds a ``source/``."""
    if disk.manifest is None:
        return Action.REFRESH, "manifest missing, unreadable or written by the application"
    if disk.fingerprints_match is False:
        return Action.REFRESH, "files changed on disk"
    if disk.has_temp_files:
        return Action.REFRESH, "an interrupted write left a temp file"
    if not path_is_right:
        return Action.REFRESH, "storage_path not written yet"
    if disk.manifest.file_count != generation.file_count or disk.manifest.total_size_bytes != generation.total_size_bytes:
        return Action.REFRESH, "file_count or total_size_bytes disagree with the manifest"
    if generation.status == "completed":    # a failed generation gets no diff
        if not _summary_is_ours(generation, expected_from):
            return Action.REFRESH, f"diff must be taken from {f'v{expected_from}' if expected_from else 'nothing'}"
        if disk.patch_versions != ((expected_from,) if expected_from else ()):
            return Action.REFRESH, "patch file missing or stale"
    if disk.fingerprints_match and disk.manifest.format != MANIFEST_FORMAT:
        return Action.REFRESH, "manifest of an older format (rewritten once, from its checksums)"
    return Action.UNCHANGED, None


def decide_project(
    record: ProjectRecord, layout: StorageLayout, disks: dict[str, DiskState], keep_active: bool = True,
    numbers: dict[str, int] | None = None,
) -> ProjectPlan:
    """Decide every generation of one project, in version order. Pure: ``disks`` holds what
    ``probe_disk`` saw (for renumbered generations: at their old version). ``P`` (from_version)
    is the nearest lower version whose generation is completed and ends on disk; a generation
    whose P's content is rewritten is refreshed too. ``numbers`` are the new versions of
    renumbered rows as reserved (default: as ``renumber_duplicates`` predicts them)."""
    renumbered = renumber_duplicates(record) if numbers is None else numbers
    ordered = sorted(
        (replace(g, version=renumbered[g.id]) if g.id in renumbered else g for g in record.generations),
        key=lambda g: (g.version if isinstance(g.version, int) else 0, *_sort_key(g)),
    )
    old_versions = {g.id: g.version for g in record.generations}
    plans: list[GenerationPlan] = []
    previous_base: GenerationPlan | None = None
    for generation in ordered:
        problem = _problem(generation, record)
        if problem:
            plans.append(GenerationPlan(generation, Action.FAIL, problem))
            continue
        plan = _decide_generation(generation, layout, disks[generation.id], previous_base,
                                  old_versions[generation.id] if generation.id in renumbered else None)
        if generation.id in renumbered:
            plan = _renumbered(plan, old_versions[generation.id])
        plan = replace(plan, seen=RowSeen(generation.status, old_versions[generation.id], generation.storage_path))
        plans.append(plan)
        if plan.is_diff_base:
            previous_base = plan
    active_id = record.active_generation_id if keep_active else None
    if active_id is None or active_id not in {g.id for g in record.generations}:
        completed = [g for g in ordered if g.status == "completed" and isinstance(g.version, int)]
        active_id = max(completed, key=lambda g: (g.version, *_sort_key(g))).id if completed else None
    versions = [g.version for g in ordered if isinstance(g.version, int)]
    latest = max([record.latest_version, *versions], default=0)
    return ProjectPlan(record, tuple(plans), active_id, latest)


def _renumbered(plan: GenerationPlan, old_version: int | None) -> GenerationPlan:
    """A duplicate given a new number: its folder (if in the new layout) is renamed and its
    metadata rewritten, so it is at least refreshed."""
    if plan.action in (Action.FAIL, Action.SKIP):
        return replace(plan, renumbered_from=old_version)
    action = Action.REFRESH if plan.action == Action.UNCHANGED else plan.action
    reason = f"version {old_version} is shared with an older generation; renumbered to v{plan.generation.version}"
    return replace(plan, action=action, reason=reason, renumbered_from=old_version, content_changes=True,
                   patch_current=False)


def _decide_generation(
    generation: GenerationRow, layout: StorageLayout, disk: DiskState, previous: GenerationPlan | None,
    old_version: int | None = None,
) -> GenerationPlan:
    """``old_version`` is a renumbered generation's number before: a ``storage_path`` naming
    that folder still shows the application wrote the generation itself."""
    version = generation.version or 0
    target = layout.target_dir(generation.project_id, version, generation.id)
    path_is_right = layout.names_target(generation.storage_path, generation.project_id, version, generation.id)
    written_in_new_layout = path_is_right or (old_version is not None and layout.names_target(
        generation.storage_path, generation.project_id, old_version, generation.id))
    base = GenerationPlan(
        generation,
        Action.SKIP,
        legacy_dir=layout.legacy_dir(generation.id),
        target_dir=target,
        storage_path=generation.storage_path if path_is_right
        else layout.target_storage_path(generation.project_id, version, generation.id),
        from_version=previous.generation.version if previous and generation.status == "completed" else None,
    )
    if generation.is_unfinished:
        return _row_as_is(base, reason=f"status is {generation.status}: the application may still be writing it; "
                       "a later resync picks it up")
    if disk.source_exists:
        leftover = base.legacy_dir if disk.legacy_kind == LegacyKind.OTHER else None   # foreign: reported, left
        if disk.legacy_kind == LegacyKind.DIR:
            if not written_in_new_layout and not disk.application_manifest:
                return replace(base, action=Action.FINISH_MOVE, content_changes=True, manifest=disk.manifest,
                               reason="both the legacy folder and source/ exist (an interrupted copy)")
            leftover = base.legacy_dir       # the application's scratch copy or its half-broken save: never touched
        action, reason = _decide_on_disk(generation, disk, path_is_right, base.from_version)
        if action == Action.UNCHANGED and previous is not None and previous.content_changes and base.from_version:
            action, reason = Action.REFRESH, f"v{previous.generation.version} changed, so the diff from it is redone"
        changes = action == Action.REFRESH and (disk.manifest is None or disk.fingerprints_match is False)
        return replace(base, action=action, reason=reason, content_changes=changes, manifest=disk.manifest,
                       leftover=leftover, patch_current=_patch_is_current(generation, disk, base.from_version))
    scratch = base.legacy_dir if disk.legacy_kind == LegacyKind.DIR else None
    if disk.archived:
        return replace(_row_as_is(base, reason="archived by the application (archive/ folder); left as it is"),
                       leftover=scratch)
    if disk.legacy_kind == LegacyKind.OTHER:
        return _row_as_is(base, action=Action.FAIL, reason=f"{base.legacy_dir} is not a folder (a symlink or a file); "
                       "it is never followed — replace it with the real folder")
    if scratch is not None and written_in_new_layout:
        return replace(_row_as_is(base, reason=f"storage_path names {target}, which is gone (deleted or moved by "
                                  f"the application); {scratch} is its scratch copy and is left alone"),
                       leftover=scratch)
    if scratch is not None:
        return replace(base, action=Action.MOVE, content_changes=True)
    if generation.has_output_files:
        return replace(base, action=Action.REBUILD, reason="folder missing; rebuilt from the output_files column",
                       content_changes=True)
    if generation.status == "completed":
        return _row_as_is(base, action=Action.FAIL, reason=f"completed, but {base.legacy_dir} is missing and "
                       "output_files is empty: restore the folder from a backup")
    return _row_as_is(base, reason=f"status is {generation.status} and there are no files to move")


def _row_as_is(plan: GenerationPlan, *, action: Action = Action.SKIP, reason: str) -> GenerationPlan:
    """A generation the run leaves where it is: its row's ``storage_path`` stays, no diff."""
    return replace(plan, action=action, reason=reason, storage_path=plan.generation.storage_path, from_version=None)


UNPROBED = DiskState(LegacyKind.MISSING, False, False, None, (), None)


def has_no_folder(disk: DiskState) -> bool:
    return disk.legacy_kind in (LegacyKind.MISSING, LegacyKind.OUR_LINK, LegacyKind.STALE_LINK) \
        and not disk.source_exists and not disk.archived
