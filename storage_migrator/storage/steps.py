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
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import GenerationError, UsageError
from ..faults import checkpoint
from .layout import (
    GENERATIONS_DIR,
    MANIFEST_FILE,
    MOVING_DIR,
    SOURCE_DIR,
    TRASH_DIR,
    StateEntry,
    StorageLayout,
    UnsafePathComponent,
    is_temp_name,
    parse_old_held_name,
    parse_state_entry_name,
    parse_target_dir_name,
    state_entry_id,
    state_entry_key,
    state_entry_name,
    temp_name_kept,
    temp_name_original,
)
from .manifest import read_manifest
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
    trash. A run killed in between finds the source in ``moving/``, named for its project,
    generation and origin (``layout.state_entry_name``), and whoever next handles that project
    puts it back first (``recover_project``).
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
    entry = _moved_entry(state_dir.parent, source, destination)
    held = _hold_aside(source, state_dir, entry)
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
    _discard_as(held, state_dir / TRASH_DIR, entry)
    return True


def _unique_name(entry: StateEntry) -> str:
    return state_entry_name(entry, os.getpid(), time.time_ns())


def _new_layout_source(parts: tuple[str, ...]) -> tuple[str, str, int] | None:
    """``(<project>, generations, v<N>__<id>, source)`` below ROOT → (project, id, N)."""
    if len(parts) != 4 or parts[1] != GENERATIONS_DIR or parts[3] != SOURCE_DIR:
        return None
    parsed = parse_target_dir_name(parts[2])
    return None if parsed is None else (parts[0], parsed[1], parsed[0])


def _parts_below(root: Path, path: Path) -> tuple[str, ...]:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return () if relative.startswith("..") else tuple(relative.split(os.sep))


def _moved_entry(root: Path, source: Path, destination: Path) -> StateEntry:
    """Whose ``source`` is, for its name in ``moving/``: a legacy folder moving to its new-layout
    place (migrate) or a ``source/`` moving back to its legacy folder (rollback); any other
    move (not one of the layout's) is named for its folder, project unknown."""
    source_parts = _parts_below(root, source)
    from_new = _new_layout_source(source_parts)
    if from_new is not None:
        return StateEntry.of(from_new[0], from_new[1], from_new[2])
    to_new = _new_layout_source(_parts_below(root, destination))
    if to_new is not None and source_parts == (to_new[1],):
        return StateEntry.of(to_new[0], to_new[1], None)
    return StateEntry.of(None, source.name, None)


def _hold_aside(source: Path, state_dir: Path, entry: StateEntry) -> Path:
    """Rename ``source`` into ``<state>/moving/`` (same filesystem as ROOT, checked at start)
    under ``entry``'s name, so its project's next handler knows where it goes back."""
    holding = state_dir / MOVING_DIR
    holding.mkdir(parents=True, exist_ok=True)
    held = holding / _unique_name(entry)
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




_handled_project: ContextVar[tuple[str, frozenset[str]] | None] = ContextVar("handled_project", default=None)


@contextmanager
def handling_project(project_id: str, generation_ids: Collection[str]) -> Iterator[None]:
    """Within this block, a legacy folder ``<ROOT>/<id>`` of one of ``generation_ids`` that is
    discarded is named for ``project_id`` in the trash (its path alone does not say whose it
    is). Per thread and process; nothing outside the block is affected."""
    token = _handled_project.set((project_id, frozenset(generation_ids)))
    try:
        yield
    finally:
        _handled_project.reset(token)


def _discarded_entry(trash_dir: Path, path: Path) -> StateEntry:
    """Whose ``path`` is, for its name in the trash (see ``handling_project``)."""
    root = trash_dir.parent.parent
    parts = _parts_below(root, path)
    new_layout = _new_layout_source(parts)
    if new_layout is not None:
        return StateEntry.of(new_layout[0], new_layout[1], new_layout[2])
    handled = _handled_project.get()
    if parts == (path.name,) and handled is not None and path.name in handled[1]:
        return StateEntry.of(handled[0], path.name, None)
    return StateEntry.of(None, path.name, None)


def discard_tree(path: Path, trash_dir: Path) -> None:
    """Remove ``path`` by renaming it into the trash first (one rename: a crash never leaves a
    half-deleted folder in view), then deleting the trash entry. The entry is named for its
    project (``layout.state_entry_name``), so a killed run's entry is emptied by whoever next
    handles that project (``recover_project``)."""
    _discard_as(path, trash_dir, _discarded_entry(trash_dir, path))


def _discard_as(path: Path, trash_dir: Path, owner: StateEntry) -> None:
    if not is_real_dir(trash_dir):
        raise GenerationError(f"{trash_dir} is not a real folder; nothing is removed — rerun")
    entry = trash_dir / _unique_name(owner)
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


