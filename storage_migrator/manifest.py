"""``manifest.json``: what a generation folder holds, written beside ``source/``.

The application reads ``files``; the tool reads ``checksums`` (diffs without re-reading the
older side) and ``fingerprints`` (resync skips a generation whose files all stat the same).
The text is a pure function of the tree and the row, so reruns write identical bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .tree import Fingerprint, TreeSnapshot

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    generation_id: str
    project_id: str
    version: int
    created_at: str | None
    file_count: int
    total_size_bytes: int
    checksums: dict[str, str]
    fingerprints: dict[str, Fingerprint]

    @property
    def files(self) -> list[str]:
        return sorted(self.checksums)

    @classmethod
    def from_snapshot(
        cls, snapshot: TreeSnapshot, generation_id: str, project_id: str, version: int, created_at: datetime | None
    ) -> "Manifest":
        return cls(
            generation_id=generation_id,
            project_id=project_id,
            version=version,
            created_at=format_timestamp(created_at),
            file_count=snapshot.file_count,
            total_size_bytes=snapshot.total_size_bytes,
            checksums=snapshot.checksums(),
            fingerprints={
                path: (record.size, record.mtime_ns)
                for path, record in snapshot.files.items()
            },
        )

    def to_bytes(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "generation_id": self.generation_id,
            "project_id": self.project_id,
            "version": self.version,
            "created_at": self.created_at,
            "file_count": self.file_count,
            "total_size_bytes": self.total_size_bytes,
            "files": self.files,
            "checksums": dict(sorted(self.checksums.items())),
            "fingerprints": {
                path: list(fingerprint) for path, fingerprint in sorted(self.fingerprints.items())
            },
        }
        # No indent: json's C encoder only runs without one, and this is written once per
        # generation (pretty-printing cost ~10% of a run). `jq . manifest.json` reads it.
        return (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Manifest":
        document = json.loads(raw.decode("utf-8", "surrogateescape"))
        return cls(
            generation_id=document["generation_id"],
            project_id=document["project_id"],
            version=int(document["version"]),
            created_at=document.get("created_at"),
            file_count=int(document["file_count"]),
            total_size_bytes=int(document["total_size_bytes"]),
            checksums=dict(document["checksums"]),
            fingerprints={
                path: tuple(pair)
                for path, pair in document.get("fingerprints", {}).items()
            },
        )


def read_manifest(path: Path) -> Manifest | None:
    """The manifest at ``path``, or None if it is missing or unreadable (then it is rewritten)."""
    try:
        return Manifest.from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def format_timestamp(value: datetime | str | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which the schema stores as UTC."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()
