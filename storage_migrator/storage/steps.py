"""Crash-safe filesystem steps, in the temp-file-then-rename discipline: every visible change is
one rename, so a caller killed between any two calls finds the old state or the new one, never
half of a file.

Durability is batched, not per file: every change below ROOT is noted by the opened ``Root``,
and callers ``flush_to_disk(storage)`` once before they record a batch in the database (one
``syncfs`` of each filesystem written to), so the database never claims what a power cut could
take back, and a run does not pay an fsync per manifest or per directory (the cost:
``docs/benchmarks.md``). The one exception is a cross-filesystem copy, fsynced file by file
before its source is removed.
Nothing here follows a symlink or removes anything it did not make, except ``discard_tree``,
which a caller uses only on a folder whose verified copy exists.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from storage_migrator.errors import FilesystemError, GenerationError, UsageError
from storage_migrator.faults import checkpoint
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.layout import (
    GENERATIONS_DIR,
    MOVING_DIR,
    SOURCE_DIR,
    TRASH_DIR,
    StateEntry,
    is_temp_name,
    parse_target_dir_name,
    staging_name,
    state_entry_name,
)
from storage_migrator.storage.root import Durable, Output
from storage_migrator.storage.tree import FileRecord, Fingerprint, TreeSnapshot, fingerprint_tree, scan_tree


def _failed(error: OSError, verb: str, path: Path) -> FilesystemError:
    return FilesystemError.of(error, verb, path)


def flush_to_disk(storage: Storage) -> Durable:
    """Make every change made below ROOT since the last call durable (``Root.make_durable``:
    one ``syncfs`` per filesystem written to, mount points below ROOT included); called before
    each database commit that points at those changes. Raises ``FilesystemError`` on an I/O
    error: nothing may be committed then."""
    try:
        return storage.root.make_durable()
    except OSError as error:
        raise _failed(error, "sync the filesystem of", storage.path) from error


def atomic_write(storage: Storage, final: Path, write: Callable[[Output], object]) -> None:
    """Write ``final`` through a temp sibling (a name only the tool uses) and rename it into
    place, resolved below ROOT without following any symlink (durable at the next
    ``flush_to_disk``). The file appears with ROOT's owner and group when the tool runs as root
    (``adopt_owner``'s rule, applied before the rename), so the application's user can write it."""
    try:
        storage.root.write_atomic(storage.parts(final), write, mode=0o644, fsync=False,
                                  owner=storage.root.owner_of())
    except OSError as error:
        raise _failed(error, "write", final) from error


def atomic_write_bytes(storage: Storage, final: Path, content: bytes) -> None:
    atomic_write(storage, final, lambda stream: stream.write(content))


def replace_symlink(storage: Storage, link: Path, target_name: str) -> None:
    """Point ``link`` at ``target_name`` (relative) in one rename; readers never see it missing.
    Only a link is ever replaced, never a file or a folder."""
    if storage.link_text(link) == target_name:
        return
    try:
        storage.root.symlink(storage.parts(link), target_name)
    except OSError as error:
        raise _failed(error, "set the link", link) from error




def adopt_owner(storage: Storage, path: Path, like: Path | None = None) -> None:
    """Give ``path`` (never followed) the owner and group of ``like`` (default ROOT), so storage
    created by a migration run as root stays writable by the application's user. A no-op
    unless root."""
    try:
        storage.root.adopt_owner(storage.parts(path), storage.parts(like) if like is not None else ())
    except OSError as error:
        raise _failed(error, "set the owner of", path) from error


def make_owned_dirs(storage: Storage, path: Path, like: Path | None = None) -> list[Path]:
    """Create ``path`` and its missing parents in one pass down from ROOT, each created folder
    given the owner of ``like`` (default ROOT) when run as root, so storage created by a
    migration run as root stays writable by the application's user. Returns the folders it
    created, outermost first."""
    try:
        owner = storage.root.owner_of(storage.parts(like) if like is not None else ())
        made = storage.root.makedirs(storage.parts(path), owner=owner)
    except OSError as error:
        raise _failed(error, "create", path) from error
    return [storage.path.joinpath(*parts) for parts in made]


def rename_entry(storage: Storage, source: Path, destination: Path, *, replace: bool = True) -> None:
    """One rename(2) whose both ends are resolved below ROOT without following a symlink.
    Raises OSError (EXDEV across filesystems; EEXIST without ``replace`` if taken)."""
    storage.root.rename(storage.parts(source), storage.parts(destination), overwrite=replace)


def rename_dir(storage: Storage, source: Path, destination: Path) -> None:
    try:
        rename_entry(storage, source, destination)
    except OSError as error:
        raise _failed(error, "rename", source) from error


def remove_symlink(storage: Storage, link: Path) -> None:
    """Remove a link the tool made (never what it points to)."""
    if not storage.is_link(link):
        return
    try:
        storage.remove_entry(link)
    except OSError as error:
        raise _failed(error, "remove the link", link) from error


def fsync_dir(storage: Storage, folder: Path) -> None:
    storage.root.fsync_dir(storage.parts(folder))


def move_tree(storage: Storage, source: Path, destination: Path, expected: TreeSnapshot, *,
              leave_link: str | None = None) -> dict[str, FileRecord] | None:
    """Move folder ``source`` to ``destination`` (which must not exist); if it was copied, the
    copy's file records (same checksums as ``expected``, the copy's own fingerprints), else None.

    With ``leave_link``, a same-filesystem move leaves ``source`` a symlink with that text
    (which must resolve to ``destination``), and ``source`` resolves at every instant: see
    ``_move_leaving_link``. Nothing is fsynced: the caller does that right after.

    On one filesystem this is a single rename: no byte is copied and no instant exists where the
    files are in neither place. Across filesystems (EXDEV) the tree is copied next to the
    destination, fsynced and verified against ``expected``; then ``source`` is taken out of the
    application's way by one rename into ``<state>/moving/`` and re-scanned: if any file changed
    or appeared while it was copied — any fingerprint differs: a rewrite that set the mtime back
    still has a new ctime — it goes back and the copy is discarded (the generation is retried
    next run). Only then does the copy become ``destination`` and the source go to the
    trash. A run killed in between finds the source in ``moving/``, named for its project,
    generation and origin (``layout.state_entry_name``), and whoever next handles that project
    puts it back first (``recover_project``).
    """
    try:
        if leave_link is None:
            rename_entry(storage, source, destination)
        else:
            _move_leaving_link(storage, source, destination, leave_link)
        return None
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise _failed(error, "move", source) from error
    staging = destination.with_name(staging_name(destination.name))
    discard_partial(storage, staging)
    try:
        copied = copy_tree_verified(storage, source, staging, expected)
    except OSError as error:
        discard_partial(storage, staging)
        raise _failed(error, "copy to", destination) from error
    except GenerationError:
        discard_partial(storage, staging)
        raise
    checkpoint("copied")
    entry = _moved_entry(storage, source, destination)
    held = _hold_aside(storage, source, entry)
    if fingerprints_or_none(storage, held) != expected.fingerprints():
        rename_entry(storage, held, source)
        discard_partial(storage, staging)
        raise GenerationError(f"files in {source} changed while it was copied (the application is writing it); "
                              "left where it was — the next run retries")
    try:
        rename_entry(storage, staging, destination)
        fsync_dir(storage, destination.parent)
    except OSError as error:
        rename_entry(storage, held, source)
        discard_partial(storage, staging)
        raise _failed(error, "move to", destination) from error
    checkpoint("copy-in-place")
    _discard_as(storage, held, entry)
    return copied


def _move_leaving_link(storage: Storage, source: Path, destination: Path, link_text: str) -> None:
    """Same filesystem: the link is made at ``destination`` first, then the two entries swap
    places in one ``renameat2(RENAME_EXCHANGE)``, so ``source`` names the folder and then the
    link, never nothing (a reader of ``source`` never misses a file). Where the exchange is not
    offered, the link is renamed over ``source`` right after the folder's rename (missing
    between two system calls). Any error (``EXDEV`` across filesystems) leaves the folder at
    ``source`` and no link. A link a killed run left at ``destination`` is the
    tool's: ``is_prepared_link`` names it."""
    root = storage.root
    source_parts, destination_parts = storage.parts(source), storage.parts(destination)
    root.new_symlink(destination_parts, link_text)
    checkpoint("link-prepared")
    try:
        exchanged = root.exchange(source_parts, destination_parts)
    except OSError:
        root.unlink(destination_parts, missing_ok=True)
        raise
    if not exchanged:
        root.unlink(destination_parts)
        root.rename_and_link(source_parts, destination_parts, source_parts, link_text)


