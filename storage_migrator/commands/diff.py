"""``storage-migrate diff PROJECT_ID``: a project's version history as recorded (counts and patch
paths from the database), or any two versions compared on the fly from their folders."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from storage_migrator.config import Settings
from storage_migrator.db.reads import load_projects
from storage_migrator.engine.installation import open_installation
from storage_migrator.errors import GenerationError, UnsafePathComponent, UsageError
from storage_migrator.patch import compare
from storage_migrator.records import GenerationRow, ProjectRecord
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.layout import MAX_PATCH_BYTES, manifest_path, source_dir
from storage_migrator.storage.manifest import read_manifest
from storage_migrator.storage.source_tree import ManifestTree, write_tree_patch
from storage_migrator.storage.tree import TreeSnapshot, read_regular_file, scan_tree


@dataclass(frozen=True)
class VersionChanges:
    version: int
    generation_id: str
    from_version: int | None
    added: int | None
    modified: int | None
    deleted: int | None
    patch: str | None
    patch_text: bytes | None = None

    def to_json(self) -> dict:
        document = {
            "version": self.version,
            "generation_id": self.generation_id,
            "from_version": self.from_version,
            "added": self.added,
            "modified": self.modified,
            "deleted": self.deleted,
            "patch": self.patch,
        }
        if self.patch_text is not None:
            document["patch_text"] = self.patch_text.decode("utf-8", "replace")
        return document


@dataclass
class ProjectDiffReport:
    project_id: str
    versions: list[VersionChanges] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"project_id": self.project_id, "versions": [version.to_json() for version in self.versions]}


def project_diff(
    settings: Settings,
    project_id: str,
    from_version: int | None = None,
    to_version: int | None = None,
    with_patch: bool = False,
) -> ProjectDiffReport:
    """The recorded history, or — with both ``from_version`` and ``to_version`` — a fresh
    comparison of those two versions (any two, also non-consecutive). Exit 2 for an unknown
    project or version."""
    with open_installation(settings, "diff") as installation:
        with installation.engine.connect() as connection:
            records = load_projects(connection, [project_id])
        installation.engine.dispose()
        return _project_report(installation.storage, records[0], from_version, to_version, with_patch)


def _project_report(storage: Storage, record: ProjectRecord, from_version: int | None, to_version: int | None,
                    with_patch: bool) -> ProjectDiffReport:
    project_id = record.project_id
    if not record.exists and not record.generations:
        raise UsageError(f"project {project_id!r} not found in the database; check the id")
    by_version = {generation.version: generation for generation in record.generations if generation.version}
    report = ProjectDiffReport(project_id)
    if from_version is not None or to_version is not None:
        if from_version is None or to_version is None:
            raise UsageError("--from and --to go together; give both versions")
        old, new = (_generation(by_version, version, project_id) for version in (from_version, to_version))
        report.versions.append(_compare_on_the_fly(storage, old, new, with_patch))
        return report
    for version, generation in sorted(by_version.items()):
        summary = generation.summary
        patch_text = _recorded_patch(storage, generation) if with_patch and generation.diff_from_previous else None
        report.versions.append(
            VersionChanges(
                version=version,
                generation_id=generation.id,
                from_version=summary.get("from_version"),
                added=summary.get("added"),
                modified=summary.get("modified"),
                deleted=summary.get("deleted"),
                patch=generation.diff_from_previous,
                patch_text=patch_text,
            )
        )
    return report


def _recorded_patch(storage: Storage, generation: GenerationRow) -> bytes:
    """The patch file a row names, read without following any symlink; a path outside ROOT or
    through a link is refused with a one-line error."""
    patch_file = storage.layout.disk_path(generation.diff_from_previous)
    if patch_file is None:
        raise UsageError(f"v{generation.version}: diff_from_previous {generation.diff_from_previous!r} is not under "
                         "the storage root; fix the row or run `storage-migrate resync`")
    if any(storage.is_link(parent) for parent in _parents_below(storage.path, patch_file)):
        raise UsageError(f"v{generation.version}: {patch_file} lies behind a symlink; it is never followed")
    try:
        return read_regular_file(storage, patch_file.parent, patch_file.name, max_bytes=MAX_PATCH_BYTES)
    except GenerationError as error:
        raise UsageError(f"v{generation.version}: {error}") from None


def _parents_below(root: Path, path: Path) -> list[Path]:
    """Every folder between ``root`` (excluded) and ``path`` (excluded)."""
    parents = []
    current = path.parent
    while current != root and root in current.parents:
        parents.append(current)
        current = current.parent
    return parents


def _generation(by_version: dict[int, GenerationRow], version: int, project_id: str) -> GenerationRow:
    if version not in by_version:
        known = ", ".join(str(number) for number in sorted(by_version)) or "none"
        raise UsageError(f"project {project_id} has no version {version} (versions: {known})")
    return by_version[version]


def _source_tree(storage: Storage, generation: GenerationRow) -> ManifestTree | TreeSnapshot:
    try:
        target = storage.layout.generation_target(generation)
    except UnsafePathComponent as error:
        raise UsageError(str(error)) from None
    folder = source_dir(target)
    if not storage.is_folder(folder):                  # reached through real folders only
        raise UsageError(f"version {generation.version} ({generation.id}) has no folder in the new layout; "
                         "run `storage-migrate run` first")
    manifest = read_manifest(storage, manifest_path(target))
    if manifest is not None:
        return ManifestTree(storage, folder, manifest)
    return scan_tree(storage, folder)


def _compare_on_the_fly(storage: Storage, old: GenerationRow, new: GenerationRow, with_patch: bool) -> VersionChanges:
    try:
        old_tree, new_tree = _source_tree(storage, old), _source_tree(storage, new)
        comparison = compare.compare_trees(old_tree.checksums(), new_tree.checksums())
        patch_text = None
        if with_patch:
            buffer = io.BytesIO()
            write_tree_patch(buffer, old_tree, new_tree, comparison)
            patch_text = buffer.getvalue()
    except GenerationError as error:
        raise UsageError(str(error)) from None
    summary = compare.ChangeSummary.from_comparison(comparison, old.version or 0)
    return VersionChanges(
        version=new.version or 0,
        generation_id=new.id,
        from_version=old.version,
        added=summary.added,
        modified=summary.modified,
        deleted=summary.deleted,
        patch=None,
        patch_text=patch_text,
    )
