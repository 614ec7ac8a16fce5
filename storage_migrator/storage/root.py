"""The one way to touch anything under ROOT: directory file descriptors, never a followed symlink.

``Root`` holds one descriptor for ROOT; every component below it is opened with ``O_NOFOLLOW``
relative to the one before, and the final step is an ``*at`` call on the opened parent, so a
symlink swapped in between a check and its use cannot lead outside ROOT. Paths come in as tuples
of components (or strings ``relative_parts`` splits). The rules every method keeps (what is
refused, how files are opened, walks, modes, temp names): ``docs/design.md``, "Descriptors,
never a followed link".

Long because it is one class on purpose: every method keeps the same confinement rules over
the same descriptors, and a rule kept in one place cannot drift between two."""
from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from storage_migrator.errors import UnsafePath, printable
from storage_migrator.storage import libc
from storage_migrator.storage.layout import _component_problem, relative_parts, temp_name

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "CHUNK_SIZE",
    "DirHandle",
    "Durable",
    "Entry",
    "FolderFiles",
    "Output",
    "Parts",
    "Root",
    "relative_parts",
]

CHUNK_SIZE = 1 << 20
"""Bytes per read when streaming a file (hashing, copying): memory does not grow with file size."""

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC

Parts = str | Sequence[str]
"""A relative path below ROOT: a '/'-separated string (checked by ``relative_parts``) or its
components. ``()`` is ROOT itself."""

class Output(Protocol):
    """Where ``write_atomic`` hands a writing callable its file: ``write`` takes bytes and returns
    how many it took (all of them), as a binary file object does."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


Content = bytes | bytearray | memoryview | Callable[[Output], object]


class _DescriptorOutput:
    """The ``Output`` of ``write_atomic``: bytes gathered and written with ``os.write`` in pieces
    of ``CHUNK_SIZE``. A file object (``os.fdopen``) would cost an fstat, an ioctl and two lseeks
    per file on top of the writes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._pending += data
        if len(self._pending) >= CHUNK_SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        done, total = 0, len(self._pending)
        with memoryview(self._pending) as view:
            while done < total:
                with view[done:] as rest:
                    done += os.write(self._fd, rest)
        self.written += total
        self._pending.clear()


def _check_parts(parts: Parts) -> tuple[str, ...]:
    if isinstance(parts, (str, bytes)):
        return relative_parts(parts)
    checked = tuple(parts)
    for name in checked:
        if not isinstance(name, str):
            raise TypeError(f"path components must be str, got {type(name).__name__}")
        problem = _component_problem(name)
        if problem is not None:
            raise UnsafePath("/".join(checked), problem)
    return checked


def _temp_name(name: str) -> str:
    return temp_name(name, os.getpid(), secrets.token_hex(8))


_NAMES_ITS_PATH = "storage_migrator_names_its_path"
"""An attribute set on an ``OSError`` already renamed here, so an outer step keeps its path."""


def _os_error(error: OSError, display: str) -> OSError:
    """The same error (same errno, hence the same subclass) naming the full path for an operator."""
    if isinstance(error, UnsafePath) or getattr(error, _NAMES_ITS_PATH, False):
        return error  # already names its path
    code = error.errno if error.errno is not None else errno.EIO
    named = OSError(code, error.strerror or os.strerror(code), printable(display))
    setattr(named, _NAMES_ITS_PATH, True)
    return named


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _lstat_named(dir_fd: int, name: str, display: str) -> os.stat_result | None:
    """``_lstat_at``, an error naming ``display``."""
    try:
        return _lstat_at(dir_fd, name)
    except OSError as error:
        raise _os_error(error, display) from None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "is a symlink"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISREG(mode):
        return "is a regular file"
    return "is not a regular file"


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class Entry(Protocol):
    """One entry of a directory listing, as a walk hands it out: ``os.DirEntry`` or ``ListedEntry``."""

    @property
    def name(self) -> str: ...

    def is_file(self, *, follow_symlinks: bool = ...) -> bool: ...

    def stat(self, *, follow_symlinks: bool = ...) -> os.stat_result: ...


class ListedEntry:
    """An entry of a listing made on the directory's own descriptor (``libc.read_directory``):
    ``is_file`` from the type the listing gave (an lstat only where the filesystem gives none),
    ``stat`` the entry's lstat, taken at the first call, relative to ``dir_fd`` — which must still
    be open then. Links are never followed: ``follow_symlinks=True`` is refused."""

    __slots__ = ("_dir_fd", "_status", "kind", "name")

    def __init__(self, name: str, dir_fd: int, kind: int) -> None:
        self.name = name
        self.kind = kind
        """``d_type`` as listed (``libc.DT_UNKNOWN`` where the filesystem does not say)."""
        self._dir_fd = dir_fd
        self._status: os.stat_result | None = None

    def is_file(self, *, follow_symlinks: bool = False) -> bool:
        if self.kind != libc.DT_UNKNOWN:
            _never_followed(follow_symlinks)
            return self.kind == libc.DT_REG
        try:
            return stat.S_ISREG(self.stat(follow_symlinks=follow_symlinks).st_mode)
        except FileNotFoundError:
            return False

    def stat(self, *, follow_symlinks: bool = False) -> os.stat_result:
        _never_followed(follow_symlinks)
        if self._status is None:
            self._status = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
        return self._status

    def __repr__(self) -> str:
        return f"<ListedEntry {self.name!r}>"


def _is_folder(entry: Entry) -> bool:
    """The entry is a real folder (a link to one is not), from its listed type where known."""
    if isinstance(entry, ListedEntry) and entry.kind != libc.DT_UNKNOWN:
        return entry.kind == libc.DT_DIR
    try:
        return stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _never_followed(follow_symlinks: bool) -> None:
    if follow_symlinks:
        raise ValueError("an entry below ROOT is never looked at through a link")


def _listing(fd: int) -> list[tuple[str, Entry]]:
    """(name, entry) of every entry of the open directory ``fd``, sorted by name, listed on ``fd``
    itself from its current offset (a descriptor opened for this listing); where libc cannot,
    through ``os.scandir`` (which lists a duplicate and rewinds it)."""
    listed = libc.read_directory(fd)
    found: list[tuple[str, Entry]]
    if listed is None:
        with os.scandir(fd) as iterator:
            found = [(entry.name, entry) for entry in iterator]
    else:
        found = [(name, ListedEntry(name, fd, kind)) for name, kind, _ in listed]
    found.sort(key=lambda item: item[0])
    return found


@dataclass(frozen=True)
class Durable:
    """What one ``Root.make_durable`` did: how many filesystems it synced (``syncfs``, one per
    filesystem written to), or, where ``syncfs`` is missing, which entries it fsynced (each
    touched directory and written file once)."""

    synced_filesystems: int = 0
    fsynced: tuple[tuple[str, ...], ...] = ()


