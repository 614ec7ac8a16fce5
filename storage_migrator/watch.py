"""``storage-migrate watch``: a watchdog observer on ROOT that resyncs a project a few seconds
after the last change inside one of its generation folders.

Events are reduced to the top-level name under ROOT (a project id, or a generation id in the
legacy layout) and debounced; the tool's own writes (manifests, patches, the ``active`` link,
its state folder) are ignored so a resync does not wake the watcher again.
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePath

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .config import Settings
from .db import project_ids_for_names
from .errors import LockHeld
from .installation import open_installation
from .layout import ACTIVE_LINK, is_tool_written, is_utf8_name
from .migrate import migrate
from .report import RunReport

POLL_SECONDS = 0.2


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




class ChangeCollector(FileSystemEventHandler):
    """Remembers, per top-level name, when it last changed (thread-safe; watchdog calls from its
    own thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._last_change: dict[str, float] = {}

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            name = top_level_name(self.root, str(path)) if path else None
            if name is not None:
                with self._lock:
                    self._last_change[name] = time.monotonic()

    def take_quiet(self, debounce_seconds: float) -> list[str]:
        """Names that have had no event for ``debounce_seconds``; they are forgotten."""
        now = time.monotonic()
        with self._lock:
            quiet = [name for name, at in self._last_change.items() if now - at >= debounce_seconds]
            for name in quiet:
                del self._last_change[name]
        return quiet

    def put_back(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._last_change.setdefault(name, time.monotonic())


def watch(
    settings: Settings,
    debounce_seconds: float = 2.0,
    on_report: Callable[[RunReport], None] = lambda report: None,
    stop: threading.Event | None = None,
) -> None:
    """Run until ``stop`` is set, Ctrl-C or SIGTERM. A busy lock (another run) postpones the
    resync instead of failing it."""
    installation = open_installation(settings, "watch")
    layout, engine = installation.layout, installation.engine
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    collector = ChangeCollector(layout.root.resolve())
    observer = Observer()
    observer.schedule(collector, str(layout.root.resolve()), recursive=True)
    observer.start()
    try:
        while not stop.wait(POLL_SECONDS):
            names = collector.take_quiet(debounce_seconds)
            if not names:
                continue
            project_ids = project_ids_for_names(engine, names)
            if not project_ids:
                continue
            try:
                on_report(migrate(settings, resync=True, only_projects=project_ids, keep_all=False))
            except LockHeld:
                collector.put_back(names)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=10)
        engine.dispose()
