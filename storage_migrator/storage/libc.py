"""The libc calls Python's ``os`` lacks (``renameat2``, ``syncfs``, ``sync_file_range``,
``getdents64``) through ctypes, each with its fallback where libc or the kernel does not offer it, and the umask read once.
Tests replace ``renameat2_function``/``syncfs_function``/``getdents64_function`` to run as on a
libc without them."""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
import sys
import threading
from collections.abc import Callable

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@functools.cache
def libc_function(name: str, *argtypes: type) -> Callable[..., int] | None:
    """libc's ``name`` (returning an int, errno kept), or None where libc does not export it."""
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def renameat2_function() -> Callable[..., int] | None:
    return libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)


def sync_file_range_function() -> Callable[..., int] | None:
    return libc_function("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)


SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_MIN_BYTES = 256 << 10
"""Files at least this large get their write-back started as soon as they are written
(``start_writeback``); a smaller file (a manifest) is not worth the system call: the next
``make_durable`` writes it with the rest."""


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk now, without waiting (``sync_file_range``
    WRITE): the ``make_durable`` before the next database commit then finds them written
    instead of writing them all while the run waits (``docs/benchmarks.md``, "Writeback"). Only a
    hint: nothing is promised until ``make_durable``; where the call is missing nothing happens."""
    function = sync_file_range_function()
    if function is not None:
        function(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def syncfs_function() -> Callable[..., int] | None:
    return libc_function("syncfs", ctypes.c_int)


def syncfs(fd: int) -> bool:
    """``syncfs(2)``: everything written to the filesystem that holds ``fd`` (data, renames,
    creations) made durable; True if done. False where libc or the kernel lacks it (nothing
    done: the caller fsyncs what it touched instead); an I/O error raises."""
    function = syncfs_function()
    if function is None:
        return False
    if function(fd) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        return False
    raise OSError(code, os.strerror(code))


@functools.cache
def umask() -> int:
    """The process's umask, read once (``/proc/self/status`` where it says, else set and set
    back at first use): a file created with a mode the umask leaves whole needs no ``fchmod``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current




DT_UNKNOWN = 0
DT_DIR = 4
DT_REG = 8
_DIRENT_HEAD = struct.Struct("=QqHB")   # d_ino, d_off, d_reclen, d_type; d_name follows, NUL-ended
_DIRENT_BUFFER = 64 << 10
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
"""What ``os.fsdecode`` decodes a name with, read once: a listing decodes every entry's name."""


_buffers = threading.local()


def _dirent_buffer() -> ctypes.Array[ctypes.c_char]:
    """This thread's listing buffer, made once: a fresh one is 64 KiB zeroed per directory."""
    buffer = getattr(_buffers, "dirent", None)
    if buffer is None:
        buffer = _buffers.dirent = ctypes.create_string_buffer(_DIRENT_BUFFER)
    return buffer


def getdents64_function() -> Callable[..., int] | None:
    return libc_function("getdents64", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)


def read_directory(fd: int) -> list[tuple[str, int, int]] | None:
    """(name, d_type, d_ino) of every entry of the open directory ``fd`` but ``.`` and ``..``,
    in the order the filesystem gives, read from the descriptor's offset to the end with
    ``getdents64`` on ``fd`` itself. ``os.scandir(fd)`` and ``os.listdir(fd)`` list a ``dup`` of the
    descriptor (dup, fstat, two fcntl, then lseek back and close: six calls more per directory),
    which a walk pays for every folder it enters. A name is ``str`` with surrogateescape, as
    ``os.listdir`` gives it; ``d_type`` is ``DT_UNKNOWN`` where the filesystem does not say
    (the caller lstats). None where libc has no ``getdents64`` (nothing read: the caller lists
    another way); a failure raises ``OSError``."""
    function = getdents64_function()
    if function is None:
        return None
    buffer = _dirent_buffer()
    found: list[tuple[str, int, int]] = []
    while True:
        length = function(fd, buffer, _DIRENT_BUFFER)
        if length < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSYS and not found:
                return None
            raise OSError(code, os.strerror(code))
        if length == 0:
            return found
        data = ctypes.string_at(buffer, length)
        position = 0
        while position < length:
            inode, _, record_length, kind = _DIRENT_HEAD.unpack_from(data, position)
            start = position + _DIRENT_HEAD.size
            name = data[start:data.index(b"\0", start)]
            position += record_length
            if name != b"." and name != b"..":
                found.append((name.decode(_FS_ENCODING, _FS_ERRORS), kind, inode))


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> bool:
    """``renameat2`` with ``flags``: True if done, False when libc or the filesystem does not
    offer it (nothing changed; the caller falls back); any other failure raises."""
    function = renameat2_function()
    if function is None:
        return False
    if function(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code))


def renameat2_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> bool:
    """``renameat2(RENAME_NOREPLACE)``: an existing target raises; False: check-then-rename instead."""
    return renameat2(src_fd, src, dst_fd, dst, RENAME_NOREPLACE)


def renameat2_exchange(a_fd: int, a: str, b_fd: int, b: str) -> bool:
    """``renameat2(RENAME_EXCHANGE)``: True if the two entries swapped places."""
    return renameat2(a_fd, a, b_fd, b, RENAME_EXCHANGE)
