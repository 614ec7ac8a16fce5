"""Table-driven unit tests of the pure planner (``decide_project`` and ``renumber_duplicates``).

Every case is built by hand: ``GenerationRow``s, a ``ProjectRecord`` and the ``DiskState`` that
``probe_disk`` would have seen. The layout is pure path arithmetic under ``/srv/root``, so nothing
here touches the disk. The contract is the SPEC's rules on the application that keeps running,
the layout (scratch copies, archives), the metadata (diff base, duplicate versions) and bad input.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage_migrator.engine.plan import (
    Action,
    DiskState,
    GenerationPlan,
    LegacyKind,
    ProjectPlan,
    decide_project,
    renumber_duplicates,
)
from storage_migrator.records import GenerationRow, ProjectRecord
from storage_migrator.storage.layout import StorageLayout
from storage_migrator.storage.manifest import MANIFEST_FORMAT, Manifest

PROJECT = "p1"
PREFIX = "storage/projects"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
FILES = 3
DEFAULT = object()   # "created_at not given": distinct from an explicit None (a NULL column)
SIZE = 120
LAYOUT = StorageLayout(Path("/srv/root"), PREFIX)   # pure path arithmetic: nothing is touched


# -- builders ------------------------------------------------------------------------------------


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def target_path(gid: str, version: int, prefix: str = PREFIX) -> str:
    """A database path naming ``v<version>__<gid>``, in the given spelling of ROOT."""
    return f"{prefix}/{PROJECT}/generations/v{version}__{gid}"


def legacy_path(gid: str) -> str:
    return f"{PREFIX}/{gid}"


def summary(from_version: int | None) -> dict[str, Any]:
    """A ``changes_summary`` as the tool writes it."""
    return {"added": 1, "modified": 1, "deleted": 0, "from_version": from_version}


def row(
    gid: str,
    version: int | None,
    status: str = "completed",
    storage_path: str | None = None,
    created_at: Any = DEFAULT,
    **kw: Any,
) -> GenerationRow:
    """A generation row; ``created_at`` defaults to ``version`` minutes after T0 (so version
    order and creation order agree unless a case says otherwise)."""
    values: dict[str, Any] = {
        "project_id": PROJECT,
        "file_count": FILES,
        "total_size_bytes": SIZE,
        "diff_from_previous": None,
        "changes_summary": None,
        "is_active": False,
        "has_output_files": False,
    }
    values.update(kw)
    if created_at is DEFAULT:
        created_at = at(version if isinstance(version, int) else 0)
    return GenerationRow(id=gid, version=version, status=status, created_at=created_at,
                         storage_path=storage_path, **values)


def settled(gid: str, version: int, from_version: int | None = None, status: str = "completed",
            prefix: str = PREFIX, **kw: Any) -> GenerationRow:
    """A row already migrated by the tool: storage_path names its target, summary is ours."""
    kw.setdefault("changes_summary", summary(from_version))
    return row(gid, version, status, storage_path=target_path(gid, version, prefix), **kw)


def manifest(gid: str, version: int, file_count: int = FILES, total_size_bytes: int = SIZE,
             written_as: int = MANIFEST_FORMAT) -> Manifest:
    return Manifest(gid, PROJECT, version, None, file_count, total_size_bytes, {}, {}, format=written_as)


def disk(
    legacy: LegacyKind = LegacyKind.MISSING,
    source: bool = False,
    manifest: Manifest | None = None,
    patches: tuple[int, ...] = (),
    fingerprints_match: bool | None = None,
    archived: bool = False,
) -> DiskState:
    return DiskState(legacy, source, source, manifest, patches, fingerprints_match, archived)


def on_disk(generation: GenerationRow, from_version: int | None = None,
            legacy: LegacyKind = LegacyKind.OUR_LINK, **kw: Any) -> DiskState:
    """The disk of a generation the tool has fully migrated (manifest agrees, patch in place)."""
    assert isinstance(generation.version, int)
    values: dict[str, Any] = {
        "legacy": legacy,
        "source": True,
        "manifest": manifest(generation.id, generation.version),
        "patches": (from_version,) if from_version else (),
        "fingerprints_match": True,
    }
    values.update(kw)
    return disk(**values)


LEGACY_ONLY = disk(LegacyKind.DIR)
NOTHING = disk()


def project(*rows: GenerationRow, latest_version: int | None = None, active: str | None = None,
            exists: bool = True) -> ProjectRecord:
    if latest_version is None:
        latest_version = max([r.version for r in rows if isinstance(r.version, int)], default=0)
    return ProjectRecord(PROJECT, exists, active, latest_version, rows)


def decide(record: ProjectRecord, disks: dict[str, DiskState], keep_active: bool = True) -> ProjectPlan:
    return decide_project(record, LAYOUT, disks, keep_active=keep_active)


def decide_one(generation: GenerationRow, state: DiskState, **kw: Any) -> GenerationPlan:
    plan = decide(project(generation, **kw), {generation.id: state})
    assert len(plan.generations) == 1
    return plan.generations[0]


def by_id(plan: ProjectPlan) -> dict[str, GenerationPlan]:
    return {p.id: p for p in plan.generations}


def assert_reason(plan: GenerationPlan, fragment: str | None) -> None:
    if fragment is not None:
        assert plan.reason is not None and fragment in plan.reason, plan.reason


# -- one generation: the action and its reason ------------------------------------------------------

SINGLE_CASES: list[Any] = [
    # legacy layout
    pytest.param(row("g", 1), LEGACY_ONLY, Action.MOVE, None, id="legacy-folder-only-moves"),
    pytest.param(row("g", 1, "failed"), LEGACY_ONLY, Action.MOVE, None, id="failed-with-folder-moves"),
    pytest.param(row("g", 1, storage_path=legacy_path("g")), LEGACY_ONLY, Action.MOVE, None,
                 id="legacy-storage-path-moves"),
    # still being written: left alone whatever the disk shows
    pytest.param(row("g", 1, "pending"), LEGACY_ONLY, Action.SKIP, "pending", id="pending-legacy"),
    pytest.param(row("g", 1, "processing"), LEGACY_ONLY, Action.SKIP, "processing", id="processing-legacy"),
    pytest.param(row("g", 1, "pending"), disk(LegacyKind.DIR, source=True), Action.SKIP, "pending",
                 id="pending-both-folders"),
    pytest.param(row("g", 1, "processing"), disk(LegacyKind.OTHER), Action.SKIP, "processing",
                 id="processing-foreign-link"),
    pytest.param(row("g", 1, "pending", has_output_files=True), NOTHING, Action.SKIP, "pending",
                 id="pending-never-rebuilt"),
    pytest.param(row("g", 1, "processing"), NOTHING, Action.SKIP, "processing", id="processing-nothing"),
    # a file or a foreign symlink where the legacy folder would be
    pytest.param(row("g", 1), disk(LegacyKind.OTHER), Action.FAIL, "not a folder", id="foreign-link-fails"),
    pytest.param(row("g", 1, has_output_files=True), disk(LegacyKind.OTHER), Action.FAIL, "never followed",
                 id="foreign-link-fails-even-with-output-files"),
    pytest.param(row("g", 1, "failed"), disk(LegacyKind.OTHER), Action.FAIL, "not a folder",
                 id="foreign-link-fails-for-failed"),
    # no folder at all
    pytest.param(row("g", 1, has_output_files=True), NOTHING, Action.REBUILD, "output_files",
                 id="no-folder-rebuilt-from-column"),
    pytest.param(row("g", 1, "failed", has_output_files=True), NOTHING, Action.REBUILD, "output_files",
                 id="failed-no-folder-rebuilt"),
    pytest.param(row("g", 1, has_output_files=True), disk(LegacyKind.OUR_LINK), Action.REBUILD, "output_files",
                 id="dangling-own-link-rebuilt"),
    pytest.param(row("g", 1), NOTHING, Action.FAIL, "restore", id="completed-with-nothing-fails"),
    pytest.param(row("g", 1), disk(LegacyKind.STALE_LINK), Action.FAIL, "restore",
                 id="completed-dangling-stale-link-fails"),
    pytest.param(row("g", 1, "failed"), NOTHING, Action.SKIP, "no files", id="failed-with-nothing-skips"),
    # archived by the application: never rebuilt
    pytest.param(row("g", 1, has_output_files=True), disk(archived=True), Action.SKIP, "archived",
                 id="archived-not-rebuilt"),
    pytest.param(row("g", 1), disk(archived=True), Action.SKIP, "archived", id="archived-not-a-failure"),
    pytest.param(row("g", 1, "failed", has_output_files=True), disk(archived=True), Action.SKIP, "archived",
                 id="archived-failed"),
    # both the legacy folder and source/: an interrupted copy while storage_path is not the target
    pytest.param(row("g", 1, storage_path=legacy_path("g")), disk(LegacyKind.DIR, source=True, manifest=None),
                 Action.FINISH_MOVE, "interrupted", id="interrupted-copy-legacy-path"),
    pytest.param(row("g", 1), disk(LegacyKind.DIR, source=True), Action.FINISH_MOVE, "interrupted",
                 id="interrupted-copy-null-path"),
    pytest.param(row("g", 1, storage_path=legacy_path("g")),
                 disk(LegacyKind.DIR, source=True, manifest=manifest("g", 1), fingerprints_match=True),
                 Action.FINISH_MOVE, "interrupted", id="interrupted-copy-with-manifest"),
    # in the new layout: refresh what is stale
    pytest.param(settled("g", 1), on_disk(row("g", 1), manifest=None), Action.REFRESH, "manifest",
                 id="manifest-missing"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), fingerprints_match=False), Action.REFRESH,
                 "files changed", id="fingerprints-differ"),
    pytest.param(row("g", 1, storage_path=legacy_path("g"), changes_summary=summary(None)), on_disk(row("g", 1)),
                 Action.REFRESH, "storage_path", id="storage-path-still-legacy"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), manifest=manifest("g", 1, file_count=FILES + 1)),
                 Action.REFRESH, "file_count", id="manifest-count-disagrees"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), manifest=manifest("g", 1, total_size_bytes=SIZE + 1)),
                 Action.REFRESH, "total_size_bytes", id="manifest-size-disagrees"),
    pytest.param(settled("g", 1, changes_summary={"from_version": None, "to_version": 1}), on_disk(row("g", 1)),
                 Action.REFRESH, "diff must be taken", id="application-summary"),
    pytest.param(settled("g", 1, changes_summary=["not", "a", "dict"]), on_disk(row("g", 1)),
                 Action.REFRESH, "diff must be taken", id="odd-summary-type"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), patches=(1,)), Action.REFRESH, "patch",
                 id="stale-patch-file"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), manifest=manifest("g", 1, written_as=3)), Action.REFRESH,
                 "older format", id="older-format-with-the-same-files-rewritten"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), manifest=manifest("g", 1, written_as=3), fingerprints_match=None),
                 Action.UNCHANGED, None, id="older-format-fingerprints-not-checked"),
    pytest.param(settled("g", 1, status="failed", changes_summary=None),
                 on_disk(row("g", 1), manifest=manifest("g", 1, written_as=3)), Action.REFRESH, "older format",
                 id="older-format-of-a-failed-generation-rewritten"),
    pytest.param(settled("g", 1), on_disk(row("g", 1)), Action.UNCHANGED, None, id="consistent"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), legacy=LegacyKind.MISSING), Action.UNCHANGED, None,
                 id="consistent-without-link"),
    pytest.param(settled("g", 1), on_disk(row("g", 1), fingerprints_match=None), Action.UNCHANGED, None,
                 id="consistent-fingerprints-not-checked"),
    pytest.param(settled("g", 1, prefix="./storage/projects"), on_disk(row("g", 1)), Action.UNCHANGED, None,
                 id="consistent-dot-spelling"),
    pytest.param(settled("g", 1, status="failed", changes_summary=None), on_disk(row("g", 1)), Action.UNCHANGED, None,
                 id="failed-consistent-needs-no-diff"),
]


@pytest.mark.parametrize(("generation", "state", "action", "fragment"), SINGLE_CASES)
def test_single_generation_action(generation: GenerationRow, state: DiskState, action: Action,
                                  fragment: str | None) -> None:
    plan = decide_one(generation, state)
    assert plan.action == action, plan.reason
    assert_reason(plan, fragment)
    assert plan.generation == generation
    assert plan.renumbered_from is None


# -- storage_path: what it will be ------------------------------------------------------------------

STORAGE_PATH_CASES: list[Any] = [
    pytest.param(row("g", 1), LEGACY_ONLY, target_path("g", 1), id="move-writes-application-spelling"),
    pytest.param(row("g", 1, storage_path=legacy_path("g")), LEGACY_ONLY, target_path("g", 1),
                 id="move-replaces-legacy-path"),
    pytest.param(row("g", 4, has_output_files=True), NOTHING, target_path("g", 4), id="rebuild"),
    pytest.param(row("g", 1, storage_path=legacy_path("g")), disk(LegacyKind.DIR, source=True),
                 target_path("g", 1), id="finish-move"),
    pytest.param(settled("g", 1, prefix="./storage/projects"), on_disk(row("g", 1)),
                 target_path("g", 1, "./storage/projects"), id="dot-spelling-left-as-written"),
    pytest.param(settled("g", 1, prefix="storage/projects"), on_disk(row("g", 1)),
                 target_path("g", 1, "storage/projects"), id="plain-spelling-left-as-written"),
    pytest.param(settled("g", 1, prefix="./storage//projects/"), on_disk(row("g", 1), manifest=None),
                 target_path("g", 1, "./storage//projects/"), id="odd-spelling-left-as-written-on-refresh"),
    pytest.param(row("g", 1, storage_path=target_path("g", 2)), on_disk(row("g", 1)), target_path("g", 1),
                 id="path-naming-another-version-is-fixed"),
    pytest.param(row("g", 1, "pending", storage_path=legacy_path("g")), LEGACY_ONLY, legacy_path("g"),
                 id="pending-row-kept"),
    pytest.param(row("g", 1, "pending"), LEGACY_ONLY, None, id="pending-null-kept"),
    pytest.param(row("g", 1, storage_path=legacy_path("g")), NOTHING, legacy_path("g"), id="restore-fail-kept"),
    pytest.param(row("g", 1, "failed"), NOTHING, None, id="failed-without-files-kept-null"),
    pytest.param(row("g", 1, storage_path=legacy_path("g"), has_output_files=True), disk(archived=True),
                 legacy_path("g"), id="archived-kept"),
    pytest.param(row("g", 1, storage_path=legacy_path("g")), disk(LegacyKind.OTHER), legacy_path("g"),
                 id="foreign-link-kept"),
]


@pytest.mark.parametrize(("generation", "state", "expected"), STORAGE_PATH_CASES)
def test_planned_storage_path(generation: GenerationRow, state: DiskState, expected: str | None) -> None:
    assert decide_one(generation, state).storage_path == expected


def test_move_plans_the_folders() -> None:
    plan = decide_one(row("g", 3), LEGACY_ONLY)
    assert plan.legacy_dir == Path("/srv/root/g")
    assert plan.target_dir == Path("/srv/root/p1/generations/v3__g")
    assert plan.content_changes
    assert plan.leftover is None


# -- the application's scratch copy (the SPEC's layout) -------------------------------------------------


@pytest.mark.parametrize("prefix", ["./storage/projects", "storage/projects", "storage/projects/"])
@pytest.mark.parametrize(("manifest_ok", "action"), [(True, Action.UNCHANGED), (False, Action.REFRESH)])
def test_scratch_copy_is_a_leftover_not_an_interrupted_copy(prefix: str, manifest_ok: bool, action: Action) -> None:
    generation = settled("g", 2, prefix=prefix)
    state = on_disk(generation, legacy=LegacyKind.DIR, manifest=manifest("g", 2) if manifest_ok else None)
    plan = decide_one(generation, state)
    assert plan.action == action, plan.reason
    assert plan.leftover == LAYOUT.legacy_dir("g")
    assert plan.storage_path == generation.storage_path


@pytest.mark.parametrize("legacy", [LegacyKind.OUR_LINK, LegacyKind.STALE_LINK, LegacyKind.MISSING])
def test_no_leftover_without_a_real_legacy_folder(legacy: LegacyKind) -> None:
    generation = settled("g", 1)
    assert decide_one(generation, on_disk(generation, legacy=legacy)).leftover is None


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_flat_folder_beside_the_applications_own_folder_is_its_leftover(status: str) -> None:
    """The running application (SPEC): NULL storage_path with both <ROOT>/<id>/ and v<N>__<id>/source/ under the
    application's manifest (a save that broke half-way, or its scratch copy beside it) is the
    application's: never finished as the tool's interrupted copy (which would delete the flat
    folder, or fail every resync when the two differ)."""
    generation = row("g", 1, status)
    state = replace(disk(LegacyKind.DIR, source=True), application_manifest=True)
    plan = decide_one(generation, state)
    assert plan.action == Action.REFRESH, plan.reason
    assert plan.leftover == LAYOUT.legacy_dir("g")
    assert plan.storage_path == target_path("g", 1)


def test_interrupted_copy_has_no_leftover() -> None:
    plan = decide_one(row("g", 1, storage_path=legacy_path("g")), disk(LegacyKind.DIR, source=True))
    assert plan.action == Action.FINISH_MOVE
    assert plan.leftover is None
    assert plan.content_changes


# -- the diff base P (the SPEC's metadata) --------------------------------------------------------------

DIFF_BASE_CASES: list[Any] = [
    pytest.param([(row("a", 1), LEGACY_ONLY), (row("b", 2), LEGACY_ONLY)], {"a": None, "b": 1},
                 id="consecutive"),
    pytest.param([(row("a", 2), LEGACY_ONLY), (row("b", 5), LEGACY_ONLY), (row("c", 9), LEGACY_ONLY)],
                 {"a": None, "b": 2, "c": 5}, id="gaps"),
    pytest.param([(row("a", 1), LEGACY_ONLY), (row("b", 2, "failed"), LEGACY_ONLY), (row("c", 3), LEGACY_ONLY)],
                 {"a": None, "b": None, "c": 1}, id="failed-between-is-skipped"),
    pytest.param([(row("a", 1, "failed"), LEGACY_ONLY), (row("b", 2), LEGACY_ONLY)], {"a": None, "b": None},
                 id="failed-first-is-no-base"),
    pytest.param([(row("a", 1), NOTHING), (row("b", 2), LEGACY_ONLY)], {"a": None, "b": None},
                 id="missing-completed-is-no-base"),
    pytest.param([(row("a", 1), LEGACY_ONLY), (row("b", 2), NOTHING), (row("c", 3), LEGACY_ONLY)],
                 {"a": None, "b": None, "c": 1}, id="missing-between-is-skipped"),
    pytest.param([(row("a", 1), LEGACY_ONLY), (row("b", 2, "pending"), LEGACY_ONLY), (row("c", 3), LEGACY_ONLY)],
                 {"a": None, "b": None, "c": 1}, id="pending-between-is-skipped"),
    pytest.param([(row("a", 1), LEGACY_ONLY), (row("b", 2), disk(LegacyKind.OTHER)), (row("c", 3), LEGACY_ONLY)],
                 {"a": None, "b": None, "c": 1}, id="failing-between-is-skipped"),
    pytest.param([(row("a", 1, has_output_files=True), NOTHING), (row("b", 2), LEGACY_ONLY)],
                 {"a": None, "b": 1}, id="rebuilt-is-a-base"),
    pytest.param([(settled("a", 1), on_disk(row("a", 1))), (row("b", 2), LEGACY_ONLY)], {"a": None, "b": 1},
                 id="unchanged-is-a-base"),
    pytest.param([(row("a", 1, has_output_files=True), disk(archived=True)), (row("b", 2), LEGACY_ONLY)],
                 {"a": None, "b": None}, id="archived-is-no-base"),
    pytest.param([(row("b", 2), LEGACY_ONLY), (row("a", 1), LEGACY_ONLY)], {"a": None, "b": 1},
                 id="rows-out-of-order"),
]


@pytest.mark.parametrize(("rows", "expected"), DIFF_BASE_CASES)
def test_from_version(rows: list[tuple[GenerationRow, DiskState]], expected: dict[str, int | None]) -> None:
    plan = decide(project(*(r for r, _ in rows)), {r.id: d for r, d in rows})
    assert {p.id: p.from_version for p in plan.generations} == expected


def test_failed_generation_with_files_is_moved_but_is_no_base() -> None:
    plans = by_id(decide(project(row("a", 1), row("b", 2, "failed"), row("c", 3)),
                         {"a": LEGACY_ONLY, "b": LEGACY_ONLY, "c": LEGACY_ONLY}))
    assert plans["b"].action == Action.MOVE
    assert not plans["b"].is_diff_base
    assert plans["c"].from_version == 1


def test_plans_are_in_version_order() -> None:
    rows = (row("c", 7), row("a", 2), row("b", 5, "failed"))
    plan = decide(project(*rows), {r.id: LEGACY_ONLY for r in rows})
    assert [p.generation.version for p in plan.generations] == [2, 5, 7]


DIFF_REFRESH_CASES: list[Any] = [
    # the stored summary/patch name the wrong base
    pytest.param(settled("a", 1, status="failed"), on_disk(row("a", 1)), 1, Action.REFRESH, "from nothing",
                 id="base-turned-out-failed"),
    pytest.param(settled("a", 1), on_disk(row("a", 1)), None, Action.REFRESH, "from v1",
                 id="base-appeared"),
    pytest.param(settled("a", 1), on_disk(row("a", 1)), 1, Action.UNCHANGED, None, id="base-agrees"),
    # the base's content is rewritten: the diff from it is redone
    pytest.param(row("a", 1), LEGACY_ONLY, 1, Action.REFRESH, "v1 changed", id="base-moved"),
    pytest.param(settled("a", 1), on_disk(row("a", 1), manifest=None), 1, Action.REFRESH, "v1 changed",
                 id="base-manifest-rebuilt"),
    pytest.param(settled("a", 1), on_disk(row("a", 1), fingerprints_match=False), 1, Action.REFRESH, "v1 changed",
                 id="base-files-changed"),
    # a base's manifest rewritten in the current format from its own checksums: same content
    pytest.param(settled("a", 1), on_disk(row("a", 1), manifest=manifest("a", 1, written_as=3)), 1, Action.UNCHANGED,
                 None, id="base-older-format-only"),
    # only metadata of the base is redone: its content is the same, the diff stands
    pytest.param(row("a", 1, storage_path=legacy_path("a"), changes_summary=summary(None)), on_disk(row("a", 1)),
                 1, Action.UNCHANGED, None, id="base-path-only"),
]


@pytest.mark.parametrize(("base", "base_disk", "stored_from", "action", "fragment"), DIFF_REFRESH_CASES)
def test_v2_diff_follows_its_base(base: GenerationRow, base_disk: DiskState, stored_from: int | None,
                                  action: Action, fragment: str | None) -> None:
    v2 = settled("b", 2, stored_from)
    plans = by_id(decide(project(base, v2), {"a": base_disk, "b": on_disk(v2, stored_from)}))
    assert plans["b"].action == action, plans["b"].reason
    assert_reason(plans["b"], fragment)


PATCH_CURRENT_CASES: list[Any] = [
    pytest.param(settled("b", 2, 1), {"fingerprints_match": False}, True, id="stats-moved"),
    pytest.param(settled("b", 2, 1), {}, True, id="unchanged"),
    pytest.param(settled("b", 2, 1), {"patches": ()}, False, id="patch-missing"),
    pytest.param(settled("b", 2, 1), {"patches": (1, 3)}, False, id="stale-patch-beside"),
    pytest.param(settled("b", 2, None), {}, False, id="summary-from-nothing"),
    pytest.param(settled("b", 2, 1, status="failed"), {}, False, id="failed-gets-no-diff"),
    pytest.param(settled("b", 2, 1, changes_summary={"added": 1}), {}, False, id="summary-not-ours"),
]


@pytest.mark.parametrize(("v2", "v2_disk", "current"), PATCH_CURRENT_CASES)
def test_patch_current_only_when_the_patch_and_summary_name_the_planned_base(
        v2: GenerationRow, v2_disk: dict[str, Any], current: bool) -> None:
    """What lets the executor keep a patch whose two sides' bytes it finds as recorded (a
    ``chown -R``): the patch file and the summary are from the base the plan diffs from."""
    base = settled("a", 1)
    plans = by_id(decide(project(base, v2), {"a": on_disk(base), "b": on_disk(v2, 1, **v2_disk)}))
    assert plans["b"].patch_current is current
    assert plans["a"].patch_current is False, "a first version has no patch"


def test_a_renumbered_generation_never_keeps_its_patch() -> None:
    older, duplicate = settled("a", 1, created_at=at(1)), settled("b", 1, created_at=at(2))
    plans = by_id(decide(project(older, duplicate), {"a": on_disk(older), "b": on_disk(duplicate)}))
    assert plans["b"].renumbered_from == 1 and plans["b"].patch_current is False


# -- duplicate versions (the running application, the SPEC's metadata) ----------------------------------

RENUMBER_CASES: list[Any] = [
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))], None, {"b": 2},
                 id="later-completed-renumbered"),
    pytest.param([row("b", 1, created_at=at(1)), row("a", 1, created_at=at(2))], None, {"a": 2},
                 id="created-at-before-id"),
    pytest.param([row("b", 1, created_at=at(1)), row("a", 1, created_at=at(1))], None, {"b": 2},
                 id="tie-broken-by-id"),
    pytest.param([row("a", 1, created_at=None), row("b", 1, created_at=at(5))], None, {"a": 2},
                 id="null-created-at-is-newest"),
    pytest.param([row("a", 1, created_at=datetime(2024, 1, 1, 0, 1)), row("b", 1, created_at=at(0))], None,
                 {"a": 2}, id="naive-created-at-is-utc"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))], 6, {"b": 7},
                 id="above-latest-version"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2)), row("c", 4)], 1, {"b": 5},
                 id="above-max-version-when-latest-lags"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, "failed", created_at=at(2))], None, {"b": 2},
                 id="later-failed-renumbered"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, "pending", created_at=at(2))], None, {},
                 id="pending-keeps-its-number"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, "processing", created_at=at(2))], None, {},
                 id="processing-keeps-its-number"),
    pytest.param([row("a", 1, "pending", created_at=at(1)), row("b", 1, created_at=at(2))], None, {"b": 2},
                 id="oldest-pending-keeps-later-completed-moves"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, "pending", created_at=at(2)), row("c", 3)],
                 None, {}, id="pending-duplicate-beside-gap"),
    pytest.param([row("c", 1, created_at=at(3)), row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))],
                 None, {"b": 2, "c": 3}, id="three-way-consecutive"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2)), row("c", 2, created_at=at(3)),
                  row("d", 2, created_at=at(4))], None, {"b": 3, "d": 4}, id="two-groups-in-version-order"),
    pytest.param([row("a", 1), row("b", 2), row("c", 3)], None, {}, id="no-duplicates"),
    pytest.param([row("a", None), row("b", None), row("c", 0), row("d", 0)], None, {}, id="no-version-ignored"),
]


@pytest.mark.parametrize(("rows", "latest", "expected"), RENUMBER_CASES)
def test_renumber_duplicates(rows: list[GenerationRow], latest: int | None, expected: dict[str, int]) -> None:
    assert renumber_duplicates(project(*rows, latest_version=latest)) == expected


def test_renumbered_duplicate_is_planned_at_its_new_number() -> None:
    older, later = row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))
    plan = decide(project(older, later, latest_version=1), {"a": LEGACY_ONLY, "b": LEGACY_ONLY})
    plans = by_id(plan)
    assert plans["a"].generation.version == 1 and plans["a"].renumbered_from is None
    assert plans["b"].generation.version == 2 and plans["b"].renumbered_from == 1
    assert plans["b"].action == Action.MOVE
    assert plans["b"].target_dir == Path("/srv/root/p1/generations/v2__b")
    assert plans["b"].storage_path == target_path("b", 2)
    assert plans["b"].from_version == 1
    assert "renumbered to v2" in (plans["b"].reason or "")
    assert plan.latest_version == 2


@pytest.mark.parametrize("written_version", [1, 2], ids=["path-names-old-number", "path-names-new-number"])
def test_settled_duplicate_is_refreshed_not_unchanged(written_version: int) -> None:
    """A duplicate whose folder and metadata are otherwise in order still has its folder renamed
    and its metadata rewritten: it is never UNCHANGED."""
    older = settled("a", 1, created_at=at(1))
    later = row("b", 1, storage_path=target_path("b", written_version), created_at=at(2),
                changes_summary=summary(1))
    disks = {"a": on_disk(older), "b": on_disk(later, from_version=1)}
    plans = by_id(decide(project(older, later, latest_version=1), disks))
    assert plans["a"].action == Action.UNCHANGED
    assert plans["b"].action == Action.REFRESH
    assert plans["b"].renumbered_from == 1
    assert plans["b"].content_changes
    assert plans["b"].storage_path == target_path("b", 2)


@pytest.mark.parametrize(("state", "action"), [(NOTHING, Action.FAIL), (disk(LegacyKind.OTHER), Action.FAIL),
                                               (disk(archived=True), Action.SKIP)])
def test_renumbered_duplicate_that_cannot_move_keeps_its_action(state: DiskState, action: Action) -> None:
    plans = by_id(decide(project(row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))),
                         {"a": LEGACY_ONLY, "b": state}))
    assert plans["b"].action == action
    assert plans["b"].renumbered_from == 1


def test_pending_duplicate_keeps_its_number_in_the_plan() -> None:
    plan = decide(project(row("a", 1, created_at=at(1)), row("b", 1, "pending", created_at=at(2))),
                  {"a": LEGACY_ONLY, "b": LEGACY_ONLY})
    plans = by_id(plan)
    assert plans["b"].action == Action.SKIP
    assert plans["b"].generation.version == 1
    assert plans["b"].renumbered_from is None
    assert plan.latest_version == 1


def test_three_way_duplicates_chain_their_diff_bases() -> None:
    rows = [row(gid, 1, created_at=at(i)) for i, gid in enumerate("abc")]
    plan = decide(project(*rows), {r.id: LEGACY_ONLY for r in rows})
    assert [(p.id, p.generation.version, p.renumbered_from, p.from_version) for p in plan.generations] == [
        ("a", 1, None, None), ("b", 2, 1, 1), ("c", 3, 1, 2)]
    assert plan.latest_version == 3


def test_renumbered_duplicate_with_scratch_copy_keeps_it_as_leftover() -> None:
    """The application inserts rows at version 1 and its phased generator leaves <ROOT>/<id>/
    beside v1__<id>/ with storage_path naming v1__<id>. By the SPEC's layout that folder is a
    leftover, never merged, never deleted, never a failure — also when the row is renumbered."""
    older = settled("a", 1, created_at=at(1))
    later = row("b", 1, storage_path=target_path("b", 1), created_at=at(2), changes_summary=summary(None))
    plans = by_id(decide(project(older, later), {"a": on_disk(older), "b": on_disk(later, legacy=LegacyKind.DIR)}))
    assert plans["b"].renumbered_from == 1
    assert plans["b"].action != Action.FINISH_MOVE
    assert plans["b"].leftover == LAYOUT.legacy_dir("b")


# -- latest_version never goes down ---------------------------------------------------------------

LATEST_CASES: list[Any] = [
    pytest.param([row("a", 1), row("b", 2)], 9, 9, id="record-higher-kept"),
    pytest.param([row("a", 1), row("b", 4)], 2, 4, id="raised-to-max-version"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))], 1, 2, id="raised-by-renumbering"),
    pytest.param([row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2))], 5, 6, id="renumbered-above-latest"),
    pytest.param([row("a", 3, "pending")], 1, 3, id="pending-versions-count"),
    pytest.param([row("a", None)], 4, 4, id="no-version-kept"),
    pytest.param([], 0, 0, id="empty-project"),
    pytest.param([], 7, 7, id="all-deleted-kept"),
]


@pytest.mark.parametrize(("rows", "latest", "expected"), LATEST_CASES)
def test_latest_version(rows: list[GenerationRow], latest: int, expected: int) -> None:
    plan = decide(project(*rows, latest_version=latest), {r.id: LEGACY_ONLY for r in rows})
    assert plan.latest_version == expected
    assert plan.latest_version >= latest


# -- rows that cannot be handled (the SPEC's bad-input rule) --------------------------------------------

PROBLEM_CASES: list[Any] = [
    pytest.param(row("..", 1), "fix the row", id="dot-dot-id"),
    pytest.param(row(".", 1), "fix the row", id="dot-id"),
    pytest.param(row("a/b", 1), "path separator", id="slash-id"),
    pytest.param(row("a\\b", 1), "path separator", id="backslash-id"),
    pytest.param(row("", 1), "empty", id="empty-id"),
    pytest.param(row("nul\x00", 1), "control character", id="nul-id"),
    pytest.param(row(".hidden", 1), "dot", id="hidden-id"),
    pytest.param(row("g", 1, project_id="../etc"), "project id", id="unsafe-project-id"),
    pytest.param(row("g", None), "no version", id="version-null"),
    pytest.param(row("g", 0), "no version", id="version-zero"),
    pytest.param(row("g", -2), "no version", id="version-negative"),
    pytest.param(row("g", None, "failed"), "no version", id="failed-version-null"),
]


@pytest.mark.parametrize(("generation", "fragment"), PROBLEM_CASES)
def test_unusable_row_fails_alone(generation: GenerationRow, fragment: str) -> None:
    good = row("ok", 5)
    plans = by_id(decide(project(generation, good), {"ok": LEGACY_ONLY}))   # no disk for the bad row
    assert plans[generation.id].action == Action.FAIL
    assert_reason(plans[generation.id], fragment)
    assert plans["ok"].action == Action.MOVE


@pytest.mark.parametrize("status", ["completed", "failed", "pending"])
def test_project_row_gone_fails_every_generation(status: str) -> None:
    plan = decide(project(row("a", 1, status), row("b", 2), exists=False), {"a": LEGACY_ONLY, "b": LEGACY_ONLY})
    assert [p.action for p in plan.generations] == [Action.FAIL, Action.FAIL]
    for p in plan.generations:
        assert_reason(p, "no row in projects")


# -- the active generation -------------------------------------------------------------------------

ACTIVE_ROWS = (row("a", 1), row("b", 2), row("c", 3, "failed"), row("d", 4, "pending"))

ACTIVE_CASES: list[Any] = [
    pytest.param(ACTIVE_ROWS, "a", True, "a", id="existing-kept"),
    pytest.param(ACTIVE_ROWS, "c", True, "c", id="existing-failed-kept"),
    pytest.param(ACTIVE_ROWS, None, True, "b", id="null-highest-completed"),
    pytest.param(ACTIVE_ROWS, "deleted", True, "b", id="deleted-highest-completed"),
    pytest.param(ACTIVE_ROWS, "a", False, "b", id="recomputed-when-not-kept"),
    pytest.param((row("b", 2, created_at=at(1)), row("a", 1, created_at=at(9))), None, True, "b",
                 id="by-version-not-by-row-order"),
    pytest.param((row("a", 1, "failed"), row("b", 2, "pending")), None, True, None, id="no-completed"),
    pytest.param((row("a", 1, "failed"),), "gone", True, None, id="deleted-and-no-completed"),
    pytest.param((), None, True, None, id="empty"),
    pytest.param((row("a", 1, created_at=at(1)), row("b", 1, created_at=at(2)), row("c", 1, "pending")), None,
                 True, "b", id="renumbered-is-highest"),
]


@pytest.mark.parametrize(("rows", "active", "keep", "expected"), ACTIVE_CASES)
def test_active_generation(rows: tuple[GenerationRow, ...], active: str | None, keep: bool,
                           expected: str | None) -> None:
    plan = decide(project(*rows, active=active), {r.id: LEGACY_ONLY for r in rows}, keep_active=keep)
    assert plan.active_generation_id == expected


def test_has_work() -> None:
    a = settled("a", 1)
    quiet = decide(project(a), {"a": on_disk(a)})
    assert not quiet.has_work
    busy = decide(project(a, row("b", 2)), {"a": on_disk(a), "b": LEGACY_ONLY})
    assert busy.has_work
