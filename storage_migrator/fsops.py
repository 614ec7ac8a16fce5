"""Crash-safe filesystem steps, in the temp-file-then-rename discipline: every visible change is
one rename, so a caller killed between any two calls finds the old state or the new one, never
half of a file.

Durability is batched, not per file: callers ``flush_to_disk()`` once before they record a batch
in the database, so the database never claims what a power cut could take back, and a run does
not pay an fsync per manifest (the profile put ~25% of a run's time in per-file fsyncs). The
one exception is a cross-filesystem copy, fsynced file by file before its source is removed.
Nothing here follows a symlink or removes anything it did not make, except ``discard_tree``,
which a caller uses only on a folder whose verified copy exists.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import GenerationError
from .layout import temp_path
from .tree import TreeSnapshot, read_regular_file, sha256_hex

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def describe_os_error(error: OSError, action: str, path: Path) -> str:
    """One line for an operator: what failed, where, and what to do about the common causes."""
    hints = {
        errno.ENOSPC: "the disk is full; free space and rerun",
        errno.EDQUOT: "the disk quota is exhausted; free space and rerun",
        errno.EACCES: "permission denied; fix the permissions and rerun",
        errno.EPERM: "operation not permitted; fix the permissions and rerun",
        errno.EROFS: "the filesystem is read-only",
    }
    hint = hints.get(error.errno or 0, error.strerror or str(error))
    return f"cannot {action} {path}: {hint}"


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def flush_to_disk() -> None:
    """Make every rename and write so far durable (sync(2)); called before each database commit.
    sync rather than syncfs: ROOT may hold mount points, and their writes count too."""
    os.sync()


def atomic_write(final: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``final`` through a temp sibling and rename it into place (durable at the next
    ``flush_to_disk``)."""
    temporary = temp_path(final)
    try:
        descriptor = os.open(temporary, WRITE_FLAGS, 0o644)
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        os.replace(temporary, final)
    except OSError as error:
        _remove_quietly(temporary)
        raise GenerationError(describe_os_error(error, "write", final)) from error


def atomic_write_bytes(final: Path, content: bytes) -> None:
    atomic_write(final, lambda stream: stream.write(content))


def replace_symlink(link: Path, target_name: str) -> None:
    """Point ``link`` at ``target_name`` (relative) in one rename; readers never see it missing."""
    if link.is_symlink() and os.readlink(link) == target_name:
        return
    temporary = temp_path(link)
    _remove_quietly(temporary)
    try:
        os.symlink(target_name, temporary)
        os.replace(temporary, link)
    except OSError as error:
        _remove_quietly(temporary)
        raise GenerationError(describe_os_error(error, "set the link", link)) from error


def make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "create", path)) from error


def move_tree(source: Path, destination: Path, expected: TreeSnapshot, trash_dir: Path) -> bool:
    """Move folder ``source`` to ``destination`` (which must not exist); True if it was copied.

    On one filesystem this is a single rename: no byte is copied and no instant exists where the
    files are in neither place. Across filesystems (EXDEV) the tree is copied next to the
    destination, fsynced, every file verified against ``expected``'s sha256, renamed into place,
    and only then is ``source`` removed (by a rename into the trash first, so a crash never leaves
    a half-deleted source that could be mistaken for different content).
    """
    try:
        os.rename(source, destination)
        return False
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise GenerationError(describe_os_error(error, "move", source)) from error
    staging = destination.with_name(f".{destination.name}.partial")
    discard_partial(staging)
    try:
        copy_tree_verified(source, staging, expected)
        os.rename(staging, destination)
        fsync_dir(destination.parent)
    except OSError as error:
        discard_partial(staging)
        raise GenerationError(describe_os_error(error, "copy to", destination)) from error
    except GenerationError:
        discard_partial(staging)
        raise
    discard_tree(source, trash_dir)
    return True


def copy_tree_verified(source: Path, destination: Path, expected: TreeSnapshot) -> None:
    """Copy every folder and file of ``source`` (modes and mtimes kept), fsync, then re-read each
    copy and compare its sha256 with ``expected``; raises GenerationError on any difference."""
    destination.mkdir(parents=True)
    for directory, subdirectories, _ in os.walk(source):
        relative = Path(directory).relative_to(source)
        for name in subdirectories:
            (destination / relative / name).mkdir()
    for relative_path, record in expected.files.items():
        content = expected.read(relative_path)
        target = destination / relative_path
        mode = stat.S_IMODE(os.lstat(source / relative_path).st_mode)
        descriptor = os.open(target, WRITE_FLAGS | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(target, mode)
        os.utime(target, ns=(record.mtime_ns, record.mtime_ns))
    for directory, _, _ in os.walk(destination, topdown=False):
        fsync_dir(Path(directory))
    for relative_path, record in expected.files.items():
        if sha256_hex(read_regular_file(destination, relative_path)) != record.sha256:
            raise GenerationError(f"the copy of {source / relative_path} does not match its checksum; source kept")


def discard_partial(path: Path) -> None:
    """Remove a staging folder this tool made (a leftover of a crash or a failed copy)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)


def discard_tree(path: Path, trash_dir: Path) -> None:
    """Remove ``path`` by renaming it into the trash first, then deleting the trash entry."""
    trash_dir.mkdir(parents=True, exist_ok=True)
    entry = trash_dir / f"{path.name}.{os.getpid()}.{time.time_ns()}"
    try:
        os.rename(path, entry)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "remove", path)) from error
    shutil.rmtree(entry, ignore_errors=True)


def empty_trash(trash_dir: Path) -> None:
    """Finish deletions a killed run began; everything in the trash has a verified copy."""
    if trash_dir.is_dir():
        for entry in trash_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                _remove_quietly(entry)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass
