"""Worker processes for ``run --workers N``: forked, each handed whole chunks of work, and
each dying with its parent (Linux ``PR_SET_PDEATHSIG``), so a killed run never leaves a
worker writing behind a rerun. The parent keeps the run lock; the workers inherit it."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from storage_migrator.errors import CommandError

PR_SET_PDEATHSIG = 1
Chunk = TypeVar("Chunk")
Result = TypeVar("Result")


class WorkerDied(CommandError):
    """A worker process died (killed, or out of memory)."""


def chunked(items: Sequence[Chunk], workers: int, most: int) -> list[Sequence[Chunk]]:
    """Split ``items``, in order, into chunks that shrink as the work runs out: each takes
    ``1 / (2 * workers)`` of the items still left (at most ``most``, at least one). The first
    chunks are large, so a worker's per-chunk start (its engine, its first queries) is paid a
    few times only; the last are single items, so the worker that finishes first takes the next
    and no worker is left with several items while the others wait at the end of the run."""
    chunks: list[Sequence[Chunk]] = []
    start = 0
    while start < len(items):
        size = max(1, min(most, (len(items) - start) // (2 * workers)))
        chunks.append(items[start : start + size])
        start += size
    return chunks


def run_in_workers(function: Callable[[Chunk], Result], chunks: Sequence[Chunk], workers: int) -> Iterator[Result]:
    """``function`` over ``chunks`` in ``workers`` forked processes; results in chunk order.

    ``function`` must be a module-level function (it is pickled by reference). Raises
    ``WorkerDied`` if a worker is killed. On any error or interrupt, chunks not yet started
    are dropped and running ones finish (every step they take is resumable).
    """
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=die_with_parent)
    try:
        yield from pool.map(function, chunks)
    except BrokenProcessPool:
        raise WorkerDied("a worker process died (killed, or out of memory); what is on disk is consistent — "
                         "rerun the command") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies; a worker whose parent is already
    gone exits at once. Ctrl-C is the parent's to handle: workers ignore SIGINT; SIGTERM (the
    pool's own way to stop a worker) gets its default action back, not the parent's handler."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() == 1:
        os._exit(1)
