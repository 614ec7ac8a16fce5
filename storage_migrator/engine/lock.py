"""One run at a time: an flock on ``<ROOT>/.storage-migrate/lock`` (and, on PostgreSQL, an
advisory lock), released by the kernel or the server even when the holder is killed -9.

The lock file holds who took it, so the second run can name the holder in its message.
Coordinated participants (``coordinate.py``) take the advisory key in shared mode and no flock
(an NFS client may implement flock locally); ``rollback`` and uncoordinated runs take it
exclusively, so the two kinds exclude each other (exit 75) whichever came first.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from storage_migrator.errors import GenerationError, LockHeld, UnsafePath, UsageError
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.steps import prepare_state_dir
from storage_migrator.storage.tree import read_regular_file

ADVISORY_LOCK_KEY = 0x5354_4F52_4D49_47  # "STORMIG": one key for every storage-migrate


def run_lock_parts() -> tuple[int, int]:
    """The key as ``pg_locks`` shows a one-bigint advisory lock: (classid, objid), objsubid 1."""
    return ADVISORY_LOCK_KEY >> 32, ADVISORY_LOCK_KEY & 0xFFFF_FFFF


def _advisory_holders(connection: Connection) -> str:
    """Who holds the run lock's key, from ``pg_locks`` (every shared holder, or the exclusive one)."""
    high, low = run_lock_parts()
    holders = connection.execute(
        sa.text(
            "SELECT a.application_name, a.pid, l.mode FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = :high AND l.objid::bigint = :low AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY a.pid LIMIT 5"
        ),
        {"high": high, "low": low},
    ).all()
    if not holders:
        return "another session"
    mode = "coordinated run(s) " if holders[0].mode == "ShareLock" else ""
    return mode + ", ".join(f"{holder.application_name} (backend {holder.pid})" for holder in holders)


def take_shared_run_lock(connection: Connection, command: str) -> None:
    """A coordinated participant's share of the run lock, on its lock session (held until that
    session ends); raises LockHeld (exit 75) naming the exclusive holder otherwise."""
    taken = connection.execute(sa.text("SELECT pg_try_advisory_lock_shared(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
    connection.commit()
    if taken:
        return
    named = _advisory_holders(connection)
    connection.commit()
    raise LockHeld(f"{command} --coordinate: another run holds the database's advisory lock: {named}; "
                   "try again when it has finished")


_LATEST_TIMESTAMP = 253402300799
"""The last second of the year 9999: a later ``since`` is no time ``localtime`` can spell."""


def _holder_description(storage: Storage, lock_file: Path) -> str:
    """Who the lock file says holds the lock; "an unknown process" when it says nothing usable
    (a holder killed while writing it, or bytes someone else put there)."""
    unknown = "an unknown process"
    try:
        holder = json.loads(read_regular_file(storage, lock_file.parent, lock_file.name, max_bytes=4096))
    except (GenerationError, OSError, ValueError, RecursionError):     # ValueError: not UTF-8 or not JSON
        return unknown
    if not isinstance(holder, dict) or not {"command", "pid", "host"} <= holder.keys():
        return unknown
    since = holder.get("since")
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not 0 <= since <= _LATEST_TIMESTAMP:
        return unknown
    return (f"{holder['command']} (pid {holder['pid']} on {holder['host']}, "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))})")


def current_holder(storage: Storage, engine: Engine) -> str | None:
    """Who holds the run lock right now (a run, resync, rollback or schema change at work), or
    None. Looks without taking anything — a probe that took the lock even briefly could make a
    starting run exit 75 — and creates nothing: the kernel's list of file locks for the lock
    file, and on PostgreSQL the advisory key's holders."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            if _advisory_key_held(connection):
                return _advisory_holders(connection)
    status = storage.status(storage.layout.lock_file)
    if status is not None and _flock_held(status):
        return _holder_description(storage, storage.layout.lock_file)
    return None


def _advisory_key_held(connection: Connection) -> bool:
    high, low = run_lock_parts()
    return connection.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = :high AND objid::bigint = :low "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"),
        {"high": high, "low": low}).scalar() is True


def _flock_held(status: os.stat_result) -> bool:
    """Whether /proc/locks lists an flock on the file of ``status`` (major:minor:inode)."""
    wanted = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        with open("/proc/locks") as locks:        # not below ROOT: the kernel's table
            return any(fields[1] == "FLOCK" and fields[5] == wanted
                       for fields in (line.split() for line in locks) if len(fields) > 5)
    except OSError:
        return False


class RunLock:
    """Context manager: raises LockHeld (exit 75) at once if another run holds either lock."""

    def __init__(self, storage: Storage, engine: Engine, command: str) -> None:
        self.storage = storage
        self.lock_file = storage.layout.lock_file
        self.engine = engine
        self.command = command
        self._descriptor: int | None = None
        self._database_lock = DatabaseLock(engine, command)      # the advisory half, shared with `db`

    def __enter__(self) -> RunLock:
        self._take_file_lock()
        try:
            self._database_lock.__enter__()
        except BaseException:
            self._release_file_lock()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._database_lock.__exit__(kind, error, trace)
        self._release_file_lock()

    def _take_file_lock(self) -> None:
        prepare_state_dir(self.storage)
        try:
            descriptor = self.storage.root.open_lock_file(self.storage.parts(self.lock_file))
        except UnsafePath:
            raise UsageError(f"the lock file {self.lock_file} is not a plain file; remove it and rerun") from None
        except OSError as error:
            raise UsageError(f"cannot open the lock file {self.lock_file}: {error.strerror}; "
                             "it must be a plain file the tool can write") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise LockHeld(f"another run holds {self.lock_file}: {_holder_description(self.storage, self.lock_file)}; "
                           "try again when it has finished") from None
        self._descriptor = descriptor
        holder = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            os.ftruncate(descriptor, 0)
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.write(descriptor, json.dumps(holder).encode())
        except OSError:
            pass        # the lock is held all the same; only the holder's name is missing (e.g. disk full)

    def _release_file_lock(self) -> None:
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None


class DatabaseLock:
    """The run lock's key held exclusively: the advisory half of ``RunLock``, and alone for a
    command that changes the database but has no ROOT (``db upgrade``/``downgrade``), so that it
    and a coordinated or uncoordinated run exclude each other (exit 75). No-op on SQLite."""

    def __init__(self, engine: Engine, command: str) -> None:
        self.engine = engine
        self.command = command
        self._connection: Connection | None = None

    def __enter__(self) -> DatabaseLock:
        if self.engine.dialect.name != "postgresql":
            return self
        connection = self.engine.connect()
        taken = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
        connection.commit()
        if not taken:
            named = _advisory_holders(connection)
            connection.close()
            raise LockHeld(f"{self.command}: another run holds the database's advisory lock: {named}; "
                           "try again when it has finished")
        self._connection = connection
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                self._connection.close()
            except sa.exc.DBAPIError:
                pass
            self._connection = None
