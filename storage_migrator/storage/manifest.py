"""``manifest.json``: what a generation folder holds (files, checksums, stat fingerprints),
written beside ``source/`` and merged into the keys the application wrote, which stay as they are.

Written as strict UTF-8 JSON whose bytes depend only on the tree, the row and the keys already
there, so a rerun writes the same bytes; its head holds the sha256 of the rest (the seal), so a
damaged body is found without parsing it. Read as untrusted input: size-capped, never through a
link or from a FIFO; anything unexpected reads as "unreadable" (rewritten), never an exception.
The format, the seal, names that are not UTF-8, older formats and the size limits:
``docs/design.md``, "Manifests".

Long because the bounded streaming reader (kept over ``ijson``: ``docs/design.md``) and the
writer of the same format belong together."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage_migrator.errors import GenerationError, InvalidInput, MalformedManifest
from storage_migrator.records import as_utc
from storage_migrator.storage.layout import check_relative_paths
from storage_migrator.storage.tree import CHUNK_SIZE, Fingerprint, TreeSnapshot, fingerprint_tree, open_regular_file

if TYPE_CHECKING:
    from storage_migrator.storage.handle import Storage

MANIFEST_FORMAT = 4
READABLE_FORMATS = (1, 2, 3, 4)
OLDER_FINGERPRINT_FORMATS = (1, 2)
"""Formats whose fingerprints hold (size, mtime) alone: read with ctime and inode ``UNKNOWN``,
which no file has, so such a generation is read again once (and its manifest rewritten)."""
SEALED_FORMATS = (4,)
"""Formats whose head carries ``manifest_sha256``, the sha256 of every other byte of the file:
checking it tells an intact body from a damaged one without parsing it. A manifest of another
format is intact only if it parses whole."""
UNKNOWN = -1
MAX_MANIFEST_BYTES = 16 << 20
MAX_APPLICATION_KEY_BYTES = 1 << 20
# Keys the tool writes; every other key of an existing manifest is the application's and stays.
OWNED_KEYS = frozenset({"format", "generation_id", "project_id", "version", "file_count", "total_size_bytes",
                        "fingerprint_digest", "manifest_sha256", "files", "checksums", "fingerprints"})
_REQUIRED_KEYS = frozenset({"generation_id", "project_id", "version", "file_count", "total_size_bytes", "checksums"})
HEAD_BYTES = 4096
_HEAD_END = ', "files": '
_SEAL_FIELD = b'"manifest_sha256": "'      # its 64 hex digits follow
_SEAL_LENGTH = 64
_UNSEALED = "0" * _SEAL_LENGTH
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

NAME_MARKER = "\x00"
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME_ESCAPE = re.compile(r"\\(\\|x[89a-f][0-9a-f])")


# -- names ----------------------------------------------------------------------------------------

def _has_surrogate(name: str) -> bool:
    return not name.isascii() and _SURROGATE.search(name) is not None


def _escape_byte(match: re.Match[str]) -> str:
    code = ord(match.group())
    if not 0xDC80 <= code <= 0xDCFF:
        raise MalformedManifest(f"{code:#x} is a lone surrogate, not an undecodable byte of a file name")
    return f"\\x{code - 0xDC00:02x}"


def display_name(name: str) -> str:
    """``name`` as the application's ``files`` lists it: itself if UTF-8, else printable text."""
    if not _has_surrogate(name):
        return name
    return _SURROGATE.sub(_escape_byte, name.replace("\\", "\\\\"))


def encode_name(name: str) -> str:
    """``name`` as a key of ``checksums``/``fingerprints``: itself if UTF-8, else the marker
    form, from which ``decode_name`` gets the exact bytes back."""
    if not _has_surrogate(name):
        return name
    return NAME_MARKER + display_name(name)


def _unescape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    return "\\" if escaped == "\\" else chr(0xDC00 + int(escaped[1:], 16))