def empty_trash(trash_dir: Path, wanted: Callable[[str], bool] = lambda name: True) -> None:
    """Finish deletions a killed run began (the entries whose name ``wanted`` accepts; all by
    default); everything in the trash has a verified copy."""
    for name in _state_names(trash_dir):
        if wanted(name):
            _remove_entry(trash_dir / name)


def _remove_entry(entry: Path) -> None:
    if is_real_dir(entry):
        remove_tree(entry)
    else:
        _remove_quietly(entry)


def _state_names(folder: Path) -> list[str]:
    """The entries of ``trash/`` or ``moving/`` (none if it is missing or not a real folder)."""
    if not is_real_dir(folder):
        return []
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def remove_temp_files(folder: Path) -> None:
    """Remove what a killed write left in ``folder``: the tool's temp files and temp links
    (never a folder, never anything else). ``folder`` is reached without following a link at
    any component: a project folder that is a link to another disk is not cleaned over there.
    Every temp file there goes, so only the one who holds the folder's project (or ROOT, for
    ROOT itself) may call it."""
    for name in _temp_names(folder):
        _unlink_confined(folder / name)


def _temp_names(folder: Path) -> list[str]:
    """The tool's temp files and links directly in ``folder`` (reached without following a link)."""
    try:
        with anchored_path(folder) as (root, parts), root.open_dir(parts) as handle:
            return [name for name, status in handle.entries() if is_temp_name(name) and not stat.S_ISDIR(status.st_mode)]
    except OSError:
        return []


def _unlink_confined(path: Path) -> None:
    """Remove the file or link ``path`` (never a folder), its parents resolved without following
    a link; gone already is fine."""
    try:
        with anchored_path(path) as (root, parts):
            root.unlink(parts, missing_ok=True)
    except OSError:
        pass


# -- recovery of what a killed run left, per project ----------------------------------------


@dataclass
class RootTempFiles:
    """The tool's temp links directly in ROOT (a killed write of a ``<ROOT>/<id>`` link), by the
    generation id they were written for, listed once and handed out per project: listing ROOT —
    one entry per generation — for every project would cost far more than the run.

    A temp file that appears after the listing (a write in progress, of this run or of another
    host) is not in it and so is never touched; one left by a kill after the listing waits for
    the next run."""

    root: Path
    by_generation: dict[str, list[str]]

    @classmethod
    def listed(cls, root: Path) -> RootTempFiles:
        found: dict[str, list[str]] = {}
        for name in _temp_names(root):
            original = temp_name_original(name)
            if original is not None:
                found.setdefault(original, []).append(name)
        return cls(root, found)

    def remove_for(self, generation_ids: Collection[str]) -> None:
        for generation_id in generation_ids:
            for name in self.by_generation.pop(temp_name_kept(generation_id), []):
                _unlink_confined(self.root / name)


def recover_project(layout: StorageLayout, project_id: str, generation_ids: Collection[str],
                    root_temps: RootTempFiles | None = None) -> None:
    """Undo or finish what a killed run left of one project: its held-aside sources go back
    where they came from (never over an existing entry), its trash entries are emptied, and the
    temp files of its generations' ``<ROOT>/<id>`` links and those in its project folder and
    ``generations/`` are removed. Entries are found by name alone (``layout.state_entry_name``;
    the previous version's names by their generation id, or for a ``source.held-…`` by the
    manifest of the target that lacks it).

    Call it before the project is planned (the planner must see a put-back folder) and only
    while holding the project: in ``moving/`` and ``trash/`` other projects' entries may be
    another host's move or discard in progress, and they are not looked at. ``root_temps`` is
    the run's listing of ROOT (listed now if None). Nothing here raises for one entry: what
    cannot be put back stays where it is for the next run."""
    ids = list(generation_ids)
    _put_back_held(layout, project_id, ids)
    key = state_entry_key(project_id)
    empty_trash(layout.trash_dir, lambda name: _is_trash_of(name, key, ids))
    (RootTempFiles.listed(layout.root) if root_temps is None else root_temps).remove_for(ids)
    for folder in _project_folders(layout, project_id):
        remove_temp_files(folder)


def sweep_state(layout: StorageLayout) -> None:
    """The end of a run that has ROOT to itself (an uncoordinated ``run``/``resync`` over every
    project, a ``rollback``): put back every held-aside source whose origin its name spells,
    empty the trash, remove every temp file in ROOT.

    Safe there and only there: the run lock admits one such run at a time and excludes
    coordinated ones, so nothing in ``moving/``, ``trash/`` or ROOT is anyone's write in
    progress; and every project with rows was recovered before it was planned, so what is left
    belongs to projects or generations with no rows left (deleted), to an owner the name does
    not give, or to the previous version's names. A ``source.held-…`` of that version whose
    target was not found stays in ``moving/``: its name does not say where it belongs."""
    holding = layout.state_dir / MOVING_DIR
    for name in _state_names(holding):
        origin = _swept_origin(layout, name)
        if origin is not None:
            _put_back(layout.root, holding / name, origin)
    empty_trash(layout.trash_dir)
    remove_temp_files(layout.root)


