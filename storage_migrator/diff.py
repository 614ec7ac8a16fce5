"""Compare two versions of a generation's source tree and write the git-style patch between them
(libgit2 diffs each file present in both; a text file added or deleted whole involves no diff and
is written here, byte for byte as libgit2 writes it; a binary one is left to libgit2's encoder);
read a stored patch back to see which files and blobs it names.

Pure: path → sha256 maps and readers in, bytes out; nothing here touches the disk. ``git apply`` in
a copy of the old tree reproduces the new one byte for byte (binary files, CRLF, non-UTF-8 content
and names) — except a file over ``LARGE_FILE_LIMIT`` (64 MiB): it is never read, its section only
says ``Binary files a/P and b/P differ`` with both blob ids, and ``git apply`` refuses that section
(``git apply --exclude=P`` applies the rest).
"""
from __future__ import annotations

import datetime
import functools
import io
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from .errors import GenerationError
from .storage.tree import git_blob_id  # the one blob-id function; here too as diff.git_blob_id

LARGE_FILE_LIMIT = 64 << 20        # bytes; a bigger changed file is named in the patch, not diffed
CONTEXT_LINES = 3
NULL_BLOB_ID = "0" * 40
FILE_MODE = b"100644"
@functools.cache
def _libgit2() -> Any:
    """pygit2, imported the first time a patch is made: a dry run, an unchanged resync and the
    read-only commands never pay for loading libgit2 (a good part of their start-up)."""
    import pygit2

    return pygit2


@functools.cache
def libgit2_flags() -> int:
    """SHOW_BINARY: a binary change as a `GIT binary patch` that git apply can use, not "differ".
    INDENT_HEURISTIC: git's default since 2.14, so hunks slide to the same places as `git diff`."""
    from pygit2.enums import DiffOption

    return int(DiffOption.SHOW_BINARY | DiffOption.INDENT_HEURISTIC)
# The header is written here, so the name libgit2 sees never reaches the patch; a constant one
# also spares pygit2 names it cannot pass (it encodes str strictly, a non-UTF-8 name fails).
_LIBGIT2_NAME = "file"

Reader = Callable[[str], bytes]
BlobIdOf = Callable[[str], str]


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


# -- writing -------------------------------------------------------------------------------

Write = Callable[[bytes | memoryview], object]


@dataclass(frozen=True)
class _Side:
    """One tree as the patch sees it. ``sizes`` and ``blob_id`` let a large file be named in the
    patch without being read; without them its size is only known once its bytes are."""

    read: Reader
    sizes: Mapping[str, int] | None
    blob_id: BlobIdOf | None
    known_ids: Mapping[str, str]

    def known_to_be_large(self, path: str) -> bool:
        size = self.sizes.get(path) if self.sizes is not None else None
        return size is not None and size > LARGE_FILE_LIMIT

    def blob_id_of(self, path: str, content: bytes | None) -> str:
        """A large file's id: streamed by ``blob_id`` if given, never from its bytes in memory."""
        known = self.known_ids.get(path)
        if known is not None:
            return known
        if self.blob_id is not None:
            return self.blob_id(path)
        return git_blob_id(content if content is not None else self.read(path))

    def id_of(self, path: str, content: bytes) -> str:
        """The id of ``content``, the bytes just read of ``path``: hashed by the scan, or now."""
        known = self.known_ids.get(path)
        return known if known is not None else git_blob_id(content)


def write_patch(
    out: BinaryIO,
    comparison: TreeComparison,
    read_old: Reader,
    read_new: Reader,
    *,
    old_sizes: Mapping[str, int] | None = None,
    new_sizes: Mapping[str, int] | None = None,
    blob_id_old: BlobIdOf | None = None,
    blob_id_new: BlobIdOf | None = None,
    old_ids: Mapping[str, str] | None = None,
    new_ids: Mapping[str, str] | None = None,
) -> None:
    """Stream the patch, file by file in path order; only changed paths are read, and a file that
    ``old_sizes``/``new_sizes`` say is over ``LARGE_FILE_LIMIT`` is not read at all: its ids come
    from ``blob_id_old``/``blob_id_new``, which must therefore come with the sizes. ``old_ids`` and
    ``new_ids`` are blob ids already hashed over the bytes the readers give (a scan's); a path
    not in them is hashed here. The text goes to ``out`` in pieces as it is made (a file's hunks
    are never copied into one string)."""
    for sizes, blob_id, side in ((old_sizes, blob_id_old, "old"), (new_sizes, blob_id_new, "new")):
        if sizes is not None and blob_id is None:
            raise TypeError(f"{side}_sizes needs blob_id_{side}: a large file's id must come without reading it")
    old_side = _Side(read_old, old_sizes, blob_id_old, old_ids or {})
    new_side = _Side(read_new, new_sizes, blob_id_new, new_ids or {})
    added, deleted = set(comparison.added), set(comparison.deleted)
    write = out.write
    for path in comparison.changed_paths():
        _write_section(write, path, None if path in added else old_side, None if path in deleted else new_side)