def decode_name(key: str) -> str:
    """The name a manifest key stands for. Raises MalformedManifest for a marker form that is not the
    canonical one (two keys must never name one file) or a surrogate no file name can hold."""
    if key.startswith(NAME_MARKER):
        name = _NAME_ESCAPE.sub(_unescape, key[1:])
        if encode_name(name) != key:
            raise MalformedManifest("a manifest key is not the canonical form of a file name")
        return name
    if _has_surrogate(key):         # format 1: raw bytes, read as surrogateescape
        display_name(key)           # raises for a surrogate that is not an undecodable byte
    return key


def _decoded_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    decoded = {decode_name(key): value for key, value in mapping.items()}
    if len(decoded) != len(mapping):
        raise MalformedManifest("two manifest keys name the same file")
    return decoded


# -- JSON text ----------------------------------------------------------------------------------

def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _json_bytes(document: dict[str, Any]) -> bytes:
    """Strict UTF-8 JSON. Only the application's values can still hold lone surrogates here
    (the names are encoded); they can only sit inside strings, so the JSON escape is exact."""
    # No indent: json's C encoder only runs without one, and this is written once per
    # generation (docs/benchmarks.md). `jq . manifest.json` reads it.
    text = json.dumps(document, ensure_ascii=False) + "\n"
    if not text.isascii():
        text = _SURROGATE.sub(_escape_surrogate, text)
    return text.encode("utf-8")


def _parse_object(text: str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):     # untrusted text (a 5,000-digit number is a ValueError too)
        return None
    return document if isinstance(document, dict) else None


def _seal(data: bytes) -> bytes:
    """``data``, the tool's manifest whose ``manifest_sha256`` is still ``_UNSEALED``, with it filled in."""
    start = data.index(_SEAL_FIELD) + len(_SEAL_FIELD)
    rest = data[start + _SEAL_LENGTH:]
    return data[:start] + _seal_digest(data[:start], [rest]).encode("ascii") + rest


def _seal_digest(before: bytes, after: Iterable[bytes]) -> str:
    """sha256 of a manifest's bytes but the 64 digits of its own ``manifest_sha256``."""
    digest = hashlib.sha256(before)
    for chunk in after:
        digest.update(chunk)
    return digest.hexdigest()


def _seal_holds(first: bytes, rest: Iterable[bytes], recorded: str) -> bool:
    """Whether the manifest whose bytes are ``first`` (holding its head) then ``rest`` is the one
    ``recorded`` (its head's ``manifest_sha256``, 64 hex digits, as parsed) was made for."""
    start = first.find(_SEAL_FIELD, 0, HEAD_BYTES)
    if start < 0:
        return False
    start += len(_SEAL_FIELD)
    end = start + _SEAL_LENGTH
    if first[start:end] != recorded.encode("ascii"):      # the digest parsed is the one found here
        return False
    return _seal_digest(first[:start], itertools.chain([first[end:]], rest)) == recorded


def fingerprint_digest(fingerprints: Mapping[str, Fingerprint]) -> str:
    """One sha256 over every path and its fingerprint: equal digests mean resync need not read.
    The text hashed is ``repr`` of the sorted (path, fingerprint) list, spelled out per entry (faster
    than ``repr`` of the list: resync makes it for every file). A manifest of an older format recorded a
    digest of (size, mtime) alone, a different text: it never equals a digest made now."""
    entries = ", ".join([f"({path!r}, ({size}, {mtime}, {ctime}, {inode}))"
                         for path, (size, mtime, ctime, inode) in sorted(fingerprints.items())])
    canonical = f"[{entries}]"
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class TreeSummary:
    """A tree as one lstat per file sees it, in a manifest head's terms: resync compares the
    digest with the head's, the dry run reports the counts. Small, so a reader process can hand
    it back (``scan_ahead.summarize_trees``)."""

    file_count: int
    total_size_bytes: int
    fingerprint_digest: str


def summarize_tree(storage: Storage, folder: Path) -> TreeSummary:
    """One lstat per file below ``folder``, nothing read; raises GenerationError as the walk does
    (a link or a special file anywhere, an unreadable directory)."""
    fingerprints = fingerprint_tree(storage, folder)
    return TreeSummary(len(fingerprints), sum(fingerprint[0] for fingerprint in fingerprints.values()),
                       fingerprint_digest(fingerprints))


