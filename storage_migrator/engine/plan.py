"""The plan: for every generation, what will happen to it and why, decided from the database rows
and a look at the disk (stat, readlink and manifests only, no file content).

``--dry-run`` prints this plan; ``run`` and ``resync`` hand the very same plan to the executor.
The decision itself (``decide_project``) is a pure function of the rows and the observed disk;
the rules it applies beside the running application are in ``docs/design.md``.
"""
from __future__ import annotations

import stat
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from storage_migrator.engine.scan_ahead import ScanAhead, SummaryOrError, summarize_trees
from storage_migrator.errors import FAILS_ONE_GENERATION, GenerationError, UnsafePathComponent, failure_line
from storage_migrator.records import GenerationRow, Outcome, ProjectRecord, RowSeen, Tally, as_utc
from storage_migrator.storage.handle import Storage, is_archived
from storage_migrator.storage.layout import (
    StorageLayout,
    check_path_component,
    is_temp_name,
    manifest_path,
    parse_legacy_link_text,
    parse_patch_file_name,
    parse_target_dir_name,
    source_dir,
)
from storage_migrator.storage.manifest import Manifest, ManifestHead, TreeSummary, read_manifest, read_manifest_head


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


def _unsafe_reason(generation: GenerationRow) -> str | None:
    try:
        check_path_component(generation.id, "generation id")
        check_path_component(generation.project_id, "project id")
    except UnsafePathComponent as error:
        return str(error)
    return None


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




def probe_disk(storage: Storage, generation: GenerationRow) -> DiskState:
    """Look at one generation's folders: stats and at most its manifest's head, never file
    content; resync's fingerprint check comes after (``plan_project``). Nothing here follows a
    symlink."""
    legacy_kind = _legacy_kind(storage, generation)
    target = storage.layout.generation_target(generation)
    source_exists = storage.is_folder(source_dir(target))     # reached through real folders only
    target_exists = source_exists or storage.is_folder(target)
    manifest = read_manifest_head(storage, manifest_path(target)) if source_exists else None
    patch_versions: tuple[int, ...] = ()
    has_temp_files = False
    if target_exists:
        names = storage.names(target)
        patch_versions = tuple(sorted(
            version for name in names if (version := parse_patch_file_name(name)) is not None
        ))
        has_temp_files = any(is_temp_name(name) for name in names)
    archived = is_archived(storage, generation)
    application = source_exists and legacy_kind == LegacyKind.DIR and has_application_manifest(storage, target)
    return DiskState(legacy_kind, target_exists, source_exists, manifest, patch_versions, None, archived,
                     has_temp_files, application)


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
        if isinstance(generation.version, int) and generation.version >= 1 and not _unsafe_reason(generation):
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
    unsafe = _unsafe_reason(generation)
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
    if generation.status != "completed":
        return Action.UNCHANGED, None       # a failed generation gets no diff
    if not _summary_is_ours(generation, expected_from):
        return Action.REFRESH, f"diff must be taken from {f'v{expected_from}' if expected_from else 'nothing'}"
    if disk.patch_versions != ((expected_from,) if expected_from else ()):
        return Action.REFRESH, "patch file missing or stale"
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
    return replace(plan, action=action, reason=reason, renumbered_from=old_version, content_changes=True)


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
                       leftover=leftover)
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


NumberSource = Callable[[str, int], "int | None"]
"""``reserve(project_id, at_least)``: the project's next version number, taken for good (run)."""


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
    for generation in record.generations:
        if _unsafe_reason(generation) or not isinstance(generation.version, int):
            continue
        if generation.id in numbers:
            moved = replace(generation, version=numbers[generation.id])
            if storage.is_folder(storage.layout.generation_target(moved)):
                generation = moved
        try:
            disks[generation.id] = probe_disk(storage, generation)
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
                 if generation.id in disks and _has_no_folder(disks[generation.id]) and generation.has_output_files}
        record = replace(record, generations=tuple(
            replace(generation, has_output_files=bool(files[generation.id])) if generation.id in files else generation
            for generation in record.generations
        ))
    plan = decide_project(record, storage.layout, {**disks, **{gid: _UNPROBED for gid in unprobed}}, numbers=numbers)
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


_UNPROBED = DiskState(LegacyKind.MISSING, False, False, None, (), None)


def _has_no_folder(disk: DiskState) -> bool:
    return disk.legacy_kind in (LegacyKind.MISSING, LegacyKind.OUR_LINK, LegacyKind.STALE_LINK) \
        and not disk.source_exists and not disk.archived
