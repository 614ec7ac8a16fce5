"""The executor: carries out a ``ProjectPlan`` — moves, manifests, patches, the ``active`` link,
the backward-compatibility links — and hands the metadata to the batch writer (a move's is
written with its new place, by its claim batch).

Crash safety comes from the order of steps, not from a journal: each step is one atomic rename
(``storage.steps``), and ``plan`` recognises every state between two steps (a target without
source, a source without manifest, both legacy and copy, metadata not yet written) and finishes
the job. Within a project, versions are handled in order so the diff of v<N> reads v<P> as just
written. ``_handle`` is the one place a generation is handled: an error of
``FAILS_ONE_GENERATION`` there fails that generation alone, with a one-line reason, and the run
goes on.

Long because it is one class whose step order is the crash safety: each action's claim, disk
steps, publish and undo stay side by side so the order can be read in one place.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.engine import Connection, Engine

from storage_migrator.db.reads import read_row_seen
from storage_migrator.db.writes import GenerationClaims, Place, claimed_generations
from storage_migrator.engine.batch import DEFAULT_BATCH_SIZE, BatchWriter
from storage_migrator.engine.plan import Action, GenerationPlan, ProjectPlan
from storage_migrator.errors import FAILS_ONE_GENERATION, GenerationError, UnsafePathComponent, failure_line
from storage_migrator.faults import checkpoint
from storage_migrator.patch import compare
from storage_migrator.records import GenerationRow, GenerationUpdate, ProjectUpdate, RowDrift, RowSeen, as_utc
from storage_migrator.report import GenerationOutcome, Outcome, RunReport
from storage_migrator.storage.handle import Storage, is_archived
from storage_migrator.storage.layout import (
    ARTIFACTS_DIR,
    PARTIAL_SOURCE_DIR,
    SOURCE_DIR,
    StorageLayout,
    artifacts_dir,
    check_relative_file_path,
    is_tool_written,
    manifest_path,
    parse_legacy_link_text,
    parse_patch_file_name,
    partial_source_dir,
    patch_file_name,
    source_dir,
)
from storage_migrator.storage.manifest import Manifest, read_manifest_document, summarize_tree
from storage_migrator.storage.source_tree import ManifestTree, SourceTree, write_tree_patch
from storage_migrator.storage.steps import (
    adopt_owner,
    atomic_write,
    atomic_write_bytes,
    discard_partial,
    discard_tree,
    flush_to_disk,
    is_prepared_link,
    make_owned_dirs,
    move_tree,
    put_back_over_link,
    remove_symlink,
    remove_temp_files,
    rename_dir,
    rename_entry,
    rename_relinking,
    replace_symlink,
)
from storage_migrator.storage.tree import CONTENT_CACHE_LIMIT, FileRecord, TreeSnapshot, read_regular_file, scan_tree

Handled = tuple[GenerationOutcome, GenerationUpdate | None, "SourceTree | None"]
"""What handling one generation gives: its report line, the metadata to write (if any), and
its tree as the next version's diff base (if it ends on disk)."""

Step = Callable[["Executor", GenerationPlan, "SourceTree | None", "int | None"], Handled]

CLAIM_BATCH = 8
"""Consecutive moves of a project claimed, moved, recorded and published together: one ``SELECT …
FOR UPDATE``, one publishing statement and one commit for the batch. Small, because the
application waits for the batch's disk steps if it writes one of these rows meanwhile: renames,
flat links, manifests and patches (a patch reads the changed files, mostly kept in memory from
the scan before the claim) and one ``syncfs``; never the scan of the folders."""


class FailedInPlace(Exception):
    """A generation whose files are in place (moved, rebuilt or already there, and scanned)
    failed while its manifest, patch or link was written: it fails alone, and its tree is
    still the next version's diff base, as the plan counted on — so one version's failure
    (a full disk, an unreadable base) never makes every later one diff against an older base."""

    def __init__(self, cause: BaseException, tree: SourceTree) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.tree = tree


@dataclass(frozen=True)
class _HeldManifest:
    """A manifest recording new bytes of a folder in place, written once the rows made from those
    bytes are committed (``Executor._hold_manifest``)."""

    plan: GenerationPlan
    manifest: Manifest


@dataclass(frozen=True)
class _Staged:
    """What a claim batch did for one move: the move handled (its folder moved, its manifest,
    patch and link written, its row published with all its metadata: the update is None then),
    or the exception that stopped it, raised again when the generation's turn comes."""

    handled: Handled | None = None
    error: Exception | None = None


class RowDrifted(Exception):
    """The application deleted or changed the row since it was planned: the step is not taken."""

    def __init__(self, drift: RowDrift) -> None:
        super().__init__(drift.value)
        self.drift = drift


_STOPS_ONE_MOVE: tuple[type[Exception], ...] = (RowDrifted, *FAILS_ONE_GENERATION)
"""What stops one move of a claim batch, the others going on: kept until its generation's turn."""