@dataclass(frozen=True)
class ManifestHead:
    """The first keys of a sealed manifest whose bytes were found intact: enough to decide that a
    generation is unchanged. ``load`` reads the whole manifest when checksums are needed (a diff
    against the next version)."""

    storage: Storage = field(repr=False, compare=False)
    path: Path
    format: int
    version: int
    file_count: int
    total_size_bytes: int
    fingerprint_digest: str

    def load(self) -> Manifest | None:
        return read_manifest(self.storage, self.path)


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
    format: int | None = field(default=MANIFEST_FORMAT, compare=False)   # as read; written: MANIFEST_FORMAT

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
            fingerprints=snapshot.fingerprints(),
        )

    def with_extra(self, existing: dict[str, Any] | None) -> Manifest:
        """This manifest keeping the keys of ``existing`` that the tool does not own."""
        if not existing:
            return self
        extra = {key: value for key, value in existing.items() if key not in OWNED_KEYS}
        return Manifest(self.generation_id, self.project_id, self.version, self.created_at, self.file_count,
                        self.total_size_bytes, self.checksums, self.fingerprints, extra)

    def to_bytes(self) -> bytes:
        """The file's text. The head (up to ``files``) holds only numbers, ids and the two
        digests, so it fits in ``HEAD_BYTES`` whatever ``created_at`` the application put in;
        ``manifest_sha256``, last in it, is the sha256 of every other byte of the file."""
        document = {
            "format": MANIFEST_FORMAT,
            "generation_id": self.generation_id,
            "project_id": self.project_id,
            "version": self.version,
            "file_count": self.file_count,
            "total_size_bytes": self.total_size_bytes,
            "fingerprint_digest": self.fingerprint_digest,
            "manifest_sha256": _UNSEALED,
            "files": sorted(display_name(path) for path in self.checksums),
            "created_at": self.extra.get("created_at", self.created_at),
            "checksums": {encode_name(path): digest for path, digest in sorted(self.checksums.items())},
            "fingerprints": {
                encode_name(path): list(fingerprint) for path, fingerprint in sorted(self.fingerprints.items())
            },
        }
        document.update((key, value) for key, value in self.extra.items() if key not in document)
        return _seal(_json_bytes(document))

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Manifest:
        """Raises ``InvalidInput`` (``MalformedManifest``, or ``UnsafePathComponent`` for a key
        that is no plain relative path) for anything not of the expected shape."""
        missing = _REQUIRED_KEYS - document.keys()
        if missing:
            raise MalformedManifest(f"the manifest lacks {', '.join(sorted(missing))}")
        checksums = document["checksums"]
        fingerprints = document.get("fingerprints", {})
        if not isinstance(checksums, dict) or not isinstance(fingerprints, dict):
            raise MalformedManifest("checksums and fingerprints must be objects")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in checksums.items()):
            raise MalformedManifest("checksums must map paths to strings")
        checksums, fingerprints = _decoded_keys(checksums), _decoded_keys(fingerprints)
        check_relative_paths([*checksums, *fingerprints])    # a key like ../../etc/shadow is never read
        older = document.get("format") in OLDER_FINGERPRINT_FORMATS
        pairs: dict[str, Fingerprint] = {}
        for path, pair in fingerprints.items():
            if not (isinstance(pair, list) and len(pair) == (2 if older else 4) and all(type(n) is int for n in pair)):
                raise MalformedManifest("a fingerprint must be [size, mtime_ns, ctime_ns, inode]")
            pairs[path] = (pair[0], pair[1], UNKNOWN, UNKNOWN) if older else (pair[0], pair[1], pair[2], pair[3])
        integers = [document["version"], document["file_count"], document["total_size_bytes"]]
        if not all(type(number) is int for number in integers):
            raise MalformedManifest("version, file_count and total_size_bytes must be integers")
        created_at = document.get("created_at")
        written_as = document.get("format")
        return cls(
            generation_id=str(document["generation_id"]),
            project_id=str(document["project_id"]),
            version=integers[0],
            created_at=created_at if isinstance(created_at, str) else None,
            file_count=integers[1],
            total_size_bytes=integers[2],
            checksums=checksums,
            fingerprints=pairs,
            extra={key: value for key, value in document.items() if key not in OWNED_KEYS},
            format=written_as if type(written_as) is int else None,
        )


