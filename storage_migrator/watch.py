"""``storage-migrate watch``: a watchdog observer on ROOT that resyncs a project a few seconds
after the last change inside one of its generation folders.

Events are reduced to the top-level name under ROOT (a project id, or a generation id in the
legacy layout) and debounced; the tool's own writes (manifests, patches, the ``active`` link,
its state folder) are ignored so a resync does not wake the watcher again.

Two things watch must survive, both met by the application creating folders by the thousand:

* Memory stays flat. Nothing is kept per folder once it has been resynced or deleted: the names
  waiting for a resync are capped (past the cap, one resync of every project replaces them), and
  watchdog's per-watch warnings, whose text held every watched path and which Python's warning
  registry keeps forever, are silenced and made cheap.
* No change is silently lost. When the kernel's event queue overflows, the events in it are gone;
  watchdog only re-adds its watches, so watch resyncs every project and says so on stderr.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy.engine import Engine
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
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
from watchdog.observers.api import BaseObserver, EventQueue, ObservedWatch

from .config import Settings
from .db import ROWS_PER_STATEMENT, project_ids_for_names
from .errors import LockHeld
from .installation import open_installation
from .migrate import migrate
from .report import RunReport
from .storage.layout import ACTIVE_LINK, is_tool_written, is_utf8_name
from .storage.opened import Storage

POLL_SECONDS = 0.2
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
    if name == ACTIVE_LINK or is_tool_written(name) or (name.startswith(".") and name.endswith(".partial")):
        return None
    return parts[0]


def say_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ChangeCollector(FileSystemEventHandler):
    """Remembers, per top-level name, when it last changed, or that every project must be
    resynced (thread-safe; watchdog calls from its own threads).

    It holds at most ``MAX_PENDING_NAMES`` names, so its memory does not grow with the number of
    folders the application creates while a resync runs: past the cap the names are dropped
    for one resync of everything, which covers them.
    """

    def __init__(self, root: Path, say: Callable[[str], None] = say_on_stderr) -> None:
        self.root = root
        self._say = say
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


if sys.platform.startswith("linux"):
    from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyFD

    @dataclass(repr=False)
    class ReportingWatchGroup(InotifyWatchGroup):
        """watchdog's recursive watch group, which after an overflow only re-adds its watches:
        this one reconciles them without overflowing again and calls ``on_overflow``. Its repr
        has a constant size, because watchdog puts it into a RuntimeWarning for each duplicate
        watch: with every watched path in it, each warning cost time and memory in proportion
        to the folders under ROOT."""

        on_overflow: Callable[[], None] = field(default=lambda: None)
        is_folder: Callable[[str], bool] = field(default=lambda path: False)   # the opened ROOT's test

        def __repr__(self) -> str:
            return f"<watch group {os.fsdecode(self.path)!r}>"

        def on_queue_overflow(self) -> None:
            """watchdog's own reconciling removes every watch and adds them again; each removal
            queues an event, so with more folders under ROOT than the queue holds it overflows
            again, forever. Here the watches in place stay: folders that appeared while events
            were lost get one, folders gone lose theirs."""
            try:
                with self._lock:
                    if self.is_active:
                        self._move_event_grouper.discard_pending_events()
                        self._reconcile_watches()
            finally:
                self.on_overflow()

        def _reconcile_watches(self) -> None:
            if not self.is_recursive:
                return
            gone = [descriptor for descriptor, path in self._active_callbacks_by_watch.items()
                    if not self.is_folder(os.fsdecode(path))]
            self._remove_callbacks(gone)
            try:
                self._add_all_callbacks(self.path)
            except OSError as error:
                say_on_stderr(f"watch: cannot watch {os.fsdecode(self.path)} again: {error.strerror}")

    class ReportingEmitter(InotifyEmitter):
        """watchdog's inotify emitter with a ``ReportingWatchGroup`` (an ``on_overflow`` option)."""

        def __init__(self, event_queue: EventQueue, watch: ObservedWatch, **options: Any) -> None:
            self._on_overflow: Callable[[], None] = options.pop("on_overflow")
            self._is_folder: Callable[[str], bool] = options.pop("is_folder")
            super().__init__(event_queue, watch, **options)

        def on_thread_start(self) -> None:
            self._inotify = ReportingWatchGroup(
                self._inotify_fd, os.fsencode(self.watch.path), is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(), follow_symlink=self.watch.follow_symlink,
                on_overflow=self._on_overflow, is_folder=self._is_folder)

    class ReportingObserver(BaseObserver):
        """watchdog's inotify observer, with ``ReportingEmitter``s."""

        def __init__(self, on_overflow: Callable[[], None], is_folder: Callable[[str], bool]) -> None:
            self._descriptor = InotifyFD()
            self._descriptor.start()
            super().__init__(ReportingEmitter, inotify_fd=self._descriptor, on_overflow=on_overflow,
                             is_folder=is_folder)

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self._descriptor.stop()
            self._descriptor.join()


def reporting_observer(storage: Storage, on_overflow: Callable[[], None]) -> BaseObserver:
    """An observer that calls ``on_overflow`` after the kernel dropped events (inotify);
    watchdog's default observer on other platforms. Watched folders are looked at through
    ``storage`` (never through a link)."""
    if sys.platform.startswith("linux"):
        return ReportingObserver(on_overflow, lambda path: storage.is_folder(Path(path)))
    return Observer()


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
                   on_report: Callable[[RunReport], None]) -> None:
    """One look at what is due: every project after an overflow, else the quiet names'
    projects. A busy lock (another run) postpones the resync instead of failing it."""
    reason = collector.take_everything(debounce_seconds)
    if reason is not None:
        try:
            on_report(migrate(settings, resync=True, only_projects=None, keep_all=False))
        except LockHeld:
            collector.put_back_everything(reason)
        return
    names = collector.take_quiet(debounce_seconds)
    project_ids = projects_for(engine, names) if names else set()
    if not project_ids:
        return
    try:
        on_report(migrate(settings, resync=True, only_projects=project_ids, keep_all=False))
    except LockHeld:
        collector.put_back(names)


def watch(
    settings: Settings,
    debounce_seconds: float = 2.0,
    on_report: Callable[[RunReport], None] = lambda report: None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = say_on_stderr,
) -> None:
    """Run until ``stop`` is set, Ctrl-C or SIGTERM."""
    installation = open_installation(settings, "watch")
    storage, engine = installation.storage, installation.engine
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    quiet_watchdog()
    collector = ChangeCollector(Path(storage.resolved_path), say)
    observer = reporting_observer(storage, lambda: collector.resync_everything(OVERFLOW_REASON))
    observer.schedule(collector, storage.resolved_path, recursive=True, event_filter=WATCHED_EVENTS)
    observer.start()
    try:
        while not stop.wait(POLL_SECONDS):
            resync_pending(settings, engine, collector, debounce_seconds, on_report)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=10)
        engine.dispose()
        storage.close()
