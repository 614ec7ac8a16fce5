"""Reading ahead within one project: a second process takes half of the stat walks of a
project's plan (``summarize_trees``) — what a resync and a dry run of one project are made of.

A caller must know: every answer is one made during the call that asked for it (nothing is
kept between calls); every wait is bounded by ``answer_timeout()``, after which the reader is
killed and its work done here. Why and how: ``docs/design.md``, "Using both cores"."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from storage_migrator.engine.workers import die_with_parent
from storage_migrator.errors import FAILS_ONE_GENERATION
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.manifest import TreeSummary, summarize_tree

SummaryOrError = TreeSummary | Exception
"""A folder's summary, or what walking it raised (one of ``FAILS_ONE_GENERATION``)."""
ANSWER_TIMEOUT_SECONDS = 60.0
"""How long this process waits for one answer of the reader (or to hand it one request) before
it ends the reader and does the work itself: far beyond any one folder's read on a sane disk,
so it only ever ends a reader that is stopped or stuck."""
ANSWER_TIMEOUT_VARIABLE = "STORAGE_MIGRATOR_READ_AHEAD_TIMEOUT"
"""Overrides ``ANSWER_TIMEOUT_SECONDS`` (seconds; a test sets a short one)."""
REAP_SECONDS = 5.0
"""How long an ended reader is waited for (a process in uninterruptible I/O dies later)."""
_LENGTH = struct.Struct("!Q")


def answer_timeout() -> float:
    """``ANSWER_TIMEOUT_SECONDS``, or the positive number of seconds in ``ANSWER_TIMEOUT_VARIABLE``."""
    try:
        value = float(os.environ.get(ANSWER_TIMEOUT_VARIABLE, ""))
    except ValueError:
        return ANSWER_TIMEOUT_SECONDS
    return value if value > 0 else ANSWER_TIMEOUT_SECONDS


class _NoAnswer(Exception):
    """The reader did not answer (or take a request) before the deadline."""


@dataclass
class ReadAheadCount:
    """What the reader did (what the tests look at)."""

    summarized: int = 0
    """Folders whose stat walk the reader made (``take_summaries``)."""


class ScanAhead:
    """One forked process that walks, on request, folders for their summaries
    (``start_summaries``), and hands them back (``take_summaries``). It inherits the opened
    ROOT's descriptor, so it walks exactly the tree this process would, never through a link; it
    dies with this process (a killed run leaves no reader behind) and writes nothing. A dead or
    failing reader only costs speed: the caller walks what it did not answer itself."""

    def __init__(self, storage: Storage) -> None:
        context = multiprocessing.get_context("fork")
        self._storage = storage
        self._socket, reader_end = socket.socketpair()
        self._process = context.Process(target=_serve, args=(storage, reader_end, self._socket), daemon=True,
                                        name="storage-migrate read-ahead")
        self._process.start()
        reader_end.close()
        self._socket.setblocking(False)             # every wait here goes through _wait, with a deadline
        self._timeout = answer_timeout()
        self._pending: tuple[str, ...] | None = None        # the folders asked for and not answered yet
        self._broken = False
        self.count = ReadAheadCount()

    def __enter__(self) -> ScanAhead:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def start_summaries(self, folders: Sequence[Path]) -> bool:
        """Begin ``summarize_tree`` of each of ``folders``; False if the reader is gone."""
        return self._send(tuple(os.fspath(folder) for folder in folders))

    def take_summaries(self, folders: Sequence[Path]) -> dict[Path, TreeSummary]:
        """The summaries begun by ``start_summaries(folders)`` of those the reader could walk;
        the caller walks the rest itself (and sees its own errors)."""
        if self._pending != tuple(os.fspath(folder) for folder in folders):
            self._drop_pending()
            return {}
        result: dict[str, TreeSummary] | None = self._receive()
        self.count.summarized += len(result or {})
        return {Path(folder): summary for folder, summary in (result or {}).items()}

    def _send(self, request: tuple[str, ...]) -> bool:
        if self._broken:
            return False
        self._drop_pending()
        if self._broken:
            return False
        try:
            _send_frame(self._socket, request, time.monotonic() + self._timeout)
        except _NoAnswer:
            self._end_reader("took no request")
            return False
        except OSError:
            self._broken = True
            return False
        self._pending = request
        return True

    def close(self) -> None:
        self._socket.close()
        self._process.join(timeout=REAP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=REAP_SECONDS)

    def _receive(self) -> Any:
        """The answer to the pending request (None: the reader is gone, or it gave no answer
        within the timeout — then it is ended and the caller does the work)."""
        self._pending = None
        try:
            answer: Any = _receive_frame(self._socket, time.monotonic() + self._timeout)
        except _NoAnswer:
            self._end_reader("gave no answer")
            return None
        except (EOFError, OSError, pickle.UnpicklingError):
            self._broken = True
            return None
        return answer

    def _end_reader(self, what: str) -> None:
        """A reader that is stopped or stuck: SIGKILL, reaped, said on one stderr line; from now
        on this process reads every folder itself."""
        self._broken = True
        print(f"storage-migrate: the read-ahead helper (pid {self._process.pid}) {what} within "
              f"{self._timeout:g} s; it was ended and its work is done here", file=sys.stderr, flush=True)
        self._process.kill()
        self._process.join(timeout=REAP_SECONDS)

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._receive()