class _OpenDirectory:
    """A directory descriptor ``fd`` held open, closed once (``close()`` or the ``with`` block)."""

    fd: int

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class DirHandle(_OpenDirectory):
    """An open directory below ROOT (a context manager); ``fd`` is usable with ``dir_fd=``."""

    def __init__(self, fd: int, display: str) -> None:
        self.fd = fd
        self.display = display
        self._listed = False

    def names(self) -> list[str]:
        """Every entry's name, sorted; nothing is stat'ed."""
        return [name for name, _ in self._entries()]

    def entries(self) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of every entry, sorted by name; symlinks are reported, not followed."""
        return [(name, entry.stat(follow_symlinks=False)) for name, entry in self._entries()]

    def folder_marks(self) -> list[tuple[str, bool]]:
        """(name, is a real folder) of every entry, sorted by name: the type the listing gives, an
        lstat only where the filesystem gives none (an entry gone since then is not a folder)."""
        return [(name, _is_folder(entry)) for name, entry in self._entries()]

    def _entries(self) -> list[tuple[str, Entry]]:
        """The listing, made on ``fd`` itself: from its start again if listed before."""
        if self._listed:
            os.lseek(self.fd, 0, os.SEEK_SET)
        self._listed = True
        return _listing(self.fd)


_KEPT_PARENTS = 8
"""Descriptors of the directories above it a cursor keeps open, so a walk goes back up without
opening anything; deeper than this it goes up through '..', checked against where it came from."""


class _Cursor:
    """One current-directory descriptor moving through a tree, with the identity of every
    directory on the way. The nearest ``_KEPT_PARENTS`` parents stay open, so going back up
    costs one ``fstatat`` (is the directory just left still there, the same one?); above them
    the way back up goes through '..', checked against the recorded identity. Either way a walk
    of any depth holds at most ``_KEPT_PARENTS + 1`` descriptors, never climbs into a directory
    it did not come from, and stops (``UnsafePath``) when a directory was moved out from under it."""

    def __init__(self, fd: int, display: str) -> None:
        self.fd = fd
        self.display = display
        top = os.fstat(fd)
        self.identities: list[tuple[int, int]] = [(top.st_dev, top.st_ino)]
        self.names: list[str] = []
        self._parents: list[int] = []          # innermost last; -1 where not kept open

    def path(self, name: str | None = None) -> str:
        parts = [self.display, *self.names] + ([name] if name is not None else [])
        return "/".join(parts)

    def relative(self, name: str) -> str:
        return "/".join([*self.names, name])

    def descend(self, name: str, status: os.stat_result | None = None) -> None:
        """Into the subdirectory ``name`` (never through a link). ``status`` is its lstat from the
        listing, if the caller has it: its identity is recorded instead of an fstat (a directory
        swapped in since then is refused on the checked way back up)."""
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except OSError as error:
            raise _explain(self.fd, name, self.path(name), error, "is not a directory") from None
        try:
            st = status if status is not None else os.fstat(child)
        except BaseException:
            os.close(child)
            raise
        if len(self._parents) < _KEPT_PARENTS:
            self._parents.append(self.fd)
        else:
            os.close(self.fd)
            self._parents.append(-1)
        self.fd = child
        self.identities.append((st.st_dev, st.st_ino))
        self.names.append(name)

    def ascend(self) -> str:
        """Go back to the parent; returns the name of the directory just left."""
        kept = self._parents[-1]
        if kept >= 0:
            parent = kept
            try:
                here = os.stat(self.names[-1], dir_fd=parent, follow_symlinks=False)
            except OSError:
                here = None
            if here is None or (here.st_dev, here.st_ino) != self.identities[-1]:
                raise UnsafePath(self.path(), "was moved during the walk (leaves ROOT)")
        else:
            try:
                parent = os.open("..", DIR_FLAGS, dir_fd=self.fd)
            except OSError as error:
                raise _os_error(error, self.path()) from None
            try:
                st = os.fstat(parent)
                if (st.st_dev, st.st_ino) != self.identities[-2]:
                    raise UnsafePath(self.path(), "was moved during the walk (leaves ROOT)")
            except BaseException:
                os.close(parent)
                raise
        self._parents.pop()
        os.close(self.fd)
        self.fd = parent
        self.identities.pop()
        return self.names.pop()

    def close(self) -> None:
        for fd in (self.fd, *self._parents):
            if fd >= 0:
                _close_quietly(fd)
        self.fd, self._parents = -1, []


class FolderFiles(_OpenDirectory):
    """Regular files below one open folder, opened one after another from a kept chain of
    directory descriptors: the directories of the last file opened stay open, so files read in
    path order (as a patch reads them) cost one ``lstat``, ``open`` and ``fstat`` each, not a
    walk from ROOT. Each directory is opened with ``O_NOFOLLOW`` from the one above it, as
    everywhere below ROOT. Only the innermost ``_KEPT_PARENTS`` levels of the chain stay open,
    whatever the depth: a file that leaves a level above them is reached again from the
    nearest one still open (or the folder), so a path 2,000 levels deep costs more ``openat``
    calls, never more descriptors than ``_KEPT_PARENTS`` + 2."""

    def __init__(self, fd: int, display: str) -> None:
        self.fd = fd
        self.display = display
        self._chain: list[tuple[str, int]] = []     # (name, descriptor or -1 if closed), outermost first

    def open_regular(self, parts: Parts) -> tuple[int, os.stat_result]:
        """A read descriptor (the caller closes it) on the regular file ``parts`` below the
        folder, and its fstat; a link or anything but a regular file is refused (``UnsafePath``)."""
        checked = _check_parts(parts)
        parent = self._directory(checked[:-1])
        return _open_regular_at(parent, checked[-1], os.path.join(self.display, *checked))

    def _directory(self, names: tuple[str, ...]) -> int:
        """The descriptor of the directory ``names`` below the folder. The open part of the
        chain is always its innermost levels, so the deepest shared level is open or none is."""
        kept = 0
        while kept < min(len(names), len(self._chain)) and self._chain[kept][0] == names[kept]:
            kept += 1
        self._close_chain(kept)
        start = kept if kept == 0 or self._chain[kept - 1][1] >= 0 else 0
        del self._chain[start:]                     # closed levels are opened again from above
        fd = self._chain[-1][1] if self._chain else self.fd
        for index in range(start, len(names)):
            try:
                child = os.open(names[index], DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                display = os.path.join(self.display, *names[: index + 1])
                raise _explain(fd, names[index], display, error, "is not a directory") from None
            self._chain.append((names[index], child))
            fd = child
            outer = len(self._chain) - 1 - _KEPT_PARENTS
            if outer >= 0 and self._chain[outer][1] >= 0:
                _close_quietly(self._chain[outer][1])
                self._chain[outer] = (self._chain[outer][0], -1)
        return fd

    def _close_chain(self, keep: int) -> None:
        while len(self._chain) > keep:
            fd = self._chain.pop()[1]
            if fd >= 0:
                _close_quietly(fd)

    def close(self) -> None:
        self._close_chain(0)
        super().close()


def _open_regular_at(parent: int, name: str, display: str) -> tuple[int, os.stat_result]:
    """A read descriptor on the regular file ``name`` in the open directory ``parent``, and its
    fstat: lstat'ed first (a FIFO is never opened), opened without following a link, fstat'ed
    again (a FIFO swapped in between is refused, never blocks)."""
    st = _lstat_named(parent, name, display)
    if st is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), printable(display))
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(display, _kind(st.st_mode))
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=parent)
    except OSError as error:
        raise _explain(parent, name, display, error, "is not a regular file") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise UnsafePath(display, _kind(opened.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, opened


def _explain(dir_fd: int, name: str, display: str, error: OSError, mismatch: str) -> OSError:
    """Turn a failed ``openat(dir_fd, name)`` into an error naming the path: ``UnsafePath`` when
    the entry is a symlink or of the wrong type (``mismatch``), else the errno as it came."""
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
        try:
            st = _lstat_at(dir_fd, name)
        except OSError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            return UnsafePath(display, "is a symlink")
        if st is not None or error.errno == errno.ELOOP:
            return UnsafePath(display, mismatch)
    return _os_error(error, display)


class _HeldChain:
    """The folders of one path below ROOT held open (``Root.holding``): ``fds[i]`` is the folder
    ``parts[: i + 1]``, opened with O_NOFOLLOW from the one above it, and ``ids[i]`` its device and
    inode. Only the levels that exist are open; a level is opened at the first use that needs it.

    A level let go because its check failed is not closed before the block ends (``retired``): a
    step that takes two folders (``rename``, ``exchange``, ``rename_and_link``) may still hold the
    descriptor it was given for the first when the lookup of the second finds a level replaced, and
    a closed number would be reused by the very next ``open`` — the step would then act in another
    folder than the one it looked up."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self.parts = parts
        self.fds: list[int] = []
        self.ids: list[tuple[int, int]] = []
        self.retired: list[int] = []

    def deepest(self, root_fd: int, depth: int) -> tuple[int, int]:
        """(descriptor, levels) of the deepest of ``parts[:depth]`` reachable now: each level
        checked (one lstat: the name still names the folder held, same device and inode); a level
        that fails the check is let go with those below it and opened again by name. Where that
        fails too (missing, a link, not a folder) it stops above: the caller opens the rest by
        name from there, as a walk from ROOT would, and meets the same refusal. ``root_fd`` and 0
        levels when none is reachable."""
        parent = root_fd
        for index in range(depth):
            name = self.parts[index]
            if index < len(self.fds):
                try:
                    named = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except OSError:
                    named = None
                if named is not None and (named.st_dev, named.st_ino) == self.ids[index]:
                    parent = self.fds[index]
                    continue
                self.retire(index)
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=parent)
            except OSError:
                return parent, index
            try:
                opened = os.fstat(child)
            except BaseException:
                os.close(child)
                raise
            self.fds.append(child)
            self.ids.append((opened.st_dev, opened.st_ino))
            parent = child
        return parent, depth

    def retire(self, depth: int) -> None:
        """Let go of the levels from ``depth`` down, kept open until ``release`` (see the class)."""
        while len(self.fds) > depth:
            self.retired.append(self.fds.pop())
            self.ids.pop()

    def release(self) -> None:
        """Close every level and every retired descriptor: the block is over."""
        self.retire(0)
        while self.retired:
            _close_quietly(self.retired.pop())


