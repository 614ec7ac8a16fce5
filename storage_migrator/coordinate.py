"""``run --coordinate`` / ``resync --coordinate``: participants on any number of hosts (and each
of ``--workers N``) share one ROOT and one PostgreSQL database and split the work by project.

Protocol — session-level advisory locks on one dedicated connection per participant, its *lock
session* (no table, no revision); ``b`` = ``crc32(project id) % BUCKETS``:

1. Join: the run lock's key in shared mode (``pg_try_advisory_lock_shared``). Its holders are the
   live participants; an exclusive holder (rollback, an uncoordinated run) and we exclude each
   other (exit 75). Refused: SQLite, and a backend pid that changes between two transactions
   (a transaction-pooling proxy: session locks would mean nothing) — exit 2.
2. Claim: ``pg_try_advisory_lock(CLAIM, b)``. Once held, if ``(DONE, b)`` is held by anyone a live
   participant finished ``b``: let it go. Else plan and carry out ``b``'s projects with the
   ordinary planner and executor — every statement on the lock session — then take
   ``(DONE, b)``, kept until exit, and release ``(CLAIM, b)``.
3. A bucket claimed by another participant is retried until it is done. A claim or done marker
   that vanishes (its holder died or lost its session: the server released its locks) makes the
   bucket pending again: it is taken over and re-planned (the planner recognises every
   half-done state).
4. Leave, a two-phase barrier: once all ``BUCKETS`` markers are seen, hold ``(BARRIER, 0)``
   shared until one ``pg_locks`` snapshot shows every participant holding it and every marker
   held (a marker gone first: its holder died — let go, back to 3); then hold ``(BARRIER, 1)``
   until every participant holds that, and leave. Nobody leaves before every live participant
   has seen completion, so a marker that vanishes earlier means a death, never a departure: no
   finished bucket is redone while its finisher lives.
5. The orphan scan (``resync``) runs once, after the barrier, by the holder of ``(ORPHANS, 0)``.

The lock session never reconnects: once the server has dropped it (keepalives detect a dead
link in seconds), every database step — the row claim before each irreversible disk step, each
metadata write, the check before each project and after each generation — fails, and the
participant exits 1 naming the projects it gave up. Host name: ``socket.gethostname()``, or
``STORAGE_MIGRATE_HOSTNAME``.
"""
from __future__ import annotations

import os
import socket
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .config import normalize_database_url
from .db import LOCK_TIMEOUT, count_generations, first_line, iter_project_ids
from .errors import UsageError
from .lock import run_lock_parts, take_shared_run_lock
from .orphans import find_orphans
from .report import ProgressFactory, RunReport, Workload
from .storage.layout import StorageLayout
from .storage.opened import open_storage
from .storage.steps import prepare_state_dir
from .workers import run_in_workers

if TYPE_CHECKING:
    from .installation import Installation
    from .migrate import RunOptions

BUCKETS = 64
CLAIM_CLASS = 0x534D_4301       # "SMC" + 1: the tool's own class ids (two-int advisory locks)
DONE_CLASS = 0x534D_4302
BARRIER_CLASS = 0x534D_4303
ORPHANS_CLASS = 0x534D_4304
POLL_SECONDS = 0.2
JOIN_PID_CHECKS = 5
HOSTNAME_VARIABLE = "STORAGE_MIGRATE_HOSTNAME"
COORDINATE_VARIABLE = "STORAGE_MIGRATE_COORDINATE"
DEAD_LINK_MILLISECONDS = 9000
"""How long either end waits on a silent link: keepalives (5 s idle, then 2 probes 2 s apart)
while nothing is in flight, and TCP_USER_TIMEOUT while a statement or its answer is — without it
a participant whose link died under a sent statement waits for TCP's retransmissions (~15 min)."""
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
              "tcp_user_timeout": DEAD_LINK_MILLISECONDS}


class LockSessionLost(Exception):
    """The participant's lock session is gone: stop at once."""


class PoolingProxy(UsageError):
    """The lock connection is not one session: its backend changed between two transactions."""

    def __init__(self, pids: Sequence[int]) -> None:
        super().__init__(f"--coordinate needs a session of its own: pg_backend_pid() changed between two transactions "
                         f"({', '.join(map(str, pids))}), as behind a transaction-pooling proxy (pgbouncer "
                         "pool_mode=transaction); point DATABASE_URL at PostgreSQL itself or a session-pooling port")


def host_name() -> str:
    return os.environ.get(HOSTNAME_VARIABLE) or socket.gethostname()


def bucket_of(project_id: str) -> int:
    return zlib.crc32(project_id.encode("utf-8", "surrogateescape")) % BUCKETS


def require_postgresql(database_url: str) -> None:
    """Exit 2 before anything is opened (not even an SQLite file) unless the URL is PostgreSQL."""
    try:
        backend = sa.make_url(normalize_database_url(database_url)).get_backend_name()
    except sa.exc.ArgumentError:
        return      # a malformed URL: opening the installation names the problem
    if backend != "postgresql":
        raise UsageError(f"--coordinate needs PostgreSQL (the participants meet in its advisory locks); "
                         f"this database is {backend}: run without --coordinate on one host")


@dataclass
class CoordinationStats:
    host: str
    pid: int
    projects: int = 0
    buckets_claimed: int = 0
    buckets_taken_over: int = 0
    waited_seconds: float = 0.0
    gave_up: list[str] = field(default_factory=list)

    def merge(self, other: CoordinationStats) -> None:
        self.projects += other.projects
        self.buckets_claimed += other.buckets_claimed
        self.buckets_taken_over += other.buckets_taken_over
        self.waited_seconds += other.waited_seconds
        self.gave_up.extend(other.gave_up)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "projects": self.projects,
                "buckets_claimed": self.buckets_claimed, "buckets_taken_over": self.buckets_taken_over,
                "waited_seconds": round(self.waited_seconds, 3)}



def coordination_line(coordination: dict[str, Any]) -> str:
    """The text-mode line of a report's ``coordination`` document."""
    return (f"coordination: {coordination['host']} pid {coordination['pid']}: {coordination['projects']} projects, "
            f"{coordination['buckets_claimed']} buckets claimed ({coordination['buckets_taken_over']} taken over), "
            f"waited {coordination['waited_seconds']:.1f} s")


