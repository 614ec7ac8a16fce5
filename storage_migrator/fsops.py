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
import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import GenerationError, UsageError
from .faults import checkpoint
from .layout import HELD_SEPARATOR, MOVING_DIR, TRASH_DIR, is_temp_name
from .tree import (
    CHUNK_SIZE,
    TreeSnapshot,
    anchored_path,
    below_storage_root,
    is_real_dir,
    open_regular_file,
    sha256_file,
    walk_dirs,
    walk_files,
)

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


def atomic_write(final: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``final`` through a temp sibling (a name only the tool uses) and rename it into
    place, resolved below ROOT without following any symlink (durable at the next
    ``flush_to_disk``)."""
    try:
        with anchored_path(final) as (root, parts):
            root.write_atomic(parts, write, mode=0o644, fsync=False)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "write", final)) from error


def atomic_write_bytes(final: Path, content: bytes) -> None:
    atomic_write(final, lambda stream: stream.write(content))


def replace_symlink(link: Path, target_name: str) -> None:
    """Point ``link`` at ``target_name`` (relative) in one rename; readers never see it missing.
    Only a link is ever replaced, never a file or a folder."""
    try:
        if os.path.islink(link) and os.readlink(link) == target_name:
            return
        with anchored_path(link) as (root, parts):
            root.symlink(parts, target_name)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "set the link", link)) from error


def make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns the folders created (outermost first),
    so the caller can hand them to the right owner."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    try:
        with anchored_path(path) as (root, parts):
            root.makedirs(parts)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "create", path)) from error
    return list(reversed(missing))


def adopt_owner(path: Path, like: Path) -> None:
    """Give ``path`` (never followed) the owner and group of ``like``, so storage created by a
    migration run as root stays writable by the application's user. A no-op unless root."""
    if os.geteuid() != 0:
        return
    try:
        model = os.lstat(like)
        status = os.lstat(path)
        if (status.st_uid, status.st_gid) != (model.st_uid, model.st_gid):
            os.chown(path, model.st_uid, model.st_gid, follow_symlinks=False)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "set the owner of", path)) from error


def rename_entry(source: Path, destination: Path) -> None:
    """One rename(2) whose both ends are resolved below ROOT without following a symlink (plain
    ``os.rename`` outside ROOT, e.g. in tests). Raises OSError (EXDEV across filesystems)."""
    confined = below_storage_root(source, destination)
    if confined is None:
        os.rename(source, destination)
        return
    root, (source_parts, destination_parts) = confined
    root.rename(source_parts, destination_parts, overwrite=True)


def rename_dir(source: Path, destination: Path) -> None:
    try:
        rename_entry(source, destination)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "rename", source)) from error


def remove_symlink(link: Path) -> None:
    """Remove a link the tool made (never what it points to)."""
    try:
        if os.path.islink(link):
            os.unlink(link)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "remove the link", link)) from error


def move_tree(source: Path, destination: Path, expected: TreeSnapshot, state_dir: Path) -> bool:
    """Move folder ``source`` to ``destination`` (which must not exist); True if it was copied.

    On one filesystem this is a single rename: no byte is copied and no instant exists where the
    files are in neither place. Across filesystems (EXDEV) the tree is copied next to the
    destination, fsynced and verified against ``expected``; then ``source`` is taken out of the
    application's way by one rename into ``<state>/moving/`` and re-scanned: if any file changed
    or appeared while it was copied, it goes back and the copy is discarded (the generation is
    retried next run). Only then does the copy become ``destination`` and the source go to the
    trash. A run killed in between finds the source in ``moving/`` and puts it back first
    (``recover_moving``).
    """
    try:
        rename_entry(source, destination)
        return False
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise GenerationError(describe_os_error(error, "move", source)) from error
    staging = destination.with_name(f".{destination.name}.partial")
    discard_partial(staging)
    try:
        copy_tree_verified(source, staging, expected)
    except OSError as error:
        discard_partial(staging)
        raise GenerationError(describe_os_error(error, "copy to", destination)) from error
    except GenerationError:
        discard_partial(staging)
        raise
    held = _hold_aside(source, state_dir)
    if _fingerprints(held) != {path: (record.size, record.mtime_ns) for path, record in expected.files.items()}:
        rename_entry(held, source)
        discard_partial(staging)
        raise GenerationError(f"files in {source} changed while it was copied (the application is writing it); "
                              "left where it was — the next run retries")
    try:
        rename_entry(staging, destination)
        fsync_dir(destination.parent)
    except OSError as error:
        rename_entry(held, source)
        discard_partial(staging)
        raise GenerationError(describe_os_error(error, "move to", destination)) from error
    checkpoint("copy-in-place")
    discard_tree(held, state_dir / TRASH_DIR)
    return True


def _hold_aside(source: Path, state_dir: Path) -> Path:
    """Rename ``source`` into ``<state>/moving/`` (same filesystem as ROOT, checked at start)."""
    holding = state_dir / MOVING_DIR
    holding.mkdir(parents=True, exist_ok=True)
    held = holding / f"{source.name}{HELD_SEPARATOR}{time.time_ns()}"
    try:
        rename_entry(source, held)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "move aside", source)) from error
    return held


def _fingerprints(root: Path) -> dict[str, tuple[int, int]] | None:
    try:
        return {path: (status.st_size, status.st_mtime_ns) for path, status in walk_files(root)}
    except (GenerationError, OSError):
        return None


