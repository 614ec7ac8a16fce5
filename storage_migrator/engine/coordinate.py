"""``run --coordinate`` / ``resync --coordinate``: participants on any number of hosts (and each
of ``--workers N``) share one ROOT and one PostgreSQL database and split the work by buckets of
projects, through advisory locks on one dedicated connection per participant (no table).

A caller must know: every statement of a participant runs on its lock session, which never
reconnects; every write below ROOT is preceded by ``Participant.fence``; a participant that lost
its session or its lease exits 1 naming the projects it gave up. The protocol (claims, the
two-phase barrier, leases, fencing): ``docs/design.md``, "Several hosts"."""
from __future__ import annotations

import os
import socket
import sys
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage_migrator.config import normalize_database_url
from storage_migrator.db.connect import first_line
from storage_migrator.db.reads import count_generations, iter_project_ids
from storage_migrator.engine.installation import Installation
from storage_migrator.engine.lease import (
    BEATS_PER_LEASE,
    HEARTBEAT_NAME,
    Heartbeat,
    LockSessionLost,
    single_session_engine,
)
from storage_migrator.engine.lock import run_lock_parts, take_shared_run_lock
from storage_migrator.engine.orphans import find_orphans
from storage_migrator.engine.projects import RunOptions, carry_out_claimed
from storage_migrator.engine.workers import run_in_workers
from storage_migrator.errors import UsageError
from storage_migrator.faults import checkpoint
from storage_migrator.report import ProgressFactory, RunReport, Workload
from storage_migrator.storage.handle import open_storage
from storage_migrator.storage.layout import StorageLayout
from storage_migrator.storage.steps import prepare_state_dir

BUCKETS = 64
CLAIM_CLASS = 0x534D_4301       # "SMC" + 1: the tool's own class ids (two-int advisory locks)
DONE_CLASS = 0x534D_4302
BARRIER_CLASS = 0x534D_4303
ORPHANS_CLASS = 0x534D_4304
POLL_SECONDS = 0.2
FIRST_POLL_SECONDS = 0.01
JOIN_PID_CHECKS = 5
HOSTNAME_VARIABLE = "STORAGE_MIGRATE_HOSTNAME"
COORDINATE_VARIABLE = "STORAGE_MIGRATE_COORDINATE"
LEASE_VARIABLE = "STORAGE_MIGRATE_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0
WAIT_NOTICE_SECONDS = 10.0
FENCE_FRESH_SECONDS = 0.05
"""A statement the lock session completed this recently (monotonic time, which runs on while the
process is stopped) proves it alive and holding its claims: the fence asks the server only when
the lock session has been quiet for longer."""
INSUFFICIENT_PRIVILEGE = "42501"


class PoolingProxy(UsageError):
    """The lock connection is not one session: its backend changed between two transactions."""

    def __init__(self, pids: Sequence[int]) -> None:
        super().__init__(f"--coordinate needs a session of its own: pg_backend_pid() changed between two transactions "
                         f"({', '.join(map(str, pids))}), as behind a transaction-pooling proxy (pgbouncer "
                         "pool_mode=transaction); point DATABASE_URL at PostgreSQL itself or a session-pooling port")


def poll_interval(waited: float) -> float:
    """How long a wait sleeps next, ``waited`` seconds into it: a quarter of that, at least
    ``FIRST_POLL_SECONDS``, at most ``POLL_SECONDS``. A wait that ends soon is seen soon (the
    barrier after the last bucket: each participant there waits only for the others' last
    poll), and one that lasts costs the server one query every ``POLL_SECONDS``."""
    return min(POLL_SECONDS, max(FIRST_POLL_SECONDS, waited / 4))


def host_name() -> str:
    return os.environ.get(HOSTNAME_VARIABLE) or socket.gethostname()


def bucket_of(project_id: str) -> int:
    return zlib.crc32(project_id.encode("utf-8", "surrogateescape")) % BUCKETS


def require_postgresql(database_url: str) -> None:
    """Exit 2 before anything is opened (not even an SQLite file) unless the URL is PostgreSQL."""
    try:
        backend = sa.make_url(normalize_database_url(database_url)).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):   # ValueError: a port that is not a number
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
    return single_session_engine(database_url, f"{command} --coordinate pid={os.getpid()} host={host_name()}")


