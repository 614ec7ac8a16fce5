"""What a command did, as one object: the CLI renders it as text or as the JSON document, and
its exit code follows from it. ``Outcome`` (in ``records``) is the one vocabulary of what
happened to a generation; a dry run reports the ``Outcome`` each planned action would end in
(``Action.done``), with ``dry_run`` true."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from storage_migrator.cloud import CloudStorage, object_key
from storage_migrator.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED
from storage_migrator.records import GenerationRow, Outcome, RowDrift, Tally

__all__ = ["ApplicationState", "GenerationOutcome", "Outcome", "ProgressFactory", "Renumbering", "RunReport", "Tally",
           "Workload"]


class PlannedGeneration(Protocol):
    """What a report line takes from the engine's plan of a generation (``GenerationPlan``)."""

    @property
    def generation(self) -> GenerationRow: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def renumbered_from(self) -> int | None: ...


class ApplicationState(str, Enum):
    """The application's inconsistent rows a report lists (found by ``triage``)."""

    FAILED_BUT_COMPLETE = "failed_but_complete"
    COMPLETED_WITHOUT_STORAGE_PATH = "completed_without_storage_path"
    FLAT_AND_HIERARCHICAL = "flat_and_hierarchical_without_storage_path"


ADOPTED = "adopted"          # marked completed by ``resync --adopt-complete``
ROOT_ZIPS = "root_zips"      # the application's ``<ROOT>/<id>.zip`` downloads
ROOT_FILES = "root_files"    # anything else at ROOT's top level that is not a folder
APPLICATION_STATE_KEYS = (*(state.value for state in ApplicationState), ADOPTED, ROOT_ZIPS, ROOT_FILES)
"""The keys of a report's ``application_states``: each a sorted list of generation ids (of
names at ROOT for the last two), every key always present."""


def empty_states() -> dict[str, list[str]]:
    return {key: [] for key in APPLICATION_STATE_KEYS}


def merge_states(states: dict[str, list[str]], more: Mapping[str, list[str]]) -> None:
    for key, found in more.items():
        states.setdefault(key, []).extend(found)


def application_state_lines(states: Mapping[str, list[str]]) -> list[str]:
    """The text section: one line per state found, its count and its ids (or names)."""
    return [f"application state {key} ({len(states[key])}): {' '.join(sorted(states[key]))}"
            for key in APPLICATION_STATE_KEYS if states.get(key)]



@dataclass(frozen=True, slots=True)
class Renumbering:
    """A generation the command gave another version (or, in a dry run, would give)."""

    generation_id: str
    project_id: str
    from_version: int
    to_version: int

    def cloud_keys(self) -> dict[str, str]:
        """The application's cloud copy, under its old number, and the key it now belongs at."""
        return {"generation_id": self.generation_id,
                "from": object_key(self.project_id, self.from_version, self.generation_id),
                "to": object_key(self.project_id, self.to_version, self.generation_id)}


def cloud_key_lines(renumberings: list[Renumbering], cloud: CloudStorage | None, dry_run: bool) -> list[str]:
    """The text section: one line per cloud object that now carries an old number (none when
    the application's cloud storage is off)."""
    if cloud is None:
        return []
    when = "after the run " if dry_run else ""
    return [f"cloud copy to rename {when}in bucket {cloud.bucket} (if it exists; the tool never calls the cloud): "
            f"{keys['from']} -> {keys['to']}" for keys in (renumbering.cloud_keys() for renumbering in renumberings)]


