"""``storage-migrate verify``: a read-only comparison of the database with the disk — the schema,
per project the active generation and ``latest_version``, per generation the folder, counts,
sizes, checksums, the patch (by meaning: file list and blob ids) and both links.

Every normal state of the running application is accepted (README, "What ``verify`` accepts"),
and its inconsistent rows (``engine.triage``) are listed apart, not as problems. No symlink below
ROOT is followed: one where a folder of the layout should be is a problem, never a reason to skip."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.config import Settings
from storage_migrator.db.reads import iter_project_records, load_output_files
from storage_migrator.db.tables import has_active_generation_key, missing_columns
from storage_migrator.engine.installation import open_installation
from storage_migrator.engine.lock import current_holder
from storage_migrator.engine.survey import has_application_manifest
from storage_migrator.engine.triage import project_states, root_files
from storage_migrator.errors import (
    EXIT_OK,
    EXIT_VERIFY_PROBLEMS,
    FAILS_ONE_GENERATION,
    GenerationError,
    InvalidInput,
    LockHeld,
    UnsafePathComponent,
    failure_line,
)
from storage_migrator.patch import compare, reader
from storage_migrator.records import GenerationRow, ProjectRecord
from storage_migrator.report import empty_states, merge_states
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.layout import (
    ARCHIVE_DIR,
    MAX_PATCH_BYTES,
    check_path_component,
    manifest_path,
    patch_file_name,
    source_dir,
)
from storage_migrator.storage.manifest import Manifest, read_manifest_document
from storage_migrator.storage.source_tree import ManifestTree
from storage_migrator.storage.tree import TreeSnapshot, git_blob_id_file, read_regular_file, scan_tree

SourceTree = ManifestTree | TreeSnapshot
COUNT_KEYS = ("added", "modified", "deleted")


@dataclass(frozen=True)
class Problem:
    generation_id: str | None
    kind: str
    detail: str

    def to_json(self) -> dict:
        return {"generation_id": self.generation_id, "kind": self.kind, "detail": self.detail}


@dataclass
class _Bases:
    """What a later version's patch may be based on: the trees read so far (completed versions
    in the new layout), the versions archived, and the versions some row still has."""

    row_versions: set[int]
    trees: dict[int, SourceTree] = field(default_factory=dict)
    archived: set[int] = field(default_factory=set)

    def is_gap(self, version: object) -> bool:
        """A base the application deleted (no row) or archived: the patch waits for resync to
        re-base it, so nothing about it is an alarm yet."""
        return isinstance(version, int) and (version not in self.row_versions or version in self.archived)


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    generations_checked: int = 0
    application_states: dict[str, list[str]] = field(default_factory=empty_states)   # see ``triage``

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_VERIFY_PROBLEMS

    def to_json(self) -> dict:
        return {"ok": self.ok, "generations_checked": self.generations_checked,
                "problems": [problem.to_json() for problem in self.problems],
                "application_states": {key: sorted(found) for key, found in self.application_states.items()}}


def verify(settings: Settings) -> VerifyReport:
    report = VerifyReport()
    with open_installation(settings, "verify") as installation:
        holder = current_holder(installation.storage, installation.engine)
        if holder is not None:
            raise LockHeld(f"verify: a run is changing the installation ({holder}); what it has not finished would "
                           "show as problems — verify when it has finished")
        report.problems.extend(_schema_problems(installation.engine))
        engine = installation.engine
        for record in iter_project_records(engine):
            report.problems.extend(_project_problems(installation.storage, record, settings.legacy_links))
            merge_states(report.application_states, project_states(
                installation.storage, record, lambda generation_id: load_output_files(engine, generation_id)))
            report.generations_checked += len(record.generations)
        report.application_states.update(root_files(installation.storage))
    return report


def _schema_problems(engine: sa.Engine) -> list[Problem]:
    problems = []
    with engine.connect() as connection:
        for table, columns in missing_columns(connection).items():
            problems.append(Problem(None, "schema", f"{table} lacks columns {columns}"))
    if not has_active_generation_key(engine):
        problems.append(Problem(None, "schema", "no foreign key from projects.active_generation_id to generations.id"))
    return problems


def _project_problems(storage: Storage, record: ProjectRecord, legacy_links: bool) -> list[Problem]:
    problems: list[Problem] = []
    try:
        check_path_component(record.project_id, "project id")
    except UnsafePathComponent as error:
        return [Problem(None, "unsafe-id", str(error))]
    generations = record.generations
    versions = [g.version for g in generations if isinstance(g.version, int)]
    if record.exists and record.latest_version < max(versions, default=0):
        problems.append(Problem(None, "latest-version", f"project {record.project_id}: latest_version "
                                f"{record.latest_version} is below its highest version {max(versions)}"))
    completed = [generation for generation in generations if generation.status == "completed"]
    ids = {generation.id for generation in generations}
    if completed and record.active_generation_id not in ids:
        problems.append(Problem(None, "active", f"project {record.project_id} has completed generations but "
                                f"active_generation_id is {record.active_generation_id!r}"))
    for generation in generations:
        if generation.is_active != (generation.id == record.active_generation_id):
            problems.append(Problem(generation.id, "is-active", f"is_active is {generation.is_active} but the "
                                    f"project's active generation is {record.active_generation_id}"))
    linked = _project_link_problems(storage, record.project_id)
    if linked:
        return problems + linked        # nothing below a symlinked folder is read
    bases = _Bases(row_versions={g.version for g in generations if isinstance(g.version, int)})
    for generation in generations:
        try:
            tree = _generation_problems(storage, generation, bases, problems, legacy_links)
        except FAILS_ONE_GENERATION as error:
            problems.append(Problem(generation.id, "unreadable", failure_line(error)))
            tree = None
        if tree is not None and isinstance(generation.version, int) and generation.status == "completed":
            bases.trees.setdefault(generation.version, tree)
    problems.extend(_active_link_problems(storage, record))
    return problems


def _project_link_problems(storage: Storage, project_id: str) -> list[Problem]:
    """A project folder, ``generations/`` or ``archive/`` that is a symlink: following it would
    check (and pass) whatever lies elsewhere, so it is reported and nothing below it is read."""
    project = storage.layout.project_dir(project_id)
    for folder in (project, storage.layout.generations_dir(project_id), project / ARCHIVE_DIR):
        text = storage.link_text(folder)
        if text is not None:
            return [Problem(None, "symlink", f"{folder} is a symlink (to {text}); "
                            "it is never followed — replace it by the real folder")]
    return []


def _symlink_problem(storage: Storage, generation_id: str, path: Path, what: str) -> Problem:
    return Problem(generation_id, "symlink", f"{path} is a symlink (to {storage.link_text(path)}) where {what} "
                   "should be; it is never followed")


def _archive_problems(storage: Storage, generation: GenerationRow, version: int) -> list[Problem] | None:
    """None if the generation is not archived; else the problems of its archive entry (a real
    folder with a real ``source/`` is the application's normal archive and is not read)."""
    entry = storage.layout.archive_dir(generation.project_id, version, generation.id)
    if storage.is_link(entry):
        return [_symlink_problem(storage, generation.id, entry, "an archived generation")]
    if not storage.is_folder(entry):
        return None
    if storage.is_link(source_dir(entry)):
        return [_symlink_problem(storage, generation.id, source_dir(entry), "an archived generation's source/")]
    return []


def _generation_problems(
    storage: Storage, generation: GenerationRow, bases: _Bases, problems: list[Problem],
    legacy_links: bool,
) -> SourceTree | None:
    """Check one generation; returns its tree as read (for a later version's patch) if it is in
    the new storage.layout."""
    if generation.is_unfinished or not isinstance(generation.version, int):
        return None                     # the application may be writing it; resync picks it up later
    check_path_component(generation.id, "generation id")
    version = generation.version
    target = storage.layout.target_dir(generation.project_id, version, generation.id)
    archive_problems = _archive_problems(storage, generation, version)
    if archive_problems is not None:    # archived by the application
        if not archive_problems:
            bases.archived.add(version)
        problems.extend(archive_problems)
        return None
    if not storage.layout.names_target(generation.storage_path, generation.project_id, version, generation.id):
        legacy = storage.layout.legacy_dir(generation.id)
        if generation.storage_path is None and storage.is_folder(source_dir(target)) and (
                not storage.is_folder(legacy) or has_application_manifest(storage, target)):
            return None                 # the application wrote the folder, not the column: resync fills it
        if storage.is_folder(legacy):
            problems.append(Problem(generation.id, "not-migrated",
                                    f"still at {generation.storage_path}; run `storage-migrate resync`"))
        elif generation.status == "completed":
            problems.append(Problem(generation.id, "storage-path", f"storage_path {generation.storage_path} does "
                                    f"not name {storage.layout.target_storage_path(generation.project_id, version, generation.id)}"))
        return None
    folder = source_dir(target)
    for path, what in ((target, "a version folder"), (folder, "a version's source/")):
        if storage.is_link(path):
            problems.append(_symlink_problem(storage, generation.id, path, what))
            return None
    if not storage.is_folder(folder):
        problems.append(Problem(generation.id, "missing-folder", f"{folder} does not exist"))
        return None
    snapshot = scan_tree(storage, folder)
    if generation.file_count != snapshot.file_count:
        problems.append(Problem(generation.id, "file-count", f"file_count {generation.file_count}, disk {snapshot.file_count}"))
    if generation.total_size_bytes != snapshot.total_size_bytes:
        problems.append(Problem(generation.id, "size", f"total_size_bytes {generation.total_size_bytes}, disk {snapshot.total_size_bytes}"))
    manifest, manifest_problem = _manifest_or_problem(storage, manifest_path(target))
    if manifest_problem is not None:
        problems.append(Problem(generation.id, "manifest", manifest_problem))
    if manifest is not None and manifest.checksums != snapshot.checksums():
        found = snapshot.checksums()
        differing = sorted(path for path in manifest.checksums.keys() | found.keys()
                           if manifest.checksums.get(path) != found.get(path))
        problems.append(Problem(generation.id, "checksum",
                                f"{len(differing)} file(s) differ from the manifest, e.g. {differing[0]!r}"))
    if generation.status == "completed":
        problems.extend(_patch_problems(storage, generation, snapshot, bases, target))
    # Only the tool's manifest says the tool placed this generation (and its flat link); one the
    # application wrote itself gets its link from the next resync.
    problems.extend(_legacy_link_problems(storage, generation, legacy_links and manifest is not None))
    return snapshot


_TOOL_ONLY_KEYS = frozenset({"format", "fingerprint_digest", "checksums", "fingerprints"})
"""Keys only the tool's manifest has: a manifest holding one is the tool's, whatever else it holds."""


def _manifest_or_problem(storage: Storage, path: Path) -> tuple[Manifest | None, str | None]:
    """The tool's manifest, or why the generation's manifest is a problem: missing, not a JSON
    object (unreadable, not a regular file, too large to keep the application's keys), or the
    tool's but not readable as such. The application's own manifest (none of the tool's keys) is
    no problem: resync merges into it."""
    try:
        document = read_manifest_document(storage, path)
    except GenerationError as error:
        return None, str(error)
    if document is None:
        if not storage.occupied(path):
            return None, f"{path} is missing; run `storage-migrate resync`"
        return None, f"{path} is unreadable; remove it and run `storage-migrate resync`"
    try:
        return Manifest.from_document(document), None
    except InvalidInput:
        if _TOOL_ONLY_KEYS & document.keys():
            return None, f"{path} is the tool's but unreadable; remove it and run `storage-migrate resync`"
        return None, None


def _patch_problems(
    storage: Storage, generation: GenerationRow, snapshot: TreeSnapshot, bases: _Bases, target: Path
) -> list[Problem]:
    """The recorded counts and the patch must describe the change from the recorded
    from-version to this one. A summary without counts (the application's) has only its patch
    checked, by its file list. A base the application archived or deleted is a gap, not an alarm."""
    summary = generation.summary
    from_version = summary.get("from_version")
    counted = all(isinstance(summary.get(key), int) for key in COUNT_KEYS)
    if from_version is None:
        if counted and summary.get("added") != snapshot.file_count:
            return [Problem(generation.id, "changes-summary", f"changes_summary {summary} for a first version")]
        return []
    previous = bases.trees.get(from_version) if isinstance(from_version, int) else None
    if previous is None:
        if bases.is_gap(from_version) or not counted:
            return []
        return [Problem(generation.id, "changes-summary", f"diff from v{from_version}, which is not on disk")]
    comparison = compare.compare_trees(previous.checksums(), snapshot.checksums())
    if not counted:
        return _application_patch_problems(storage, generation, target, from_version, comparison, previous, snapshot)
    if compare.ChangeSummary.from_comparison(comparison, from_version).to_json() != {
            key: summary.get(key) for key in (*COUNT_KEYS, "from_version")}:
        return [Problem(generation.id, "changes-summary", f"changes_summary {summary} does not match the folders")]
    if generation.diff_from_previous is None:
        return [Problem(generation.id, "patch", f"no diff_from_previous for a diff from v{from_version}")]
    patch_file = storage.layout.disk_path(generation.diff_from_previous)
    if patch_file is None:
        return [Problem(generation.id, "patch", f"diff_from_previous {generation.diff_from_previous!r} is not under ROOT")]
    try:
        patch = read_regular_file(storage, patch_file.parent, patch_file.name, max_bytes=MAX_PATCH_BYTES)
    except GenerationError as error:
        return [Problem(generation.id, "patch", str(error))]
    return _patch_meaning_problems(generation, patch, comparison, previous, snapshot)


def _application_patch_problems(
    storage: Storage, generation: GenerationRow, target: Path, from_version: int,
    comparison: compare.TreeComparison, previous: SourceTree, snapshot: TreeSnapshot,
) -> list[Problem]:
    """The application's patch (``diff -ru``) is where its row names it or, as it writes it, in
    the version folder as ``diff_from_v<P>.patch``; none yet is normal (resync writes one)."""
    named = storage.layout.disk_path(generation.diff_from_previous)
    candidates = [path for path in (named, target / patch_file_name(from_version)) if path is not None]
    patch_file = next((path for path in candidates if storage.occupied(path)), None)
    if patch_file is None:
        return []
    try:
        patch = read_regular_file(storage, patch_file.parent, patch_file.name, max_bytes=MAX_PATCH_BYTES)
    except GenerationError as error:
        return [Problem(generation.id, "patch", str(error))]
    return _patch_meaning_problems(generation, patch, comparison, previous, snapshot)


def _patch_meaning_problems(generation: GenerationRow, patch: bytes, comparison: compare.TreeComparison,
                            previous: SourceTree, snapshot: TreeSnapshot) -> list[Problem]:
    """A patch is right when it names exactly the changed files and, where it names blob ids,
    the ids of the two versions' files: whichever engine (or the application) wrote it."""
    entries = reader.parse_patch(patch)
    if entries is None:
        return [Problem(generation.id, "patch", "the patch file is not a patch")]
    old_paths, new_paths = previous.checksums().keys(), snapshot.checksums().keys()
    listed = reader.comparison_of(reader.expand_directories(entries, old_paths, new_paths))
    if listed.changed_paths() != comparison.changed_paths():
        missing = sorted(set(comparison.changed_paths()) - set(listed.changed_paths()))
        extra = sorted(set(listed.changed_paths()) - set(comparison.changed_paths()))
        return [Problem(generation.id, "patch", f"the patch does not list the changed files "
                        f"(missing {missing[:3]}, extra {extra[:3]})")]
    for entry in entries:
        if not entry.has_blob_ids:
            continue
        old_id = git_blob_id_file(previous.storage, previous.root, entry.path) if entry.path in old_paths else None
        new_id = git_blob_id_file(snapshot.storage, snapshot.root, entry.path) if entry.path in new_paths else None
        if not entry.agrees_with(old_id, new_id):
            return [Problem(generation.id, "patch", f"the patch's blob ids for {entry.path!r} are not the files' ids")]
    return []


def _legacy_link_problems(storage: Storage, generation: GenerationRow, legacy_links: bool) -> list[Problem]:
    link = storage.layout.legacy_dir(generation.id)
    expected = storage.layout.legacy_link_text(generation.project_id, generation.version or 0, generation.id)
    found = storage.link_text(link)
    if found is not None:
        if found != expected:
            return [Problem(generation.id, "legacy-link", f"{link} points to {found}, expected {expected}")]
        return []
    if legacy_links and not storage.occupied(link):
        return [Problem(generation.id, "legacy-link", f"{link} is missing; run `storage-migrate resync`")]
    return []                           # a real folder there is the application's scratch copy


def _active_link_problems(storage: Storage, record: ProjectRecord) -> list[Problem]:
    link = storage.layout.active_link(record.project_id)
    active = next((g for g in record.generations if g.id == record.active_generation_id), None)
    if active is None or not storage.is_folder(source_dir(storage.layout.generation_target(active))):
        return []
    expected = storage.layout.generation_target(active).name
    found = storage.link_text(link)
    if found != expected:
        found = "nothing" if found is None else found
        return [Problem(active.id, "active-link", f"{link} points to {found}, expected {expected}")]
    return []