def lock_session_engine(database_url: str, command: str) -> Engine:
    """An engine of exactly one connection — the lock session — that never reconnects: once the
    server has dropped it, every use raises ``LockSessionLost`` instead of opening a session
    that holds none of our locks. Keepalives on both ends detect a dead link in seconds."""
    url = sa.make_url(normalize_database_url(database_url))
    options = (f"-c lock_timeout={LOCK_TIMEOUT} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
               f"-c tcp_keepalives_count=2 -c tcp_user_timeout={DEAD_LINK_MILLISECONDS}")
    connect_args: dict[str, Any] = {
        "application_name": f"{command} --coordinate pid={os.getpid()} host={host_name()}"[:63],
        "connect_timeout": 10, "options": options, **KEEPALIVES,
    }
    engine = sa.create_engine(url, pool_size=1, max_overflow=0, pool_timeout=5, connect_args=connect_args)
    connected: list[bool] = []

    @sa.event.listens_for(engine, "do_connect")
    def connect_once(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        if connected:
            raise LockSessionLost("the lock session was lost; not opening another")
        connected.append(True)

    return engine


class Participant:
    """One participant's view of the protocol, over its lock-session engine."""

    def __init__(self, engine: Engine, command: str, stats: CoordinationStats) -> None:
        self.engine = engine
        self.command = command
        self.stats = stats
        self.backend_pid: int | None = None
        self._mine: set[int] = set()            # done markers this participant holds

    # -- the lock session -----------------------------------------------------------------

    def _scalar(self, sql: str, **parameters: int) -> Any:
        try:
            with self.engine.connect() as connection:
                value = connection.execute(sa.text(sql), parameters).scalar()
                connection.commit()
                return value
        except sa.exc.DBAPIError as error:
            raise LockSessionLost(f"the lock session failed ({first_line(error)})") from None

    def join(self) -> None:
        """Refuse a pooling proxy (exit 2), then take the run lock's key shared (or exit 75)."""
        pids = [self._scalar("SELECT pg_backend_pid()") for _ in range(JOIN_PID_CHECKS)]
        if len(set(pids)) > 1:
            raise PoolingProxy(sorted(set(pids)))
        self.backend_pid = pids[0]
        with self.engine.connect() as connection:
            take_shared_run_lock(connection, self.command)

    def check_alive(self) -> None:
        """The lock session still answers (else ``LockSessionLost``), as the same backend (else
        ``PoolingProxy``: a proxy that let the first transactions through on one backend)."""
        pid = self._scalar("SELECT pg_backend_pid()")
        if pid != self.backend_pid:
            raise PoolingProxy([self.backend_pid or 0, pid])

    def _try(self, function: str, class_id: int, key: int) -> bool:
        return bool(self._scalar(f"SELECT {function}(CAST(:c AS integer), CAST(:k AS integer))", c=class_id, k=key))

    def _unlock(self, class_id: int, key: int, shared: bool = False) -> None:
        function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
        self._try(function, class_id, key)

    def _snapshot(self) -> tuple[dict[int, int], set[int], dict[int, set[int]]]:
        """One ``pg_locks`` snapshot: done markers (bucket → holder pid), participants, and the
        holders of each barrier phase (0: saw every marker; 1: saw everyone at phase 0)."""
        high, low = run_lock_parts()
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(sa.text(
                    "SELECT classid::bigint AS c, objid::bigint AS o, objsubid AS s, pid, mode FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND ((objsubid = 2 AND classid::bigint IN (:done, :barrier)) "
                    "OR (objsubid = 1 AND classid::bigint = :high AND objid::bigint = :low))"),
                    {"done": DONE_CLASS, "barrier": BARRIER_CLASS, "high": high, "low": low}).all()
                connection.commit()
        except sa.exc.DBAPIError as error:
            raise LockSessionLost(f"the lock session failed ({first_line(error)})") from None
        done = {row.o: row.pid for row in rows if row.s == 2 and row.c == DONE_CLASS}
        participants = {row.pid for row in rows if row.s == 1 and row.mode == "ShareLock"}
        barrier: dict[int, set[int]] = {0: set(), 1: set()}
        for row in rows:
            if row.s == 2 and row.c == BARRIER_CLASS and row.o in barrier:
                barrier[row.o].add(row.pid)
        return done, participants, barrier

    # -- the work -------------------------------------------------------------------------

    def buckets(self) -> dict[int, list[str]]:
        """This participant's listing of the projects, by bucket (taken once, like a single run's)."""
        with self.engine.connect() as connection:
            project_ids = iter_project_ids(connection)
        by_bucket: dict[int, list[str]] = {bucket: [] for bucket in range(BUCKETS)}
        for project_id in project_ids:
            by_bucket[bucket_of(project_id)].append(project_id)
        return by_bucket

    def work(self, carry_out: Callable[[Sequence[str]], None], orphan_scan: Callable[[], None] | None = None) -> None:
        """Claim and carry out buckets until every one is done and every participant has seen
        it (the barrier); then, if this one holds the orphan lock, ``orphan_scan``."""
        by_bucket = self.buckets()
        offset = zlib.crc32(f"{self.stats.host}:{os.getpid()}".encode()) % BUCKETS
        order = [(offset + step) % BUCKETS for step in range(BUCKETS)]
        seen: dict[int, int] = {}           # bucket → pid of the done marker seen
        contested: set[int] = set()         # seen claimed by another, or its marker vanished
        scanner = asked_to_scan = False
        while True:
            done, _, _ = self._snapshot()
            for bucket in list(seen):
                if bucket in done:
                    seen[bucket] = done[bucket]
                elif bucket not in self._mine:
                    del seen[bucket]        # its finisher died before everyone saw it: redo
                    contested.add(bucket)
            seen.update({bucket: pid for bucket, pid in done.items() if bucket not in seen})
            pending = [bucket for bucket in order if bucket not in seen]
            if not pending:
                if orphan_scan is not None and not asked_to_scan:
                    # Asked once: the first to arrive holds the lock past the barrier, which every
                    # other participant reaches (and asks at) before it; asking again after the
                    # holder left would scan twice.
                    asked_to_scan = True
                    scanner = self._try("pg_try_advisory_lock", ORPHANS_CLASS, 0)
                if self._at_barrier():
                    break
                continue
            progressed = False
            for bucket in pending:
                if not self._try("pg_try_advisory_lock", CLAIM_CLASS, bucket):
                    contested.add(bucket)
                    continue
                if self._done_by_another(bucket):
                    self._unlock(CLAIM_CLASS, bucket)
                    seen[bucket] = -1
                    continue
                self._carry_out_bucket(bucket, by_bucket[bucket], carry_out, taken_over=bucket in contested)
                seen[bucket] = self.backend_pid or 0
                progressed = True
            if not progressed:
                self._wait()
        if scanner and orphan_scan is not None:
            orphan_scan()

    def _done_by_another(self, bucket: int) -> bool:
        done, _, _ = self._snapshot()
        return bucket in done

    def _carry_out_bucket(self, bucket: int, project_ids: list[str], carry_out: Callable[[Sequence[str]], None],
                          taken_over: bool) -> None:
        self.check_alive()
        try:
            if project_ids:
                carry_out(project_ids)
            self.check_alive()
        except (LockSessionLost, sa.exc.DBAPIError):
            self.stats.gave_up.extend(project_ids)
            raise
        if not self._try("pg_try_advisory_lock", DONE_CLASS, bucket):
            raise LockSessionLost(f"bucket {bucket}'s done marker is held by another participant")
        self._mine.add(bucket)
        self._unlock(CLAIM_CLASS, bucket)
        self.stats.buckets_claimed += 1
        self.stats.buckets_taken_over += int(taken_over)
        self.stats.projects += len(project_ids)

    def _at_barrier(self) -> bool:
        """Phase 0: hold ``(BARRIER, 0)`` until one snapshot shows every participant there and
        every marker held — False (let go) if a marker vanished first: its holder died, there is
        work again. Phase 1: hold ``(BARRIER, 1)`` — completion seen, never going back — until
        every participant holds it; only then may anyone leave (and its markers vanish)."""
        if not self._try("pg_try_advisory_lock_shared", BARRIER_CLASS, 0):
            raise LockSessionLost("the barrier lock could not be taken in shared mode")
        while True:
            done, participants, barrier = self._snapshot()
            if len(done) < BUCKETS:
                self._unlock(BARRIER_CLASS, 0, shared=True)
                return False
            if participants <= barrier[0]:
                break
            self._wait()
        if not self._try("pg_try_advisory_lock_shared", BARRIER_CLASS, 1):
            raise LockSessionLost("the barrier lock could not be taken in shared mode")
        while True:
            _, participants, barrier = self._snapshot()
            if participants <= barrier[1]:
                return True
            self._wait()

    def _wait(self) -> None:
        started = time.monotonic()
        time.sleep(POLL_SECONDS)
        self.stats.waited_seconds += time.monotonic() - started

    def leave(self) -> None:
        try:
            self._scalar("SELECT pg_advisory_unlock_all()")
        except LockSessionLost:
            pass
        self.engine.dispose()


# -- a coordinated run, as ``migrate`` calls it ---------------------------------------------


def carry_out_coordinated(installation: Installation, report: RunReport, options: RunOptions,
                          progress: ProgressFactory | None, workers: int) -> None:
    """This host's part of a coordinated run: one participant, or ``workers`` participants in
    forked processes (each with its own lock session). ``report.coordination`` says what it did."""
    layout, engine = installation.layout, installation.engine
    stats = CoordinationStats(host_name(), os.getpid())
    prepare_state_dir(installation.storage)
    database_url = engine.url.render_as_string(hide_password=False)
    try:
        if workers > 1:
            engine.dispose()
            shares = [(layout, database_url, options, report.command)] * workers
            for share_report, share_stats in run_in_workers(_participate_in_worker, shares, workers):
                report.merge(share_report)
                report.orphans.extend(share_report.orphans)
                stats.merge(share_stats)
        else:
            tick = progress(Workload(count_generations(engine))) if progress else (lambda count: None)
            engine.dispose()
            _participate(layout, database_url, options, report, stats, tick)
    finally:
        report.coordination = stats.to_json()


def _participate_in_worker(share: tuple[StorageLayout, str, RunOptions, str]) -> tuple[RunReport, CoordinationStats]:
    layout, database_url, options, command = share
    report = RunReport(command=command, keep_all=options.keep_all)
    stats = CoordinationStats(host_name(), os.getpid())
    try:
        _participate(layout, database_url, options, report, stats, lambda count: None)
    except KeyboardInterrupt:
        report.interrupted = True
    return report, stats


def _participate(layout: StorageLayout, database_url: str, options: RunOptions, report: RunReport,
                 stats: CoordinationStats, tick: Callable[[int], None]) -> None:
    from .migrate import carry_out_claimed

    command = f"storage-migrate {report.command}"
    engine = lock_session_engine(database_url, command)
    participant = Participant(engine, command, stats)

    def checked_tick(count: int) -> None:
        participant.check_alive()       # after each generation: a lost session stops the next one
        tick(count)

    storage = open_storage(layout)       # each participant its own descriptor of ROOT

    def carry_out(project_ids: Sequence[str]) -> None:
        carry_out_claimed(storage, engine, report, options, project_ids, checked_tick)

    def orphan_scan() -> None:
        report.orphans = find_orphans(storage, engine)

    try:
        participant.join()
        participant.work(carry_out, orphan_scan if options.resync else None)
    except (LockSessionLost, sa.exc.DBAPIError) as error:
        reason = str(error) if isinstance(error, LockSessionLost) else first_line(error)
        gave_up = ", ".join(stats.gave_up) or "none"
        report.error = (f"{command} --coordinate lost its database session ({reason}); it made no further "
                        f"change to the disk; projects given up: {gave_up} — the other participants take them "
                        "over (or rerun)")
    finally:
        participant.leave()
        storage.close()
