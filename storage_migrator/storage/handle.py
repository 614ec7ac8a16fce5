"""The opened ROOT: the one object through which the rest of the tool looks at and changes
anything below ROOT. ``open_installation`` creates it; the planner, executor, verify, rollback,
diff and watch are handed it. Nothing here is module state: two ``Storage`` objects (two ROOTs,
as in tests) never see each other."""
from __future__ import annotations

import functools
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from storage_migrator.errors import UnsafePath, UnsafePathComponent, UsageError
from storage_migrator.records import GenerationRow
from storage_migrator.storage.layout import ARCHIVE_DIR, StorageLayout
from storage_migrator.storage.root import Root


@dataclass(frozen=True)
class Storage:
    """ROOT's layout (where things go, pure) and ROOT held open (``root``: every access below
    ROOT resolved from its descriptor, never through a symlink).

    Paths handed to these methods and to the functions of ``tree``, ``manifest`` and ``steps``
    are ``Path`` objects below ``layout.root`` (as the layout spells them); one that is not
    below ROOT is refused with ``UnsafePath`` — there is no fallback to a plain call."""

    layout: StorageLayout
    root: Root

    def close(self) -> None:
        self.root.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.layout.root

    @functools.cached_property
    def resolved_path(self) -> str:
        """ROOT with the links in its own path resolved (the operator's choice): what inotify
        reports paths below."""
        return os.path.realpath(self.root.path)

    def parts(self, path: Path | str) -> tuple[str, ...]:
        """The components of ``path`` below ROOT (``()`` for ROOT itself), as spelled from ROOT
        or from ``resolved_path``; ``UnsafePath`` if it lies outside ROOT."""
        absolute = os.path.abspath(path)                 # normalized: no '..' left to climb out with
        for base in (self.root.path, self.resolved_path):     # both normalized too
            if absolute == base:
                return ()
            below = base.rstrip(os.sep) + os.sep
            if absolute.startswith(below):
                return tuple(absolute[len(below):].split(os.sep))
        raise UnsafePath(os.fspath(path), f"is outside the storage root {self.root.path}")

    def still_in_place(self) -> bool:
        """Whether ROOT's path still names the folder held open: False once it was removed,
        renamed or replaced (a remount), when a watch on the held folder sees nothing more."""
        held = os.fstat(self.root.fd)
        try:
            named = os.stat(self.root.path)
        except OSError:
            return False
        return held.st_nlink > 0 and (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)

    # -- looking, without following a link at any component ---------------------------------

    def status(self, path: Path) -> os.stat_result | None:
        """``lstat`` of ``path``; None if nothing is there or a component on the way is a link
        or missing (then nothing is there as far as the tool is concerned). A path outside ROOT
        is refused (``UnsafePath``), never looked at."""
        parts = self.parts(path)
        try:
            return self.root.lstat(parts)
        except OSError:
            return None

    def is_folder(self, path: Path) -> bool:
        """A folder itself, not a link to one: the tool's one test for "is a folder"."""
        found = self.status(path)
        return found is not None and stat.S_ISDIR(found.st_mode)

    def is_link(self, path: Path) -> bool:
        found = self.status(path)
        return found is not None and stat.S_ISLNK(found.st_mode)

    def occupied(self, path: Path) -> bool:
        """Something (anything, a dangling link included) has this name."""
        return self.status(path) is not None

    def link_text(self, path: Path) -> str | None:
        """What the symlink ``path`` holds (never followed); None if it is not a symlink. A path
        outside ROOT is refused (``UnsafePath``)."""
        parts = self.parts(path)
        try:
            return self.root.readlink(parts)
        except OSError:
            return None

    def names(self, path: Path) -> list[str]:
        """The sorted entry names of the real folder ``path``; OSError if it is not one (a link
        to a folder included)."""
        with self.root.open_dir(self.parts(path)) as handle:
            return handle.names()

    def entries(self, path: Path) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of each entry of the real folder ``path``, sorted by name."""
        with self.root.open_dir(self.parts(path)) as handle:
            return handle.entries()

    def folder_marks(self, path: Path) -> list[tuple[str, bool]]:
        """(name, is a real folder) of each entry of the real folder ``path``, sorted by name: no
        lstat where the listing gives the type (``DirHandle.folder_marks``)."""
        with self.root.open_dir(self.parts(path)) as handle:
            return handle.folder_marks()

    # -- changing ------------------------------------------------------------------------------

    def remove_entry(self, path: Path) -> None:
        """Remove a file or link (never a folder, never through a link); gone already is fine."""
        self.root.unlink(self.parts(path), missing_ok=True)

    def remove_empty_folder(self, path: Path) -> None:
        """``rmdir`` of a folder reached without following a link; OSError if it is not empty."""
        self.root.rmdir(self.parts(path))

    def set_mtime(self, path: Path, mtime_ns: int) -> None:
        """Set the modification time of the file ``path`` (never through a link)."""
        self.root.set_times(self.parts(path), mtime_ns)

    def keep_state_dir_fresh(self) -> None:
        """Set the tool's state folder's modification time to now, if it is a real folder: the
        application's ``cleanup_old_files`` removes every top-level entry of ROOT older than its
        age limit (30 days), so the folder is touched by every command that opens ROOT and
        periodically by ``watch``. A ROOT mounted read-only leaves it as it is. The time owes no
        sync: one a crash takes back is set again by the next command."""
        if self.is_folder(self.layout.state_dir):
            try:
                self.root.set_times(self.parts(self.layout.state_dir), time.time_ns(), durable=False)
            except OSError:
                pass


def open_storage(layout: StorageLayout) -> Storage:
    """Open ROOT (a symlink in ROOT's own path is followed: it is the operator's choice) after
    checking it: ROOT must be a folder; ``.storage-migrate`` must not be a symlink or sit on
    another filesystem (the trash relies on one rename from ROOT into it). Raises
    ``UsageError`` (exit 2) naming the fix otherwise."""
    try:
        root = Root.open(os.path.abspath(layout.root))
    except OSError:
        raise UsageError(f"storage root {layout.root} is not a folder; pass --storage-root or set STORAGE_ROOT") from None
    storage = Storage(layout, root)
    try:
        _check_state_dir(storage)
    except BaseException:
        storage.close()
        raise
    return storage


def _check_state_dir(storage: Storage) -> None:
    state_dir = storage.layout.state_dir
    found = storage.status(state_dir)
    if found is None:
        return
    if not stat.S_ISDIR(found.st_mode):
        raise UsageError(f"{state_dir} is not a real folder (a symlink is never followed); "
                         "remove it and rerun — the tool recreates it")
    if found.st_dev != os.fstat(storage.root.fileno()).st_dev:
        raise UsageError(f"{state_dir} is on another filesystem than {storage.path}; "
                         "unmount whatever is there and rerun")
    storage.keep_state_dir_fresh()


def is_archived(storage: Storage, generation: GenerationRow, listed: frozenset[str] | None = None) -> bool:
    """``<ROOT>/<project>/archive/v<N>__<id>/`` is a real folder, reached through real folders
    only (a link at any component is not an archive: nothing is decided through a link).
    ``listed``: the project's ``archived_folder_names``, answering without a look of its own."""
    try:
        archive = storage.layout.archive_dir(generation.project_id, generation.version or 0, generation.id)
    except UnsafePathComponent:
        return False                    # an id that cannot name a folder has no archive either
    return archive.name in listed if listed is not None else storage.is_folder(archive)


def archived_folder_names(storage: Storage, project_id: str) -> frozenset[str] | None:
    """The names of the real folders in ``<project>/archive/`` — one listing answers
    ``is_archived`` for every generation of the project — and none where there is no such
    folder (or the id cannot name one). None where something is there that cannot be listed (a
    link, a file, a folder without read permission): then each generation is looked up alone."""
    try:
        archive = storage.layout.project_dir(project_id) / ARCHIVE_DIR
    except UnsafePathComponent:
        return frozenset()
    try:
        return frozenset(name for name, is_folder in storage.folder_marks(archive) if is_folder)
    except OSError:
        return None if storage.occupied(archive) else frozenset()