def _put_back_held(layout: StorageLayout, project_id: str, generation_ids: list[str]) -> None:
    holding = layout.state_dir / MOVING_DIR
    by_key = {state_entry_key(generation_id): generation_id for generation_id in generation_ids}
    for name in _state_names(holding):
        origin = _held_origin(layout, project_id, by_key, holding / name)
        if origin is not None:
            _put_back(layout.root, holding / name, origin)


def _held_origin(layout: StorageLayout, project_id: str, by_key: dict[str, str], held: Path) -> Path | None:
    """Where the held-aside ``held`` came from, if it is this project's."""
    entry = parse_state_entry_name(held.name)
    if entry is not None:
        if not entry.belongs_to(project_id):
            return None
        generation_id = by_key.get(entry.generation_key) or state_entry_id(entry.generation_key)
        return None if generation_id is None else _entry_origin(layout, project_id, generation_id, entry.version)
    original = parse_old_held_name(held.name)
    if original is not None and original in by_key.values():
        return _entry_origin(layout, project_id, original, None)
    if original == SOURCE_DIR:
        return _target_missing(layout, project_id, set(by_key.values()), held)
    return None


def _swept_origin(layout: StorageLayout, name: str) -> Path | None:
    entry = parse_state_entry_name(name)
    if entry is not None:
        generation_id = state_entry_id(entry.generation_key)
        project_id = state_entry_id(entry.project_key)
        if generation_id is None or (entry.version is not None and project_id is None):
            return None
        return _entry_origin(layout, project_id or "", generation_id, entry.version)
    original = parse_old_held_name(name)
    if original is None or original == SOURCE_DIR:
        return None
    return _entry_origin(layout, "", original, None)


def _entry_origin(layout: StorageLayout, project_id: str, generation_id: str, version: int | None) -> Path | None:
    """The legacy folder (``version`` None) or ``generations/v<N>__<id>/source``; None for an
    id that is no safe folder name."""
    try:
        if version is None:
            return layout.legacy_dir(generation_id)
        return layout.target_dir(project_id, version, generation_id) / SOURCE_DIR
    except UnsafePathComponent:
        return None


def _target_missing(layout: StorageLayout, project_id: str, generation_ids: set[str], held: Path) -> Path | None:
    """The ``source/`` place of this project's target folder that lacks it and whose manifest
    lists exactly the held folder's files (sizes and mtimes): the previous version named a
    held-aside ``source/`` for its folder alone."""
    try:
        generations_dir = layout.generations_dir(project_id)
    except UnsafePathComponent:
        return None
    if not is_real_dir(generations_dir.parent):
        return None                                   # a linked project folder is never read
    names = _state_names(generations_dir)
    found = _fingerprints(held) if names else None
    for name in names if found is not None else []:
        parsed = parse_target_dir_name(name)
        target = generations_dir / name
        if parsed is None or parsed[1] not in generation_ids or not is_real_dir(target) \
                or os.path.lexists(target / SOURCE_DIR):
            continue
        manifest = read_manifest(target / MANIFEST_FILE)
        if manifest is not None and {path: tuple(pair) for path, pair in manifest.fingerprints.items()} == found:
            return target / SOURCE_DIR
    return None


def _put_back(root: Path, held: Path, origin: Path) -> None:
    """``held`` → ``origin`` by one rename that never replaces an entry (the application may
    have put something there meanwhile); the tool's folders above ``origin`` are made if a
    killed rollback removed them. Whatever refuses leaves ``held`` where it is."""
    if os.path.lexists(origin):
        return
    try:
        if not os.path.lexists(origin.parent):
            for created in make_dirs(origin.parent):
                adopt_owner(created, root)
        _rename_no_replace(held, origin)
    except (OSError, GenerationError):
        return


def _rename_no_replace(source: Path, destination: Path) -> None:
    confined = below_storage_root(source, destination)
    if confined is None:
        if os.path.lexists(destination):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(destination))
        os.rename(source, destination)
        return
    anchor, (source_parts, destination_parts) = confined
    anchor.rename(source_parts, destination_parts, overwrite=False)


def _is_trash_of(name: str, project_key: str, generation_ids: list[str]) -> bool:
    """A trash entry of this project: by its name, or by the previous version's
    ``<generation id>[.held-<ns>].<pid>.<ns>``."""
    entry = parse_state_entry_name(name)
    if entry is not None:
        return entry.project_key == project_key
    original, *stamps = name.rsplit(".", 2)
    if len(stamps) != 2 or not all(stamp.isdigit() for stamp in stamps):
        return False
    return (parse_old_held_name(original) or original) in generation_ids


def _project_folders(layout: StorageLayout, project_id: str) -> list[Path]:
    try:
        return [layout.project_dir(project_id), layout.generations_dir(project_id)]
    except UnsafePathComponent:
        return []


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass
