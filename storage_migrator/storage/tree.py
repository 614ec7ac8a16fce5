"""Reading a generation's files: a walk that never follows a symlink, the one streaming hash
and blob id, and the stat fingerprints that let resync skip unchanged generations unread.

Every function takes the opened ROOT (``Storage``) and a folder below it: directories are opened
component by component from ROOT's descriptor with O_NOFOLLOW, and files by name relative to
their directory's descriptor, so no symlink planted anywhere below ROOT is followed.

A tree is read once per run: ``scan_tree`` hashes every file and may keep the bytes, so the diff
against the next version does not read the same files again.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from storage_migrator.errors import GenerationError, UnsafePath
from storage_migrator.patch.blob import git_blob_digest
from storage_migrator.storage.root import CHUNK_SIZE, READ_FLAGS, Entry, FolderFiles, relative_parts

if TYPE_CHECKING:
    from storage_migrator.storage.handle import Storage

# Bytes of changed files kept in memory per tree for the patches; past it, they are read again
# (two trees are held at once: the diff base and the new version).
CONTENT_CACHE_LIMIT = 48 << 20
# A single file larger than this is never kept in memory whole by a scan.
KEEP_FILE_LIMIT = 8 << 20
# Bytes of a diff base's other small files a scan keeps aside (``TreeSnapshot.spare``) until the
# next version is scanned, which takes the ones it changed (the old side of its patch) and drops
# the rest: at most two trees hold spare bytes at once (the one scanned last and the one it was
# scanned against), so this adds at most twice as much to memory, whatever the run's size.
SPARE_LIMIT = 8 << 20


Fingerprint = tuple[int, int, int, int]
"""(size, mtime_ns, ctime_ns, inode) of one file, all from the one ``lstat``/``fstat`` already
made: equal fingerprints mean the file was not written since. mtime alone is not enough: ``cp -p``,
``rsync -t``, ``tar x`` and ``touch -r`` set it back after a rewrite, but no call sets ctime back,
and a file replaced by a rename has another inode. A plain tuple: resync builds and compares one
per file of every generation."""


def fingerprint_of(status: os.stat_result, size: int | None = None) -> Fingerprint:
    """The one definition of a file's fingerprint; ``size`` is the bytes a scan read, if it read."""
    return (status.st_size if size is None else size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)


@dataclass(frozen=True)
class FileRecord:
    """One regular file: what the manifest keeps of it (its checksum and its fingerprint)."""

    path: str
    sha256: str
    fingerprint: Fingerprint

    @property
    def size(self) -> int:
        return self.fingerprint[0]


@dataclass
class TreeSnapshot:
    """A source tree as read now: its files (sorted by path) and, if small, their bytes."""

    storage: Storage
    root: Path
    files: dict[str, FileRecord]
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)
    spare: dict[str, bytes] = field(default_factory=dict, repr=False)
    """Bytes of other small files, kept until the next version is scanned (``scan_tree(spare=True)``,
    ``keep_for_next``): the old side of the patch to it is then read from memory too."""

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def total_size_bytes(self) -> int:
        return sum(record.size for record in self.files.values())

    def checksums(self) -> dict[str, str]:
        return {path: record.sha256 for path, record in self.files.items()}

    def sizes(self) -> dict[str, int]:
        return {path: record.size for path, record in self.files.items()}

    def fingerprints(self) -> dict[str, Fingerprint]:
        """Each file's fingerprint as it was read: a folder that stats the same now was not
        written since (what a copy is checked with)."""
        return {path: record.fingerprint for path, record in self.files.items()}

    def keep_for_next(self, next_checksums: Mapping[str, str]) -> int:
        """The next version was scanned (its checksums): of the spare bytes, those of the files
        it changed or deleted — what the patch to it reads of this tree — join ``contents``
        (within ``CONTENT_CACHE_LIMIT``); the others are dropped. Returns the bytes kept."""
        room = CONTENT_CACHE_LIMIT - sum(len(content) for content in self.contents.values())
        taken = 0
        for path, content in self.spare.items():
            if next_checksums.get(path) != self.files[path].sha256 and taken + len(content) <= room:
                self.contents[path] = content
                taken += len(content)
        self.spare = {}
        return taken

    def read(self, path: str) -> bytes:
        """The bytes of ``path``: from memory if kept, else read again (without following links)."""
        cached = self.contents.get(path)
        if cached is not None:
            return cached
        return read_regular_file(self.storage, self.root, path)


def _read_error(error: OSError, display: object) -> GenerationError:
    """The one wording of a failed read below ROOT."""
    if isinstance(error, UnsafePath):
        return GenerationError(f"{error}: it is never followed or read — replace it or remove it, and rerun")
    if isinstance(error, PermissionError):
        return GenerationError(f"cannot read {error.filename or display}: permission denied; fix its permissions "
                               "and rerun")
    return GenerationError(f"cannot read {error.filename or display}: {error.strerror}")