def render_patch(
    comparison: TreeComparison,
    read_old: Reader,
    read_new: Reader,
    *,
    old_sizes: Mapping[str, int] | None = None,
    new_sizes: Mapping[str, int] | None = None,
    blob_id_old: BlobIdOf | None = None,
    blob_id_new: BlobIdOf | None = None,
    old_ids: Mapping[str, str] | None = None,
    new_ids: Mapping[str, str] | None = None,
) -> bytes:
    """``write_patch`` into bytes (for comparing a stored patch with a fresh one)."""
    buffer = io.BytesIO()
    write_patch(buffer, comparison, read_old, read_new, old_sizes=old_sizes, new_sizes=new_sizes,
                blob_id_old=blob_id_old, blob_id_new=blob_id_new, old_ids=old_ids, new_ids=new_ids)
    return buffer.getvalue()


def _write_section(write: Write, path: str, old_side: _Side | None, new_side: _Side | None) -> None:
    """One file's section; ``None`` for the side where the file does not exist."""
    if any(side is not None and side.known_to_be_large(path) for side in (old_side, new_side)):
        write(_large_section(path, old_side, new_side, None, None))
        return
    old = old_side.read(path) if old_side is not None else None
    new = new_side.read(path) if new_side is not None else None
    if any(content is not None and len(content) > LARGE_FILE_LIMIT for content in (old, new)):
        write(_large_section(path, old_side, new_side, old, new))
        return
    if old == new:                      # the same bytes after all (changed back): nothing to apply
        return
    old_id = old_side.id_of(path, old) if old_side is not None and old is not None else NULL_BLOB_ID
    new_id = new_side.id_of(path, new) if new_side is not None and new is not None else NULL_BLOB_ID
    if old is None and new is not None and not _is_binary(new):
        _write_whole_file(write, path, new, new_id, added=True)
    elif new is None and old is not None and not _is_binary(old):
        _write_whole_file(write, path, old, old_id, added=False)
    else:
        _write_diffed(write, path, (old_id, old), (new_id, new))


def _is_binary(content: bytes) -> bool:
    """libgit2's test (and git's): a NUL among the first 8000 bytes."""
    return content.find(b"\0", 0, _BINARY_CHECK_BYTES) >= 0


_BINARY_CHECK_BYTES = 8000


def _write_whole_file(write: Write, path: str, content: bytes, blob_id: str, *, added: bool) -> None:
    """A text file added or deleted whole, as libgit2 and git write it — no diff to compute:
    one hunk of every line, ``+`` (or ``-``) before each, ``\\ No newline at end of file`` after
    a last line without one; an empty file is the header alone. ``blob_id`` is ``content``'s."""
    header = _header(path, not added, added, NULL_BLOB_ID if added else blob_id,
                     blob_id if added else NULL_BLOB_ID, with_names=bool(content))
    if not content:
        write(header)
        return
    complete = content.endswith(b"\n")
    lines = content.count(b"\n") + (not complete)
    count = b"" if lines == 1 else b",%d" % lines
    sign = b"+" if added else b"-"
    hunk = b"@@ -0,0 +1%s @@\n+" % count if added else b"@@ -1%s +0,0 @@\n-" % count
    write(header + hunk)
    body = content.replace(b"\n", b"\n" + sign)         # the one copy of the content
    if complete:
        write(memoryview(body)[:-1])                    # the last line's sign announces no line
    else:
        write(body)
        write(b"\n\\ No newline at end of file\n")


