"""``storage-migrate watch``: a watchdog observer on ROOT that resyncs a project a few seconds
after the last change inside one of its generation folders.

Memory stays flat however many folders come and go, a kernel queue overflow leads to a resync of
every project (said on stderr), and watch exits 1 (``WatchFailed``) rather than live on deaf.
How: ``docs/design.md``, "Watching"."""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from sqlalchemy.engine import Engine
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from storage_migrator.commands.run import run
from storage_migrator.config import Settings
from storage_migrator.db.reads import project_ids_for_names
from storage_migrator.db.tables import ROWS_PER_STATEMENT
from storage_migrator.engine.installation import open_installation
from storage_migrator.errors import LockHeld, WatchFailed
from storage_migrator.metrics import WatchMetrics
from storage_migrator.report import RunReport
from storage_migrator.storage.layout import ACTIVE_LINK, is_staging_name, is_tool_written, is_utf8_name

POLL_SECONDS = 0.2
OBSERVER_STOP_SECONDS = 10
STATE_DIR_TOUCH_SECONDS = 3600.0
"""How often a living ``watch`` refreshes its state folder's modification time (the
application's ``cleanup_old_files`` removes top-level entries of ROOT older than 30 days)."""
MAX_PENDING_NAMES = 5000        # folders waiting for a resync; past this, resync every project
NAMES_PER_QUERY = ROWS_PER_STATEMENT    # names looked up in one statement
OVERFLOW_REASON = "the kernel's event queue overflowed"
TOO_MANY_REASON = f"more than {MAX_PENDING_NAMES} folders changed before a resync"

# What a resync can care about. Leaving out opens and read-only closes keeps them out of the
# kernel's queue: a resync reading every file of a generation would otherwise queue two events
# per file it reads, and fill the queue by itself.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent, FileModifiedEvent,
    DirModifiedEvent, FileMovedEvent, DirMovedEvent, FileClosedEvent, FileAttribEvent, DirAttribEvent,
    EventsLostEvent,    # the kernel's queue overflowed: watchdog reaches it to on_events_lost only if listed
]


def top_level_name(root: Path, path: str) -> str | None:
    """The name under ROOT an event belongs to, or None for the tool's own files."""
    try:
        parts = PurePath(path).relative_to(root).parts
    except ValueError:
        return None
    if not parts or parts[0].startswith(".") or not is_utf8_name(parts[0]):
        return None                     # the tool's state folder, or a name no row can have
    name = parts[-1]
    if name == ACTIVE_LINK or is_tool_written(name) or is_staging_name(name):
        return None
    return parts[0]