class Root(_OpenDirectory):
    """The storage folder ROOT, held open as a directory descriptor; every method resolves paths
    below it component by component without following symlinks.

    ``Root(path)`` or ``Root.open(path)``; use it as a context manager or call ``close()``. ROOT
    itself may be reached through a symlink (it is the operator's choice); nothing below it may.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._device = os.fstat(self.fd).st_dev
        self._unsynced: dict[tuple[str, ...], int] = {}     # entry -> its filesystem (st_dev)
        self._sync_fds: dict[int, int] = {self._device: self.fd}  # a directory descriptor per filesystem
        self._known_dirs: dict[tuple[str, ...], None] = {}  # folders seen to exist, newest last
        self._as_root = os.geteuid() == 0                    # the one thing owners depend on
        self._held: _HeldChain | None = None                 # the folder a ``holding`` block is about
        self._root_owner: tuple[int, int] | None = None     # ROOT's (uid, gid), read at first need

    def close(self) -> None:
        for fd in self._sync_fds.values():
            if fd != self.fd:
                _close_quietly(fd)
        self._sync_fds = {}
        if self._held is not None:
            self._held.release()
        super().close()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Root:
        """Open ROOT (following a symlink in ROOT's own path, which the operator chose)."""
        return cls(path)

    def __repr__(self) -> str:
        return f"Root({self.path!r})"

    # -- internal helpers -------------------------------------------------------------------

    def _display(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.path, *parts)

    def _open_dir_fd(self, parts: tuple[str, ...]) -> int:
        """A new descriptor for the directory ``parts``, each component opened with O_NOFOLLOW
        from the descriptor of the one before (the first from ROOT's own, or from the held
        folder's chain: ``holding``)."""
        fd, owned = self._dir_fd(parts)
        return fd if owned else os.open(".", DIR_FLAGS, dir_fd=fd)

    def _dir_fd(self, parts: tuple[str, ...]) -> tuple[int, bool]:
        """A descriptor of the directory ``parts`` and whether the caller owns (closes) it: ROOT's
        own for ``()``, a level of the held chain (checked, see ``_HeldChain.level``) for the
        folder ``holding`` holds or one above it, else a new one opened from the nearest of those."""
        if self.fd < 0:
            raise ValueError(f"{self!r} is closed")
        if not parts:
            return self.fd, False
        start, depth = self._held_start(parts)
        if depth == len(parts):
            return start, False
        fd = start
        try:
            for index in range(depth, len(parts)):
                name = parts[index]
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as error:
                    display = self._display(parts[: index + 1])
                    raise _explain(fd, name, display, error, "is not a directory") from None
                if fd != start:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != start:
                _close_quietly(fd)
            raise
        return fd, True

    def _held_start(self, parts: tuple[str, ...]) -> tuple[int, int]:
        """Where a walk to ``parts`` starts: (descriptor, components already reached) — the
        deepest level of the held chain on its way (checked), else ROOT and 0."""
        held = self._held
        if held is None:
            return self.fd, 0
        shared = 0
        while shared < min(len(parts), len(held.parts)) and parts[shared] == held.parts[shared]:
            shared += 1
        return held.deepest(self.fd, shared) if shared else (self.fd, 0)

    @contextmanager
    def _parent(self, parts: tuple[str, ...]) -> Iterator[tuple[int, str]]:
        """(descriptor of the parent directory, final name) for a non-empty ``parts``; for an
        entry directly in ROOT, ROOT's own descriptor, and in a folder ``holding`` holds (or one
        above it), the held one (nothing is opened)."""
        if not parts:
            raise ValueError("this operation needs a path below ROOT, not ROOT itself")
        fd, owned = self._dir_fd(parts[:-1])
        try:
            yield fd, parts[-1]
        finally:
            if owned:
                os.close(fd)

    @contextmanager
    def holding(self, parts: Parts) -> Iterator[None]:
        """Within the block, the folder ``parts`` and each folder above it are held open, each
        opened with O_NOFOLLOW from the one above at the first use that needs it, so a series of
        steps in one folder (a generation's move, manifest, patch and link) does not walk to it
        from ROOT for each step. Every later use checks the chain first: one lstat per level shows
        that each name still names the folder held (same device and inode: a folder, not a link)
        — what opening them again by name would reach. A level that fails the check (renamed,
        replaced, removed) is opened again by name, and where that fails the step walks from
        ROOT as outside the block, meeting the same refusal or error. An inner block holds its
        own folder until it ends; every held descriptor is closed at the block's end."""
        outer, self._held = self._held, _HeldChain(_check_parts(parts))
        try:
            yield
        finally:
            held, self._held = self._held, outer
            if held is not None:
                held.release()

    def open_regular(self, parts: Parts) -> tuple[int, os.stat_result]:
        """A read descriptor (the caller closes it) on the regular file ``parts`` and its fstat."""
        return self._open_regular(_check_parts(parts))

    def _open_regular(self, parts: tuple[str, ...]) -> tuple[int, os.stat_result]:
        """A blocking read descriptor on the regular file ``parts`` and its ``fstat``."""
        with self._parent(parts) as (parent, name):
            return _open_regular_at(parent, name, self._display(parts))

    def folder_files(self, parts: Parts) -> FolderFiles:
        """The regular files below the folder ``parts``, for opening many of them in path order
        (a patch's reads): see ``FolderFiles``. The caller closes it."""
        checked = _check_parts(parts)
        return FolderFiles(self._open_dir_fd(checked), self._display(checked))

    def _create_temp(self, parent: int, name: str, mode: int = 0o600) -> tuple[str, int]:
        for _attempt in range(100):
            temp = _temp_name(name)
            try:
                return temp, os.open(temp, CREATE_FLAGS, mode, dir_fd=parent)
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temp file name", printable(self._display((name,))))

    @staticmethod
    def _discard_temp(parent: int, temp: str) -> None:
        try:
            os.unlink(temp, dir_fd=parent)
        except OSError:
            pass

    # -- looking -----------------------------------------------------------------------------

    def open_dir(self, parts: Parts = ()) -> DirHandle:
        """Open the directory ``parts`` (ROOT for ``()``); a symlink at any component is refused."""
        checked = _check_parts(parts)
        return DirHandle(self._open_dir_fd(checked), self._display(checked))

    def lstat(self, parts: Parts) -> os.stat_result | None:
        """``lstat`` of ``parts`` (a final symlink is described, not followed); None if absent.
        A symlink at an intermediate component is refused."""
        checked = _check_parts(parts)
        if not checked:
            return os.fstat(self.fd)
        try:
            with self._parent(checked) as (parent, name):
                return _lstat_at(parent, name)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _os_error(error, self._display(checked)) from None

    def readlink(self, parts: Parts) -> str | None:
        """The target text of the symlink ``parts``; None if nothing is there. Raises
        ``UnsafePath`` if the entry is not a symlink."""
        checked = _check_parts(parts)
        display = self._display(checked)
        try:
            with self._parent(checked) as (parent, name):
                st = _lstat_at(parent, name)
                if st is None:
                    return None
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(display, "is not a symlink")
                return os.readlink(name, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _os_error(error, display) from None

    # -- reading -----------------------------------------------------------------------------

    def walk_entries(
        self, parts: Parts = (), *, max_depth: int | None = None
    ) -> Generator[tuple[str, Entry, int, str], None, None]:
        """Yield (path relative to ``parts``, directory entry, descriptor of its directory, name)
        for every regular file below the directory ``parts``, sorted by name within a directory,
        files before subdirectories. The descriptor is valid until the next item: open the file
        with ``dir_fd`` and no path below ROOT is ever resolved again. A file's type comes from
        the listing where the filesystem gives it (no stat); ``entry.stat(follow_symlinks=False)``
        is its lstat, taken when first asked for — a reader that opens and ``fstat``s the file
        needs none.

        Iterative: any depth, at most ``_KEPT_PARENTS`` + 2 descriptors open. Never follows a link: a symlink,
        FIFO, socket or device entry raises ``UnsafePath`` naming it; so does a directory deeper
        than ``max_depth`` levels below ``parts`` (no limit when None). Names are ``str`` with
        surrogateescape, usable again with ``relative_parts``.
        """
        checked = _check_parts(parts)
        cursor = _Cursor(self._open_dir_fd(checked), self._display(checked))
        try:
            # pending[i]: subdirectory names still to visit in the directory at depth i (reversed).
            pending: list[list[tuple[str, os.stat_result]]] = []
            scan_needed = True
            while True:
                if scan_needed:
                    subdirs: list[tuple[str, os.stat_result]] = []
                    for name, entry in self._list(cursor):
                        if entry.is_file(follow_symlinks=False):
                            yield cursor.relative(name), entry, cursor.fd, name
                            continue
                        st = self._lstat_entry(cursor, entry)
                        if st is None:
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            subdirs.append((name, st))
                        else:
                            raise UnsafePath(cursor.path(name), _kind(st.st_mode))
                    subdirs.reverse()
                    pending.append(subdirs)
                    scan_needed = False
                if pending[-1]:
                    name, status = pending[-1].pop()
                    if max_depth is not None and len(cursor.names) + 1 > max_depth:
                        raise UnsafePath(cursor.path(name), f"is too deep (more than {max_depth} levels)")
                    try:
                        cursor.descend(name, status)
                    except FileNotFoundError:
                        continue  # removed since the scan: nothing to report
                    scan_needed = True
                    continue
                pending.pop()
                if not pending:
                    return
                cursor.ascend()
        finally:
            cursor.close()

    @staticmethod
    def _list(cursor: _Cursor) -> list[tuple[str, Entry]]:
        """(name, entry) of every entry of the cursor's directory (just entered: each is listed
        once), sorted, listing fully first so the caller works on a complete listing."""
        try:
            return _listing(cursor.fd)
        except OSError as error:
            raise _os_error(error, cursor.path()) from None

    @staticmethod
    def _lstat_entry(cursor: _Cursor, entry: Entry) -> os.stat_result | None:
        """An entry's lstat (None: removed since the listing)."""
        try:
            return entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _os_error(error, cursor.path(entry.name)) from None

    @classmethod
    def _scan(cls, cursor: _Cursor) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of every entry of the cursor's directory, sorted."""
        found: list[tuple[str, os.stat_result]] = []
        for name, entry in cls._list(cursor):
            st = cls._lstat_entry(cursor, entry)
            if st is not None:
                found.append((name, st))
        return found

    # -- writing -----------------------------------------------------------------------------

    def write_atomic(self, parts: Parts, content: Content, *, mode: int = 0o644, fsync: bool = True,
                     owner: tuple[int, int] | None = None) -> None:
        """Replace (or create) the regular file ``parts`` in one rename: a temp file
        ``.<name>.<pid>.<random>.storage-migrate-tmp`` is created with ``O_EXCL | O_NOFOLLOW`` in
        the same directory descriptor, filled from ``content`` (bytes, or a callable given an
        ``Output``), given ``mode`` (at creation where the umask leaves it whole, else with
        ``fchmod``) and ``owner`` (uid, gid; ``fchown`` where the new file's differ), fsynced when
        ``fsync``, then renamed over the name: the file appears with its mode and owner. Without
        ``fsync`` the file and the rename are durable at the next ``make_durable``.

        An existing symlink (or any non-regular entry) at the name is refused with
        ``UnsafePath``: it means someone else put it there and the operator should know. Safety
        does not rest on that check, though: if a link is swapped in after it, ``rename(2)``
        replaces the link itself and never writes through it.
        """
        if mode & ~0o777:
            raise ValueError(f"mode {mode:#o} has bits beyond 0o777")
        checked = _check_parts(parts)
        display = self._display(checked)
        with self._parent(checked) as (parent, name):
            existing = _lstat_named(parent, name, display)
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                raise UnsafePath(display, _kind(existing.st_mode))
            whole = mode & libc.umask() == 0
            try:
                temp, fd = self._create_temp(parent, name, mode if whole else 0o600)
            except OSError as error:
                raise _os_error(error, display) from None
            try:
                try:
                    output = _DescriptorOutput(fd)
                    if callable(content):
                        content(output)
                    else:
                        output.write(content)
                    output.flush()
                    if not whole:
                        os.fchmod(fd, mode)
                    if owner is not None:
                        made = os.fstat(fd)
                        if (made.st_uid, made.st_gid) != owner:
                            os.fchown(fd, *owner)
                    if fsync:
                        os.fsync(fd)
                    elif output.written >= libc.WRITEBACK_MIN_BYTES:
                        libc.start_writeback(fd)
                finally:
                    os.close(fd)
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as error:
                self._discard_temp(parent, temp)
                raise _os_error(error, display) from None
            except BaseException:
                self._discard_temp(parent, temp)
                raise
            if fsync:
                os.fsync(parent)
            else:
                self._touched(parent, checked[:-1], checked)

    def makedirs(self, parts: Parts, mode: int = 0o755, owner: tuple[int, int] | None = None) -> list[tuple[str, ...]]:
        """Create the directory ``parts`` and any missing parents (``mode`` minus the umask, as
        ``os.makedirs``); existing directories are fine, a symlink at any component is refused.
        Returns the directories it created, outermost first; each is given ``owner`` (uid, gid)
        right after its ``mkdir`` when one is asked for (as root) and it is not already theirs.
        One pass down from ROOT (or from the deepest folder on the way that a ``holding`` block
        holds, checked): each component is made and opened relative to the one before,
        nothing is looked up twice; a folder this ``Root`` saw lately is only opened (no
        ``mkdir`` that would fail with ``EEXIST``), made again if it was removed meanwhile."""
        checked = _check_parts(parts)
        created: list[tuple[str, ...]] = []
        start, reached = self._held_start(checked)
        fd = start
        try:
            for index in range(reached, len(checked)):
                name, here = checked[index], checked[: index + 1]
                child = self._open_known_dir(fd, here)
                if child is None:
                    if self._mkdir(fd, checked[:index], name, mode):
                        created.append(here)
                    child = self._open_made_dir(fd, name, here, owner if created and created[-1] == here else None)
                if fd != start:
                    os.close(fd)
                fd = child
        finally:
            if fd != start:
                _close_quietly(fd)
        return created

    _KNOWN_DIRS = 256
    """Folders ``makedirs`` remembers as existing (the newest): a project's folders are reused by
    each of its generations, and memory stays flat over any number of projects."""

    def _open_known_dir(self, parent: int, parts: tuple[str, ...]) -> int | None:
        """A descriptor of the folder ``parts`` (in ``parent``) if it was seen lately and is still
        there; None if it must be made (or looked at the slow way: ``_mkdir`` then open)."""
        if self._known_dirs.pop(parts, False) is False:
            return None
        try:
            child = os.open(parts[-1], DIR_FLAGS, dir_fd=parent)
            self._known_dirs[parts] = None          # the newest again
            return child
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _explain(parent, parts[-1], self._display(parts), error, "is not a directory") from None

    def _mkdir(self, parent: int, parent_parts: tuple[str, ...], name: str, mode: int) -> bool:
        """``mkdir`` ``name`` in ``parent``; False if something is there already."""
        try:
            os.mkdir(name, mode, dir_fd=parent)
        except FileExistsError:
            return False
        except OSError as error:
            raise _os_error(error, self._display((*parent_parts, name))) from None
        self._touched(parent, parent_parts)
        return True

    def _open_made_dir(self, parent: int, name: str, parts: tuple[str, ...], owner: tuple[int, int] | None) -> int:
        """Open the folder ``name`` just made or found (never through a link), give it ``owner``
        if asked and it differs from what ``fstat`` shows, and remember it as existing."""
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            raise _explain(parent, name, self._display(parts), error, "is not a directory") from None
        try:
            if owner is not None:
                status = os.fstat(child)
                if (status.st_uid, status.st_gid) != owner:
                    os.fchown(child, *owner)
                    self._touched(child, parts)
        except OSError as error:
            os.close(child)
            raise _os_error(error, self._display(parts)) from None
        self._known_dirs.pop(parts, None)
        self._known_dirs[parts] = None
        if len(self._known_dirs) > self._KNOWN_DIRS:
            del self._known_dirs[next(iter(self._known_dirs))]
        return child

    def owner_of(self, parts: Parts = ()) -> tuple[int, int] | None:
        """(uid, gid) of the entry ``parts`` (ROOT by default) when the tool runs as root and so
        must hand what it creates to the application's user; None otherwise (nothing to do)."""
        if not self._as_root:
            return None
        if not parts:
            return self._owner_of_root()
        model = self.lstat(parts)
        return None if model is None else (model.st_uid, model.st_gid)

    def _owner_of_root(self) -> tuple[int, int]:
        """ROOT's (uid, gid), read once per opened ROOT: what everything the tool creates gets."""
        if self._root_owner is None:
            model = os.fstat(self.fd)
            self._root_owner = (model.st_uid, model.st_gid)
        return self._root_owner

    def rename(self, src_parts: Parts, dst_parts: Parts, *, overwrite: bool = False) -> None:
        """Rename the entry ``src_parts`` to ``dst_parts`` (parents must exist) through the two
        parent descriptors. A symlink at either final component is moved or replaced as a link,
        never followed. Without ``overwrite`` an existing destination raises ``FileExistsError``
        (atomically with ``renameat2(RENAME_NOREPLACE)`` where the kernel has it). ``EXDEV``
        across filesystems comes through as an ``OSError``: use ``copy_tree`` then."""
        src = _check_parts(src_parts)
        dst = _check_parts(dst_parts)
        display = f"{printable(self._display(src))} -> {printable(self._display(dst))}"
        with self._parent(src) as (src_fd, src_name), self._parent(dst) as (dst_fd, dst_name):
            try:
                if overwrite:
                    os.replace(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                elif not libc.renameat2_noreplace(src_fd, src_name, dst_fd, dst_name):
                    if _lstat_at(dst_fd, dst_name) is not None:
                        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
                    os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except OSError as error:
                code = error.errno if error.errno is not None else errno.EIO
                raise OSError(code, error.strerror or os.strerror(code), display) from None
            self._touched(src_fd, src[:-1])
            self._touched(dst_fd, dst[:-1])

    def exchange(self, a_parts: Parts, b_parts: Parts) -> bool:
        """Swap the entries ``a_parts`` and ``b_parts`` (both must exist, neither is followed) in
        one ``renameat2(RENAME_EXCHANGE)``: no instant exists where either name is missing.
        False where the kernel, libc or the filesystem lacks it (nothing changed); ``EXDEV``
        across filesystems comes through as an ``OSError``."""
        a = _check_parts(a_parts)
        b = _check_parts(b_parts)
        display = f"{printable(self._display(a))} <-> {printable(self._display(b))}"
        with self._parent(a) as (a_fd, a_name), self._parent(b) as (b_fd, b_name):
            try:
                exchanged = libc.renameat2_exchange(a_fd, a_name, b_fd, b_name)
            except OSError as error:
                raise OSError(error.errno, error.strerror, display) from None
            if exchanged:
                self._touched(a_fd, a[:-1])
                self._touched(b_fd, b[:-1])
            return exchanged

    def rename_and_link(self, src_parts: Parts, dst_parts: Parts, link_parts: Parts, target: str) -> None:
        """Rename ``src_parts`` to ``dst_parts`` (which must not exist) and make ``link_parts``
        (missing, a symlink, or ``src_parts`` itself) a symlink to ``target``: the link is made
        under a temp name beside it first and renamed into place right after the rename, so
        the link's name is missing or stale only between two system calls (``exchange`` has no
        such instant: prefer it where it exists). Nothing is fsynced here. If the link cannot
        be put in place the rename is undone; on any error nothing changed."""
        if "\0" in target or target == "":
            raise ValueError("a symlink target must be non-empty and contain no NUL")
        src = _check_parts(src_parts)
        dst = _check_parts(dst_parts)
        link = _check_parts(link_parts)
        display = f"{printable(self._display(src))} -> {printable(self._display(dst))}"
        with self._parent(src) as (src_fd, src_name), self._parent(dst) as (dst_fd, dst_name), \
                self._parent(link) as (link_fd, link_name):
            existing = _lstat_named(link_fd, link_name, self._display(link))
            if existing is not None and link != src and not stat.S_ISLNK(existing.st_mode):
                raise UnsafePath(self._display(link), f"{_kind(existing.st_mode)}, not a symlink")
            temp = self._make_temp_link(link_fd, link_name, target, self._display(link))
            try:
                if not libc.renameat2_noreplace(src_fd, src_name, dst_fd, dst_name):
                    if _lstat_at(dst_fd, dst_name) is not None:
                        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
                    os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except OSError as error:
                self._discard_temp(link_fd, temp)
                code = error.errno if error.errno is not None else errno.EIO
                raise OSError(code, error.strerror or os.strerror(code), display) from None
            try:
                os.replace(temp, link_name, src_dir_fd=link_fd, dst_dir_fd=link_fd)
            except OSError as error:
                self._discard_temp(link_fd, temp)
                try:
                    os.rename(dst_name, src_name, src_dir_fd=dst_fd, dst_dir_fd=src_fd)
                except OSError:
                    pass
                raise _os_error(error, self._display(link)) from None
            for fd, folder in ((src_fd, src[:-1]), (dst_fd, dst[:-1]), (link_fd, link[:-1])):
                self._touched(fd, folder)

    def _make_temp_link(self, parent: int, name: str, target: str, display: str) -> str:
        """A new symlink to ``target`` under a free temp name for ``name`` in ``parent``."""
        for _attempt in range(100):
            temp = _temp_name(name)
            try:
                os.symlink(target, temp, dir_fd=parent)
                return temp
            except FileExistsError:
                continue
            except OSError as error:
                raise _os_error(error, display) from None
        raise FileExistsError(errno.EEXIST, "no free temp name", printable(display))

    def new_symlink(self, parts: Parts, target: str) -> None:
        """Create ``parts`` as a symlink to ``target`` (stored as given); an existing entry
        there raises ``FileExistsError`` and is left alone."""
        if "\0" in target or target == "":
            raise ValueError("a symlink target must be non-empty and contain no NUL")
        checked = _check_parts(parts)
        with self._parent(checked) as (parent, name):
            try:
                os.symlink(target, name, dir_fd=parent)
            except OSError as error:
                raise _os_error(error, self._display(checked)) from None
            self._touched(parent, checked[:-1])

    def symlink(self, parts: Parts, target: str) -> None:
        """Make ``parts`` a symlink to ``target`` (stored as given, never resolved here),
        atomically replacing an existing symlink (temp link + rename). Refuses to replace anything
        that is not a symlink (``UnsafePath``)."""
        if "\0" in target or target == "":
            raise ValueError("a symlink target must be non-empty and contain no NUL")
        checked = _check_parts(parts)
        display = self._display(checked)
        with self._parent(checked) as (parent, name):
            existing = _lstat_named(parent, name, display)
            if existing is not None and not stat.S_ISLNK(existing.st_mode):
                raise UnsafePath(display, f"{_kind(existing.st_mode)}, not a symlink")
            temp = self._make_temp_link(parent, name, target, display)
            try:
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as error:
                self._discard_temp(parent, temp)
                raise _os_error(error, display) from None
            self._touched(parent, checked[:-1])

    def unlink(self, parts: Parts, *, missing_ok: bool = False) -> None:
        """Remove the non-directory entry ``parts`` (a symlink is removed itself, never its
        target). A symlink at an intermediate component is refused."""
        checked = _check_parts(parts)
        display = self._display(checked)
        try:
            with self._parent(checked) as (parent, name):
                os.unlink(name, dir_fd=parent)
                self._touched(parent, checked[:-1])
        except FileNotFoundError as error:
            if not missing_ok:
                raise _os_error(error, display) from None
        except OSError as error:
            raise _os_error(error, display) from None

    def open_lock_file(self, parts: Parts, mode: int = 0o644) -> int:
        """A read-write descriptor (the caller closes it) on the regular file ``parts``, created
        if missing, never through a link; for ``flock`` and the holder's name."""
        checked = _check_parts(parts)
        display = self._display(checked)
        with self._parent(checked) as (parent, name):
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                             dir_fd=parent)
            except OSError as error:
                raise _explain(parent, name, display, error, "is not a regular file") from None
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise UnsafePath(display, _kind(status.st_mode))
        return fd

    def rmdir(self, parts: Parts) -> None:
        """Remove the empty directory ``parts`` (a symlink there is refused: ENOTDIR)."""
        checked = _check_parts(parts)
        try:
            with self._parent(checked) as (parent, name):
                os.rmdir(name, dir_fd=parent)
                self._touched(parent, checked[:-1])
        except OSError as error:
            raise _os_error(error, self._display(checked)) from None

    def set_times(self, parts: Parts, mtime_ns: int, *, durable: bool = True) -> None:
        """Set access and modification time of the entry ``parts`` itself (a link is not followed);
        made durable at the next ``make_durable`` unless ``durable`` is False (a time nobody
        relies on after a crash: no sync is owed for it)."""
        checked = _check_parts(parts)
        try:
            with self._parent(checked) as (parent, name):
                os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
                if durable:
                    self._touched(parent, checked[:-1], checked)
        except OSError as error:
            raise _os_error(error, self._display(checked)) from None

    def adopt_owner(self, parts: Parts, like: Parts = ()) -> None:
        """Give the entry ``parts`` (never followed) the owner and group of ``like`` (ROOT by
        default), so what a run as root creates stays writable by the application's user.
        A no-op unless the tool runs as root."""
        model = self.owner_of(like)
        if model is None:
            return
        checked = _check_parts(parts)
        try:
            with self._parent(checked) as (parent, name):
                current = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if (current.st_uid, current.st_gid) != model:
                    os.chown(name, *model, dir_fd=parent, follow_symlinks=False)
                    self._touched(parent, checked[:-1], checked)
        except OSError as error:
            raise _os_error(error, self._display(checked)) from None

    def fsync_dir(self, parts: Parts = ()) -> None:
        """fsync the directory ``parts`` so renames and creations in it survive a power cut."""
        with self.open_dir(parts) as handle:
            os.fsync(handle.fd)

    # -- durability ----------------------------------------------------------------------------

    def _touched(self, parent_fd: int, parent: tuple[str, ...], *entries: tuple[str, ...]) -> None:
        """Note, until the next ``make_durable``, that the directory ``parent`` (open as
        ``parent_fd``) changed — an entry made, renamed or removed in it — and that ``entries``
        below it were written. Each directory's filesystem is looked up once per batch."""
        device = self._unsynced.get(parent)
        if device is None:
            device = self._device if parent_fd == self.fd else self._device_of(parent_fd)
            if device not in self._sync_fds:           # a filesystem mounted below ROOT
                self._sync_fds[device] = os.dup(parent_fd)
            self._unsynced[parent] = device
        for entry in entries:
            self._unsynced[entry] = device

    def _device_of(self, fd: int) -> int:
        """The filesystem of the open directory ``fd``: known already for a held folder."""
        held = self._held
        if held is not None and fd in held.fds:
            return held.ids[held.fds.index(fd)][0]
        return os.fstat(fd).st_dev

    def unsynced(self) -> frozenset[tuple[str, ...]]:
        """What ``make_durable`` would make durable now: the directories changed and the files
        written through this ``Root`` since its last call."""
        return frozenset(self._unsynced)

    def make_durable(self) -> Durable:
        """Make durable every change made through this ``Root`` since the last call: one
        ``syncfs`` per filesystem written to (ROOT's, and any mounted below it), or, where libc
        or the kernel lacks ``syncfs``, one fsync of each changed directory and written file.
        Call it before the database commit that points at those changes; with nothing changed
        it does nothing. An I/O error raises, and what was to be made durable stays pending."""
        if not self._unsynced:
            return Durable()
        devices = set(self._unsynced.values())
        if all(libc.syncfs(self._sync_fds[device]) for device in devices):
            done = Durable(synced_filesystems=len(devices))
        else:
            done = Durable(fsynced=self._fsync_each(self._unsynced))
        self._unsynced = {}
        for fd in self._sync_fds.values():
            if fd != self.fd:
                _close_quietly(fd)
        self._sync_fds = {self._device: self.fd}
        return done

    def _fsync_each(self, entries: Iterable[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
        """fsync each of ``entries`` that is still a directory or regular file (deepest first);
        one gone since, or replaced by a link, is skipped: its parent's fsync covers its removal."""
        done: list[tuple[str, ...]] = []
        for parts in sorted(entries, key=len, reverse=True):
            fd = self._open_for_fsync(parts)
            if fd is None:
                continue
            try:
                os.fsync(fd)
            except OSError as error:
                raise _os_error(error, self._display(parts)) from None
            finally:
                if fd != self.fd:
                    os.close(fd)
            done.append(parts)
        return tuple(done)

    def _open_for_fsync(self, parts: tuple[str, ...]) -> int | None:
        """A descriptor of the directory or regular file ``parts`` (ROOT's own for ``()``), or
        None if it is gone or anything else now (never opened: a FIFO or device is not touched)."""
        if not parts:
            return self.fd
        try:
            with self._parent(parts) as (parent, name):
                status = _lstat_at(parent, name)
                if status is None or not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
                    return None
                return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except (FileNotFoundError, UnsafePath):
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                return None
            raise _os_error(error, self._display(parts)) from None

    def rmtree(self, parts: Parts, *, missing_ok: bool = False) -> None:
        """Remove the directory ``parts`` and everything in it without following any symlink.

        Iterative with an explicit stack and at most ``_KEPT_PARENTS`` + 2 descriptors open at any depth; links,
        FIFOs and devices inside are removed as entries. A symlink at ``parts`` itself or at an
        intermediate component is refused (``UnsafePath``). An entry that cannot be removed
        (permissions, a directory moved out of ROOT during the walk, files added concurrently)
        raises an ``OSError`` naming it, with every descriptor closed; what was removed before
        stays removed.
        """
        checked = _check_parts(parts)
        display = self._display(checked)
        with self._parent(checked) as (parent, name):
            try:
                top = os.open(name, DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError as error:
                if missing_ok:
                    return
                raise _os_error(error, display) from None
            except OSError as error:
                raise _explain(parent, name, display, error, "is not a directory") from None
            try:
                cursor = _Cursor(top, display)
            except BaseException:
                os.close(top)
                raise
            try:
                pending: list[list[str]] = []
                scan_needed = True
                while True:
                    if scan_needed:
                        subdirs: list[str] = []
                        for entry_name, st in self._scan(cursor):
                            if stat.S_ISDIR(st.st_mode):
                                subdirs.append(entry_name)
                                continue
                            try:
                                os.unlink(entry_name, dir_fd=cursor.fd)
                            except FileNotFoundError:
                                pass
                            except IsADirectoryError:
                                subdirs.append(entry_name)  # became a directory since the scan
                            except OSError as error:
                                raise _os_error(error, cursor.path(entry_name)) from None
                        pending.append(subdirs)
                        scan_needed = False
                    if pending[-1]:
                        child = pending[-1].pop()
                        try:
                            cursor.descend(child)
                        except FileNotFoundError:
                            continue
                        except UnsafePath:
                            # Replaced by a non-directory since the scan: remove the entry itself.
                            try:
                                os.unlink(child, dir_fd=cursor.fd)
                            except FileNotFoundError:
                                pass
                            except OSError as error:
                                raise _os_error(error, cursor.path(child)) from None
                            continue
                        scan_needed = True
                        continue
                    pending.pop()
                    if not pending:
                        break
                    left = cursor.ascend()
                    try:
                        os.rmdir(left, dir_fd=cursor.fd)
                    except FileNotFoundError:
                        pass
                    except OSError as error:
                        raise _os_error(error, cursor.path(left)) from None
            finally:
                cursor.close()
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as error:
                raise _os_error(error, display) from None
            self._touched(parent, checked[:-1])

    def copy_tree(self, src_parts: Parts, dst_parts: Parts) -> None:
        """Copy the directory ``src_parts`` to the new directory ``dst_parts`` (its parent must
        exist, it must not) for a cross-filesystem move: both trees are walked together with
        one descriptor each (``_Cursor``), so no path is resolved again from ROOT whatever the
        depth. Each file is streamed into a temp file in its destination directory, given the
        source's permission bits (masked to 0o777: a planted set-user-ID bit is never copied)
        and atime/mtime, fsynced and renamed into place; each directory is fsynced once full.
        A symlink, FIFO, socket or device anywhere raises ``UnsafePath``; the caller discards
        the partial copy."""
        src = _check_parts(src_parts)
        dst = _check_parts(dst_parts)
        source = _Cursor(self._open_dir_fd(src), self._display(src))
        try:
            with self._parent(dst) as (parent, name):
                target = _Cursor(self._make_dir_at(parent, name, self._display(dst)), self._display(dst))
                self._touched(parent, dst[:-1])
            try:
                self._copy_walk(source, target)
            finally:
                target.close()
        finally:
            source.close()

    def _copy_walk(self, source: _Cursor, target: _Cursor) -> None:
        pending: list[list[str]] = []        # subdirectories still to copy at each depth (reversed)
        scan_needed = True
        while True:
            if scan_needed:
                subdirs: list[str] = []
                for name, st in self._scan(source):
                    if stat.S_ISREG(st.st_mode):
                        self._copy_file_at(source, name, target)
                    elif stat.S_ISDIR(st.st_mode):
                        subdirs.append(name)
                    else:
                        raise UnsafePath(source.path(name), _kind(st.st_mode))
                subdirs.reverse()
                pending.append(subdirs)
                scan_needed = False
            if pending[-1]:
                name = pending[-1].pop()
                source.descend(name)
                os.close(self._make_dir_at(target.fd, name, target.path(name)))
                target.descend(name)
                scan_needed = True
                continue
            pending.pop()
            os.fsync(target.fd)
            if not pending:
                return
            source.ascend()
            target.ascend()

    @staticmethod
    def _make_dir_at(parent: int, name: str, display: str, mode: int = 0o755) -> int:
        """``mkdir`` a new directory in ``parent`` and open it (never through a link)."""
        try:
            os.mkdir(name, mode, dir_fd=parent)
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            raise _os_error(error, display) from None

    def _copy_file_at(self, source: _Cursor, name: str, target: _Cursor) -> None:
        """One regular file from the source cursor's directory into the target cursor's."""
        src_display, dst_display = source.path(name), target.path(name)
        try:
            src_fd = os.open(name, READ_FLAGS, dir_fd=source.fd)
        except OSError as error:
            raise _explain(source.fd, name, src_display, error, "is not a regular file") from None
        try:
            st = os.fstat(src_fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(src_display, _kind(st.st_mode))
            try:
                temp, out = self._create_temp(target.fd, name)
            except OSError as error:
                raise _os_error(error, dst_display) from None
            try:
                try:
                    while chunk := os.read(src_fd, CHUNK_SIZE):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(out, view):]
                    os.fchmod(out, stat.S_IMODE(st.st_mode) & 0o777)
                    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                    os.fsync(out)
                finally:
                    os.close(out)
                os.replace(temp, name, src_dir_fd=target.fd, dst_dir_fd=target.fd)
            except OSError as error:
                self._discard_temp(target.fd, temp)
                raise _os_error(error, dst_display) from None
            except BaseException:
                self._discard_temp(target.fd, temp)
                raise
        finally:
            os.close(src_fd)