def _write_diffed(write: Write, path: str, old_blob: tuple[str, bytes | None],
                  new_blob: tuple[str, bytes | None]) -> None:
    """libgit2 diffs the bytes (hunks, or a ``GIT binary patch``) as two blobs (id, content;
    None: that side does not exist) of the in-memory store; the header is ours because libgit2
    abbreviates the ``index`` ids to 7 digits when the text is shown."""
    (old_id, old), (new_id, new) = old_blob, new_blob
    with memory_blobs().holding((old_id, old), (new_id, new)) as (old_blob, new_blob):
        patch = _libgit2().Patch.create_from(old_blob, new_blob, old_as_path=_LIBGIT2_NAME,
                                             new_as_path=_LIBGIT2_NAME, flag=libgit2_flags(),
                                             context_lines=CONTEXT_LINES)
        data = patch.data
    body, is_text = _libgit2_body(data)
    write(_header(path, old is not None, new is not None, old_id, new_id, with_names=is_text))
    if body < len(data):
        write(memoryview(data)[body:])


class MemoryBlobs:
    """A libgit2 object database in memory, holding the two blobs of the diff being made.

    Why: given two buffers, libgit2 first hashes both with its collision-detecting SHA-1 — 58% of
    its time on long files with small edits (SQLAlchemy releases: 0.121 of 0.207 s per release).
    Given two blobs whose ids are already known it hashes nothing; the ids come from hashlib's
    SHA-1 (``git_blob_id``, several times faster), and libgit2's check that an object read back
    matches its id (strict hash verification, a process-wide option) is turned off: the only
    objects this process's libgit2 ever reads are the ones put here under ids hashed here.
    The repository has no configuration: libgit2 reads no git config file from the disk (the
    search paths of the system, XDG and global files are emptied, also process-wide), so a diff
    is the same whoever runs it. Patches are byte for byte what the buffer interface makes.
    """

    def __init__(self) -> None:
        import pygit2
        from pygit2.enums import ConfigLevel, ObjectType

        held: dict[str, bytes] = {}

        class Backend(pygit2.OdbBackend):
            def read_cb(self, oid: object) -> tuple[int, bytes]:
                return ObjectType.BLOB, held[str(oid)]

            def read_header_cb(self, oid: object) -> tuple[int, int]:
                return ObjectType.BLOB, len(held[str(oid)])

            def exists_cb(self, oid: object) -> bool:
                return str(oid) in held

            def refresh_cb(self) -> None:
                pass

        pygit2.settings.enable_strict_hash_verification(False)
        for level in (ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL, ConfigLevel.PROGRAMDATA):
            pygit2.settings.search_path[level] = ""
        database = pygit2.Odb()
        database.add_backend(Backend(), 1)
        self._repository = pygit2.Repository()
        self._repository.set_odb(database)
        self._held = held

    @contextmanager
    def holding(self, *blobs: tuple[str, bytes | None]) -> Iterator[list[Any]]:
        """The blobs (id, content; ``None`` content: that side does not exist) as libgit2 objects
        for the ``with`` block; they leave the store after it, so it never holds more than one diff.
        Two different contents under one id (an id hashed from other bytes than these) raise
        GenerationError: the store would keep one, and the patch would silently drop the change."""
        try:
            for blob_id, content in blobs:
                if content is None:
                    continue
                if self._held.get(blob_id, content) != content:
                    raise GenerationError(f"two different contents were named {blob_id}: a file changed between "
                                          "its hashing and its reading; the next resync redoes the patch")
                self._held[blob_id] = content
            yield [None if content is None else self._repository[blob_id] for blob_id, content in blobs]
        finally:
            self._held.clear()


@functools.cache
def memory_blobs() -> MemoryBlobs:
    """The process's one store (libgit2 is loaded with it, on the first patch)."""
    return MemoryBlobs()


def _libgit2_body(data: bytes) -> tuple[int, bool]:
    """Where what follows libgit2's header starts, and whether it is text hunks (which need
    ``---``/``+++``). Nothing follows for an empty file added or deleted: git writes the header
    alone then."""
    binary = data.find(b"\nGIT binary patch\n")
    if binary >= 0:
        return binary + 1, False
    hunks = data.find(b"\n@@ -")
    return (hunks + 1, True) if hunks >= 0 else (len(data), False)


def _large_section(path: str, old_side: _Side | None, new_side: _Side | None,
                   old: bytes | None, new: bytes | None) -> bytes:
    """git's section for a binary change shown without content: enough to see what changed,
    not to apply. Ids come from the callers' ``blob_id`` (streamed) when given."""
    old_id = old_side.blob_id_of(path, old) if old_side is not None else NULL_BLOB_ID
    new_id = new_side.blob_id_of(path, new) if new_side is not None else NULL_BLOB_ID
    old_label, new_label = _labels(path, old_side is not None, new_side is not None)
    header = _header(path, old_side is not None, new_side is not None, old_id, new_id, with_names=False)
    return header + b"Binary files " + old_label + b" and " + new_label + b" differ\n"