def rename_relinking(storage: Storage, source: Path, destination: Path, link: Path, link_text: str) -> None:
    """Rename folder ``source`` to ``destination`` and point the symlink ``link`` at
    ``link_text`` (which resolves to the renamed folder) right after, back to back, fsyncs
    left to the caller: a reader of ``link`` finds it stale only between two system calls.
    On failure nothing changed."""
    try:
        storage.root.rename_and_link(storage.parts(source), storage.parts(destination), storage.parts(link),
                                     link_text)
    except OSError as error:
        raise _failed(error, "rename", source) from error


def is_prepared_link(storage: Storage, destination: Path, link_text: str) -> bool:
    """True if ``destination`` is the link ``_move_leaving_link`` makes there before its
    exchange (a killed move left it; it may be removed)."""
    return storage.is_link(destination) and storage.link_text(destination) == link_text


def put_back_over_link(storage: Storage, moved: Path, link: Path) -> None:
    """Undo ``move_tree(..., leave_link=...)``: the folder ``moved`` goes back to ``link``'s
    name, replacing that link (by one exchange where offered, the link then removed)."""
    root = storage.root
    if root.exchange(storage.parts(moved), storage.parts(link)):
        storage.remove_entry(moved)
        return
    storage.remove_entry(link)
    rename_entry(storage, moved, link, replace=False)


