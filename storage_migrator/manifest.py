"""``manifest.json``: what a generation folder holds, written beside ``source/``.

The application reads ``files``; the tool reads ``checksums`` (diffs without re-reading the
older side) and ``fingerprints`` (resync skips a generation whose files all stat the same).
The text is a pure function of the tree, the row and the keys already there: the tool merges
into a manifest the application wrote (its ``metadata`` and ``created_at`` stay), so reruns write
identical bytes. Its head (counts and a digest of the stat fingerprints) comes first in the file,
so an unchanged generation costs resync a 4 KiB read, not the parse of every checksum.
A manifest is untrusted input: read with a size cap, never through a symlink or
from a FIFO, and any unexpected type makes it "unreadable" (rewritten), never an exception.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import GenerationError
from .layout import UnsafePathComponent
from .tree import Fingerprint, TreeSnapshot, read_prefix, read_regular_file

MANIFEST_FORMAT = 1
MAX_MANIFEST_BYTES = 256 << 20
# Keys the tool writes; every other key of an existing manifest is the application's and stays.
OWNED_KEYS = frozenset({"format", "generation_id", "project_id", "version", "file_count", "total_size_bytes",
                        "fingerprint_digest", "files", "checksums", "fingerprints"})
HEAD_BYTES = 4096
_HEAD_END = ', "files": '
# Any path with an empty, "." or ".." component, a leading "/", a backslash or NUL; run over all
# keys joined by newlines (MULTILINE anchors can only add matches, never hide one).
_UNSAFE_PATH = re.compile(r'(^|/)\.{0,2}(/|$)|\\|\x00', re.MULTILINE)


def fingerprint_digest(fingerprints: Mapping[str, Fingerprint]) -> str:
    """One sha256 over every (path, size, mtime): equal digests mean resync need not read."""
    canonical = repr(sorted((path, tuple(pair)) for path, pair in fingerprints.items()))
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


def check_manifest_paths(paths: list[str]) -> None:
    """Every path a manifest names must be a plain relative path (one regex pass over all)."""
    if _UNSAFE_PATH.search("\n".join(paths)):
        raise UnsafePathComponent("a manifest path is not a plain relative path")


@dataclass(frozen=True)
class ManifestHead:
    """The first keys of a manifest: enough to decide that a generation is unchanged. ``load``
    reads the whole manifest when checksums are needed (a diff against the next version)."""

    path: Path
    version: int
    file_count: int
    total_size_bytes: int
    fingerprint_digest: str

    def load(self) -> Manifest | None:
        return read_manifest(self.path)



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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)   # the application's keys

    @property
    def files(self) -> list[str]:
        return sorted(self.checksums)

    @property
    def fingerprint_digest(self) -> str:
        return fingerprint_digest(self.fingerprints)

    def load(self) -> Manifest:
        return self

    @classmethod
    def from_snapshot(
        cls, snapshot: TreeSnapshot, generation_id: str, project_id: str, version: int, created_at: datetime | None
    ) -> Manifest:
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

    def with_extra(self, existing: dict[str, Any] | None) -> Manifest:
        """This manifest keeping the keys of ``existing`` that the tool does not own."""
        if not existing:
            return self
        extra = {key: value for key, value in existing.items() if key not in OWNED_KEYS}
        return Manifest(self.generation_id, self.project_id, self.version, self.created_at, self.file_count,
                        self.total_size_bytes, self.checksums, self.fingerprints, extra)

    def to_bytes(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "generation_id": self.generation_id,
            "project_id": self.project_id,
            "version": self.version,
            "created_at": self.extra.get("created_at", self.created_at),
            "file_count": self.file_count,
            "total_size_bytes": self.total_size_bytes,
            "fingerprint_digest": self.fingerprint_digest,
            "files": self.files,
            "checksums": dict(sorted(self.checksums.items())),
            "fingerprints": {
                path: list(fingerprint) for path, fingerprint in sorted(self.fingerprints.items())
            },
        }
        document.update((key, value) for key, value in self.extra.items() if key not in document)
        # No indent: json's C encoder only runs without one, and this is written once per
        # generation (pretty-printing cost ~10% of a run). `jq . manifest.json` reads it.
        return (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Manifest:
        """Raises ValueError/TypeError/KeyError for anything not of the expected shape."""
        checksums = document["checksums"]
        fingerprints = document.get("fingerprints", {})
        if not isinstance(checksums, dict) or not isinstance(fingerprints, dict):
            raise TypeError("checksums and fingerprints must be objects")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in checksums.items()):
            raise TypeError("checksums must map paths to strings")
        check_manifest_paths([*checksums, *fingerprints])    # a key like ../../etc/shadow is never read
        pairs: dict[str, Fingerprint] = {}
        for path, pair in fingerprints.items():
            if not (isinstance(pair, list) and len(pair) == 2 and all(type(n) is int for n in pair)):
                raise TypeError("a fingerprint must be [size, mtime_ns]")
            pairs[path] = (pair[0], pair[1])
        integers = [document["version"], document["file_count"], document["total_size_bytes"]]
        if not all(type(number) is int for number in integers):
            raise TypeError("version, file_count and total_size_bytes must be integers")
        created_at = document.get("created_at")
        return cls(
            generation_id=str(document["generation_id"]),
            project_id=str(document["project_id"]),
            version=integers[0],
            created_at=created_at if isinstance(created_at, str) else None,
            file_count=integers[1],
            total_size_bytes=integers[2],
            checksums=dict(checksums),
            fingerprints=pairs,
            extra={key: value for key, value in document.items() if key not in OWNED_KEYS},
        )


def read_manifest_document(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` if it is a regular file (not a symlink, FIFO or device) of
    sane size holding an object; else None."""
    try:
        raw = read_regular_file(path.parent, path.name, max_bytes=MAX_MANIFEST_BYTES)
        document = json.loads(raw.decode("utf-8", "surrogateescape"))
    except (GenerationError, ValueError, RecursionError):   # untrusted bytes: "no manifest"
        return None
    return document if isinstance(document, dict) else None


def read_manifest_head(path: Path) -> ManifestHead | Manifest | None:
    """The head of the tool's manifest at ``path`` from its first 4 KiB; a manifest without one
    (an older or the application's) is read whole. None if missing or unreadable."""
    try:
        prefix = read_prefix(path.parent, path.name, HEAD_BYTES).decode("utf-8", "surrogateescape")
    except GenerationError:     # missing, not a regular file, unreadable: "no manifest"
        return None
    end = prefix.find(_HEAD_END)
    if prefix.startswith('{"format": ') and end > 0:
        try:
            head = json.loads(prefix[:end] + "}")
            numbers = [head["version"], head["file_count"], head["total_size_bytes"]]
            digest = head["fingerprint_digest"]
            if all(type(number) is int for number in numbers) and isinstance(digest, str):
                return ManifestHead(path, numbers[0], numbers[1], numbers[2], digest)
        except (ValueError, KeyError, TypeError):
            pass
    return read_manifest(path)


def read_manifest(path: Path) -> Manifest | None:
    """The tool's manifest at ``path``, or None if missing, unreadable or not the tool's format
    (then it is rewritten, keeping the application's keys)."""
    document = read_manifest_document(path)
    if document is None:
        return None
    try:
        return Manifest.from_document(document)
    except (ValueError, KeyError, TypeError):
        return None
def format_timestamp(value: datetime | str | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which the schema stores as UTC."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()
