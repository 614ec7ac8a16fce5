"""A coordinated participant's two sessions: the lock session, one connection that never
reconnects (a new session would hold none of its locks), and the heartbeat session, whose
``Heartbeat`` thread renews the participant's lease and notices a lock session that is gone."""
from __future__ import annotations

import threading
import time
from contextlib import suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage_migrator.config import normalize_database_url
from storage_migrator.db.connect import LOCK_TIMEOUT, first_line

BEATS_PER_LEASE = 4
"""Renewals (and, by a waiting participant, checks of the others' renewals) per lease."""
HEARTBEAT_NAME = "storage-migrate heartbeat of backend "
"""The heartbeat session's ``application_name``, followed by its lock session's backend pid."""
DEAD_LINK_MILLISECONDS = 9000
"""How long either end waits on a silent link: keepalives (5 s idle, then 2 probes 2 s apart)
while nothing is in flight, and TCP_USER_TIMEOUT while a statement or its answer is — without it
a participant whose link died under a sent statement waits for TCP's retransmissions (~15 min)."""
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
              "tcp_user_timeout": DEAD_LINK_MILLISECONDS}


class LockSessionLost(Exception):
    """The participant's lock session is gone: stop at once."""


def single_session_engine(database_url: str, application_name: str, **engine_options: Any) -> Engine:
    url = sa.make_url(normalize_database_url(database_url))
    options = (f"-c lock_timeout={LOCK_TIMEOUT} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
               f"-c tcp_keepalives_count=2 -c tcp_user_timeout={DEAD_LINK_MILLISECONDS}")
    connect_args: dict[str, Any] = {
        "application_name": application_name[:63], "connect_timeout": 10, "options": options, **KEEPALIVES,
    }
    engine = sa.create_engine(url, pool_size=1, max_overflow=0, pool_timeout=5, connect_args=connect_args,
                              **engine_options)
    connected: list[bool] = []

    @sa.event.listens_for(engine, "do_connect")
    def connect_once(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        if connected:
            raise LockSessionLost(f"the session {application_name!r} was lost; not opening another")
        connected.append(True)

    return engine


class Heartbeat:
    """A participant's lease, renewed by a daemon thread on a session of its own every
    ``lease / BEATS_PER_LEASE`` — each renewal also asks whether the lock session still exists.

    Lapsed for good once a renewal is older than the lease, on this process's monotonic clock
    (which runs on while the process is stopped): the others may have ended it, or will; so
    ``check`` raises from then on, even if the server never noticed. The session is one psycopg
    connection held from ``start`` to ``stop`` (never reopened), in autocommit: each question is
    one round trip."""

    def __init__(self, database_url: str, lock_pid: int, lease: float) -> None:
        self.lease = lease
        self.lock_pid = lock_pid
        self._engine = single_session_engine(database_url, f"{HEARTBEAT_NAME}{lock_pid}")
        self._driver_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error   # the driver's own base error
        self._connection: Any = None
        self._renewed = time.monotonic()
        self._lost: str | None = None
        self._session = threading.Lock()           # the thread's renewals and the fence's questions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storage-migrate heartbeat", daemon=True)

    def start(self) -> None:
        """The session and the first renewal, here (the heartbeat exists before the participant
        joins), then the thread."""
        try:
            self._connection = self._engine.raw_connection()
        except sa.exc.DBAPIError as error:
            raise LockSessionLost(f"the heartbeat session could not be opened ({first_line(error)})") from None
        self._connection.driver_connection.autocommit = True
        self._beat()
        self.check()
        self._thread.start()

    def check(self) -> None:
        """Raise ``LockSessionLost`` if the lease lapsed or the heartbeat found the lock session gone."""
        silent = time.monotonic() - self._renewed
        if self._lost is None and silent > self.lease:
            self._lost = (f"its lease lapsed: no heartbeat for {silent:.0f} s, longer than the lease "
                          f"({self.lease:g} s; the process was paused or starved) — another participant may "
                          "have taken its projects over")
        if self._lost is not None:
            raise LockSessionLost(self._lost)

    def confirm(self, class_id: int, key: int) -> None:
        """Ask the server whether the lock session holds the advisory lock ``(class_id, key)``
        (an exclusive claim) — one round trip on this session, which no caller holds for long,
        so it may be asked while the lock session is busy; raise ``LockSessionLost`` if not."""
        held = self._ask(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND granted "
            "AND objsubid = 2 AND classid::bigint = %s AND objid::bigint = %s AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()))", (self.lock_pid, class_id, key))
        if not held:
            self._lost = self._lost or (f"its lock session no longer holds its claim (advisory lock {class_id}, {key}): "
                                        "ended by another participant, an administrator or the server")
        self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=DEAD_LINK_MILLISECONDS / 1000 + 1)    # a renewal in flight is bounded by it
        if self._thread.is_alive():
            return                  # a daemon thread: it ends with the process, its session with it
        if self._connection is not None:
            with suppress(Exception):
                self._connection.invalidate()       # closed, never handed out again
        self._engine.dispose()

    def _ask(self, sql: str, parameters: tuple[int, ...]) -> Any:
        """One question on the session; a failure loses the lease for good."""
        try:
            with self._session:
                if self._lost is None:
                    return self._connection.driver_connection.execute(sql, parameters).fetchone()[0]
        except self._driver_error as error:
            self._lost = self._lost or f"its heartbeat session failed ({first_line(error)})"
        self.check()
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.lease / BEATS_PER_LEASE):
            try:
                self.check()
            except LockSessionLost:
                return
            self._beat()

    def _beat(self) -> None:
        sent = time.monotonic()
        try:
            alive = self._ask("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", (self.lock_pid,))
        except LockSessionLost:
            return
        if not alive:
            self._lost = self._lost or ("its lock session is gone (ended by another participant, an administrator "
                                        "or the server)")
        else:
            self._renewed = sent