def summarize_trees(storage: Storage, folders: Sequence[Path], ahead: ScanAhead | None) -> dict[Path, SummaryOrError]:
    """``summarize_tree`` of every folder, or the error walking it raised, in the order given; with a
    reader, it walks every other folder while this process walks the rest (a project's
    consecutive versions are about the same size).

    What this returns is what one walk per folder, in turn, would have seen: each folder is
    walked once, by one process, during this call, and a walk the reader could not finish is
    made again here. Nothing is cached beyond the call."""
    theirs: list[Path] = []
    if ahead is not None and len(folders) > 1 and ahead.start_summaries(folders[1::2]):
        theirs = list(folders[1::2])
    found: dict[Path, SummaryOrError] = {}
    for folder in folders[0::2] if theirs else folders:
        found[folder] = _summary_or_error(storage, folder)
    walked = ahead.take_summaries(theirs) if ahead is not None and theirs else {}
    for folder in theirs:
        found[folder] = walked[folder] if folder in walked else _summary_or_error(storage, folder)
    return {folder: found[folder] for folder in folders}


def _summary_or_error(storage: Storage, folder: Path) -> SummaryOrError:
    try:
        return summarize_tree(storage, folder)
    except FAILS_ONE_GENERATION as error:
        return error


def _serve(storage: Storage, connection: socket.socket, parent_end: socket.socket) -> None:
    """The reader's loop: one request (the folders to walk), one answer ({folder: TreeSummary}
    of those it could walk), until the parent closes its end (the copy of that end
    this fork inherited is closed first, or the end would never come). Its own waits are the
    parent's to bound (it ends the reader)."""
    parent_end.close()
    die_with_parent()
    while True:
        try:
            folders: tuple[str, ...] = _receive_frame(connection, None)
        except (EOFError, OSError):
            return
        try:
            _send_frame(connection, _walked(storage, folders), None)
        except OSError:
            return


def _walked(storage: Storage, folders: tuple[str, ...]) -> dict[str, TreeSummary]:
    """The summaries of the folders the reader could walk (this process walks the rest)."""
    summaries = {folder: _summary_or_error(storage, Path(folder)) for folder in folders}
    return {folder: summary for folder, summary in summaries.items() if isinstance(summary, TreeSummary)}


# -- framing: one pickled message per frame, every wait with a deadline (None: the reader's own) --


def _send_frame(channel: socket.socket, message: object, deadline: float | None) -> None:
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(payload)) + payload)
    while view:
        if deadline is not None and not _writable(channel, deadline):
            raise _NoAnswer
        try:
            view = view[channel.send(view):]
        except BlockingIOError:
            continue


def _receive_frame(channel: socket.socket, deadline: float | None) -> Any:
    (length,) = _LENGTH.unpack(_receive_exactly(channel, _LENGTH.size, deadline))
    return pickle.loads(_receive_exactly(channel, length, deadline))  # noqa: S301 - our own fork's answer


def _receive_exactly(channel: socket.socket, size: int, deadline: float | None) -> bytes:
    received = bytearray()
    while len(received) < size:
        if deadline is not None and not _readable(channel, deadline):
            raise _NoAnswer
        try:
            chunk = channel.recv(min(size - len(received), 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise EOFError("the read-ahead helper is gone")
        received += chunk
    return bytes(received)


def _readable(channel: socket.socket, deadline: float) -> bool:
    return _ready(channel, select.POLLIN | select.POLLHUP | select.POLLERR, deadline)


def _writable(channel: socket.socket, deadline: float) -> bool:
    return _ready(channel, select.POLLOUT | select.POLLHUP | select.POLLERR, deadline)


def _ready(channel: socket.socket, events: int, deadline: float) -> bool:
    """Whether ``channel`` is ready for ``events`` before ``deadline`` (a monotonic time)."""
    poller = select.poll()
    poller.register(channel, events)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if poller.poll(remaining * 1000):
            return True
