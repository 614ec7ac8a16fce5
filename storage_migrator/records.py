"""The domain records the planner, the executor and the reports share: a generation and a
project as read from the database, the values the tool writes back, and the outcome vocabulary.

Plain frozen dataclasses with no database library behind them, so the planner stays pure. They
are the one list of the columns the tool works with: the database layer builds its reads from
``GenerationRow``'s fields and its writes and schema check from ``GenerationUpdate``'s
(``OWNED_GENERATION_COLUMNS``), so a new column is one edit here and one in ``db.tables.generations``
(an import-time check keeps that table covering them)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any

UNFINISHED_STATUSES = frozenset({"pending", "processing"})


def as_utc(value: datetime) -> datetime:
    """``value`` as a timezone-aware UTC datetime; a naive one is UTC already (how the schema
    stores timestamps, and what SQLite hands back). The one place this fact is written: the
    database layer reads every timestamp through it, and so does anyone handed a bare row."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class GenerationRow:
    """A generation as the tool needs it; ``output_files`` is fetched only to rebuild a folder.

    Each field is the column of the same name but ``has_output_files`` (computed: whether
    ``output_files`` is set). ``created_at`` is timezone-aware UTC, or None if the stored value
    is not a timestamp; ``file_count`` NULL reads as 0 and ``is_active`` NULL as False.
    ``changes_summary`` is whatever the column holds (the application stores its own keys
    there, and a hand-edited row may hold a list or a string): use ``summary`` to read it.
    """

    id: str
    project_id: str
    version: int | None
    status: str
    created_at: datetime | None
    storage_path: str | None
    file_count: int
    total_size_bytes: int | None
    diff_from_previous: str | None
    changes_summary: Any
    is_active: bool
    has_output_files: bool

    @property
    def summary(self) -> dict[str, Any]:
        """``changes_summary`` as a dict; anything else (NULL, a list, a string) reads as empty."""
        return self.changes_summary if isinstance(self.changes_summary, dict) else {}

    @property
    def is_unfinished(self) -> bool:
        """Pending or processing: the application may still be writing it."""
        return self.status in UNFINISHED_STATUSES


@dataclass(frozen=True)
class RowSeen:
    """The values of a generation's row that the plan was made from. The application may
    change or delete the row at any moment; a write or disk step checks these again first."""

    status: str
    version: int | None
    storage_path: str | None

    @classmethod
    def of(cls, row: GenerationRow) -> RowSeen:
        return cls(row.status, row.version, row.storage_path)


class RowDrift(str, Enum):
    """How a row differs from what the plan saw: then the tool leaves it to the next resync."""

    GONE = "gone"          # the application deleted it
    CHANGED = "changed"    # its status, version or storage_path is no longer what was planned from

    @classmethod
    def of(cls, current: RowSeen | None, seen: RowSeen) -> RowDrift | None:
        if current is None:
            return cls.GONE
        return None if current == seen else cls.CHANGED


@dataclass(frozen=True)
class ProjectRecord:
    """One project's row (``exists`` is False if the row is gone) and its generations in
    version order."""

    project_id: str
    exists: bool
    active_generation_id: str | None
    latest_version: int
    generations: tuple[GenerationRow, ...]


@dataclass(frozen=True)
class GenerationUpdate:
    """Every column the tool owns for one generation, as it must be after this run."""

    generation_id: str
    storage_path: str | None
    file_count: int
    total_size_bytes: int | None
    diff_from_previous: str | None
    changes_summary: Any
    version: int | None
    seen: RowSeen

    @classmethod
    def from_row(cls, row: GenerationRow, seen: RowSeen | None = None, **changes: Any) -> GenerationUpdate:
        """The row's current values with ``changes`` applied: callers name only what they change.
        ``seen`` is the row as planned from (default: ``row`` itself)."""
        values = {name: getattr(row, name) for name in OWNED_GENERATION_COLUMNS}
        values.update(changes)
        return cls(generation_id=row.id, seen=seen or RowSeen.of(row), **values)

    def column_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OWNED_GENERATION_COLUMNS}


OWNED_GENERATION_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in fields(GenerationUpdate) if field.name not in ("generation_id", "seen")
)


@dataclass(frozen=True)
class ProjectUpdate:
    """What a project's row must reach. ``latest_version`` only raises the stored value;
    ``active_generation_id`` replaces ``seen_active_generation_id`` only if that is still stored
    (the application's choice is never reverted); ``is_active`` then follows what is stored."""

    project_id: str
    latest_version: int
    active_generation_id: str | None
    seen_active_generation_id: str | None


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
