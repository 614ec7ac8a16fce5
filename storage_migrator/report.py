"""What a command did, as one object: the CLI renders it as text or as the SPEC §6 JSON document,
and its exit code follows from it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .errors import EXIT_OK, EXIT_SOME_FAILED

MIGRATED_ACTIONS = frozenset({"moved", "copied", "rebuilt", "refreshed", "finished-move", "restored",
                              "move", "rebuild", "refresh", "finish-move", "restore"})
FAILED_ACTIONS = frozenset({"failed", "fail"})


@dataclass(frozen=True)
class GenerationOutcome:
    """One generation's line in a report. ``action`` is planned (``move``) in a dry run and
    done (``moved``) in a real one; ``reason`` says why it was skipped or redone."""

    id: str
    project_id: str
    version: int | None
    action: str
    storage_path: str | None
    error: str | None = None
    reason: str | None = None
    from_path: str | None = None
    from_version: int | None = None
    file_count: int | None = None
    total_size_bytes: int | None = None

    @property
    def failed(self) -> bool:
        return self.action in FAILED_ACTIONS

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "version": self.version,
            "action": self.action,
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
    bytes_handled: int = 0
    error: str | None = None          # why the run stopped early (e.g. the database went away)
    migrated: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add(self, outcome: GenerationOutcome) -> None:
        if outcome.failed:
            self.failed += 1
        elif outcome.action in MIGRATED_ACTIONS:
            self.migrated += 1
        else:
            self.skipped += 1
        if self.keep_all or outcome.failed or outcome.action in ("skip", "skipped"):
            self.outcomes.append(outcome)

    def merge(self, other: "RunReport") -> None:
        """Fold a worker's report into this one (its lines were already filtered the same way)."""
        self.outcomes.extend(other.outcomes)
        self.migrated += other.migrated
        self.skipped += other.skipped
        self.failed += other.failed
        self.bytes_handled += other.bytes_handled
        self.error = self.error or other.error

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed or self.error else EXIT_OK

    def to_json(self) -> dict:
        return {
            "command": self.command,
            "dry_run": self.dry_run,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes": self.bytes_handled,
            "seconds": round(self.seconds, 3),
            "orphans": self.orphans,
            "error": self.error,
            "generations": [outcome.to_json() for outcome in self.outcomes],
        }