def recover_moving(root: Path, state_dir: Path) -> None:
    """Put back every source a killed cross-filesystem move held aside, so the planner sees it
    again (as a legacy folder, or beside its verified copy)."""
    holding = state_dir / MOVING_DIR
    if not holding.is_dir() or holding.is_symlink():
        return
    for name in sorted(os.listdir(holding)):
        original = name.rpartition(HELD_SEPARATOR)[0]
        if original and not os.path.lexists(root / original):
            rename_entry(holding / name, root / original)


def copy_tree_verified(source: Path, destination: Path, expected: TreeSnapshot) -> None:
    """Copy every folder and file of ``source`` (modes and mtimes kept) in chunks, fsync, then
    re-read each copy and compare its sha256 with ``expected``; raises GenerationError on any
    difference (a file that changed while it was read included)."""
    destination.mkdir(parents=True)
    for relative_dir in walk_dirs(source):
        os.mkdir(os.path.join(destination, relative_dir))
    for relative_path, record in expected.files.items():
        copied = _copy_file(source, relative_path, destination / relative_path, record.mtime_ns)
        if copied != record.sha256:
            raise GenerationError(f"{source / relative_path} changed while it was copied; source kept, retried next run")
    fsync_dir(destination)
    for relative_dir in walk_dirs(destination):
        fsync_dir(destination / relative_dir)
    for relative_path, record in expected.files.items():
        if sha256_file(destination, relative_path) != record.sha256:
            raise GenerationError(f"the copy of {source / relative_path} does not match its checksum; source kept")


def _copy_file(source_root: Path, relative_path: str, target: Path, mtime_ns: int) -> str:
    """Stream one file (never through a symlink), fsync it; returns the sha256 of what was read."""
    digest = hashlib.sha256()
    source_descriptor, status = open_regular_file(source_root, relative_path)
    try:
        target_descriptor = os.open(target, WRITE_FLAGS | os.O_EXCL, 0o600)
        try:
            while chunk := os.read(source_descriptor, CHUNK_SIZE):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(target_descriptor, view):]
            os.fsync(target_descriptor)
            os.fchmod(target_descriptor, stat.S_IMODE(status.st_mode))
            os.utime(target_descriptor, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(target_descriptor)
    finally:
        os.close(source_descriptor)
    return digest.hexdigest()


def discard_partial(path: Path) -> None:
    """Remove a staging folder this tool made (a leftover of a crash or a failed copy)."""
    remove_tree(path)


def prepare_state_dir(state_dir: Path) -> None:
    """Create ``<ROOT>/.storage-migrate`` and its ``trash/`` and ``moving/`` as real folders
    (mode 0700: only the tool's user writes there), refusing a symlink at any of them."""
    for folder in (state_dir, state_dir / TRASH_DIR, state_dir / MOVING_DIR):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise UsageError(describe_os_error(error, "create", folder)) from None
        if not is_real_dir(folder):
            raise UsageError(f"{folder} is not a real folder (a symlink is never followed); remove it and rerun")




def discard_tree(path: Path, trash_dir: Path) -> None:
    """Remove ``path`` by renaming it into the trash first (one rename: a crash never leaves a
    half-deleted folder in view), then deleting the trash entry."""
    if not is_real_dir(trash_dir):
        raise GenerationError(f"{trash_dir} is not a real folder; nothing is removed — rerun")
    entry = trash_dir / f"{path.name}.{os.getpid()}.{time.time_ns()}"
    try:
        rename_entry(path, entry)
    except OSError as error:
        raise GenerationError(describe_os_error(error, "remove", path)) from error
    remove_tree(entry)


def remove_tree(path: Path) -> None:
    """Delete a folder the tool owns (a trash entry, a staging copy) without following any
    symlink, iteratively, so a tree thousands of levels deep is no problem."""
    if not is_real_dir(path):
        return
    stack = [os.fspath(path)]
    while stack:
        directory = stack[-1]
        try:
            with os.scandir(directory) as entries:
                subfolders = []
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(entry.path)
                    else:
                        _remove_quietly(Path(entry.path))
        except OSError:
            subfolders = []
        if subfolders:
            stack.extend(subfolders)
            continue
        try:
            os.rmdir(directory)
        except OSError:
            pass
        stack.pop()


def empty_trash(trash_dir: Path) -> None:
    """Finish deletions a killed run began; everything in the trash has a verified copy."""
    if is_real_dir(trash_dir):
        for name in os.listdir(trash_dir):
            entry = trash_dir / name
            if is_real_dir(entry):
                remove_tree(entry)
            else:
                _remove_quietly(entry)


def remove_temp_files(folder: Path) -> None:
    """Remove what a killed write left in ``folder``: the tool's temp files and temp links
    (never a folder, never anything else). ``folder`` is reached without following a link at
    any component: a project folder that is a link to another disk is not cleaned over there."""
    try:
        with anchored_path(folder) as (root, parts), root.open_dir(parts) as handle:
            for name, status in handle.entries():
                if is_temp_name(name) and not stat.S_ISDIR(status.st_mode):
                    try:
                        os.unlink(name, dir_fd=handle.fileno())
                    except OSError:
                        pass
    except OSError:
        return


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass
