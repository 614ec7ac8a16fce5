"""The one batch writer: generations' outcomes and their metadata are queued and written to
the database in one transaction per batch, after the disk state is made durable (one ``syncfs``
of each filesystem written to, ``steps.flush_to_disk``).
A row the application deleted or changed since it was planned is not written; its line says
"gone" or "changed" (the next resync picks it up), never "failed".

Every command that writes metadata (run, resync, rollback) goes through it, so a database
failure is handled the same everywhere: the batch's generations are reported failed (their
disk state is complete; a rerun only writes the metadata) and the command goes on or stops
cleanly, never with a traceback.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage_migrator.db.connect import first_line
from storage_migrator.db.reads import existing_generation_ids
from storage_migrator.db.tables import ROWS_PER_STATEMENT
from storage_migrator.db.writes import write_generation_updates, write_project_update
from storage_migrator.errors import FilesystemError
from storage_migrator.faults import checkpoint
from storage_migrator.records import GenerationUpdate, ProjectUpdate, RowDrift, Tally
from storage_migrator.report import GenerationOutcome, RunReport
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.steps import flush_to_disk

DEFAULT_BATCH_SIZE = ROWS_PER_STATEMENT     # generations per batch: one executemany, one transaction


@dataclass
class _Pending:
    outcome: GenerationOutcome
    update: GenerationUpdate | None


@dataclass
class BatchWriter:
    """Queue with ``add``; ``flush`` (or ``flush_if_full``) writes. The report learns of a
    generation only once its metadata is committed, so it never claims what the database lost."""

    storage: Storage
    engine: Engine
    report: RunReport
    batch_size: int = DEFAULT_BATCH_SIZE
    after_commit: Callable[[list[GenerationOutcome], set[str]], list[GenerationOutcome]] = \
        lambda outcomes, done: outcomes
    """Called once per flush with its lines and the ids of those whose work is recorded (moved,
    rebuilt, refreshed…: their rows written or already published; none if the write failed),
    after the commit and before the lines reach the report; returns the lines as they end (one
    whose disk step after the commit failed says so)."""
    _pending: list[_Pending] = field(default_factory=list)
    _project_updates: list[ProjectUpdate] = field(default_factory=list)

    def add(self, outcome: GenerationOutcome, update: GenerationUpdate | None = None) -> None:
        self._pending.append(_Pending(outcome, update))

    def add_project(self, update: ProjectUpdate) -> None:
        self._project_updates.append(update)

    def flush_if_full(self) -> None:
        if len(self._pending) >= self.batch_size:
            self.flush()

    def _deleted_since_failing(self) -> dict[str, RowDrift]:
        """The failed generations whose rows are gone by now, in one query: the application's
        delete removes the files first and the row a moment later, so a folder found missing
        in between is a delete in progress, reported as gone rather than "restore a backup"."""
        failed = [pending.outcome.id for pending in self._pending if pending.outcome.failed]
        if not failed:
            return {}
        still_there = existing_generation_ids(self.engine, failed)
        return {generation_id: RowDrift.GONE for generation_id in failed if generation_id not in still_there}

    @staticmethod
    def _as_written(pending: _Pending, drifted: dict[str, RowDrift]) -> GenerationOutcome:
        """A line as the commit left it: "changed" or "gone" if its row drifted before it was written."""
        drift = drifted.get(pending.outcome.id) if pending.update is not None or pending.outcome.failed else None
        return pending.outcome.drifted(drift) if drift else pending.outcome

    def flush(self) -> None:
        """Make the disk durable, then write the batch in one transaction. On a database error,
        or if the disk cannot be made durable (nothing is written then), the generations of this
        batch that had metadata to write are reported failed."""
        updates = [pending.update for pending in self._pending if pending.update is not None]
        try:
            flush_to_disk(self.storage)
            checkpoint("before-database-write")
            drifted = write_generation_updates(self.engine, updates)
            for project_update in self._project_updates:
                write_project_update(self.engine, project_update)
            checkpoint("after-database-write")
            drifted.update(self._deleted_since_failing())
            outcomes = [self._as_written(pending, drifted) for pending in self._pending]
            done = {outcome.id for outcome in outcomes if outcome.tally is Tally.MIGRATED}
            for outcome in self.after_commit(outcomes, done):
                self.report.add(outcome)
        except (sa.exc.DBAPIError, FilesystemError) as error:
            self.after_commit([pending.outcome for pending in self._pending], set())
            message = f"database write failed ({first_line(error)}); rerun to finish" \
                if isinstance(error, sa.exc.DBAPIError) else f"{error}; nothing written to the database — rerun to finish"
            for pending in self._pending:
                outcome = pending.outcome
                if pending.update is not None and not outcome.failed:
                    outcome = outcome.failed_with(message)
                self.report.add(outcome)
        finally:
            self._pending.clear()
            self._project_updates.clear()
