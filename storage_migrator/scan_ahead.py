"""Reading ahead within one project: a second process reads and hashes (sha256 and git blob id)
the next generation's legacy folder while this one writes the current generation's manifest and
patch, so a project of many versions keeps two cores busy (workers split by project; one long
project had one). Only the records and ids come back, no file's bytes: the patch reads the few
changed files itself, from the page cache, cheaper than through a pipe.

What comes back is used only if the folder still stats as it did when it was read (one lstat
per file), so a scan read ahead is never staler than one read just before the move.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from .errors import FAILS_ONE_GENERATION
from .storage.opened import Storage
from .storage.steps import fingerprints_or_none
from .storage.tree import FileRecord, TreeSnapshot, scan_tree
from .workers import die_with_parent

ScanResult = tuple[dict[str, FileRecord], dict[str, str]]
"""A scan read ahead: the file records and the blob ids."""


@dataclass
class ReadAheadCount:
    """How the scans asked of ``take`` went (what the tests look at)."""

    used: int = 0
    stale: int = 0
    missed: int = 0


class ScanAhead:
    """One forked process that scans, on request, one folder at a time (``start``), and hands the
    result back (``take``). It inherits the opened ROOT's descriptor, so it reads exactly the
    tree this process would, never through a link; it dies with this process (a killed run
    leaves no reader behind) and writes nothing. A dead or failing reader only costs speed:
    ``take`` returns None and the caller scans the folder itself."""

    def __init__(self, storage: Storage) -> None:
        context = multiprocessing.get_context("fork")
        self._storage = storage
        self._connection, reader_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(storage, reader_end, self._connection), daemon=True,
                                        name="storage-migrate read-ahead")
        self._process.start()
        reader_end.close()
        self._pending: Path | None = None
        self._broken = False
        self.count = ReadAheadCount()

    def __enter__(self) -> ScanAhead:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def start(self, folder: Path) -> None:
        """Begin scanning ``folder`` (as ``scan_tree(storage, folder, blob_ids=True)``, no bytes
        kept); a scan begun earlier and not taken is dropped."""
        if self._broken:
            return
        self._drop_pending()
        try:
            self._connection.send(os.fspath(folder))
        except OSError:
            self._broken = True
            return
        self._pending = folder

    def ready(self, timeout: float) -> bool:
        """Whether the scan begun by ``start`` has finished (waits up to ``timeout`` seconds)."""
        return self._pending is not None and self._connection.poll(timeout)

    def take(self, folder: Path) -> TreeSnapshot | None:
        """The scan of ``folder`` begun by ``start``, if there was one, it succeeded, and every file
        below ``folder`` still has the size and mtime it was read with (no file added or gone);
        else None — then the caller scans ``folder`` itself, and sees its own errors."""
        if self._pending != folder:
            self._drop_pending()
            self.count.missed += 1
            return None
        result = self._receive()
        if result is None:
            self.count.missed += 1
            return None
        snapshot = TreeSnapshot(storage=self._storage, root=folder, files=result[0], blob_ids=result[1])
        if fingerprints_or_none(self._storage, folder) != snapshot.fingerprints():
            self.count.stale += 1          # the application wrote there since it was read
            return None
        self.count.used += 1
        return snapshot

    def close(self) -> None:
        self._connection.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _receive(self) -> ScanResult | None:
        self._pending = None
        try:
            outcome: tuple[str, ScanResult | None] = self._connection.recv()
        except (EOFError, OSError):
            self._broken = True
            return None
        return outcome[1]

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._receive()


def _serve(storage: Storage, connection: Connection, parent_end: Connection) -> None:
    """The reader's loop: one request (a folder), one answer ("ok", (files, blob ids))
    or ("failed", None), until the parent closes its end of the pipe (the copy of that end this
    fork inherited is closed first, or the end would never come)."""
    parent_end.close()
    die_with_parent()
    while True:
        try:
            folder = connection.recv()
        except (EOFError, OSError):
            return
        try:
            snapshot = scan_tree(storage, Path(folder), blob_ids=True)
            answer: tuple[str, ScanResult | None] = ("ok", (snapshot.files, snapshot.blob_ids))
        except FAILS_ONE_GENERATION:
            answer = ("failed", None)
        try:
            connection.send(answer)
        except OSError:
            return