class Participant:
    """One participant's view of the protocol, over its lock-session engine."""

    def __init__(self, engine: Engine, command: str, stats: CoordinationStats, database_url: str,
                 lease: float = DEFAULT_LEASE_SECONDS) -> None:
        self.engine = engine
        self.command = command
        self.stats = stats
        self.database_url = database_url
        self.lease = lease
        self.backend_pid: int | None = None
        self.heartbeat: Heartbeat | None = None
        self._mine: set[int] = set()            # done markers this participant holds
        self._bucket: int | None = None         # the bucket being carried out (its claim held)
        self._lease_checked = 0.0
        self._waiting_since: float | None = None
        self._noticed = 0.0
        self._proven = 0.0                      # when the lock session last completed a statement
        sa.event.listen(engine, "after_cursor_execute", self._statement_completed)

    def _statement_completed(self, *arguments: Any) -> None:
        self._proven = time.monotonic()

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
        self.heartbeat = Heartbeat(self.database_url, self.backend_pid, self.lease)
        self.heartbeat.start()
        with self.engine.connect() as connection:
            take_shared_run_lock(connection, self.command)

    def fence(self) -> None:
        """Before a write below ROOT: raise ``LockSessionLost`` unless the lease holds
        (``Heartbeat.check``, no round trip) and the server shows the lock session still holding
        the claim of the bucket at hand (``Heartbeat.confirm``, one round trip on the heartbeat
        session, so it may be called inside a row claim) — unless the lock session itself
        completed a statement within ``FENCE_FRESH_SECONDS`` (the row claim just before a move,
        the ``storage_path`` just written before a manifest). Database writes need no fence: they
        run on the lock session itself, and a claim is let go only after its bucket's last batch."""
        if self.heartbeat is None:
            raise LockSessionLost("the participant has not joined")
        self.heartbeat.check()
        if self._bucket is not None and time.monotonic() - self._proven > FENCE_FRESH_SECONDS:
            self.heartbeat.confirm(CLAIM_CLASS, self._bucket)

    def _try(self, function: str, class_id: int, key: int) -> bool:
        return bool(self._scalar(f"SELECT {function}(CAST(:c AS integer), CAST(:k AS integer))", c=class_id, k=key))

    def _unlock(self, class_id: int, key: int, shared: bool = False) -> None:
        function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
        self._try(function, class_id, key)

    def _snapshot(self) -> tuple[dict[int, int], set[int], dict[int, set[int]]]:
        """One ``pg_locks`` snapshot: done markers (bucket → holder pid), participants, and the
        holders of each barrier phase (0: saw every marker; 1: saw everyone at phase 0)."""
        high, low = run_lock_parts()
        rows = self._rows(
            "SELECT classid::bigint AS c, objid::bigint AS o, objsubid AS s, pid, mode FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((objsubid = 2 AND classid::bigint IN (:done, :barrier)) "
            "OR (objsubid = 1 AND classid::bigint = :high AND objid::bigint = :low))",
            done=DONE_CLASS, barrier=BARRIER_CLASS, high=high, low=low)
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
            if progressed:
                self._waiting_since = None
            else:
                # every pending bucket was tried in this pass and is claimed by another participant
                checkpoint("waiting-for-claims")
                self._wait(partial(self._claims_of, [bucket for bucket in pending if bucket not in seen]))
        if scanner and orphan_scan is not None:
            orphan_scan()

    def _done_by_another(self, bucket: int) -> bool:
        done, _, _ = self._snapshot()
        return bucket in done

    def _carry_out_bucket(self, bucket: int, project_ids: list[str], carry_out: Callable[[Sequence[str]], None],
                          taken_over: bool) -> None:
        self._bucket = bucket
        try:
            self.fence()
            if project_ids:
                carry_out(project_ids)
            self.fence()
        except (LockSessionLost, sa.exc.DBAPIError):
            self.stats.gave_up.extend(project_ids)
            raise
        finally:
            self._bucket = None
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
            self._wait(partial(self._laggards, "see every bucket done", participants - barrier[0]))
        if not self._try("pg_try_advisory_lock_shared", BARRIER_CLASS, 1):
            raise LockSessionLost("the barrier lock could not be taken in shared mode")
        while True:
            _, participants, barrier = self._snapshot()
            if participants <= barrier[1]:
                self._waiting_since = None
                return True
            self._wait(partial(self._laggards, "see that all have seen every bucket done", participants - barrier[1]))

    def _wait(self, waiting_for: Callable[[], str]) -> None:
        """One poll interval of a wait. Every ``lease / BEATS_PER_LEASE`` the participants whose
        heartbeat is older than the lease are ended (so a stopped one holds nobody up for longer);
        every ``WAIT_NOTICE_SECONDS`` of waiting, stderr says for what (``waiting_for()``)."""
        started = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = self._noticed = started
        if started - self._lease_checked >= self.lease / BEATS_PER_LEASE:
            self._lease_checked = started
            self._end_lapsed()
        if started - self._noticed >= WAIT_NOTICE_SECONDS:
            self._noticed = started
            self._say(f"waiting {started - self._waiting_since:.0f} s for {waiting_for()}")
        time.sleep(poll_interval(started - self._waiting_since))
        self.stats.waited_seconds += time.monotonic() - started

    def _say(self, text: str) -> None:
        print(f"{self.command} --coordinate: {text}", file=sys.stderr, flush=True)

    def _rows(self, sql: str, **parameters: Any) -> list[Any]:
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(sa.text(sql), parameters).all()
                connection.commit()
                return list(rows)
        except sa.exc.DBAPIError as error:
            raise LockSessionLost(f"the lock session failed ({first_line(error)})") from None

    def _end_lapsed(self) -> None:
        """End every other participant whose last renewal (its heartbeat session's
        ``state_change``; without one, its lock session's start) is older than the lease:
        ``pg_terminate_backend`` of its lock and heartbeat sessions, judged and ended in one
        statement. Its claims and markers vanish with its lock session: ``work`` takes them over.
        Sessions of another role, whose times the server hides, are never judged."""
        high, low = run_lock_parts()
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(sa.text(
                    "WITH participants AS (SELECT l.pid, a.application_name AS name, coalesce((SELECT max(h.state_change) "
                    "FROM pg_stat_activity h WHERE h.application_name = :hb || l.pid::text), a.backend_start) AS renewed "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.objsubid = 1 AND l.mode = 'ShareLock' AND l.classid::bigint = :high AND l.objid::bigint = :low "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND l.pid <> pg_backend_pid() AND a.backend_start IS NOT NULL), "
                    "lapsed AS (SELECT pid, name, extract(epoch FROM clock_timestamp() - renewed)::float8 AS age "
                    "FROM participants WHERE renewed < clock_timestamp() - make_interval(secs => :lease)) "
                    "SELECT lapsed.pid, lapsed.name, lapsed.age, (SELECT count(*) FILTER (WHERE pg_terminate_backend(s.pid)) "
                    "FROM pg_stat_activity s WHERE s.pid = lapsed.pid OR s.application_name = :hb || lapsed.pid::text) "
                    "AS ended FROM lapsed"), {"hb": HEARTBEAT_NAME, "high": high, "low": low,
                                          "lease": float(self.lease)}).all()
                connection.commit()
        except sa.exc.DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise LockSessionLost(f"the lock session failed ({first_line(error)})") from None
            self._say(f"cannot end a participant whose heartbeat is older than the lease ({first_line(error)}): "
                      "run every participant as the same database role (or grant pg_signal_backend)")
            return
        for row in rows:
            self._say(f"ended {row.name} (backend {row.pid}): its heartbeat is {row.age:.0f} s old, longer than "
                      f"the lease ({self.lease:g} s); its buckets are taken over")

    def _claims_of(self, buckets: Sequence[int]) -> str:
        """Who holds the claims of ``buckets``, for a notice."""
        rows = self._rows(
            "SELECT objid::bigint AS bucket, pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 2 AND classid::bigint = :c AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())", c=CLAIM_CLASS)
        holders: dict[int, list[int]] = {}
        for row in rows:
            if row.bucket in buckets:
                holders.setdefault(row.pid, []).append(row.bucket)
        if not holders:
            return f"bucket(s) {', '.join(map(str, sorted(buckets)))} (their claims are being let go)"
        names = self._named(holders)
        return "; ".join(f"bucket(s) {', '.join(map(str, sorted(held)))} claimed by {names[pid]}"
                         for pid, held in sorted(holders.items()))

    def _laggards(self, step: str, pids: set[int]) -> str:
        """The participants a barrier phase waits for, for a notice."""
        names = self._named(pids)
        return f"every participant to {step}; not yet: {', '.join(names[pid] for pid in sorted(pids))}"

    def _named(self, pids: Collection[int]) -> dict[int, str]:
        """Each backend pid as its participant's ``application_name``, backend and heartbeat age."""
        rows = self._rows(
            "SELECT a.pid, a.application_name AS name, extract(epoch FROM clock_timestamp() - (SELECT max(h.state_change) "
            "FROM pg_stat_activity h WHERE h.application_name = :hb || a.pid::text))::float8 AS age "
            "FROM pg_stat_activity a WHERE a.pid = ANY(:pids)", hb=HEARTBEAT_NAME, pids=list(pids))
        found = {row.pid: f"{row.name} (backend {row.pid}, heartbeat "
                          f"{'unseen' if row.age is None else f'{row.age:.0f} s ago'})" for row in rows}
        return {pid: found.get(pid, f"backend {pid} (gone)") for pid in pids}

    def leave(self) -> None:
        try:
            self._scalar("SELECT pg_advisory_unlock_all()")
        except LockSessionLost:
            pass
        if self.heartbeat is not None:
            self.heartbeat.stop()       # after the run lock: never a participant without a heartbeat
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
    command = f"storage-migrate {report.command}"
    engine = lock_session_engine(database_url, command)
    participant = Participant(engine, command, stats, database_url, options.lease_seconds)
    storage = open_storage(layout)       # each participant its own descriptor of ROOT

    def carry_out(project_ids: Sequence[str]) -> None:
        carry_out_claimed(storage, engine, report, options, project_ids, tick, participant.fence)

    def orphan_scan() -> None:
        report.orphans = find_orphans(storage, engine)

    try:
        participant.join()
        participant.work(carry_out, orphan_scan if options.resync else None)
    except (LockSessionLost, sa.exc.DBAPIError) as error:
        reason = str(error) if isinstance(error, LockSessionLost) else first_line(error)
        gave_up = ", ".join(stats.gave_up) or "none"
        report.error = (f"{command} --coordinate lost its database session or its claim ({reason}); it made no "
                        f"further change to the disk or the database; projects given up: {gave_up} — the other "
                        "participants take them over (or rerun)")
    finally:
        participant.leave()
        storage.close()