def say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ChangeCollector:
    """Remembers, per top-level name, when it last changed, or that every project must be
    resynced (thread-safe; watchdog calls from its own threads).

    It holds at most ``MAX_PENDING_NAMES`` names, so its memory does not grow with the number of
    folders the application creates while a resync runs: past the cap the names are dropped
    for one resync of everything, which covers them.
    """

    def __init__(self, root: Path, say: Callable[[str], None] = say_on_stderr,
                 on_overflow: Callable[[], None] = lambda: None) -> None:
        self.root = root
        self._say = say
        self.on_overflow = on_overflow
        self._lock = threading.Lock()
        self._last_change: dict[str, float] = {}
        self._everything: tuple[str, float] | None = None    # (why, when it was last asked for)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            name = top_level_name(self.root, os.fsdecode(path)) if path else None
            if name is not None:
                self._note(name)

    def _note(self, name: str) -> None:
        with self._lock:
            if self._everything is not None:
                return                  # the coming resync of every project covers it
            self._last_change[name] = time.monotonic()
            if len(self._last_change) <= MAX_PENDING_NAMES:
                return
        self.resync_everything(TOO_MANY_REASON)

    def resync_everything(self, reason: str) -> None:
        """Ask for one resync of every project, announced once per reason (not once per overflow
        of a burst); the per-name entries it covers are forgotten."""
        with self._lock:
            announce = self._everything is None or self._everything[0] != reason
            self._everything = (reason, time.monotonic())
            self._last_change.clear()
        if announce:
            self._say(f"watch: {reason}; resyncing every project")

    def oldest_pending_age(self) -> float:
        """How long the longest-waiting change has waited since its folder's last event (0 when
        none waits): how far behind watch is."""
        now = time.monotonic()
        with self._lock:
            waiting = list(self._last_change.values())
            if self._everything is not None:
                waiting.append(self._everything[1])
        return now - min(waiting) if waiting else 0.0

    def take_everything(self, debounce_seconds: float) -> str | None:
        """Why every project must be resynced now, once ``debounce_seconds`` have passed since
        it was last asked for (an overflow comes in bursts), or None."""
        with self._lock:
            if self._everything is None or time.monotonic() - self._everything[1] < debounce_seconds:
                return None
            reason, self._everything = self._everything[0], None
            self._last_change.clear()
            return reason

    def take_quiet(self, debounce_seconds: float) -> list[str]:
        """Names that have had no event for ``debounce_seconds``; they are forgotten."""
        now = time.monotonic()
        with self._lock:
            quiet = [name for name, at in self._last_change.items() if now - at >= debounce_seconds]
            for name in quiet:
                del self._last_change[name]
        return quiet

    def put_back(self, names: list[str]) -> None:
        for name in names:
            self._note(name)

    def put_back_everything(self, reason: str) -> None:
        """A resync of everything that could not run (another run holds the lock) is retried
        without being announced again."""
        with self._lock:
            if self._everything is None:
                self._everything = (reason, time.monotonic())
            self._last_change.clear()


class ObserverFeed(FileSystemEventHandler):
    """What one observer reports, handed to the collector until the observer is retired.

    watchdog recovers from an overflow by removing and re-adding every watch; each removal
    queues an event, so with more folders under ROOT than the kernel's queue holds, its
    recovery overflows the queue again, forever. An observer that lost events is therefore
    replaced by a new one (a new inotify instance: adding watches queues nothing) and this
    feed of the old one is cut first, so its last overflows are not taken for new ones."""

    def __init__(self, collector: ChangeCollector) -> None:
        self.collector = collector
        self.retired = False
        self.lost_events = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not self.retired:
            self.collector.on_any_event(event)

    def on_events_lost(self, event: EventsLostEvent) -> None:
        if not self.retired:
            self.lost_events.set()
            self.collector.on_overflow()
            self.collector.resync_everything(OVERFLOW_REASON)


@dataclass
class Watching:
    """The running observer on ROOT and its feed; ``renew`` swaps in a fresh one."""

    collector: ChangeCollector
    root: str
    observer: BaseObserver = field(init=False)
    feed: ObserverFeed = field(init=False)

    def __post_init__(self) -> None:
        self.observer, self.feed = self._started()

    def _started(self) -> tuple[BaseObserver, ObserverFeed]:
        feed = ObserverFeed(self.collector)
        observer = Observer()
        observer.schedule(feed, self.root, recursive=True, event_filter=WATCHED_EVENTS)
        observer.start()
        return observer, feed

    def renew_if_events_were_lost(self) -> None:
        """After an overflow: the new observer watches before the old one stops, so no change
        falls between them (the resync of every project covers the overflow itself)."""
        if not self.feed.lost_events.is_set():
            return
        old_observer, old_feed = self.observer, self.feed
        old_feed.retired = True
        self.observer, self.feed = self._started()
        _stop(old_observer)

    def failure(self) -> str | None:
        """Why the observer no longer delivers events, or None while it does: watchdog ends its
        observer or an emitter thread on an error of its own (its inotify descriptor closed,
        an exception in its thread), and the process would otherwise live on, deaf."""
        if not self.observer.is_alive():
            return "watchdog's observer thread stopped"
        emitters = list(self.observer.emitters)
        if not emitters or not all(emitter.is_alive() for emitter in emitters):
            return "watchdog stopped watching ROOT (its inotify thread ended)"
        return None

    def stop(self) -> None:
        self.feed.retired = True
        _stop(self.observer)