# -- reading ------------------------------------------------------------------------------------

def _open(storage: Storage, path: Path) -> tuple[int, os.stat_result] | None:
    """The manifest opened if it is a regular file (no symlink, FIFO or device), else None."""
    try:
        return open_regular_file(storage, path.parent, path.name)
    except GenerationError:     # missing, not a regular file, unreadable: "no manifest"
        return None


def _read_text(descriptor: int) -> str | None:
    """The whole file as text, or None if it holds more than ``MAX_MANIFEST_BYTES`` (it may have
    grown since it was stat'ed)."""
    parts, size = [], 0
    while size <= MAX_MANIFEST_BYTES and (chunk := os.read(descriptor, CHUNK_SIZE)):
        parts.append(chunk)
        size += len(chunk)
    if size > MAX_MANIFEST_BYTES:
        return None
    raw = b"".join(parts)
    del parts
    return raw.decode("utf-8", "surrogateescape")


def read_manifest_document(storage: Storage, path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` if it is a regular file holding an object; else None. Above
    ``MAX_MANIFEST_BYTES`` it is not parsed: the result holds only its keys the tool does not own
    (all the caller merges), and GenerationError says they exceed what can be kept."""
    opened = _open(storage, path)
    if opened is None:
        return None
    descriptor, status = opened
    try:
        if status.st_size <= MAX_MANIFEST_BYTES:
            text = _read_text(descriptor)
            if text is not None:
                return _parse_object(text)
            os.lseek(descriptor, 0, os.SEEK_SET)
        return _application_keys(descriptor, path)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def read_manifest_head(storage: Storage, path: Path) -> ManifestHead | Manifest | None:
    """What resync needs to tell an unchanged generation, from the tool's manifest at ``path`` if
    all of it is intact: of a sealed manifest its head (the first 4 KiB parsed, the rest hashed,
    never parsed); of an older format the whole manifest, parsed (only that tells its body is
    intact). None if missing, unreadable, damaged, not strict UTF-8, too large to be loaded
    later, or without a head — an older manifest or the application's: rewrite it."""
    opened = _open(storage, path)
    if opened is None:
        return None
    descriptor, status = opened
    try:
        if status.st_size > MAX_MANIFEST_BYTES:
            return None
        chunks = _chunks(descriptor, status.st_size)
        first = next(chunks, b"")
        parsed = _parse_head(storage, path, first[:HEAD_BYTES])
        if parsed is None:
            return None
        head, seal = parsed
        if seal is not None:
            return head if _seal_holds(first, chunks, seal) else None
        raw = b"".join([first, *chunks])
        raw.decode("utf-8")         # strict: a format-1 file holding raw bytes is rewritten too
        manifest = _manifest_from_bytes(raw)
        if manifest is None or (head.format not in OLDER_FINGERPRINT_FORMATS
                                and manifest.fingerprint_digest != head.fingerprint_digest):
            return None             # the body's fingerprints are not those the head's digest was made of
        return manifest
    except (OSError, MalformedManifest, UnicodeDecodeError):
        return None
    finally:
        os.close(descriptor)


def _chunks(descriptor: int, expected: int) -> Iterator[bytes]:
    """The open file from its offset to its end. The first read asks for the ``expected`` bytes
    fstat saw and one more (at least ``HEAD_BYTES``, at most a chunk), so a manifest that did
    not grow meanwhile takes that read and the empty one that ends it. Raises MalformedManifest past
    ``MAX_MANIFEST_BYTES`` (the file grew since it was stat'ed)."""
    total = 0
    while True:
        request = min(max(expected + 1 - total, HEAD_BYTES), max(CHUNK_SIZE, HEAD_BYTES))
        chunk = os.read(descriptor, request)
        if not chunk:
            return
        total += len(chunk)
        if total > MAX_MANIFEST_BYTES:
            raise MalformedManifest("the manifest grew past the size limit while it was read")
        yield chunk


def _parse_head(storage: Storage, path: Path, prefix: bytes) -> tuple[ManifestHead, str | None] | None:
    """The head from the first bytes of the tool's manifest and, if its format is sealed, the
    ``manifest_sha256`` it records (64 hex digits); None if there is no such head."""
    text = prefix.decode("utf-8", "surrogateescape")
    end = text.find(_HEAD_END)
    if not text.startswith('{"format": ') or end < 0:
        return None
    try:
        head = json.loads(text[:end] + "}")
    except (ValueError, RecursionError):
        return None
    if not isinstance(head, dict):
        return None
    numbers: list[Any] = [head.get("format"), head.get("version"), head.get("file_count"),
                          head.get("total_size_bytes")]
    digest = head.get("fingerprint_digest")
    if not all(type(number) is int for number in numbers) or not isinstance(digest, str) \
            or numbers[0] not in READABLE_FORMATS:
        return None
    seal = head.get("manifest_sha256") if numbers[0] in SEALED_FORMATS else None
    if numbers[0] in SEALED_FORMATS and not (isinstance(seal, str) and _HEX_DIGEST.fullmatch(seal)):
        return None
    return ManifestHead(storage, path, numbers[0], numbers[1], numbers[2], numbers[3], digest), seal


def read_manifest(storage: Storage, path: Path) -> Manifest | None:
    """The tool's manifest at ``path``, or None if missing, unreadable, above the size limit,
    damaged (a sealed one whose bytes do not hash to its ``manifest_sha256``) or not the tool's
    format (then it is rewritten, keeping the application's keys)."""
    opened = _open(storage, path)
    if opened is None:
        return None
    descriptor, status = opened
    try:
        if status.st_size > MAX_MANIFEST_BYTES:
            return None
        raw = b"".join(_chunks(descriptor, status.st_size))
    except (OSError, MalformedManifest):
        return None
    finally:
        os.close(descriptor)
    return _manifest_from_bytes(raw)


def _manifest_from_bytes(raw: bytes) -> Manifest | None:
    """The manifest ``raw`` holds if it is of the tool's shape and, if sealed, intact; else None."""
    document = _parse_object(raw.decode("utf-8", "surrogateescape"))
    if document is None:
        return None
    try:
        manifest = Manifest.from_document(document)
    except InvalidInput:
        return None
    if manifest.format in SEALED_FORMATS:
        seal = document.get("manifest_sha256")
        if not (isinstance(seal, str) and _HEX_DIGEST.fullmatch(seal) and _seal_holds(raw, (), seal)):
            return None
    return manifest


# -- the application's keys of a manifest too large to parse ----------------------------------------

_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
# Inside a container: everything up to the next bracket, complete strings included.
_CONTAINER_RUN = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_SCALAR = re.compile(rb"[^,}\]\s]*+")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


class _Chunks:
    """An open file as a buffer refilled a chunk at a time: memory is one chunk."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.buffer = b""
        self.position = 0

    def fill(self) -> bool:
        """At least one unread byte in ``buffer`` unless the file is at its end."""
        if self.position < len(self.buffer):
            return True
        self.buffer, self.position = os.read(self.descriptor, CHUNK_SIZE), 0
        return bool(self.buffer)

    def next_byte(self) -> int:
        """The next byte that is not JSON whitespace, left unread."""
        while self.fill():
            self.position = _WHITESPACE.match(self.buffer, self.position).end()   # type: ignore[union-attr]
            if self.position < len(self.buffer):
                return self.buffer[self.position]
        raise MalformedManifest("the manifest ends early")

    def at_end(self) -> bool:
        """Whether only whitespace is left, as json.loads demands of a whole document."""
        try:
            self.next_byte()
        except MalformedManifest:
            return True
        return False

    def take(self, expected: bytes) -> int:
        """Consume the next byte, which must be one of ``expected``."""
        byte = self.next_byte()
        if byte not in expected:
            raise MalformedManifest(f"unexpected {chr(byte)!r} in the manifest")
        self.position += 1
        return byte


@dataclass
class _ValueSkipper:
    """Finds where one JSON value ends across chunks without building it: strings and
    brackets are all that matter (json.loads checks what is kept)."""

    depth: int = 0
    started: bool = False
    in_string: bool = False
    escaped: bool = False
    scalar: bool = False

    def feed(self, buffer: bytes, position: int) -> int:
        """The offset just past the value's end in ``buffer``, or -1 if it goes on."""
        while position < len(buffer):
            if self.in_string:
                position = self._string(buffer, position)
                if not self.in_string and self.depth == 0:
                    return position
            elif self.scalar:
                position = _SCALAR.match(buffer, position).end()   # type: ignore[union-attr]
                return position if position < len(buffer) else -1
            elif not self.started:
                self._start(buffer[position])
                position += 0 if self.scalar else 1
            else:
                position = _CONTAINER_RUN.match(buffer, position).end()   # type: ignore[union-attr]
                if position < len(buffer):
                    if self._bracket(buffer[position]):
                        return position + 1
                    position += 1
        return -1

    def _start(self, byte: int) -> None:
        self.started = True
        if byte == _QUOTE:
            self.in_string = True
        elif byte in b"[{":
            self.depth = 1
        else:
            self.scalar = True

    def _string(self, buffer: bytes, position: int) -> int:
        if self.escaped:
            self.escaped = False
            return position + 1
        position = _STRING_BODY.match(buffer, position).end()   # type: ignore[union-attr]
        if position < len(buffer):
            if buffer[position] == _QUOTE:
                self.in_string = False
            else:                           # a backslash ends the buffer
                self.escaped = True
            position += 1
        return position

    def _bracket(self, byte: int) -> bool:
        """Account for the quote or bracket that stopped a run; True if the value ended."""
        if byte == _QUOTE:
            self.in_string = True
        elif byte in b"[{":
            self.depth += 1
        else:
            self.depth -= 1
        return self.depth == 0


def _skip_value(chunks: _Chunks, keep: int) -> bytes | None:
    """Consume one value; its text if at most ``keep`` bytes, else None."""
    chunks.next_byte()
    skipper = _ValueSkipper()
    kept: list[bytes] | None = [] if keep > 0 else None
    size = 0
    while chunks.fill():
        start, end = chunks.position, skipper.feed(chunks.buffer, chunks.position)
        chunks.position = end if end >= 0 else len(chunks.buffer)
        size += chunks.position - start
        if kept is not None and size > keep:
            kept = None
        elif kept is not None:
            kept.append(chunks.buffer[start:chunks.position])
        if end >= 0:
            return b"".join(kept) if kept is not None else None
    raise MalformedManifest("the manifest ends early")


def _application_keys(descriptor: int, path: Path) -> dict[str, Any] | None:
    """The top-level keys the tool does not own, from a streaming scan of the whole file;
    None if it is not one JSON object.
    Not ijson: no faster, and its C backend alters or refuses lone surrogates and Infinity (docs/benchmarks.md)."""
    chunks = _Chunks(descriptor)
    kept: dict[str, Any] = {}
    budget = MAX_APPLICATION_KEY_BYTES
    try:
        chunks.take(b"{")
        if chunks.next_byte() == ord("}"):
            return kept
        while True:
            key_text = _skip_value(chunks, budget)
            key = _parse_text(key_text) if key_text is not None else None
            chunks.take(b":")
            owned = key in OWNED_KEYS
            value_text = _skip_value(chunks, 0 if owned else budget)
            if not owned:
                if key_text is None or value_text is None or len(key_text) + len(value_text) > budget:
                    raise GenerationError(
                        f"{path} is larger than {MAX_MANIFEST_BYTES} bytes and the application's keys in it "
                        f"exceed {MAX_APPLICATION_KEY_BYTES} bytes; it is not rewritten (nothing of it is lost)")
                if not isinstance(key, str):
                    return None
                budget -= len(key_text) + len(value_text)
                kept[key] = _parse_text(value_text)
            if chunks.take(b",}") == ord("}"):
                return kept if chunks.at_end() else None
    except MalformedManifest:
        return None


def _parse_text(text: bytes) -> Any:
    try:
        return json.loads(text.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError) as error:
        raise MalformedManifest(f"not JSON: {error}") from None


def format_timestamp(value: datetime | str | None) -> str | None:
    """ISO 8601 in UTC (``records.as_utc``)."""
    if value is None or isinstance(value, str):
        return value
    return as_utc(value).isoformat()
