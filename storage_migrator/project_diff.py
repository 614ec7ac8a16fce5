"""``storage-migrate diff PROJECT_ID``: a project's version history as recorded (counts and patch
paths from the database), or any two versions compared on the fly from their folders."""
from __future__ import annotations

from dataclasses import dataclass, field


from . import diff
from .config import Settings
from .db import GenerationRow, load_projects
from .errors import GenerationError, UsageError
from .execute import ManifestTree
from .layout import StorageLayout, manifest_path, source_dir
from .manifest import read_manifest
from .migrate import open_installation
from .tree import TreeSnapshot, scan_tree


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
    layout, engine = open_installation(settings, "diff")
    try:
        with engine.connect() as connection:
            records = load_projects(connection, [project_id])
    finally:
        engine.dispose()
    record = records[0]
    if not record.exists and not record.generations:
        raise UsageError(f"project {project_id!r} not found in the database; check the id")
    by_version = {generation.version: generation for generation in record.generations if generation.version}
    report = ProjectDiffReport(project_id)
    if from_version is not None or to_version is not None:
        if from_version is None or to_version is None:
            raise UsageError("--from and --to go together; give both versions")
        old, new = (_generation(by_version, version, project_id) for version in (from_version, to_version))
        report.versions.append(_compare_on_the_fly(layout, old, new, with_patch))
        return report
    for version, generation in sorted(by_version.items()):
        summary = generation.changes_summary or {}
        patch_text = None
        if with_patch and generation.diff_from_previous:
            patch_file = layout.disk_path(generation.diff_from_previous)
            patch_text = patch_file.read_bytes() if patch_file and patch_file.is_file() else b""
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


def _generation(by_version: dict[int, GenerationRow], version: int, project_id: str) -> GenerationRow:
    if version not in by_version:
        known = ", ".join(str(number) for number in sorted(by_version)) or "none"
        raise UsageError(f"project {project_id} has no version {version} (versions: {known})")
    return by_version[version]


def _source_tree(layout: StorageLayout, generation: GenerationRow) -> ManifestTree | TreeSnapshot:
    target = layout.target_dir(generation.project_id, generation.version or 0, generation.id)
    folder = source_dir(target)
    if not folder.is_dir():
        raise UsageError(f"version {generation.version} ({generation.id}) has no folder in the new layout; "
                         "run `storage-migrate run` first")
    manifest = read_manifest(manifest_path(target))
    if manifest is not None:
        return ManifestTree(folder, manifest)
    return scan_tree(folder, keep_contents=False)


def _compare_on_the_fly(layout: StorageLayout, old: GenerationRow, new: GenerationRow, with_patch: bool) -> VersionChanges:
    try:
        old_tree, new_tree = _source_tree(layout, old), _source_tree(layout, new)
        comparison = diff.compare_trees(old_tree.checksums(), new_tree.checksums())
        patch_text = diff.render_patch(comparison, old_tree.read, new_tree.read) if with_patch else None
    except GenerationError as error:
        raise UsageError(str(error)) from None
    summary = diff.ChangeSummary.from_comparison(comparison, old.version or 0)
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
