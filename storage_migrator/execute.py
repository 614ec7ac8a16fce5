"""The executor: carries out a ``ProjectPlan`` — moves, manifests, patches, the ``active`` link —
and queues the metadata, written in batches.

Crash safety comes from the order of steps, not from a journal: each step is one atomic rename
(see fsops), and ``plan`` recognises every state between two steps (a target without source, a
source without manifest, both legacy and copy, metadata not yet written) and finishes the job.
Within a project, versions are handled in order so the diff of v<N> reads v<P> as just written.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import diff
from .db import first_line, GenerationRow, GenerationUpdate, ProjectUpdate, load_output_files, write_updates
from .errors import GenerationError
from .faults import checkpoint
from .fsops import (
    atomic_write,
    atomic_write_bytes,
    discard_partial,
    discard_tree,
    flush_to_disk,
    make_dirs,
    move_tree,
    replace_symlink,
)
from .layout import (
    ARTIFACTS_DIR,
    PARTIAL_SOURCE_DIR,
    StorageLayout,
    UnsafePathComponent,
    artifacts_dir,
    check_relative_file_path,
    is_tool_written,
    manifest_path,
    parse_patch_file_name,
    partial_source_dir,
    patch_file_name,
    source_dir,
)
from .manifest import Manifest
from .plan import Action, GenerationPlan, ProjectPlan
from .report import GenerationOutcome, RunReport
from .tree import TreeSnapshot, fingerprint_tree, read_regular_file, scan_tree

DONE_ACTIONS = {
    Action.MOVE: "moved",
    Action.FINISH_MOVE: "finished-move",
    Action.REBUILD: "rebuilt",
    Action.REFRESH: "refreshed",
}


@dataclass
class ManifestTree:
    """A migrated source tree known from its manifest: checksums without reading any file."""

    root: Path
    manifest: Manifest

    @property
    def file_count(self) -> int:
        return self.manifest.file_count

    @property
    def total_size_bytes(self) -> int:
        return self.manifest.total_size_bytes

    def checksums(self) -> dict[str, str]:
        return self.manifest.checksums

    def read(self, path: str) -> bytes:
        return read_regular_file(self.root, path)


SourceTree = TreeSnapshot | ManifestTree


@dataclass
class PendingWrite:
    outcome: GenerationOutcome
    update: GenerationUpdate | None


@dataclass
class Executor:
    """Carries out project plans one after another; ``finish()`` flushes the last batch."""

    layout: StorageLayout
    engine: Engine
    report: RunReport
    batch_size: int = 500
    on_generation: Callable[[int], None] = lambda count: None
    _pending: list[PendingWrite] = field(default_factory=list)
    _project_updates: list[ProjectUpdate] = field(default_factory=list)

    def carry_out(self, plan: ProjectPlan) -> None:
        previous: SourceTree | None = None
        previous_version: int | None = None
        for generation_plan in plan.generations:
            is_active = generation_plan.id == plan.active_generation_id
            outcome, update, tree = self._handle(generation_plan, previous, previous_version, is_active)
            self._pending.append(PendingWrite(outcome, update))
            if tree is not None:
                previous, previous_version = tree, generation_plan.generation.version
            self.on_generation(1)
        self._point_active_link(plan)
        record = plan.record
        if record.exists and (
            record.latest_version != plan.latest_version or record.active_generation_id != plan.active_generation_id
        ):
            self._project_updates.append(ProjectUpdate(plan.project_id, plan.latest_version, plan.active_generation_id))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def finish(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the queued metadata in one transaction; on a database error the generations of
        this batch are reported failed (their disk state is complete: the next run only writes)."""
        updates = [pending.update for pending in self._pending if pending.update is not None]
        try:
            flush_to_disk()
            checkpoint("before-database-write")
            write_updates(self.engine, updates, self._project_updates)
            checkpoint("after-database-write")
            for pending in self._pending:
                self.report.add(pending.outcome)
        except sa.exc.DBAPIError as error:
            message = f"database write failed ({first_line(error)}); rerun to finish"
            for pending in self._pending:
                outcome = pending.outcome
                if pending.update is not None and not outcome.failed:
                    outcome = GenerationOutcome(outcome.id, outcome.project_id, outcome.version, "failed",
                                                outcome.storage_path, error=message)
                self.report.add(outcome)
        self._pending.clear()
        self._project_updates.clear()

    # -- one generation ------------------------------------------------------------------

    def _handle(
        self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None, is_active: bool
    ) -> tuple[GenerationOutcome, GenerationUpdate | None, SourceTree | None]:
        generation = plan.generation
        if plan.action in (Action.SKIP, Action.FAIL):
            outcome = _outcome(plan, "failed" if plan.action == Action.FAIL else "skipped",
                               generation.storage_path, error=plan.reason if plan.action == Action.FAIL else None)
            return outcome, _flag_only_update(generation, is_active), None
        try:
            if plan.action == Action.UNCHANGED:
                tree = self._unchanged_tree(plan)
                return _outcome(plan, "unchanged", plan.storage_path), _flag_only_update(generation, is_active), tree
            tree = self._put_in_place(plan)
            summary, patch_path = self._write_manifest_and_patch(plan, tree, previous, previous_version)
        except GenerationError as error:
            return _outcome(plan, "failed", generation.storage_path, error=str(error)), None, None
        update = GenerationUpdate(
            generation_id=generation.id,
            storage_path=plan.storage_path,
            file_count=tree.file_count,
            total_size_bytes=tree.total_size_bytes,
            diff_from_previous=patch_path,
            changes_summary=summary.to_json(),
            is_active=is_active,
        )
        self.report.bytes_handled += tree.total_size_bytes
        outcome = _outcome(plan, DONE_ACTIONS[plan.action], plan.storage_path,
                           from_version=previous_version)
        return outcome, update, tree

    def _unchanged_tree(self, plan: GenerationPlan) -> SourceTree:
        """An unchanged generation as the next version's diff base: its manifest, read by the plan."""
        assert plan.manifest is not None, "the plan calls a generation unchanged only with a manifest"
        return ManifestTree(source_dir(_target(plan)), plan.manifest)

    def _put_in_place(self, plan: GenerationPlan) -> SourceTree:
        """Make ``target/source`` hold the generation's files; return them as read."""
        target = _target(plan)
        source = source_dir(target)
        if plan.action == Action.MOVE:
            snapshot = scan_tree(_legacy(plan))      # reads and checks everything before anything moves
            self._prepare_target(plan)
            checkpoint("target-prepared")
            move_tree(_legacy(plan), source, snapshot, self.layout.trash_dir)
            snapshot.root = source
            checkpoint("moved")
            return snapshot
        if plan.action == Action.FINISH_MOVE:
            snapshot = scan_tree(source)
            if scan_tree(_legacy(plan), keep_contents=False).checksums() != snapshot.checksums():
                raise GenerationError(
                    f"{_legacy(plan)} and {source} both exist with different content: "
                    "compare them, keep the right one in one place, and rerun"
                )
            discard_tree(_legacy(plan), self.layout.trash_dir)
            checkpoint("legacy-discarded")
            return snapshot
        if plan.action == Action.REBUILD:
            self._prepare_target(plan)
            self._rebuild_from_database(plan)
            checkpoint("rebuilt")
            return scan_tree(source)
        if plan.manifest is not None and fingerprint_tree(source) == plan.manifest.fingerprints:
            return ManifestTree(source, plan.manifest)    # only metadata or the diff to redo
        return scan_tree(source)

    def _prepare_target(self, plan: GenerationPlan) -> None:
        """Create the target folder, or clear what an interrupted run of this tool left in it.
        Anything the tool would not have written there is a collision and stops this generation."""
        target = _target(plan)
        generation = plan.generation
        for folder in (self.layout.project_dir(generation.project_id), self.layout.generations_dir(generation.project_id)):
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise GenerationError(f"{folder} is not a plain folder (a symlink is never followed); fix it and rerun")
        if target.is_symlink():
            raise GenerationError(f"{target} is a symlink; it is never followed — remove it and rerun")
        if target.is_dir():
            for entry in target.iterdir():
                if entry.name == PARTIAL_SOURCE_DIR:
                    discard_partial(entry)          # a copy or rebuild that a killed run began
                elif is_tool_written(entry.name) or _is_empty_artifacts(entry):
                    continue                        # rewritten later in this run
                else:
                    raise GenerationError(
                        f"the target {target} already exists and holds {entry.name!r}, which this tool did "
                        "not write: move it away and rerun"
                    )
        make_dirs(artifacts_dir(target))

    def _rebuild_from_database(self, plan: GenerationPlan) -> None:
        """Write the ``output_files`` column into ``source/`` through a staging folder, so the
        folder appears whole or not at all. File times are the generation's ``created_at``."""
        generation = plan.generation
        files = load_output_files(self.engine, generation.id)
        if not files:
            raise GenerationError("output_files is empty; nothing to rebuild the folder from")
        target = _target(plan)
        staging = partial_source_dir(target)
        discard_partial(staging)
        timestamp_ns = _timestamp_ns(generation.created_at)
        try:
            for relative_path, content in sorted(files.items()):
                check_relative_file_path(relative_path)
                if not isinstance(content, str):
                    raise GenerationError(f"output_files[{relative_path!r}] is not text; cannot rebuild it")
                destination = staging / relative_path
                destination.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(destination, content.encode("utf-8", "surrogateescape"))
                os.utime(destination, ns=(timestamp_ns, timestamp_ns))
            os.rename(staging, source_dir(target))
        except UnsafePathComponent as error:
            discard_partial(staging)
            raise GenerationError(f"output_files holds an unsafe path: {error}") from None
        except OSError as error:
            discard_partial(staging)
            raise GenerationError(f"cannot rebuild {source_dir(target)}: {error.strerror}") from None

    def _write_manifest_and_patch(
        self, plan: GenerationPlan, tree: SourceTree, previous: SourceTree | None, previous_version: int | None
    ) -> tuple[diff.ChangeSummary, str | None]:
        generation = plan.generation
        target = _target(plan)
        if not os.path.isdir(artifacts_dir(target)):
            make_dirs(artifacts_dir(target))        # a folder put in place by hand or by an older run
        manifest = tree.manifest if isinstance(tree, ManifestTree) else Manifest.from_snapshot(
            tree, generation.id, generation.project_id, generation.version or 0, generation.created_at
        )
        _write_if_different(manifest_path(target), manifest.to_bytes())
        checkpoint("manifest-written")
        if previous is None or previous_version is None:
            _remove_patches(target, keep=None)
            return diff.ChangeSummary.first_version(tree.file_count), None
        comparison = diff.compare_trees(previous.checksums(), tree.checksums())
        patch_file = target / patch_file_name(previous_version)
        atomic_write(patch_file, lambda stream: diff.write_patch(stream, comparison, previous.read, tree.read))
        _remove_patches(target, keep=previous_version)
        checkpoint("patch-written")
        patch_path = self.layout.patch_storage_path(
            generation.project_id, generation.version or 0, generation.id, previous_version
        )
        return diff.ChangeSummary.from_comparison(comparison, previous_version), patch_path

    def _point_active_link(self, plan: ProjectPlan) -> None:
        """``active`` → the active generation's folder if it is in the new layout; else no link."""
        generations_dir = self.layout.generations_dir(plan.project_id)
        if not generations_dir.is_dir() or generations_dir.is_symlink():
            return
        link = generations_dir / "active"
        active = next((p for p in plan.generations if p.id == plan.active_generation_id), None)
        if active is not None and active.target_dir is not None and source_dir(active.target_dir).is_dir():
            try:
                replace_symlink(link, active.target_dir.name)
            except GenerationError as error:
                self.report.add(_outcome(active, "failed", active.storage_path, error=str(error)))
            checkpoint("active-link")
        elif link.is_symlink():
            link.unlink()