@dataclass(frozen=True)
class GenerationOutcome:
    """One generation's line in a report: what happened (or, in a dry run, would happen) to it;
    ``reason`` says why it was skipped or redone; ``renumbered_from`` is the version its row had
    before the command gave it ``version``."""

    id: str
    project_id: str
    version: int | None
    action: Outcome
    storage_path: str | None
    error: str | None = None
    reason: str | None = None
    from_path: str | None = None
    from_version: int | None = None
    file_count: int | None = None
    total_size_bytes: int | None = None
    renumbered_from: int | None = None

    @property
    def tally(self) -> Tally:
        return self.action.tally

    @property
    def failed(self) -> bool:
        return self.tally is Tally.FAILED

    @property
    def skipped(self) -> bool:
        """Left as it was (skipped, gone, changed meanwhile), not merely found unchanged."""
        return self.tally is Tally.SKIPPED and self.action.value != Outcome.UNCHANGED.value

    @classmethod
    def of_row(cls, generation: GenerationRow, action: Outcome, storage_path: str | None,
               **details: object) -> GenerationOutcome:
        """The line of ``generation`` (as read) with ``action``; ``details`` are the optional fields."""
        return cls(generation.id, generation.project_id, generation.version, action, storage_path,
                   **details)  # type: ignore[arg-type]

    @classmethod
    def from_plan(cls, plan: PlannedGeneration, action: Outcome, storage_path: str | None,
                  **details: object) -> GenerationOutcome:
        """The line of a planned generation: the plan's reason goes with it unless it failed,
        and the version it is renumbered from."""
        if "error" not in details or details["error"] is None:
            details.setdefault("reason", plan.reason)
        details.setdefault("renumbered_from", plan.renumbered_from)
        return cls.of_row(plan.generation, action, storage_path, **details)

    def failed_with(self, error: str) -> GenerationOutcome:
        """This generation's line once its work could not be recorded: failed, nothing else kept."""
        return GenerationOutcome(self.id, self.project_id, self.version, Outcome.FAILED, self.storage_path, error=error)

    def drifted(self, drift: RowDrift) -> GenerationOutcome:
        """This line once the application deleted or changed the row before the tool wrote it."""
        reason = ("deleted by the application while the tool worked" if drift is RowDrift.GONE
                  else "changed by the application while the tool worked; the next resync picks it up")
        action = Outcome.GONE if drift is RowDrift.GONE else Outcome.CHANGED
        return replace(self, action=action, error=None, reason=reason)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "generation_id": self.id,     # the key diff and verify use; "id" stays for existing readers
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


@dataclass(frozen=True)
class Workload:
    """What a progress bar is told at the start: the generations to go through and, for a run,
    the bytes below the legacy folders it moves; ``bytes_done`` reads the bytes handled so far."""

    generations: int
    legacy_bytes: int = 0
    bytes_done: Callable[[], int] = lambda: 0


ProgressFactory = Callable[[Workload], Callable[[int], None]]
"""Called once with the workload; returns what is called with each number of generations done."""


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
    removed_links: list[str] = field(default_factory=list)   # the tool's links to deleted generations
    application_states: dict[str, list[str]] = field(default_factory=empty_states)   # see ``triage``
    renumberings: list[Renumbering] = field(default_factory=list)   # every one, whatever ``keep_all``
    bytes_handled: int = 0
    error: str | None = None          # why the run stopped early (e.g. the database went away)
    interrupted: bool = False         # Ctrl-C or SIGTERM: what was done is still reported
    coordination: dict | None = None  # a --coordinate run: this host's share (coordinate.CoordinationStats)
    migrated: int = 0
    skipped: int = 0                  # every generation left as it was, the unchanged ones included
    unchanged: int = 0                # of ``skipped``: found already in agreement
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
            self.unchanged += outcome.action is Outcome.UNCHANGED
        if self.keep_all or outcome.failed or outcome.skipped:
            self.outcomes.append(outcome)
        if tally is Tally.MIGRATED and outcome.renumbered_from is not None and outcome.version is not None \
                and outcome.renumbered_from != outcome.version:
            self.renumberings.append(Renumbering(outcome.id, outcome.project_id, outcome.renumbered_from,
                                                 outcome.version))

    def merge(self, other: RunReport) -> None:
        """Fold a worker's report into this one (its lines were already filtered the same way)."""
        self.outcomes.extend(other.outcomes)
        self.leftovers.extend(other.leftovers)
        self.renumberings.extend(other.renumberings)
        merge_states(self.application_states, other.application_states)
        self.migrated += other.migrated
        self.skipped += other.skipped
        self.unchanged += other.unchanged
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

    def to_json(self, cloud: CloudStorage | None = None) -> dict:
        """The JSON document; ``cloud_keys_to_rename`` lists the renumberings' cloud objects
        when the application's cloud storage is on (``cloud``), else it is empty."""
        coordination = {} if self.coordination is None else {"coordination": self.coordination}
        return {
            "command": self.command,
            "dry_run": self.dry_run,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "bytes": self.bytes_handled,
            "seconds": round(self.seconds, 3),
            "orphans": self.orphans,
            "leftovers": self.leftovers,
            "removed_links": self.removed_links,
            "application_states": {key: sorted(found) for key, found in self.application_states.items()},
            "cloud_keys_to_rename": [] if cloud is None else [renumbering.cloud_keys()
                                                              for renumbering in self.renumberings],
            "error": self.error,
            "interrupted": self.interrupted,
            "generations": [outcome.to_json() for outcome in self.outcomes],
            **coordination,
        }