def _header(path: str, has_old: bool, has_new: bool, old_id: str, new_id: str, *, with_names: bool) -> bytes:
    """``diff --git``, the mode line of an added or deleted file, ``index`` with full ids (what
    ``git diff --full-index`` writes) and, before text hunks, the ``---``/``+++`` lines."""
    name = _path_bytes(path)
    old_name, new_name = quote_path(b"a/" + name), quote_path(b"b/" + name)
    if has_old and has_new:
        mode_line, index_end = b"", b" " + FILE_MODE
    else:
        mode_line, index_end = (b"deleted file mode " if has_old else b"new file mode ") + FILE_MODE + b"\n", b""
    header = b"diff --git %s %s\n%sindex %s..%s%s\n" % (old_name, new_name, mode_line, old_id.encode(),
                                                        new_id.encode(), index_end)
    if not with_names:
        return header
    tab = b"\t" if b" " in name else b""          # git ends a name holding a space with a tab
    old_label = old_name + tab if has_old else b"/dev/null"
    new_label = new_name + tab if has_new else b"/dev/null"
    return header + b"--- %s\n+++ %s\n" % (old_label, new_label)


def _labels(path: str, has_old: bool, has_new: bool) -> tuple[bytes, bytes]:
    name = _path_bytes(path)
    return (quote_path(b"a/" + name) if has_old else b"/dev/null",
            quote_path(b"b/" + name) if has_new else b"/dev/null")


def _path_bytes(path: str) -> bytes:
    """The file name as on disk: paths come from os.walk, which decodes with surrogateescape."""
    return path.encode("utf-8", "surrogateescape")


_C_ESCAPES = {0x07: b"\\a", 0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0B: b"\\v", 0x0C: b"\\f",
              0x0D: b"\\r", 0x22: b'\\"', 0x5C: b"\\\\"}
_C_UNESCAPES = {escape[1]: byte for byte, escape in _C_ESCAPES.items()}
# A run of bytes git quotes: control bytes, DEL and above, the quote and the backslash.
_QUOTED_RUN = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]+')
# Each byte as it stands in a quoted name (only the bytes _QUOTED_RUN finds are looked up).
_QUOTED_BYTE = tuple(_C_ESCAPES.get(byte, b"\\%03o" % byte if byte < 0x20 or byte >= 0x7F else bytes([byte]))
                     for byte in range(256))


def _quote_run(match: re.Match[bytes]) -> bytes:
    return b"".join(map(_QUOTED_BYTE.__getitem__, match[0]))


def quote_path(name: bytes) -> bytes:
    """git's C-style quoting (core.quotePath, as libgit2 does too): a name with a quote,
    backslash, control byte or byte >= 0x7f is written in double quotes with escapes (``\\t``,
    ``\\"``, ``\\\\``…, octal for the rest). The regex finds the runs to escape; no byte of a
    plain name is looked at in Python."""
    if _QUOTED_RUN.search(name) is None:
        return name
    return b'"' + _QUOTED_RUN.sub(_quote_run, name) + b'"'


# -- reading -------------------------------------------------------------------------------

Change = Literal["added", "modified", "deleted", "one-sided"]


@dataclass(frozen=True)
class PatchEntry:
    """One file a patch changes, for checking a stored patch against the two trees by meaning.

    ``old_blob``/``new_blob`` are the ``index`` line's ids as written: full from this module and
    ``git diff --full-index``, a prefix from plain ``git diff``; ``None`` for the side where the
    file does not exist, and on both sides when the patch has no ids (GNU ``diff -ru``, or a git
    section without an ``index`` line) — ``has_blob_ids`` tells. ``change`` says which sides
    exist; ``one-sided`` is a GNU ``Only in`` line whose directory the patch does not place.
    A GNU ``Only in`` line may name a whole directory (``may_be_directory``): ``covers`` and
    ``expand_directories`` turn it into the files below it."""

    path: str
    change: Change
    old_blob: str | None = None
    new_blob: str | None = None
    may_be_directory: bool = False

    @property
    def has_blob_ids(self) -> bool:
        return self.old_blob is not None or self.new_blob is not None

    def covers(self, path: str) -> bool:
        """Whether this entry is about ``path`` (itself, or a file below a directory entry)."""
        return path == self.path or (self.may_be_directory and path.startswith(self.path + "/"))

    def agrees_with(self, old_blob: str | None, new_blob: str | None) -> bool:
        """Whether a file's real ids (full; ``None`` where it does not exist) fit this entry:
        the same sides exist, and each id the patch names is the real one or a prefix of it."""
        sides = {"added": (False, True), "modified": (True, True), "deleted": (True, False)}
        if self.change == "one-sided":
            if (old_blob is None) == (new_blob is None):
                return False
        elif sides[self.change] != (old_blob is not None, new_blob is not None):
            return False
        return _id_fits(self.old_blob, old_blob) and _id_fits(self.new_blob, new_blob)