def _target(plan: GenerationPlan) -> Path:
    assert plan.target_dir is not None, "only plans with a target reach the executor's disk steps"
    return plan.target_dir


def _legacy(plan: GenerationPlan) -> Path:
    assert plan.legacy_dir is not None
    return plan.legacy_dir


def _outcome(plan: GenerationPlan, action: str, storage_path: str | None, error: str | None = None,
             from_version: int | None = None) -> GenerationOutcome:
    generation = plan.generation
    return GenerationOutcome(
        id=generation.id,
        project_id=generation.project_id,
        version=generation.version,
        action=action,
        storage_path=storage_path,
        error=error,
        reason=plan.reason if error is None else None,
        from_version=from_version,
    )


def _flag_only_update(generation: GenerationRow, is_active: bool) -> GenerationUpdate | None:
    """Keep every column but ``is_active``, which must agree with the project's active id."""
    if generation.is_active == is_active:
        return None
    return GenerationUpdate(
        generation_id=generation.id,
        storage_path=generation.storage_path,
        file_count=generation.file_count,
        total_size_bytes=generation.total_size_bytes,
        diff_from_previous=generation.diff_from_previous,
        changes_summary=generation.changes_summary,
        is_active=is_active,
    )


def _is_empty_artifacts(entry: Path) -> bool:
    return entry.name == ARTIFACTS_DIR and entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir())


def _write_if_different(path: Path, content: bytes) -> None:
    try:
        if path.read_bytes() == content:
            return
    except OSError:
        pass
    atomic_write_bytes(path, content)


def _remove_patches(target: Path, keep: int | None) -> None:
    for entry in target.iterdir():
        version = parse_patch_file_name(entry.name)
        if version is not None and version != keep:
            entry.unlink()


def _timestamp_ns(created_at: datetime | None) -> int:
    if created_at is None:
        return 0
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)     # SQLite hands back naive UTC
    return int(created_at.timestamp()) * 1_000_000_000
