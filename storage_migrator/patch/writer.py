"""Write the git-style patch between two versions: libgit2 diffs each file present in both; a text
file added or deleted whole involves no diff and is written here, byte for byte as libgit2
writes it; a binary one is left to libgit2's encoder.

Pure: readers in, bytes out. ``git apply`` in a copy of the old tree reproduces the new one byte
for byte (binary files, CRLF, non-UTF-8 content and names) — except a file over
``LARGE_FILE_LIMIT``: it is never read, its section only says ``Binary files a/P and b/P
differ`` with both blob ids (``git apply --exclude=P`` applies the rest).
"""
from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from storage_migrator.errors import GenerationError
from storage_migrator.patch.blob import NULL_BLOB_ID, git_blob_id
from storage_migrator.patch.compare import TreeComparison

LARGE_FILE_LIMIT = 64 << 20        # bytes; a bigger changed file is named in the patch, not diffed
CONTEXT_LINES = 3
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


Write = Callable[[bytes | memoryview], object]


@dataclass(frozen=True)
class _Side:
    """One tree as the patch sees it. ``sizes`` and ``blob_id`` let a large file be named in the
    patch without being read; without them its size is only known once its bytes are."""

    read: Reader
    sizes: Mapping[str, int] | None
    blob_id: BlobIdOf | None

    def known_to_be_large(self, path: str) -> bool:
        size = self.sizes.get(path) if self.sizes is not None else None
        return size is not None and size > LARGE_FILE_LIMIT

    def blob_id_of(self, path: str, content: bytes | None) -> str:
        """A large file's id: streamed by ``blob_id`` if given, never from its bytes in memory."""
        if self.blob_id is not None:
            return self.blob_id(path)
        return git_blob_id(content if content is not None else self.read(path))


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
) -> None:
    """Stream the patch, file by file in path order; only changed paths are read, and a file that
    ``old_sizes``/``new_sizes`` say is over ``LARGE_FILE_LIMIT`` is not read at all: its ids come
    from ``blob_id_old``/``blob_id_new``, which must therefore come with the sizes; every other
    changed file's id is hashed here from the bytes read. The text goes to ``out`` in pieces as
    it is made (a file's hunks are never copied into one string)."""
    for sizes, blob_id, side in ((old_sizes, blob_id_old, "old"), (new_sizes, blob_id_new, "new")):
        if sizes is not None and blob_id is None:
            raise TypeError(f"{side}_sizes needs blob_id_{side}: a large file's id must come without reading it")
    old_side = _Side(read_old, old_sizes, blob_id_old)
    new_side = _Side(read_new, new_sizes, blob_id_new)
    added, deleted = set(comparison.added), set(comparison.deleted)
    write = out.write
    for path in comparison.changed_paths():
        _write_section(write, path, None if path in added else old_side, None if path in deleted else new_side)


def render_patch(comparison: TreeComparison, read_old: Reader, read_new: Reader, **options: Any) -> bytes:
    """``write_patch`` into bytes, with the same keyword options."""
    buffer = io.BytesIO()
    write_patch(buffer, comparison, read_old, read_new, **options)
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
    old_id = git_blob_id(old) if old is not None else NULL_BLOB_ID
    new_id = git_blob_id(new) if new is not None else NULL_BLOB_ID
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

    Why: given two buffers, libgit2 first hashes both with its collision-detecting SHA-1, most of
    its time on long files with small edits (measured in ``docs/benchmarks.md``). Given two blobs whose ids are already known it hashes nothing; the ids come from hashlib's
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
        Two different contents under one id (a SHA-1 collision: each id is hashed from the bytes
        beside it) raise GenerationError: the store would keep one, and the patch would silently
        drop the change."""
        try:
            for blob_id, content in blobs:
                if content is None:
                    continue
                if self._held.get(blob_id, content) != content:
                    raise GenerationError(f"two different contents have the git blob id {blob_id} (a SHA-1 "
                                          "collision); the patch cannot name both")
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
C_UNESCAPES = {escape[1]: byte for byte, escape in _C_ESCAPES.items()}
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