def _id_fits(named: str | None, real: str | None) -> bool:
    return named is None or (real is not None and real.startswith(named))


def expand_directories(entries: Sequence[PatchEntry], old_paths: Collection[str],
                       new_paths: Collection[str]) -> list[PatchEntry]:
    """Each ``Only in`` entry naming a directory of the tree it is only in becomes one entry
    per file below it; a ``one-sided`` one (a file or a directory) is placed by the tree that
    has it, since the patch alone could not say which side it was on."""
    expanded: list[PatchEntry] = []
    for entry in entries:
        if entry.change == "one-sided" and (entry.path in old_paths) != (entry.path in new_paths):
            expanded.append(PatchEntry(entry.path, "deleted" if entry.path in old_paths else "added"))
            continue
        below = [] if not entry.may_be_directory or entry.path in old_paths or entry.path in new_paths \
            else _files_below(entry, old_paths, new_paths)
        expanded.extend(below or [entry])
    return expanded


def _files_below(entry: PatchEntry, old_paths: Collection[str], new_paths: Collection[str]) -> list[PatchEntry]:
    trees: list[tuple[Change, Collection[str]]] = [("deleted", old_paths), ("added", new_paths)]
    for change, paths in trees:
        if entry.change in (change, "one-sided"):
            below = sorted(path for path in paths if entry.covers(path))
            if below:
                return [PatchEntry(path, change) for path in below]
    return []


def comparison_of(entries: Sequence[PatchEntry]) -> TreeComparison:
    """The entries as a ``TreeComparison``, to compare with ``compare_trees`` of the two trees
    (``one-sided`` entries, which a comparison cannot hold, are left out; expand GNU
    directories first)."""
    def paths(change: Change) -> tuple[str, ...]:
        return tuple(sorted(entry.path for entry in entries if entry.change == change))
    return TreeComparison(added=paths("added"), modified=paths("modified"), deleted=paths("deleted"))


def parse_patch(patch: bytes) -> list[PatchEntry] | None:
    """The files a patch names, in its order: from this module, ``git diff`` (renames become a
    deletion and an addition, as ``compare_trees`` sees them) or GNU ``diff -ru``/``-ruN``
    (no ids; a path is what both names of a pair share at their end, so ``diff -ru v1/src v2/src``
    gives ``src/P``, less a shared leading ``source/``: the application's ``diff -ru <old>/source
    <new>/source`` gives ``P`` wherever its folders were). ``[]`` for an empty patch,
    ``None`` for bytes that are no patch at all. Hunk lines are counted, so a removed line
    ``-- x`` is never taken for a header; nothing in the input can make it raise.

    GNU ``diff`` limits: ``-N`` hides an added or deleted empty file, and writes an added or
    deleted binary file as ``Binary files ... differ`` exactly like a modified one (``modified``)."""
    reader = _PatchReader(patch.split(b"\n"))
    entries = reader.read()
    if not entries and patch.strip():
        return None
    return entries


_INDEX = re.compile(rb"index ([0-9a-f]{4,64})\.\.([0-9a-f]{4,64})(?: [0-7]{6})?\s*$")
_HUNK = re.compile(rb"@@ -\d{1,12}(?:,(\d{1,12}))? \+\d{1,12}(?:,(\d{1,12}))? @@")
_TIMESTAMP = re.compile(rb"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.\d{1,9})? ([+-])(\d\d)(\d\d)")
_GIT_EXTENDED = (b"old mode ", b"new mode ", b"deleted file mode ", b"new file mode ", b"copy from ",
                 b"copy to ", b"rename from ", b"rename to ", b"similarity index ",
                 b"dissimilarity index ", b"index ")
