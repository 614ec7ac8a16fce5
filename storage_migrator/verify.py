"""``storage-migrate verify``: a read-only comparison of the database with the disk.

It checks what the application's ``validate_migration.py`` lists (columns, key, sequential
versions, storage paths, active ids, ``is_active``) and, per generation, the folder, counts,
sizes, checksums, the patch (re-rendered and compared byte for byte) and the ``active`` link.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import sqlalchemy as sa

from . import diff
from .config import Settings
from .db import GenerationRow, ProjectRecord, iter_project_records
from .errors import EXIT_OK, EXIT_VERIFY_PROBLEMS, GenerationError
from .execute import ManifestTree
from .layout import StorageLayout, UnsafePathComponent, manifest_path, patch_file_name, source_dir
from .manifest import read_manifest
from .migrate import open_installation
from .plan import UNFINISHED_STATUSES
from .tree import TreeSnapshot, scan_tree

REQUIRED_COLUMNS = {
    "generations": {"version", "version_name", "is_active", "storage_path", "file_count", "total_size_bytes",
                    "diff_from_previous", "changes_summary"},
    "projects": {"active_generation_id", "latest_version"},
}


@dataclass(frozen=True)
class Problem:
    generation_id: str | None
    kind: str
    detail: str

    def to_json(self) -> dict:
        return {"generation_id": self.generation_id, "kind": self.kind, "detail": self.detail}


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    generations_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_VERIFY_PROBLEMS

    def to_json(self) -> dict:
        return {"ok": self.ok, "generations_checked": self.generations_checked,
                "problems": [problem.to_json() for problem in self.problems]}


def verify(settings: Settings) -> VerifyReport:
    layout, engine = open_installation(settings, "verify")
    report = VerifyReport()
    try:
        report.problems.extend(_schema_problems(engine))
        for record in iter_project_records(engine):
            report.problems.extend(_project_problems(layout, record))
            report.generations_checked += len(record.generations)
    finally:
        engine.dispose()
    return report


def _schema_problems(engine: sa.Engine) -> list[Problem]:
    inspector = sa.inspect(engine)
    problems = []
    for table, required in REQUIRED_COLUMNS.items():
        missing = required - {column["name"] for column in inspector.get_columns(table)}
        if missing:
            problems.append(Problem(None, "schema", f"{table} lacks columns {sorted(missing)}"))
    keys = {key["name"] for key in inspector.get_foreign_keys("projects")}
    if "fk_projects_active_generation" not in keys:
        problems.append(Problem(None, "schema", "foreign key fk_projects_active_generation is missing"))
    return problems


def _project_problems(layout: StorageLayout, record: ProjectRecord) -> list[Problem]:
    problems: list[Problem] = []
    generations = record.generations
    versions = sorted(generation.version or 0 for generation in generations)
    if versions != list(range(1, len(generations) + 1)):
        problems.append(Problem(None, "version-sequence", f"project {record.project_id}: versions {versions} are not 1..{len(generations)}"))
    if record.exists and record.latest_version != max(versions, default=0):
        problems.append(Problem(None, "latest-version", f"project {record.project_id}: latest_version {record.latest_version} != {max(versions, default=0)}"))
    completed = [generation for generation in generations if generation.status == "completed"]
    ids = {generation.id for generation in generations}
    if completed and record.active_generation_id not in ids:
        problems.append(Problem(None, "active", f"project {record.project_id} has completed generations but active_generation_id is {record.active_generation_id!r}"))
    for generation in generations:
        if generation.is_active != (generation.id == record.active_generation_id):
            problems.append(Problem(generation.id, "is-active", f"is_active is {generation.is_active} but the project's active generation is {record.active_generation_id}"))
    previous: tuple[GenerationRow, ManifestTree | TreeSnapshot] | None = None
    for generation in generations:
        try:
            checked = _generation_problems(layout, generation, previous, problems)
        except (GenerationError, UnsafePathComponent) as error:
            problems.append(Problem(generation.id, "unreadable", str(error)))
            checked = None
        if checked is not None:
            previous = (generation, checked)
    problems.extend(_active_link_problems(layout, record))
    return problems


def _generation_problems(
    layout: StorageLayout,
    generation: GenerationRow,
    previous: tuple[GenerationRow, ManifestTree | TreeSnapshot] | None,
    problems: list[Problem],
) -> TreeSnapshot | None:
    """Check one generation; returns its tree as read (for the next version's patch) if it is in
    the new layout."""
    if generation.storage_path is None:
        problems.append(Problem(generation.id, "storage-path", "storage_path is NULL"))
        return None
    target = layout.target_dir(generation.project_id, generation.version or 0, generation.id)
    expected_path = layout.target_storage_path(generation.project_id, generation.version or 0, generation.id)
    if generation.storage_path != expected_path:
        if generation.status not in UNFINISHED_STATUSES and layout.legacy_dir(generation.id).is_dir():
            problems.append(Problem(generation.id, "not-migrated", f"still at {generation.storage_path}; run `storage-migrate resync`"))
        elif generation.status == "completed":
            problems.append(Problem(generation.id, "storage-path", f"storage_path {generation.storage_path} is not {expected_path}"))
        return None
    folder = source_dir(target)
    if not folder.is_dir():
        problems.append(Problem(generation.id, "missing-folder", f"{folder} does not exist"))
        return None
    snapshot = scan_tree(folder)
    if generation.file_count != snapshot.file_count:
        problems.append(Problem(generation.id, "file-count", f"file_count {generation.file_count}, disk {snapshot.file_count}"))
    if generation.total_size_bytes != snapshot.total_size_bytes:
        problems.append(Problem(generation.id, "size", f"total_size_bytes {generation.total_size_bytes}, disk {snapshot.total_size_bytes}"))
    manifest = read_manifest(manifest_path(target))
    if manifest is None:
        problems.append(Problem(generation.id, "manifest", f"{manifest_path(target)} is missing or unreadable"))
    elif manifest.checksums != snapshot.checksums():
        changed = sorted(set(manifest.checksums.items()) ^ set(snapshot.checksums().items()))
        problems.append(Problem(generation.id, "checksum", f"{len(changed)} file(s) differ from the manifest, e.g. {changed[0][0]}"))
    problems.extend(_patch_problems(layout, generation, target, snapshot, previous))
    return snapshot


def _patch_problems(
    layout: StorageLayout,
    generation: GenerationRow,
    target: "os.PathLike[str]",
    snapshot: TreeSnapshot,
    previous: tuple[GenerationRow, ManifestTree | TreeSnapshot] | None,
) -> list[Problem]:
    summary = generation.changes_summary or {}
    if previous is None:
        if generation.diff_from_previous is not None or summary.get("from_version") is not None:
            return [Problem(generation.id, "patch", "has a diff but no lower version is on disk")]
        if summary.get("added") != snapshot.file_count:
            return [Problem(generation.id, "changes-summary", f"changes_summary {summary} for a first version")]
        return []
    previous_row, previous_tree = previous
    expected = layout.patch_storage_path(generation.project_id, generation.version or 0, generation.id, previous_row.version or 0)
    if generation.diff_from_previous != expected:
        return [Problem(generation.id, "patch", f"diff_from_previous is {generation.diff_from_previous}, expected {expected}")]
    comparison = diff.compare_trees(previous_tree.checksums(), snapshot.checksums())
    if diff.ChangeSummary.from_comparison(comparison, previous_row.version or 0).to_json() != summary:
        return [Problem(generation.id, "changes-summary", f"changes_summary {summary} does not match the folders")]
    patch_file = layout.disk_path(expected)
    if patch_file is None or not patch_file.is_file():
        return [Problem(generation.id, "patch", f"{patch_file_name(previous_row.version or 0)} is missing")]
    if patch_file.read_bytes() != diff.render_patch(comparison, previous_tree.read, snapshot.read):
        return [Problem(generation.id, "patch", f"{patch_file} does not turn v{previous_row.version} into v{generation.version}")]
    return []


def _active_link_problems(layout: StorageLayout, record: ProjectRecord) -> list[Problem]:
    try:
        link = layout.active_link(record.project_id)
    except UnsafePathComponent:
        return []
    active = next((g for g in record.generations if g.id == record.active_generation_id), None)
    if active is None or not source_dir(layout.target_dir(record.project_id, active.version or 0, active.id)).is_dir():
        if link.is_symlink():
            return [Problem(record.active_generation_id, "active-link", f"{link} exists but the active generation is not in the new layout")]
        return []
    expected = layout.target_dir(record.project_id, active.version or 0, active.id).name
    if not link.is_symlink() or os.readlink(link) != expected:
        found = os.readlink(link) if link.is_symlink() else "nothing"
        return [Problem(active.id, "active-link", f"{link} points to {found}, expected {expected}")]
    return []