@dataclass
class Executor:
    """Carries out project plans one after another; ``finish()`` flushes the last batch."""

    storage: Storage
    engine: Engine
    report: RunReport
    legacy_links: bool = True
    batch_size: int = DEFAULT_BATCH_SIZE
    on_generation: Callable[[int], None] = lambda count: None
    fence: Callable[[], None] = lambda: None
    """Called right before writes below ROOT — a move, a rebuild, a manifest and patch, a link,
    each project's ``active`` link: a coordinated participant's raises once it may no longer
    write (``coordinate.Participant.fence``) — never one of ``FAILS_ONE_GENERATION``, so the
    command stops there."""
    keep_claim_session: bool = True
    """Claims are made on one connection kept for the executor's life (no pool check-out, so no
    pre-ping, per claim batch); False where the engine has a single session that every statement
    shares (a coordinated participant's): each claim then checks the session out and back."""
    _writer: BatchWriter = field(init=False)
    _published: dict[str, RowSeen] = field(init=False, default_factory=dict)   # id -> the row as the tool wrote it
    _staged: dict[str, _Staged] = field(init=False, default_factory=dict)   # id -> its move, done by a claim batch
    _made_targets: set[str] = field(init=False, default_factory=set)   # ids whose target folder this run made
    _diffed_from: dict[str, GenerationPlan] = field(init=False, default_factory=dict)   # base id -> the plan diffed from it
    _manifests_after: dict[str, list[_HeldManifest]] = field(init=False, default_factory=dict)   # see _hold_manifest
    _as_recorded: set[int] = field(init=False, default_factory=set)   # versions: see _note_bytes_as_recorded
    _claims: Connection | None = field(init=False, default=None)   # the connection every claim is made on

    def __post_init__(self) -> None:
        self._writer = BatchWriter(self.storage, self.engine, self.report, self.batch_size,
                                   after_commit=self._write_held_manifests)

    @property
    def layout(self) -> StorageLayout:
        return self.storage.layout

    def carry_out(self, plan: ProjectPlan) -> None:
        previous: SourceTree | None = None
        previous_version: int | None = None
        self._staged.clear()
        self._made_targets.clear()
        self._diffed_from = _diffed_from(plan.generations)
        self._as_recorded.clear()
        checkpoint("planned")
        for position, generation_plan in enumerate(plan.generations):
            if generation_plan.action == Action.MOVE and generation_plan.id not in self._staged:
                self._stage_moves(_claim_batch(plan.generations, position), previous, previous_version)
            outcome, update, tree = self._handle(generation_plan, previous, previous_version)
            self._published.pop(generation_plan.id, None)
            self._writer.add(outcome, update)
            if tree is not None and generation_plan.is_diff_base:
                previous, previous_version = tree, generation_plan.generation.version
            if generation_plan.leftover is not None:
                self.report.leftovers.append(str(generation_plan.leftover))
            self.on_generation(1)
        self.fence()
        self._point_active_link(plan)
        record = plan.record
        flags_disagree = any(g.is_active != (g.id == plan.active_generation_id) for g in record.generations)
        if record.exists and (plan.latest_version > record.latest_version or flags_disagree
                              or record.active_generation_id != plan.active_generation_id):
            self._writer.add_project(ProjectUpdate(plan.project_id, plan.latest_version, plan.active_generation_id,
                                                   record.active_generation_id))
        self._writer.flush_if_full()

    def fail_unplanned(self, outcomes: Sequence[GenerationOutcome]) -> None:
        """Report the failed lines of a project that could not be planned; nothing is written."""
        for outcome in outcomes:
            self._writer.add(outcome)
            self.on_generation(1)
        self._writer.flush_if_full()

    def finish(self) -> None:
        try:
            self._writer.flush()
        finally:
            if self._claims is not None:
                self._claims.close()
                self._claims = None

    @contextmanager
    def _claim_session(self) -> Iterator[Connection]:
        """The connection to claim rows on: the kept one (opened on first use), or a check-out."""
        if not self.keep_claim_session:
            with self.engine.connect() as connection:
                yield connection
            return
        if self._claims is None:
            self._claims = self.engine.connect()
        yield self._claims

    # -- one generation ------------------------------------------------------------------

    def _handle(
        self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None
    ) -> Handled:
        """Handle one generation by its action's step; whatever goes wrong fails this generation
        alone (``FAILS_ONE_GENERATION``), with one line saying why."""
        try:
            return self._STEPS[plan.action](self, plan, previous, previous_version)
        except RowDrifted as drifted:
            skipped = GenerationOutcome.from_plan(plan, Outcome.SKIPPED, plan.generation.storage_path)
            return skipped.drifted(drifted.drift), None, None
        except FailedInPlace as failed:
            outcome = self._failed(plan, failure_line(failed.cause), previous)
            in_place = outcome.failed and self.storage.is_folder(failed.tree.root)
            return outcome, None, failed.tree if in_place else None
        except FAILS_ONE_GENERATION as error:
            return self._failed(plan, failure_line(error), previous), None, None

    def _failed(self, plan: GenerationPlan, reason: str, base: SourceTree | None) -> GenerationOutcome:
        """A failure on a generation the application deleted, changed or archived meanwhile —
        or whose folder, or its diff base's, vanished under the tool (the application's delete
        removes the files before the row) — is that, not a failure: the next resync looks again.
        The row is compared with what the tool itself last wrote to it (``_expected_row``), so
        the tool's own publish never passes for the application's change: every other failure,
        before or after a publish (a full disk, an unreadable patch base), stays ``failed``."""
        expected = self._expected_row(plan)
        outcome = GenerationOutcome.from_plan(plan, Outcome.FAILED, expected.storage_path, error=reason)
        drift = self._drift_since(plan, expected)
        if drift is None and (self._folders_vanished(plan) or (base is not None and not self.storage.is_folder(base.root))):
            drift = RowDrift.CHANGED
        return outcome.drifted(drift) if drift else outcome

    def _folders_vanished(self, plan: GenerationPlan) -> bool:
        """The generation is archived now, or the folder the plan saw (legacy or ``source/``) is gone."""
        if is_archived(self.storage, replace(plan.generation, version=plan.row_seen.version)):
            return True
        if plan.target_dir is None or plan.action in (Action.REBUILD, Action.FAIL):
            return False
        if self.storage.is_folder(source_dir(plan.target_dir)):
            return False
        return plan.action != Action.MOVE or not self.storage.is_folder(_legacy(plan))

    # -- the step of each action: (plan, diff base, its version) -> (outcome, update, tree) -----

    def _skip(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        skipped = GenerationOutcome.from_plan(plan, Outcome.SKIPPED, plan.generation.storage_path)
        return skipped, _new_number_only(plan), None

    def _fail(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        return self._failed(plan, plan.reason or "cannot be handled", None), _new_number_only(plan), None

    def _unchanged(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        """Nothing to write; its manifest (read by the plan) is the next version's diff base."""
        assert plan.manifest is not None, "the plan calls a generation unchanged only with a manifest"
        tree = ManifestTree(self.storage, source_dir(_target(plan)), plan.manifest)
        self._note_bytes_as_recorded(plan)
        self._keep_legacy_link(plan)
        return GenerationOutcome.from_plan(plan, Outcome.UNCHANGED, plan.storage_path), None, tree

    def _move(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        """The legacy folder became ``source/`` (one rename, or a verified copy), got its
        manifest, patch and link, and was published, metadata and all, by its claim batch
        (``_stage_moves``); or what stopped it is raised here."""
        staged = self._staged.pop(plan.id)
        if staged.error is not None:
            raise staged.error
        assert staged.handled is not None, "a staged move without an error was handled"
        return staged.handled

    # -- a claim batch: consecutive moves claimed, moved, recorded and published together ---------

    def _stage_moves(self, batch: Sequence[GenerationPlan], previous: SourceTree | None,
                     previous_version: int | None) -> None:
        """Read each folder of ``batch`` (each checked before any move), then claim their rows at
        once; move each and write its manifest, patch and link; make all of it durable and
        publish the rows — new place and metadata, each row written once — in one statement and
        one commit. What each move came to waits in ``_staged`` for its generation's turn; a
        generation that cannot go on (its row drifted, a collision, an unreadable file) stops
        alone. A move whose manifest, patch or link cannot be written (a full disk, an
        unreadable patch base) stays in place and its new place alone is published with the
        batch (``FailedInPlace``): it fails alone and stays the next version's diff base, as the
        plan counted on, and its row never names a folder that is gone. ``previous`` and
        ``previous_version`` are the diff base before the batch; within it each move's diff base
        is the batch's last one before it, as ``carry_out`` would hand it."""
        scanned = self._scan_batch(batch, previous)
        if not scanned:
            return
        recorded: list[tuple[GenerationPlan, Handled]] = []
        in_place: list[GenerationPlan] = []
        expected = {plan.id: self._expected_row(plan) for plan, _ in scanned}
        base, base_version = previous, previous_version
        with self._claim_session() as session, claimed_generations(session, expected) as claims:
            try:
                for plan, snapshot in scanned:
                    try:
                        self._check_claim(plan, claims, legacy_must_exist=True)
                        handled = self._record_move(plan, snapshot, self._move_claimed(plan, snapshot),
                                                    base, base_version)
                    except FailedInPlace as failed:
                        self._staged[plan.id] = _Staged(error=failed)
                        in_place.append(plan)
                        if plan.is_diff_base and self.storage.is_folder(failed.tree.root):
                            base, base_version = failed.tree, plan.generation.version
                        continue
                    except _STOPS_ONE_MOVE as error:
                        self._staged[plan.id] = _Staged(error=error)
                        continue
                    recorded.append((plan, handled))
                    if plan.is_diff_base:
                        base, base_version = handled[2], plan.generation.version
            finally:
                try:
                    recorded = self._publish_moves(claims, recorded, in_place)
                except OSError as error:            # not durable: not published, each move fails
                    for plan in [plan for plan, _ in recorded] + in_place:
                        self._staged[plan.id] = _Staged(error=error)
        checkpoint("published")                     # the batch's rows name its moves' new places
        for plan, handled in recorded:
            self._staged.setdefault(plan.id, _Staged(handled))

    def _record_move(self, plan: GenerationPlan, snapshot: TreeSnapshot, copied: dict[str, FileRecord] | None,
                     previous: SourceTree | None, previous_version: int | None) -> Handled:
        """A claimed move's manifest, patch and link, from the tree as read before the move (a
        cross-filesystem copy's records for its fingerprints). A manifest, patch or link that
        cannot be written raises ``FailedInPlace``: the move stays, and its claim batch
        publishes its new place alone."""
        snapshot.root = source_dir(_target(plan))
        if copied is not None:
            snapshot.files = copied             # the copy's fingerprints go into its manifest
        checkpoint("moved")
        return self._record(plan, snapshot, previous, previous_version)

    def _scan_batch(self, batch: Sequence[GenerationPlan], previous: SourceTree | None
                    ) -> list[tuple[GenerationPlan, TreeSnapshot]]:
        """The batch's folders read, each against the one before it as diff base; the batch ends
        early once the bytes kept for patches reach one tree's bound (memory stays flat), and
        the moves left out start the next batch."""
        scanned: list[tuple[GenerationPlan, TreeSnapshot]] = []
        base, kept = previous, 0
        for plan in batch:
            try:
                self._renumber_folder(plan)
                snapshot = _read_against(self.storage, _legacy(plan), plan, base)
            except _STOPS_ONE_MOVE as error:
                self._staged[plan.id] = _Staged(error=error)
                continue
            scanned.append((plan, snapshot))
            kept += _kept_for_next(base, snapshot, plan)
            base = snapshot if plan.is_diff_base else base
            kept += sum(len(content) for content in snapshot.contents.values())
            if kept >= CONTENT_CACHE_LIMIT:
                break
        return scanned

    def _move_claimed(self, plan: GenerationPlan, snapshot: TreeSnapshot) -> dict[str, FileRecord] | None:
        """One move of a claim batch, its row held: the target prepared, the folder moved and the
        flat link left to it. A link that cannot be written undoes the move. The steps reach the
        target folder through one held chain of descriptors (``Root.holding``)."""
        with self.storage.root.holding(self.storage.parts(_target(plan))):
            self._prepare_target(plan)
            checkpoint("target-prepared")
            self.fence()
            copied = move_tree(self.storage, _legacy(plan), source_dir(_target(plan)), snapshot,
                               leave_link=self._link_text(plan))
            checkpoint("folder-moved")
            self._link_in_place(plan, undo=lambda: self._undo_move(plan))
        return copied

    def _finish_move(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        """A killed copy left both: the legacy copy goes once it equals ``source/``."""
        self._renumber_folder(plan)
        source = source_dir(_target(plan))
        snapshot = _scan(self.storage, source, plan, previous)
        if scan_tree(self.storage, _legacy(plan)).checksums() != snapshot.checksums():
            raise GenerationError(
                f"{_legacy(plan)} and {source} both exist with different content: "
                "compare them, keep the right one in one place, and rerun"
            )
        with self._row_still_as_planned(plan, legacy_must_exist=True):
            discard_tree(self.storage, _legacy(plan))
        checkpoint("legacy-discarded")
        return self._record(plan, snapshot, previous, previous_version)

    def _rebuild(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        """No folder: ``source/`` written from the ``output_files`` the plan read."""
        self._renumber_folder(plan)
        with self._row_still_as_planned(plan):
            self._prepare_target(plan)
        self._rebuild_from_database(plan)
        checkpoint("rebuilt")
        tree = _scan(self.storage, source_dir(_target(plan)), plan, previous)
        return self._record(plan, tree, previous, previous_version)

    def _refresh(self, plan: GenerationPlan, previous: SourceTree | None, previous_version: int | None) -> Handled:
        """Already in the new layout: manifest, patch or metadata redone. The files are read if the
        plan saw them differ from the manifest's fingerprints (or renumbered the folder), or if they
        differ now; otherwise they are known from the manifest."""
        self._renumber_folder(plan)
        source = source_dir(_target(plan))
        tree: SourceTree
        if plan.manifest is not None and not plan.content_changes and \
                summarize_tree(self.storage, source).fingerprint_digest == plan.manifest.fingerprint_digest:
            tree = ManifestTree(self.storage, source, plan.manifest)    # only metadata or the diff to redo
            self._note_bytes_as_recorded(plan)
        else:
            tree = _scan(self.storage, source, plan, previous)
            recorded = plan.manifest.load() if plan.manifest is not None else None
            if recorded is not None and recorded.checksums == tree.checksums():
                self._note_bytes_as_recorded(plan)
        return self._record(plan, tree, previous, previous_version)

    def _note_bytes_as_recorded(self, plan: GenerationPlan) -> None:
        """This run found the generation's files holding the bytes its manifest records (only
        stats moved, if anything). Its patch and changes summary are then still right if
        their names and keys are (``patch_current``) and its diff base's bytes are as recorded
        too: ``_write_manifest_and_patch`` keeps them. Kept by version, the one key the next
        version's step is given for its base; no two plans that reach here share one."""
        if plan.generation.version is not None:
            self._as_recorded.add(plan.generation.version)

    _STEPS: ClassVar[dict[Action, Step]] = {
        Action.SKIP: _skip, Action.FAIL: _fail, Action.UNCHANGED: _unchanged, Action.MOVE: _move,
        Action.FINISH_MOVE: _finish_move, Action.REBUILD: _rebuild, Action.REFRESH: _refresh,
    }

    def _record(self, plan: GenerationPlan, tree: SourceTree, previous: SourceTree | None,
                previous_version: int | None) -> Handled:
        """The manifest, the patch and the flat link of a generation now in place, and its metadata."""
        generation = plan.generation
        self.fence()                    # a move or a copy may have taken long: still ours?
        try:
            with self.storage.root.holding(self.storage.parts(_target(plan))):
                summary, patch_path = self._write_manifest_and_patch(plan, tree, previous, previous_version)
                self._keep_legacy_link(plan)
        except FAILS_ONE_GENERATION as error:
            raise FailedInPlace(error, tree) from error
        update = GenerationUpdate.from_row(
            generation,
            seen=self._expected_row(plan),
            storage_path=plan.storage_path,
            file_count=tree.file_count,
            total_size_bytes=tree.total_size_bytes,
            diff_from_previous=self._patch_path_as_written(generation, patch_path),
            changes_summary=_merged_summary(generation, summary),
        )
        self.report.bytes_handled += tree.total_size_bytes
        done = Outcome.RENUMBERED if plan.renumbered_from is not None and plan.action == Action.REFRESH \
            else plan.action.done
        outcome = GenerationOutcome.from_plan(plan, done, plan.storage_path,
                                              from_version=previous_version if patch_path else None)
        return outcome, update, tree

    def _renumber_folder(self, plan: GenerationPlan) -> None:
        """A duplicate version given a new number: ``v<old>__id`` → ``v<new>__id`` by one rename."""
        if plan.renumbered_from is None:
            return
        generation = plan.generation
        old = self.layout.target_dir(generation.project_id, plan.renumbered_from, generation.id)
        if self.storage.is_folder(old) and not self.storage.occupied(_target(plan)):
            link = self.layout.legacy_dir(generation.id)
            relink = self._link_text(plan) if self._link_is_ours(plan) and self.storage.is_link(link) else None
            with self._row_still_as_planned(plan) as claims:
                if relink is None:
                    rename_dir(self.storage, old, _target(plan))
                else:                       # the flat path follows within two system calls
                    rename_relinking(self.storage, old, _target(plan), link, relink)
                self._link_in_place(plan, undo=lambda: rename_dir(self.storage, _target(plan), old))
                self._publish(claims, [plan])
            checkpoint("renumbered")

    @contextmanager
    def _row_still_as_planned(self, plan: GenerationPlan, legacy_must_exist: bool = False) -> Iterator[GenerationClaims]:
        """Guard one irreversible step: the row still shows what the plan saw (on PostgreSQL it
        stays locked for the step), and the disk still shows it too. Else ``RowDrifted``:
        nothing is done, nothing comes back."""
        with self._claim_session() as session, claimed_generations(session, {plan.id: self._expected_row(plan)}) as claims:
            self._check_claim(plan, claims, legacy_must_exist)
            yield claims

    def _check_claim(self, plan: GenerationPlan, claims: GenerationClaims, legacy_must_exist: bool) -> None:
        """``RowDrifted`` unless the claimed row still shows what the plan saw and the disk does
        too: not archived meanwhile, the legacy folder still there, the new number still free."""
        drift = claims.drift(plan.id)
        if drift is None and is_archived(self.storage, replace(plan.generation, version=plan.row_seen.version)):
            drift = RowDrift.CHANGED
        if drift is None and legacy_must_exist and not self.storage.is_folder(_legacy(plan)):
            drift = RowDrift.CHANGED
        if drift is None and plan.renumbered_from is not None and \
                claims.number_taken(plan.id, plan.generation.project_id, plan.generation.version or 0):
            drift = RowDrift.CHANGED            # the application took the reserved number: next resync
        if drift is not None:
            raise RowDrifted(drift)

    def _link_in_place(self, plan: GenerationPlan, undo: Callable[[], None]) -> None:
        """Right after a move or a renumbering rename, while the row is still held: the flat
        link, so the application's flat path reaches the files again within one step (its edits
        go to ``<ROOT>/<id>``). A link that cannot be written undoes the rename."""
        try:
            self._keep_legacy_link(plan)
            if self.storage.is_link(self.layout.legacy_dir(plan.id)) and self._link_is_ours(plan):
                adopt_owner(self.storage, self.layout.legacy_dir(plan.id))   # a link the move left
        except GenerationError:
            undo()
            raise

    def _publish_moves(self, claims: GenerationClaims, recorded: list[tuple[GenerationPlan, Handled]],
                       in_place: Sequence[GenerationPlan]) -> list[tuple[GenerationPlan, Handled]]:
        """The claim batch's moves, manifests, patches and links made durable (``flush_to_disk``:
        one ``syncfs``), then every owned column of their rows (``storage_path``, ``version`` and
        the metadata) in one statement and one commit, while the rows are still held: so the
        application's row points at the files again within the claim batch, and each row is
        written once (on SQLite a row holding ``output_files`` is rewritten whole, overflow
        pages and journal, by every write that changes its size). Returns ``recorded`` with the
        published rows' updates taken out (written); a row that drifted meanwhile (SQLite, where
        rows are not locked) keeps its update, and the batch writer reports it. The moves
        ``in_place`` (moved, their manifest, patch or link not written) get their new place
        alone, in the same statement's transaction: their rows name the folder that is there. A
        failed fsync raises, nothing published."""
        updates = [handled[1] for _, handled in recorded if handled[1] is not None]
        if not updates and not in_place:
            return recorded
        flush_to_disk(self.storage)
        places: dict[str, Place] = {plan.id: (plan.storage_path, plan.generation.version) for plan in in_place}
        written = claims.publish_updates(updates, places)
        for plan in in_place:
            if plan.id in written:
                self._published[plan.id] = RowSeen(plan.row_seen.status, plan.generation.version, plan.storage_path)
        published = []
        for plan, (outcome, update, tree) in recorded:
            if update is not None and update.generation_id in written:
                self._published[plan.id] = RowSeen(plan.row_seen.status, update.version, update.storage_path)
                update = None
            published.append((plan, (outcome, update, tree)))
        return published

    def _publish(self, claims: GenerationClaims, plans: Sequence[GenerationPlan]) -> None:
        """A renumbering rename made durable (``flush_to_disk``: one ``syncfs``), then the rows'
        ``storage_path`` and ``version`` in one statement and one commit, while the rows are
        still held, so the application's row names the renamed folder within the step. The
        metadata follows in the batch writer. A failed fsync raises, nothing published."""
        if not plans:
            return
        flush_to_disk(self.storage)
        places: dict[str, Place] = {plan.id: (plan.storage_path, plan.generation.version) for plan in plans}
        for generation_id in claims.publish(places):
            plan = next(plan for plan in plans if plan.id == generation_id)
            self._published[generation_id] = RowSeen(plan.row_seen.status, plan.generation.version, plan.storage_path)

    def _expected_row(self, plan: GenerationPlan) -> RowSeen:
        """What the row should show now unless the application touched it: what the tool itself
        published for it in this run (a move's or renumbering's ``storage_path`` and ``version``),
        else what the plan read."""
        return self._published.get(plan.id, plan.row_seen)

    def _drift_since(self, plan: GenerationPlan, expected: RowSeen) -> RowDrift | None:
        """A failure is reported only if the row still shows ``expected``: a generation the
        application deleted meanwhile is gone, not "restore from a backup"."""
        with self.engine.connect() as connection:
            return RowDrift.of(read_row_seen(connection, plan.id), expected)

    def _patch_path_as_written(self, generation: GenerationRow, patch_path: str | None) -> str | None:
        """The row's own spelling of the patch path when it already names that file."""
        if patch_path is None or generation.diff_from_previous is None:
            return patch_path
        same = self.layout.disk_path(generation.diff_from_previous) == self.layout.disk_path(patch_path)
        return generation.diff_from_previous if same else patch_path

    def _undo_move(self, plan: GenerationPlan) -> None:
        """A move whose flat link could not be left to it (a full disk): ``source/``
        goes back to the legacy folder by one rename (over the link the move left there), so
        the application still finds the files where its row says they are. Across filesystems
        the rename is refused and the verified copy stays in place for the next run."""
        source, legacy = source_dir(_target(plan)), _legacy(plan)
        if not self.storage.is_folder(source):
            return
        try:
            if self.storage.link_text(legacy) == self._link_text(plan):
                put_back_over_link(self.storage, source, legacy)
            elif not self.storage.occupied(legacy):
                rename_entry(self.storage, source, legacy)
        except OSError:
            pass

    def _link_text(self, plan: GenerationPlan) -> str | None:
        """What ``<ROOT>/<id>`` holds once the generation is in place; None without legacy links."""
        if not self.legacy_links:
            return None
        generation = plan.generation
        return self.layout.legacy_link_text(generation.project_id, generation.version or 0, generation.id)

    def _link_is_ours(self, plan: GenerationPlan) -> bool:
        """``<ROOT>/<id>`` is a link of the tool's for this generation (at any version)."""
        generation = plan.generation
        place = parse_legacy_link_text(self.storage.link_text(self.layout.legacy_dir(generation.id)) or "")
        return place is not None and place[0] == generation.project_id and place[2] == generation.id

    def _prepare_target(self, plan: GenerationPlan) -> None:
        """Create the target folder, or clear what an interrupted run of this tool left in it.
        Anything the tool would not have written there is a collision and stops this generation."""
        target = _target(plan)
        generation = plan.generation
        for folder in (self.layout.project_dir(generation.project_id), self.layout.generations_dir(generation.project_id)):
            found = self.storage.status(folder)
            if found is not None and not stat.S_ISDIR(found.st_mode):
                raise GenerationError(f"{folder} is not a plain folder (a symlink is never followed); fix it and rerun")
        found = self.storage.status(target)
        if found is not None and stat.S_ISLNK(found.st_mode):
            raise GenerationError(f"{target} is a symlink; it is never followed — remove it and rerun")
        if found is not None and stat.S_ISDIR(found.st_mode):
            prepared = self.layout.legacy_link_text(generation.project_id, generation.version or 0, generation.id)
            for name, status in self.storage.entries(target):
                if name == PARTIAL_SOURCE_DIR:
                    discard_partial(self.storage, target / name)   # a copy or rebuild that a killed run began
                elif name == SOURCE_DIR and is_prepared_link(self.storage, target / name, prepared):
                    remove_symlink(self.storage, target / name)     # a move killed before its exchange
                elif is_tool_written(name) or _is_empty_artifacts(self.storage, target / name, status):
                    continue                        # rewritten later in this run
                else:
                    raise GenerationError(
                        f"the target {target} already exists and holds {name!r}, which this tool did "
                        "not write: move it away and rerun"
                    )
        owner_like = plan.legacy_dir if plan.legacy_dir is not None and self.storage.is_folder(plan.legacy_dir) \
            else None
        if target in make_owned_dirs(self.storage, artifacts_dir(target), like=owner_like):
            self._made_targets.add(plan.id)     # no killed write can have left a temp file in it

    def _rebuild_from_database(self, plan: GenerationPlan) -> None:
        """Write the ``output_files`` column into ``source/`` through a staging folder, so the
        folder appears whole or not at all. File times are the generation's ``created_at``."""
        generation = plan.generation
        files = plan.output_files
        if not files:
            raise GenerationError("output_files is empty; nothing to rebuild the folder from")
        target = _target(plan)
        staging = partial_source_dir(target)
        self.fence()
        discard_partial(self.storage, staging)
        timestamp_ns = _timestamp_ns(generation.created_at)
        try:
            for relative_path, content in sorted(files.items()):
                check_relative_file_path(relative_path)
                if not isinstance(content, str):
                    raise GenerationError(f"output_files[{relative_path!r}] is not text; cannot rebuild it")
                destination = staging / relative_path
                if self.storage.occupied(destination):
                    raise GenerationError(f"output_files names {relative_path!r} twice (or as a file and a folder)")
                make_owned_dirs(self.storage, destination.parent)
                atomic_write_bytes(self.storage, destination, content.encode("utf-8", "surrogateescape"))
                self.storage.set_mtime(destination, timestamp_ns)
            with self._row_still_as_planned(plan):
                rename_entry(self.storage, staging, source_dir(target))
        except UnsafePathComponent as error:
            discard_partial(self.storage, staging)
            raise GenerationError(f"output_files holds an unsafe path: {error}") from None
        except (OSError, UnicodeError) as error:
            discard_partial(self.storage, staging)
            raise GenerationError(f"cannot rebuild {source_dir(target)}: {error}") from None
        except (GenerationError, RowDrifted):
            discard_partial(self.storage, staging)
            raise

    def _write_manifest_and_patch(
        self, plan: GenerationPlan, tree: SourceTree, previous: SourceTree | None, previous_version: int | None
    ) -> tuple[compare.ChangeSummary | None, str | None]:
        """The manifest (merged into the application's), then the patch from P. A failed
        generation gets a manifest but no diff: it is never compared. The patch on disk is kept
        when neither side's bytes changed since it was written (``_note_bytes_as_recorded``)."""
        generation = plan.generation
        target = _target(plan)
        if plan.id not in self._made_targets:       # made by this run: only its own writes are there
            remove_temp_files(self.storage, target)
        self._made_targets.discard(plan.id)
        if not self.storage.is_folder(artifacts_dir(target)):
            if not self.storage.is_folder(target):      # deleted since it was published: never made again
                raise GenerationError(f"{target} is gone (the application deleted the generation meanwhile?)")
            make_owned_dirs(self.storage, artifacts_dir(target))  # a folder put in place by hand or by an older run
        manifest = tree.full() if isinstance(tree, ManifestTree) else Manifest.from_snapshot(
            tree, generation.id, generation.project_id, generation.version or 0, generation.created_at
        )
        if manifest.version != generation.version:
            manifest = Manifest(generation.id, generation.project_id, generation.version or 0, manifest.created_at,
                                manifest.file_count, manifest.total_size_bytes, manifest.checksums,
                                manifest.fingerprints)
        as_recorded = generation.version in self._as_recorded
        if plan.action == Action.REFRESH and plan.content_changes and not as_recorded:
            self._hold_manifest(plan, _HeldManifest(plan, manifest))
        else:
            _write_merged_manifest(self.storage, manifest_path(target), manifest)
            checkpoint("manifest-written")
        if generation.status != "completed":
            return None, None
        if previous is None or previous_version is None:
            _remove_patches(self.storage, target, keep=None)
            return compare.ChangeSummary.first_version(tree.file_count), None
        comparison = compare.compare_trees(previous.checksums(), tree.checksums())
        if not (plan.patch_current and as_recorded and previous_version in self._as_recorded):
            patch_file = target / patch_file_name(previous_version)
            atomic_write(self.storage, patch_file, lambda stream: write_tree_patch(stream, previous, tree, comparison))
            _remove_patches(self.storage, target, keep=previous_version)
            checkpoint("patch-written")
        patch_path = self.layout.patch_storage_path(
            generation.project_id, generation.version or 0, generation.id, previous_version
        )
        return compare.ChangeSummary.from_comparison(comparison, previous_version), patch_path

    def _hold_manifest(self, plan: GenerationPlan, held: _HeldManifest) -> None:
        """The manifest of a folder already in place whose bytes changed waits until the rows of
        this version and of the version diffed from it are committed: the patches and changes
        summaries made from the new bytes are then recorded. The planner learns that bytes
        changed only from a manifest that no longer matches, so written any earlier, a kill
        before those rows are committed would leave the old patches and summaries for good."""
        released_by = self._diffed_from.get(plan.id, plan).id
        self._manifests_after.setdefault(released_by, []).append(held)

    def _write_held_manifests(self, outcomes: list[GenerationOutcome], done: set[str]) -> list[GenerationOutcome]:
        """The batch writer's hook after each flush: every held manifest released by a line of
        this batch is written if both rows it waits for were written; otherwise it is dropped,
        and the next resync, finding the old manifest, does that version and the next again.
        Returns the lines as they end: one whose manifest could not be written is failed — or,
        if the application deleted, changed or archived it meanwhile, says so (``_failed``)."""
        flushed = {outcome.id for outcome in outcomes}
        ready = [held for released_by in sorted(flushed & self._manifests_after.keys())
                 for held in self._manifests_after.pop(released_by) if {held.plan.id, released_by} <= done]
        if ready:
            self.fence()                # still this participant's to write below ROOT?
        ended: dict[str, GenerationOutcome] = {}
        for held in ready:
            try:
                _write_merged_manifest(self.storage, manifest_path(_target(held.plan)), held.manifest)
            except FAILS_ONE_GENERATION as error:
                reason = f"its patches are recorded but not its manifest ({failure_line(error)}); rerun resync"
                ended[held.plan.id] = self._failed(held.plan, reason, None)
                continue
            checkpoint("manifest-written")
        return [ended.get(outcome.id, outcome) for outcome in outcomes]

    def _keep_legacy_link(self, plan: GenerationPlan) -> None:
        """``<ROOT>/<id>`` → ``<project>/generations/v<N>__<id>/source``, so the application's
        flat-layout endpoints keep reading and editing the generation. A real folder there (the
        application's scratch copy) and foreign links are never touched."""
        generation = plan.generation
        link = self.layout.legacy_dir(generation.id)
        expected = self.layout.legacy_link_text(generation.project_id, generation.version or 0, generation.id)
        current = self.storage.link_text(link)
        if current == expected and self.legacy_links and plan.action == Action.UNCHANGED:
            return                          # its source/ was there when planned, a moment ago
        place = parse_legacy_link_text(current or "")
        ours = place is not None and place[0] == generation.project_id and place[2] == generation.id
        if not ours and (current is not None or self.storage.occupied(link)):
            return
        if self.legacy_links and self.storage.is_folder(source_dir(_target(plan))):
            if current != expected:
                self.fence()
                replace_symlink(self.storage, link, expected)
                adopt_owner(self.storage, link)
                checkpoint("legacy-link")
        elif ours:
            self.fence()
            remove_symlink(self.storage, link)

    def _point_active_link(self, plan: ProjectPlan) -> None:
        """``active`` → the active generation's folder if it is in the new layout; else no link."""
        generations_dir = self.layout.generations_dir(plan.project_id)
        if not self.storage.is_folder(generations_dir):    # reached through real folders only
            return                              # a link at any level is never followed
        remove_temp_files(self.storage, generations_dir)
        link = self.layout.active_link(plan.project_id)
        active = next((p for p in plan.generations if p.id == plan.active_generation_id), None)
        if active is not None and active.target_dir is not None and self.storage.is_folder(source_dir(active.target_dir)):
            try:
                replace_symlink(self.storage, link, active.target_dir.name)
                adopt_owner(self.storage, link)
            except GenerationError as error:
                self.report.error = self.report.error or str(error)
            checkpoint("active-link")
        elif self.storage.is_link(link):
            remove_symlink(self.storage, link)


def _merged_summary(generation: GenerationRow, summary: compare.ChangeSummary | None) -> Any:
    """``changes_summary`` as the tool computes it, merged into the application's keys (its
    ``diff_created_at`` stays); the version facts follow the numbers as they are now: the
    application's ``to_version``, where present, is this generation's version, and
    ``from_version`` is P. For a failed generation (no diff) only a ``to_version`` is corrected."""
    merged = {**generation.summary, **(summary.to_json() if summary is not None else {})}
    if "to_version" in merged:
        merged["to_version"] = generation.version
    if summary is None and merged == generation.summary:
        return generation.changes_summary
    return merged




def _new_number_only(plan: GenerationPlan) -> GenerationUpdate | None:
    """A duplicate given a new number that has no folder to rename (skipped or failed): its row
    alone takes the number, written if the row is still as planned, so no later run takes another."""
    if plan.renumbered_from is None or plan.generation.version == plan.row_seen.version:
        return None
    return GenerationUpdate.from_row(plan.generation, seen=plan.row_seen)


def _diffed_from(plans: Sequence[GenerationPlan]) -> dict[str, GenerationPlan]:
    """Each diff base's id → the plan of the version whose patch this run takes from it (the
    plan's own rule: the last diff base before it, when its ``from_version`` is that base's),
    if that version writes one: one skipped, failed or unchanged by plan never releases a
    held manifest, which would then be held, and the base redone, at every resync."""
    diffed: dict[str, GenerationPlan] = {}
    base: GenerationPlan | None = None
    for plan in plans:
        if base is not None and plan.from_version is not None and plan.from_version == base.generation.version \
                and plan.action not in (Action.SKIP, Action.FAIL, Action.UNCHANGED):
            diffed[base.id] = plan
        if plan.is_diff_base:
            base = plan
    return diffed


def _claim_batch(plans: Sequence[GenerationPlan], start: int) -> Sequence[GenerationPlan]:
    """The moves from ``start`` on, up to ``CLAIM_BATCH``, that follow each other in the plan."""
    end = start
    while end < len(plans) and end - start < CLAIM_BATCH and plans[end].action == Action.MOVE:
        end += 1
    return plans[start:end]


def _diff_base(previous: SourceTree | None) -> dict[str, str] | None:
    """What a scan compares with to keep only the bytes the patch will read (none without a base)."""
    return previous.checksums() if previous is not None else None


def _scan(storage: Storage, folder: Path, plan: GenerationPlan, previous: SourceTree | None) -> TreeSnapshot:
    """A generation's folder read against its diff base: the bytes both sides of its patch need
    are kept (``_kept_for_next``), and, if it is the next version's base, its spare bytes too."""
    snapshot = _read_against(storage, folder, plan, previous)
    _kept_for_next(previous, snapshot, plan)
    return snapshot


def _read_against(storage: Storage, folder: Path, plan: GenerationPlan, base: SourceTree | None) -> TreeSnapshot:
    """``folder`` read and hashed, keeping the bytes its patch from ``base`` will read and, if
    ``plan`` is the next version's base, its spare bytes."""
    return scan_tree(storage, folder, _diff_base(base), spare=plan.is_diff_base)


def _kept_for_next(base: SourceTree | None, scanned: TreeSnapshot, plan: GenerationPlan) -> int:
    """``scanned`` (of ``plan``) was read against ``base``: if it is the next version that base's
    patch goes to (a completed generation: a failed one gets no patch, and the base stays the base
    of the one after), the base keeps the spare bytes of the files that patch reads
    (``TreeSnapshot.keep_for_next``) and drops the rest; the bytes it kept."""
    if not isinstance(base, TreeSnapshot) or not plan.is_diff_base:
        return 0
    return base.keep_for_next(scanned.checksums())


def _target(plan: GenerationPlan) -> Path:
    assert plan.target_dir is not None, "only plans with a target reach the executor's disk steps"
    return plan.target_dir


def _legacy(plan: GenerationPlan) -> Path:
    assert plan.legacy_dir is not None
    return plan.legacy_dir


def _is_empty_artifacts(storage: Storage, entry: Path, status: os.stat_result) -> bool:
    return entry.name == ARTIFACTS_DIR and stat.S_ISDIR(status.st_mode) and not storage.names(entry)


def _write_merged_manifest(storage: Storage, path: Path, manifest: Manifest) -> None:
    """``manifest`` merged into the document at ``path`` as it is now (the application's keys
    kept), written unless that is what is there already."""
    existing = read_manifest_document(storage, path)
    _write_if_different(storage, path, manifest.with_extra(existing).to_bytes(), compare=existing is not None)


def _write_if_different(storage: Storage, path: Path, content: bytes, compare: bool = True) -> None:
    """Write ``path`` unless it holds ``content`` already. ``compare`` False: the caller just
    found no JSON object there (missing, unreadable, or other bytes), so it cannot hold
    ``content`` and is not read again."""
    try:
        if compare and read_regular_file(storage, path.parent, path.name, max_bytes=len(content)) == content:
            return
    except GenerationError:
        pass
    atomic_write_bytes(storage, path, content)


def _remove_patches(storage: Storage, target: Path, keep: int | None) -> None:
    """Remove the tool's stale patches; a directory of that name is not the tool's and stays."""
    for name, is_folder in storage.folder_marks(target):
        version = parse_patch_file_name(name)
        if version is not None and version != keep and not is_folder:
            storage.remove_entry(target / name)


def _timestamp_ns(created_at: datetime | None) -> int:
    if created_at is None:
        return 0
    return int(as_utc(created_at).timestamp()) * 1_000_000_000