_CONVENTIONAL_ROOTS = [(b"a", b"b"), (b"old", b"new")]
SOURCE_COMPONENT = b"source"
_GENERATION_SOURCE = re.compile(rb"(?:^|/)v[1-9][0-9]*__[^/]+/source/")


@dataclass
class _GitSection:
    """What a ``diff --git`` section's header says, names still with their a/ b/ prefix."""

    old_name: bytes | None = None
    new_name: bytes | None = None
    names_certain: bool = False         # the ``diff --git`` line alone told both names
    created: bool = False
    removed: bool = False
    rename_from: bytes | None = None
    rename_to: bytes | None = None
    copied: bool = False
    old_blob: str | None = None
    new_blob: str | None = None


class _PatchReader:
    """One pass over the lines; GNU ``Only in`` lines are placed once every pair of directory
    names in the patch has been seen (GNU diff may write them first)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        self.position = 0
        self.entries: list[PatchEntry | bytes] = []     # bytes: an ``Only in`` path not yet placed
        self.roots: list[tuple[bytes, bytes]] = []

    def read(self) -> list[PatchEntry]:
        while self.position < len(self.lines):
            line = self.lines[self.position]
            self.position += 1
            if line.startswith(b"diff --git "):
                self._git_section(line[len(b"diff --git "):])
            elif line.startswith(b"--- ") and self._peek().startswith(b"+++ "):
                self._unified_pair(line[4:], self._next()[4:])
            elif line.startswith(b"Binary files ") and line.endswith(b" differ"):
                self._gnu_binary(line[len(b"Binary files "):-len(b" differ")])
            elif line.startswith(b"Only in ") and b": " in line:
                directory, _, name = line[len(b"Only in "):].partition(b": ")
                self.entries.append(directory.rstrip(b"/") + b"/" + name)
        return [entry if isinstance(entry, PatchEntry) else self._place(entry) for entry in self.entries]

    def _peek(self) -> bytes:
        return self.lines[self.position] if self.position < len(self.lines) else b""

    def _next(self) -> bytes:
        line = self._peek()
        self.position += 1
        return line

    # git

    def _git_section(self, names: bytes) -> None:
        section = _GitSection()
        section.old_name, section.new_name, section.names_certain = _split_git_names(names)
        while self._peek().startswith(_GIT_EXTENDED):
            self._git_extended(section, self._next())
        following = self._peek()
        if following.startswith(b"--- ") and self.position + 1 < len(self.lines) \
                and self.lines[self.position + 1].startswith(b"+++ "):
            old_label, new_label = _label_name(self._next()[4:]), _label_name(self._next()[4:])
            section.created = section.created or old_label == b"/dev/null"
            section.removed = section.removed or new_label == b"/dev/null"
            if not section.names_certain:   # labels only settle what the ``diff --git`` line left open
                section.old_name = old_label if old_label not in (None, b"/dev/null") else section.old_name
                section.new_name = new_label if new_label not in (None, b"/dev/null") else section.new_name
            self._skip_hunks()
        elif following == b"GIT binary patch":
            self._skip_binary()
        elif following.startswith(b"Binary files "):
            self.position += 1
        self.entries.extend(_git_entries(section))

    def _git_extended(self, section: _GitSection, line: bytes) -> None:
        if line.startswith(b"new file mode "):
            section.created = True
        elif line.startswith(b"deleted file mode "):
            section.removed = True
        elif line.startswith((b"rename from ", b"copy from ")):
            section.rename_from = _unquote_name(line.split(b" ", 2)[2])
            section.copied = line.startswith(b"copy")
        elif line.startswith((b"rename to ", b"copy to ")):
            section.rename_to = _unquote_name(line.split(b" ", 2)[2])
        elif match := _INDEX.match(line):
            section.old_blob, section.new_blob = (_blob_or_none(group) for group in match.groups())

    def _skip_hunks(self) -> None:
        """Consume ``@@`` hunks by their line counts, so their lines are never read as headers."""
        while match := _HUNK.match(self._peek()):
            self.position += 1
            old_left, new_left = (int(count) if count is not None else 1 for count in match.groups())
            while (old_left > 0 or new_left > 0) and self.position < len(self.lines):
                line = self._peek()
                marker = line[:1]
                if marker == b"\\":
                    self.position += 1
                    continue
                if marker not in (b" ", b"", b"-", b"+"):
                    break                   # a short hunk: the patch is damaged, carry on reading
                old_left -= marker in (b" ", b"", b"-")
                new_left -= marker in (b" ", b"", b"+")
                self.position += 1
            while self._peek().startswith(b"\\"):
                self.position += 1

    def _skip_binary(self) -> None:
        """``GIT binary patch``, then ``literal``/``delta`` blocks of base85 lines, each ended by
        an empty line."""
        self.position += 1
        while self._peek().startswith((b"literal ", b"delta ")):
            while self.position < len(self.lines) and self._next():
                pass

    # GNU diff

    def _unified_pair(self, old_label: bytes, new_label: bytes) -> None:
        """A ``---``/``+++`` pair outside a git section: GNU ``diff -ru``/``-ruN`` or bare ``diff -u``."""
        old_name, new_name = _label_name(old_label), _label_name(new_label)
        if old_name is None or new_name is None:
            return
        self._skip_hunks()
        change: Change = "modified"
        if old_name == b"/dev/null" or _is_epoch(old_label):
            change = "added"
        elif new_name == b"/dev/null" or _is_epoch(new_label):
            change = "deleted"
        if b"/dev/null" in (old_name, new_name):
            path = _strip_prefix(new_name if old_name == b"/dev/null" else old_name) or b""
        else:
            old_root, new_root, path = _split_roots(old_name, new_name)
            self.roots.append((old_root, new_root))
        self.entries.append(PatchEntry(_path_str(path), change))

    def _gnu_binary(self, names: bytes) -> None:
        pair = _split_binary_names(names)
        if pair is None:
            return
        old_root, new_root, path = _split_roots(*pair)
        self.roots.append((old_root, new_root))
        self.entries.append(PatchEntry(_path_str(path), "modified"))

    def _place(self, full_path: bytes) -> PatchEntry:
        """An ``Only in`` path: deleted below the old directory, added below the new one. With no
        pair of directory names in the patch, git's ``a``/``b`` or ``old``/``new`` are tried, then
        a generation's ``v<N>__<id>/source/`` (the side is left to the trees: ``one-sided``)."""
        for old_root, new_root in self.roots or _CONVENTIONAL_ROOTS:
            if old_root and full_path.startswith(old_root + b"/"):
                return PatchEntry(_path_str(full_path[len(old_root) + 1:]), "deleted", may_be_directory=True)
            if new_root and full_path.startswith(new_root + b"/"):
                return PatchEntry(_path_str(full_path[len(new_root) + 1:]), "added", may_be_directory=True)
        below_source = _below_generation_source(full_path)
        path = below_source if below_source is not None else _strip_prefix(full_path) or full_path
        return PatchEntry(_path_str(path), "one-sided", may_be_directory=True)