def _stop(observer: BaseObserver) -> None:
    observer.stop()
    observer.join(timeout=OBSERVER_STOP_SECONDS)
    if observer.is_alive():
        say_on_stderr(f"watch: watchdog's observer did not stop within {OBSERVER_STOP_SECONDS} s; left behind")


def quiet_watchdog() -> None:
    """watchdog warns, with a new text each time, whenever the application creates a folder
    faster than watchdog adds watches; Python's warning registry keeps every text it has shown
    (and stderr filled by megabytes). Its overflow warnings are replaced by watch's one line;
    its errors still reach stderr."""
    warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning, module=r"watchdog\.")
    watchdog_logger = logging.getLogger("watchdog")
    if not watchdog_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.ERROR)
        watchdog_logger.addHandler(handler)
        watchdog_logger.propagate = False


def projects_for(engine: Engine, names: Sequence[str]) -> set[str]:
    """The projects of up to ``MAX_PENDING_NAMES`` names, a bounded statement at a time."""
    found: set[str] = set()
    for start in range(0, len(names), NAMES_PER_QUERY):
        found |= project_ids_for_names(engine, names[start:start + NAMES_PER_QUERY])
    return found


def resync_pending(settings: Settings, engine: Engine, collector: ChangeCollector, debounce_seconds: float,
                   on_report: Callable[[RunReport], None], keep_all: bool = False) -> None:
    """One look at what is due: every project after an overflow, else the quiet names'
    projects. A busy lock (another run) postpones the resync instead of failing it."""
    reason = collector.take_everything(debounce_seconds)
    if reason is not None:
        try:
            on_report(run(settings, resync=True, only_projects=None, keep_all=keep_all))
        except LockHeld:
            collector.put_back_everything(reason)
        return
    names = collector.take_quiet(debounce_seconds)
    project_ids = projects_for(engine, names) if names else set()
    if not project_ids:
        return
    try:
        on_report(run(settings, resync=True, only_projects=project_ids, keep_all=keep_all))
    except LockHeld:
        collector.put_back(names)


def watch(
    settings: Settings,
    debounce_seconds: float = 2.0,
    on_report: Callable[[RunReport], None] = lambda report: None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = say_on_stderr,
    keep_all: bool = False,
    metrics: WatchMetrics | None = None,
) -> None:
    """Run until ``stop`` is set (returns), or Ctrl-C / SIGTERM (``KeyboardInterrupt`` propagates
    to the caller, which exits 130). Raises ``WatchFailed`` once watchdog no longer delivers
    events, so a supervisor restarts the process instead of keeping a deaf one."""
    installation = open_installation(settings, "watch")
    storage, engine = installation.storage, installation.engine
    stop = stop or threading.Event()
    quiet_watchdog()
    collector = ChangeCollector(Path(storage.resolved_path), say,
                                on_overflow=metrics.overflows.inc if metrics is not None else lambda: None)
    watching = Watching(collector, storage.resolved_path)
    say(f"watch: watching {storage.resolved_path} (resync {debounce_seconds:g} s after the last change)")
    fresh_until = time.monotonic() + STATE_DIR_TOUCH_SECONDS
    try:
        while not stop.wait(POLL_SECONDS):
            watching.renew_if_events_were_lost()
            failure = watching.failure() or (None if storage.still_in_place() else
                                             f"ROOT {storage.path} was removed, moved or replaced")
            if failure is not None:
                raise WatchFailed(f"watch can no longer see changes: {failure}; restart it "
                                  "(changes made meanwhile are found by the next resync)")
            resync_pending(settings, engine, collector, debounce_seconds, on_report, keep_all)
            if metrics is not None:
                metrics.lag.set(collector.oldest_pending_age())
            if time.monotonic() >= fresh_until:
                storage.keep_state_dir_fresh()
                fresh_until = time.monotonic() + STATE_DIR_TOUCH_SECONDS
    finally:
        watching.stop()
        engine.dispose()
        storage.close()
