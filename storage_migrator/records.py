"""The domain records the planner, the executor and the reports share: a generation and a
project as read from the database, and the values the tool writes back.

Plain frozen dataclasses with no database library behind them, so the planner stays pure.
``GenerationUpdate`` is the one definition of the columns the tool owns: the database layer
builds its UPDATE from its fields, so adding a column is one edit here and one in the schema.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

UNFINISHED_STATUSES = frozenset({"pending", "processing"})


@dataclass(frozen=True)
class GenerationRow:
    """A generation as the tool needs it; ``output_files`` is fetched only to rebuild a folder.

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
    is_active: bool
    version: int | None

    @classmethod
    def from_row(cls, row: GenerationRow, **changes: Any) -> GenerationUpdate:
        """The row's current values with ``changes`` applied: callers name only what they change."""
        values = {name: getattr(row, name) for name in OWNED_GENERATION_COLUMNS}
        values.update(changes)
        return cls(generation_id=row.id, **values)

    def column_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OWNED_GENERATION_COLUMNS}


OWNED_GENERATION_COLUMNS: tuple[str, ...] = tuple(
    field.name for field in fields(GenerationUpdate) if field.name != "generation_id"
)


@dataclass(frozen=True)
class ProjectUpdate:
    project_id: str
    latest_version: int
    active_generation_id: str | None