def _git_entries(section: _GitSection) -> Iterator[PatchEntry]:
    """A rename is a deletion plus an addition (and a copy an addition), as compare_trees has it."""
    old_path, new_path = _strip_prefix(section.old_name), _strip_prefix(section.new_name)
    if section.rename_to is not None:
        if section.rename_from is not None and not section.copied:
            yield PatchEntry(_path_str(section.rename_from), "deleted", section.old_blob, None)
        yield PatchEntry(_path_str(section.rename_to), "added", None, section.new_blob)
        return
    path = old_path if section.removed else new_path
    if path is None:
        path = old_path if new_path is None else new_path
    if path is None:
        return
    change: Change = "added" if section.created else "deleted" if section.removed else "modified"
    yield PatchEntry(_path_str(path), change, section.old_blob, section.new_blob)


def _blob_or_none(hex_id: bytes) -> str | None:
    """An all-zero id is git's way of saying the file does not exist on that side."""
    return None if not hex_id.strip(b"0") else hex_id.decode()


def _split_git_names(names: bytes) -> tuple[bytes | None, bytes | None, bool]:
    """The two names of ``diff --git A B`` and whether the line alone settles them. Unquoted
    names may hold spaces (even a trailing one); git itself then relies on both names being
    equal, so the line is cut in the middle. Only a cut that stays a guess (one space among
    several, names that differ) lets the ``---``/``+++`` labels decide instead."""
    if names.startswith(b'"'):
        first, rest = _unquote_prefix(names)
        if first is None or not rest.startswith(b" "):
            return None, None, False
        second = _unquote_name(rest[1:])
        return first, second, second is not None
    if names.endswith(b'"') and b' "' in names:
        first, _, second = names.partition(b' "')
        unquoted = _unquote_name(b'"' + second)
        return first, unquoted, unquoted is not None
    middle = len(names) // 2
    if len(names) % 2 and names[middle:middle + 1] == b" " \
            and _strip_prefix(names[:middle]) == _strip_prefix(names[middle + 1:]):
        return names[:middle], names[middle + 1:], True
    first, _, second = names.partition(b" ")
    return first, second or None, names.count(b" ") == 1 and bool(first) and bool(second)