def _unique_name(entry: StateEntry) -> str:
    return state_entry_name(entry, os.getpid(), time.time_ns())


def _new_layout_source(parts: tuple[str, ...]) -> tuple[str, str, int] | None:
    """``(<project>, generations, v<N>__<id>, source)`` below ROOT → (project, id, N)."""
    if len(parts) != 4 or parts[1] != GENERATIONS_DIR or parts[3] != SOURCE_DIR:
        return None
    parsed = parse_target_dir_name(parts[2])
    return None if parsed is None else (parts[0], parsed[1], parsed[0])


def _moved_entry(storage: Storage, source: Path, destination: Path) -> StateEntry:
    """Whose ``source`` is, for its name in ``moving/``: a legacy folder moving to its new-layout
    place (migrate) or a ``source/`` moving back to its legacy folder (rollback); any other
    move (not one of the layout's) is named for its folder, project unknown."""
    source_parts = storage.parts(source)
    from_new = _new_layout_source(source_parts)
    if from_new is not None:
        return StateEntry.of(from_new[0], from_new[1], from_new[2])
    to_new = _new_layout_source(storage.parts(destination))
    if to_new is not None and source_parts == (to_new[1],):
        return StateEntry.of(to_new[0], to_new[1], None)
    return StateEntry.of(None, source.name, None)


def _hold_aside(storage: Storage, source: Path, entry: StateEntry) -> Path:
    """Rename ``source`` into ``<state>/moving/`` (same filesystem as ROOT, checked at start)
    under ``entry``'s name, so its project's next handler knows where it goes back."""
    holding = storage.layout.state_dir / MOVING_DIR
    held = holding / _unique_name(entry)
    try:
        storage.root.makedirs(storage.parts(holding), mode=0o700)
        rename_entry(storage, source, held)
    except OSError as error:
        raise _failed(error, "move aside", source) from error
    return held


def fingerprints_or_none(storage: Storage, folder: Path) -> dict[str, Fingerprint] | None:
    """Each file's fingerprint below ``folder`` now; None if it cannot be walked (gone, a link)."""
    try:
        return fingerprint_tree(storage, folder)
    except (GenerationError, OSError):
        return None


def copy_tree_verified(storage: Storage, source: Path, destination: Path, expected: TreeSnapshot) -> dict[str, FileRecord]:
    """Copy every folder and file of ``source`` (modes and mtimes kept) to the new folder
    ``destination``, each file and folder fsynced, then re-read the copy and compare it with
    ``expected``; raises GenerationError on any difference (a file that changed or appeared
    while it was read included). Returns the copy's records, as the re-read saw them."""
    storage.root.copy_tree(storage.parts(source), storage.parts(destination))
    copied = scan_tree(storage, destination)
    if copied.checksums() != expected.checksums():
        changed = sorted(set(copied.checksums().items()) ^ set(expected.checksums().items()))
        raise GenerationError(f"{source / changed[0][0]} changed while it was copied; source kept, retried next run")
    return copied.files


def discard_partial(storage: Storage, path: Path) -> None:
    """Remove a staging folder this tool made (a leftover of a crash or a failed copy)."""
    remove_tree(storage, path)