def _walk_entries(storage: Storage, folder: Path) -> Iterator[tuple[str, Entry, int, str]]:
    """(relative '/' path, directory entry, directory descriptor, name) of every regular file
    below ``folder``; a symlink, FIFO, socket or device anywhere in the tree raises GenerationError."""
    try:
        yield from storage.root.walk_entries(storage.parts(folder))
    except OSError as error:
        raise _read_error(error, folder) from None


def walk_files(storage: Storage, folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file below ``folder`` as (relative '/' path, lstat).

    Raises GenerationError for a symlink, a socket, a device or a FIFO anywhere in the tree:
    such an entry is never followed, read or copied, and the generation is left where it is.
    """
    for relative, entry, _, _ in _walk_entries(storage, folder):
        try:
            status = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue            # removed since the listing: nothing to report
        except OSError as error:
            raise _read_error(error, os.path.join(folder, relative)) from None
        yield relative, status


def open_regular_file(storage: Storage, folder: Path, relative_path: str) -> tuple[int, os.stat_result]:
    """Open the regular file ``relative_path`` (checked: no ``..``, no absolute path) below
    ``folder``, resolved from ROOT's descriptor without following any symlink and without
    blocking on a FIFO; anything but a regular file is refused."""
    return _opened_or_refused(lambda: storage.root.open_regular((*storage.parts(folder), *relative_parts(relative_path))),
                              os.path.join(folder, relative_path))


def _opened_or_refused(open_file: Callable[[], tuple[int, os.stat_result]], display: str) -> tuple[int, os.stat_result]:
    """``open_file()``, its refusal (a link, a FIFO, an unsafe name) or failure made the one-line
    ``GenerationError`` every read of the tool gives."""
    try:
        return open_file()
    except UnsafePath as error:
        raise GenerationError(f"{error}; it is never read") from None
    except OSError as error:
        raise _read_error(error, display) from None


def _open_at(dir_fd: int, name: str, display: str) -> tuple[int, os.stat_result]:
    """Open ``name`` in an already-open directory: no path is resolved again."""
    try:
        descriptor = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        raise _read_error(error, display) from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise GenerationError(f"{display} is not a regular file; it is never read")
    return descriptor, status


def read_regular_file(storage: Storage, folder: Path, relative_path: str, max_bytes: int | None = None) -> bytes:
    """Read a regular file below ``folder`` (never through a symlink, never a FIFO or device);
    with ``max_bytes``, a larger file is refused unread."""
    descriptor, status = open_regular_file(storage, folder, relative_path)
    return _read_whole(descriptor, status, os.path.join(folder, relative_path), max_bytes)


class FolderReader:
    """Reads files below one folder, many in a row in path order (a patch's reads): bytes a scan
    kept come from memory; any other file is opened from a kept chain of directory descriptors
    (``Root.folder_files``, opened at the first such read), not walked to from ROOT each time.
    A context manager: the descriptors are closed at its end."""

    def __init__(self, storage: Storage, folder: Path, kept: Mapping[str, bytes]) -> None:
        self._storage, self._folder, self._kept = storage, folder, kept
        self._files: FolderFiles | None = None

    def __enter__(self) -> FolderReader:
        return self

    def __exit__(self, *exception: object) -> None:
        if self._files is not None:
            self._files.close()

    def __call__(self, relative_path: str) -> bytes:
        content = self._kept.get(relative_path)
        if content is not None:
            return content
        full_path = os.path.join(self._folder, relative_path)
        descriptor, status = _opened_or_refused(lambda: self._folder_files().open_regular(relative_parts(relative_path)),
                                                full_path)
        return _read_whole(descriptor, status, full_path, None)

    def _folder_files(self) -> FolderFiles:
        if self._files is None:
            self._files = self._storage.root.folder_files(self._storage.parts(self._folder))
        return self._files


def _read_whole(descriptor: int, status: os.stat_result, full_path: str, max_bytes: int | None) -> bytes:
    """Every byte of an open regular file (closed after), refused past ``max_bytes`` if given."""
    try:
        if max_bytes is not None and status.st_size > max_bytes:
            raise GenerationError(f"{full_path} is larger than {max_bytes} bytes; not read")
        # Plain os.read, no file object per file (its cost: docs/benchmarks.md). At most
        # max_bytes + 1 bytes are read: a file that grew since its fstat is refused too.
        parts = []
        remaining = max_bytes + 1 if max_bytes is not None else -1
        while remaining != 0 and (chunk := os.read(descriptor, CHUNK_SIZE if remaining < 0 else min(remaining, CHUNK_SIZE))):
            parts.append(chunk)
            remaining = remaining - len(chunk) if remaining > 0 else remaining
        if remaining == 0:
            raise GenerationError(f"{full_path} is larger than {max_bytes} bytes; not read")
        return b"".join(parts)
    except OSError as error:
        raise _read_error(error, full_path) from error
    finally:
        os.close(descriptor)


def read_prefix(storage: Storage, folder: Path, relative_path: str, length: int) -> bytes:
    """The first ``length`` bytes of a regular file (e.g. to recognise a patch's format)."""
    descriptor, _ = open_regular_file(storage, folder, relative_path)
    try:
        return os.read(descriptor, length)
    finally:
        os.close(descriptor)


def hash_file(storage: Storage, folder: Path, relative_path: str, keep_up_to: int) -> tuple[str, int, bytes | None]:
    """sha256 hex, size and — if the file is at most ``keep_up_to`` bytes — its content, read in
    chunks: memory does not grow with the file's size."""
    full_path = os.path.join(folder, relative_path)
    return _hash_descriptor(*open_regular_file(storage, folder, relative_path), full_path, keep_up_to)


def _hash_descriptor(descriptor: int, status: os.stat_result, display: str,
                     keep_up_to: int) -> tuple[str, int, bytes | None]:
    """Hash an open regular file (and close it). The first read asks for one byte more than
    ``status`` says the file holds, so a file that did not grow is read in one call and its end
    is known without a second (a regular file reads short only at its end); a file that grew is
    read on to its end in chunks."""
    digest = hashlib.sha256()
    kept: list[bytes] | None = []
    size = 0
    wanted = min(status.st_size + 1, CHUNK_SIZE)
    try:
        while chunk := os.read(descriptor, wanted):
            digest.update(chunk)
            size += len(chunk)
            if kept is not None:
                kept.append(chunk)
                if size > keep_up_to:
                    kept = None
            if len(chunk) < wanted:
                break
            wanted = CHUNK_SIZE
    except OSError as error:
        raise GenerationError(f"cannot read {display}: {error.strerror}") from error
    finally:
        os.close(descriptor)
    return digest.hexdigest(), size, (b"".join(kept) if kept is not None else None)


def sha256_file(storage: Storage, folder: Path, relative_path: str) -> str:
    """The project's one checksum, streamed: sha256 hex of a file's bytes."""
    return hash_file(storage, folder, relative_path, keep_up_to=0)[0]




def git_blob_id_file(storage: Storage, folder: Path, relative_path: str) -> str:
    """git's object id of a file (sha1 over ``blob <size>\\0`` + bytes), streamed: what a
    patch's ``index`` line names for a file too large to enter the patch."""
    descriptor, status = open_regular_file(storage, folder, relative_path)
    digest = git_blob_digest(status.st_size)
    try:
        while chunk := os.read(descriptor, CHUNK_SIZE):
            digest.update(chunk)
    finally:
        os.close(descriptor)
    return digest.hexdigest()


def scan_tree(storage: Storage, folder: Path, keep_changed_from: Mapping[str, str] | None = None,
              spare: bool = False) -> TreeSnapshot:
    """Read and hash every file below ``folder`` once, in chunks.

    With ``keep_changed_from`` (the diff base's checksums) the bytes of each small file whose
    checksum is not the base's — the files the patch will read — are kept (up to a bound per
    tree); any other file is read again if a diff needs it. Keeping only those, not every small
    file, is what keeps memory flat on long files with small edits (a patch reads a fraction of a
    release). With ``spare`` (a tree that will be the next version's diff base) the other small
    files are kept aside too, up to ``SPARE_LIMIT``, until the next version's scan calls
    ``keep_for_next``: the patch to it then reads no file of this tree again."""
    snapshot = TreeSnapshot(storage=storage, root=folder, files={})
    kept = spared = 0
    prefix = os.path.join(folder, "")       # a file's display path is prefix + its relative path
    for relative_path, _, dir_fd, name in _walk_entries(storage, folder):
        room = CONTENT_CACHE_LIMIT - kept if keep_changed_from is not None else -1
        spare_room = SPARE_LIMIT - spared if spare else -1
        display = prefix + relative_path
        descriptor, status = _open_at(dir_fd, name, display)        # its fstat: no lstat needed
        checksum, size, content = _hash_descriptor(descriptor, status, display,
                                                   keep_up_to=min(max(room, spare_room), KEEP_FILE_LIMIT))
        snapshot.files[relative_path] = FileRecord(relative_path, checksum, fingerprint_of(status, size))
        if content is None:
            continue
        if keep_changed_from is not None and keep_changed_from.get(relative_path) != checksum and size <= room:
            snapshot.contents[relative_path] = content
            kept += size
        elif size <= spare_room:
            snapshot.spare[relative_path] = content
            spared += size
    snapshot.files = dict(sorted(snapshot.files.items()))
    return snapshot


def fingerprint_tree(storage: Storage, folder: Path) -> dict[str, Fingerprint]:
    """One lstat per file and nothing read: what resync compares with the manifest."""
    return {relative_path: fingerprint_of(status) for relative_path, status in walk_files(storage, folder)}