def _split_binary_names(names: bytes) -> tuple[bytes, bytes] | None:
    """``X and Y`` of GNU's ``Binary files X and Y differ``. GNU leaves spaces unquoted here, so
    of several `` and `` the cut after which both names end alike wins."""
    if names.startswith(b'"'):
        first, rest = _unquote_prefix(names)
        second = _unquote_name(rest[len(b" and "):]) if rest.startswith(b" and ") else None
        return (first, second) if first is not None and second is not None else None
    pairs = [(names[:cut.start()], _unquote_name(names[cut.end():])) for cut in re.finditer(rb" and ", names)]
    named = [(first, second) for first, second in pairs if second is not None]
    alike = [pair for pair in named if _split_roots(*pair)[0]]
    return next(iter(alike or named), None)


def _split_roots(old_name: bytes, new_name: bytes) -> tuple[bytes, bytes, bytes]:
    """(old directory, new directory, path) of a GNU pair of names: the path is the longest run
    of trailing components both share (at least the first component is a directory), less a
    leading ``source``: a generation's files are those below its ``source/`` folder."""
    old_parts, new_parts = old_name.split(b"/"), new_name.split(b"/")
    shared = 0
    while shared < min(len(old_parts), len(new_parts)) - 1 and old_parts[-1 - shared] == new_parts[-1 - shared]:
        shared += 1
    if shared == 0:
        return b"", b"", new_name
    if shared > 1 and new_parts[-shared] == SOURCE_COMPONENT:
        shared -= 1
    return b"/".join(old_parts[:-shared]), b"/".join(new_parts[:-shared]), b"/".join(new_parts[-shared:])


def _below_generation_source(full_path: bytes) -> bytes | None:
    """What lies below the last ``v<N>__<id>/source/`` of a path, if it has one."""
    matches = list(_GENERATION_SOURCE.finditer(full_path))
    if not matches:
        return None
    return full_path[matches[-1].end():] or None


def _strip_prefix(name: bytes | None) -> bytes | None:
    """``git apply -p1``: drop the ``a/``/``b/`` (or any first) component."""
    if name is None:
        return None
    return name.partition(b"/")[2] or name


def _label_name(label: bytes) -> bytes | None:
    """The name of a ``---``/``+++`` line: quoted, or up to the tab before a timestamp (git
    ends a name holding a space with a tab too). Spaces are part of the name, trailing ones
    included: only the tab separates."""
    if label.startswith(b'"'):
        return _unquote_prefix(label)[0]
    return label.partition(b"\t")[0] or None


def _is_epoch(label: bytes) -> bool:
    """GNU ``diff -N`` dates a missing file at the epoch (in the local time zone)."""
    match = _TIMESTAMP.search(label.rpartition(b"\t")[2])
    if match is None:
        return False
    year, month, day, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    try:
        offset = datetime.timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        zone = datetime.timezone(offset if sign == b"+" else -offset)
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                                   tzinfo=zone)
    except ValueError:
        return False
    return moment.timestamp() == 0


def _unquote_name(name: bytes) -> bytes | None:
    """A whole name, quoted or not."""
    if not name.startswith(b'"'):
        return name or None
    unquoted, rest = _unquote_prefix(name)
    return unquoted if unquoted is not None and not rest.strip() else None


def _unquote_prefix(text: bytes) -> tuple[bytes | None, bytes]:
    """Undo git's (and GNU diff's) C-style quoting of the quoted name ``text`` starts with;
    (None, text) when it is not well formed."""
    result = bytearray()
    index = 1
    while index < len(text):
        byte = text[index]
        if byte == 0x22:
            return bytes(result), text[index + 1:]
        if byte != 0x5C:
            result.append(byte)
            index += 1
            continue
        escape = text[index + 1:index + 2]
        digits = text[index + 1:index + 4]
        if len(digits) == 3 and all(0x30 <= digit <= 0x37 for digit in digits):
            result.append(int(digits, 8) & 0xFF)
            index += 4
        elif escape and escape[0] in _C_UNESCAPES:
            result.append(_C_UNESCAPES[escape[0]])
            index += 2
        else:
            return None, text
    return None, text


def _path_str(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")