def prepare_state_dir(storage: Storage) -> None:
    """Create ``<ROOT>/.storage-migrate`` and its ``trash/`` and ``moving/`` as real folders
    (mode 0700: only the tool's user writes there), refusing a symlink at any of them. Folders
    already there (every command but the first) are only looked at."""
    state_dir = storage.layout.state_dir
    for folder in (state_dir, state_dir / TRASH_DIR, state_dir / MOVING_DIR):
        if storage.is_folder(folder):
            continue
        try:
            storage.root.makedirs(storage.parts(folder), mode=0o700)
        except OSError as error:
            if storage.occupied(folder) and not storage.is_folder(folder):   # a link, a file: said below
                break
            raise UsageError(str(_failed(error, "create", folder))) from None
    for folder in (state_dir, state_dir / TRASH_DIR, state_dir / MOVING_DIR):
        if not storage.is_folder(folder):
            raise UsageError(f"{folder} is not a real folder (a symlink is never followed); remove it and rerun")
    storage.keep_state_dir_fresh()


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


def _discarded_entry(storage: Storage, path: Path) -> StateEntry:
    """Whose ``path`` is, for its name in the trash (see ``handling_project``)."""
    parts = storage.parts(path)
    new_layout = _new_layout_source(parts)
    if new_layout is not None:
        return StateEntry.of(new_layout[0], new_layout[1], new_layout[2])
    handled = _handled_project.get()
    if parts == (path.name,) and handled is not None and path.name in handled[1]:
        return StateEntry.of(handled[0], path.name, None)
    return StateEntry.of(None, path.name, None)


def discard_tree(storage: Storage, path: Path) -> None:
    """Remove ``path`` by renaming it into the trash first (one rename: a crash never leaves a
    half-deleted folder in view), then deleting the trash entry. The entry is named for its
    project (``layout.state_entry_name``), so a killed run's entry is emptied by whoever next
    handles that project (``recover_project``)."""
    _discard_as(storage, path, _discarded_entry(storage, path))


def _discard_as(storage: Storage, path: Path, owner: StateEntry) -> None:
    trash_dir = storage.layout.trash_dir
    if not storage.is_folder(trash_dir):
        raise GenerationError(f"{trash_dir} is not a real folder; nothing is removed — rerun")
    entry = trash_dir / _unique_name(owner)
    try:
        rename_entry(storage, path, entry)
    except OSError as error:
        raise _failed(error, "remove", path) from error
    remove_tree(storage, entry)


def remove_tree(storage: Storage, path: Path) -> None:
    """Delete a folder the tool owns (a trash entry, a staging copy) without following any
    symlink, iteratively, so a tree thousands of levels deep is no problem. Best effort: what
    cannot be removed now stays for the next run, which removes it again."""
    try:
        storage.root.rmtree(storage.parts(path), missing_ok=True)
    except OSError:
        pass


def empty_trash(storage: Storage, wanted: Callable[[str], bool] = lambda name: True) -> None:
    """Finish deletions a killed run began (the entries whose name ``wanted`` accepts; all by
    default); everything in the trash has a verified copy."""
    trash_dir = storage.layout.trash_dir
    for name, status in state_entries(storage, trash_dir):
        if wanted(name):
            if stat.S_ISDIR(status.st_mode):
                remove_tree(storage, trash_dir / name)
            else:
                _remove_quietly(storage, trash_dir / name)


def state_entries(storage: Storage, folder: Path) -> list[tuple[str, os.stat_result]]:
    """The entries of ``trash/``, ``moving/`` or a ``generations/`` folder (none if it is missing
    or not a real folder)."""
    try:
        return storage.entries(folder)
    except OSError:
        return []


def remove_temp_files(storage: Storage, folder: Path) -> None:
    """Remove what a killed write left in ``folder``: the tool's temp files and temp links
    (never a folder, never anything else). ``folder`` is reached without following a link at
    any component: a project folder that is a link to another disk is not cleaned over there.
    Every temp file there goes, so only the one who holds the folder's project (or ROOT, for
    ROOT itself) may call it."""
    for name in temp_names(storage, folder):
        _remove_quietly(storage, folder / name)


def temp_names(storage: Storage, folder: Path) -> list[str]:
    """The tool's temp files and links directly in ``folder`` (reached without following a link)."""
    try:
        listed = storage.folder_marks(folder)
    except OSError:
        return []
    return [name for name, is_folder in listed if is_temp_name(name) and not is_folder]


def _remove_quietly(storage: Storage, path: Path) -> None:
    """Remove the file or link ``path`` (never a folder); gone already, or refused, is fine."""
    try:
        storage.remove_entry(path)
    except OSError:
        pass
