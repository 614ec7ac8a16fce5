"""What a command did, as one object: the CLI renders it as text or as the JSON document, and
its exit code follows from it. ``Outcome`` is the one vocabulary of what happened to a
generation; a dry run reports the planner's ``Action`` instead, which maps onto it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED
from .records import RowDrift


class Tally(str, Enum):
    """The three counters of a report."""

    MIGRATED = "migrated"
    SKIPPED = "skipped"
    FAILED = "failed"


class Outcome(str, Enum):
    """What a real run did to one generation (the JSON ``action``)."""

    MOVED = "moved"                    # legacy folder → source/
    FINISHED_MOVE = "finished-move"    # a killed copy completed
    REBUILT = "rebuilt"                # written from output_files
    REFRESHED = "refreshed"            # manifest, diff or metadata redone
    RENUMBERED = "renumbered"          # a duplicate version got the next free number
    RESTORED = "restored"              # rollback moved it back to the legacy folder
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    GONE = "gone"                      # the application deleted it while the tool worked
    CHANGED = "changed"                # the application changed its row meanwhile: left to the next resync
    FAILED = "failed"

    @property
    def tally(self) -> Tally:
        if self is Outcome.FAILED:
            return Tally.FAILED
        if self in (Outcome.UNCHANGED, Outcome.SKIPPED, Outcome.GONE, Outcome.CHANGED):
            return Tally.SKIPPED
        return Tally.MIGRATED


class ReportedAction(Protocol):
    """What a report needs of an action: an ``Outcome`` or the planner's ``Action``."""

    @property
    def value(self) -> str: ...

    @property
    def tally(self) -> Tally: ...


@dataclass(frozen=True)
class GenerationOutcome:
    """One generation's line in a report. ``action`` is an ``Outcome``, or in a dry run the
    planned ``Action`` (``move``); ``reason`` says why it was skipped or redone."""

    id: str
    project_id: str
    version: int | None
    action: ReportedAction
    storage_path: str | None
    error: str | None = None
    reason: str | None = None
    from_path: str | None = None
    from_version: int | None = None
    file_count: int | None = None
    total_size_bytes: int | None = None

    @property
    def tally(self) -> Tally:
        return self.action.tally

    @property
    def failed(self) -> bool:
        return self.tally is Tally.FAILED

    @property
    def skipped(self) -> bool:
        return self.action in (Outcome.SKIPPED, Outcome.GONE, Outcome.CHANGED, "skip")

    def drifted(self, drift: RowDrift) -> GenerationOutcome:
        """This line once the application deleted or changed the row before the tool wrote it."""
        reason = ("deleted by the application while the tool worked" if drift is RowDrift.GONE
                  else "changed by the application while the tool worked; the next resync picks it up")
        action = Outcome.GONE if drift is RowDrift.GONE else Outcome.CHANGED
        return replace(self, action=action, error=None, reason=reason)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "version": self.version,
            "action": self.action.value,
            "storage_path": self.storage_path,
            "error": self.error,
            "reason": self.reason,
            "from_version": self.from_version,
            "file_count": self.file_count,
            "total_size_bytes": self.total_size_bytes,
        }


@dataclass
class RunReport:
    """The result of ``run``, ``--dry-run``, ``resync`` or ``rollback``.

    Counts every generation, but keeps the line of a generation that went as planned
    (migrated, unchanged) only with ``keep_all``, which the JSON document and ``-v`` need: so a
    cron resync over any number of generations holds only its failures and skips in memory.
    """

    command: str
    dry_run: bool = False
    keep_all: bool = True
    outcomes: list[GenerationOutcome] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    bytes_handled: int = 0
    error: str | None = None          # why the run stopped early (e.g. the database went away)
    interrupted: bool = False         # Ctrl-C or SIGTERM: what was done is still reported
    coordination: dict | None = None  # a --coordinate run: this host's share (coordinate.CoordinationStats)
    migrated: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add(self, outcome: GenerationOutcome) -> None:
        tally = outcome.tally
        if tally is Tally.FAILED:
            self.failed += 1
        elif tally is Tally.MIGRATED:
            self.migrated += 1
        else:
            self.skipped += 1
        if self.keep_all or outcome.failed or outcome.skipped:
            self.outcomes.append(outcome)

    def merge(self, other: RunReport) -> None:
        """Fold a worker's report into this one (its lines were already filtered the same way)."""
        self.outcomes.extend(other.outcomes)
        self.leftovers.extend(other.leftovers)
        self.migrated += other.migrated
        self.skipped += other.skipped
        self.failed += other.failed
        self.bytes_handled += other.bytes_handled
        self.error = self.error or other.error
        self.interrupted = self.interrupted or other.interrupted

    def finish(self) -> RunReport:
        self.finished = time.monotonic()
        return self

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.failed or self.error else EXIT_OK

    def to_json(self) -> dict:
        coordination = {} if self.coordination is None else {"coordination": self.coordination}
        return {
            "command": self.command,
            "dry_run": self.dry_run,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes": self.bytes_handled,
            "seconds": round(self.seconds, 3),
            "orphans": self.orphans,
            "leftovers": self.leftovers,
            "error": self.error,
            "interrupted": self.interrupted,
            "generations": [outcome.to_json() for outcome in self.outcomes],
            **coordination,
        }
