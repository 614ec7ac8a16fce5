"""Which files differ between two versions of a generation (path -> checksum maps in, sorted
paths out), and the ``changes_summary`` column made of that. Pure."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TreeComparison:
    """Paths under ``source/`` that differ between two versions, each tuple sorted."""

    added: tuple[str, ...]
    modified: tuple[str, ...]
    deleted: tuple[str, ...]

    def is_empty(self) -> bool:
        return not (self.added or self.modified or self.deleted)

    def changed_paths(self) -> list[str]:
        """Every changed path in one sorted sequence: the order of the patch."""
        return sorted((*self.added, *self.modified, *self.deleted))


def compare_trees(old: Mapping[str, str], new: Mapping[str, str]) -> TreeComparison:
    """Classify paths from their checksums alone: unchanged files are never read."""
    return TreeComparison(
        added=tuple(sorted(new.keys() - old.keys())),
        modified=tuple(sorted(path for path in old.keys() & new.keys() if old[path] != new[path])),
        deleted=tuple(sorted(old.keys() - new.keys())),
    )


@dataclass(frozen=True)
class ChangeSummary:
    """The ``changes_summary`` column."""

    added: int
    modified: int
    deleted: int
    from_version: int | None

    @classmethod
    def first_version(cls, file_count: int) -> ChangeSummary:
        return cls(added=file_count, modified=0, deleted=0, from_version=None)

    @classmethod
    def from_comparison(cls, comparison: TreeComparison, from_version: int) -> ChangeSummary:
        return cls(len(comparison.added), len(comparison.modified), len(comparison.deleted), from_version)

    def to_json(self) -> dict:
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted,
                "from_version": self.from_version}
