"""Errors meant for people, each carrying the exit code the command ends with.

The library raises these; only the ``cli`` package knows Click and turns a ``CommandError`` into one
line on stderr and its exit code. ``GenerationError`` is different: it fails one generation
and the run goes on. Any exception not listed here (nor an ``OSError`` or a database error) is
a bug: the command stops and the CLI asks for a report (exit ``EXIT_INTERNAL_ERROR``).
"""
from __future__ import annotations

import errno
import os
from collections.abc import Sequence

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY_PROBLEMS = 3
EXIT_INTERNAL_ERROR = 70
"""A bug in the tool (sysexits' EX_SOFTWARE): an exception it does not expect ended the command."""
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130


def printable(path: str | bytes) -> str:
    """``path`` as one printable line: undecodable bytes and control characters are escaped."""
    if isinstance(path, str):
        try:
            raw = os.fsencode(path)
        except UnicodeEncodeError:
            raw = path.encode("utf-8", "backslashreplace")
    else:
        raw = path
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class UnsafePath(OSError):
    """A path below ROOT that this tool refuses to touch: the message is one line naming the path
    and the reason ("is a symlink", "is not a regular file", "is too large", "leaves ROOT", ...)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{printable(path)}: {reason}")
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{printable(self.path)}: {self.reason}"

    def __reduce__(self) -> tuple[type[UnsafePath], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


class GenerationError(Exception):
    """One generation cannot be handled now; the message says what and what to do."""


class InvalidInput(GenerationError):
    """Something the tool read is not what it must be (a row's value, a manifest, a name): the
    generation it belongs to fails, or the input counts as absent — never the command."""


class UnsafePathComponent(InvalidInput):
    """An id or a path from a row or a manifest that cannot be used below ROOT: it would escape
    or confuse the layout."""


class MalformedManifest(InvalidInput):
    """A ``manifest.json`` whose content is not of the tool's shape: read as "no manifest" (it is
    rewritten), or by ``verify`` reported as a problem."""


_HINTS = {
    errno.ENOSPC: "the disk is full; free space and rerun",
    errno.EDQUOT: "the disk quota is exhausted; free space and rerun",
    errno.EACCES: "permission denied; fix the permissions and rerun",
    errno.EPERM: "operation not permitted; fix the permissions and rerun",
    errno.EROFS: "the filesystem is read-only",
}


class FilesystemError(GenerationError):
    """A filesystem step failed for one generation: ``verb`` (what the tool was doing: "move",
    "write", "create"...) on ``paths``, and ``reason`` — the one wording of an ``OSError``
    for an operator, with what to do about the common causes."""

    def __init__(self, reason: str, verb: str, paths: Sequence[object]) -> None:
        self.reason = reason
        self.verb = verb
        self.paths = tuple(paths)
        super().__init__(f"cannot {verb} {' to '.join(str(path) for path in self.paths)}: {reason}")

    @classmethod
    def of(cls, error: OSError, verb: str, *paths: object) -> FilesystemError:
        return cls(describe_reason(error), verb, paths or (error.filename,))


def describe_reason(error: OSError) -> str:
    """Why an ``OSError`` happened, in words an operator acts on."""
    return _HINTS.get(error.errno or 0, error.strerror or (os.strerror(error.errno) if error.errno else str(error)))


FAILS_ONE_GENERATION: tuple[type[Exception], ...] = (GenerationError, OSError)
"""What fails one generation (or one project's step) and lets the run go on: a ``GenerationError``
(``InvalidInput`` included: what the tool read is not what it must be) or an ``OSError`` from a
step not yet wrapped. A reader of untrusted text converts its parser's errors (``ValueError``,
``UnicodeDecodeError``, ``RecursionError``) into ``InvalidInput`` where it parses, so none of
them is caught here. Anything else ends the command: a database error is reported as one (by
the command's report or the CLI's one line), and any other exception is a bug (exit
``EXIT_INTERNAL_ERROR``)."""


def failure_line(error: BaseException) -> str:
    """The one-line reason a report gives for one of ``FAILS_ONE_GENERATION``: a
    ``GenerationError`` as it says, an ``OSError`` as path and ``describe_reason``, anything
    else with its type; always one printable line (names may hold newlines or stray bytes)."""
    if isinstance(error, GenerationError):
        text = str(error)
    elif isinstance(error, OSError):
        text = f"{error.filename}: {describe_reason(error)}" if error.filename else describe_reason(error)
    else:
        text = f"{type(error).__name__}: {error}"
    lines = text.splitlines()
    return printable(lines[0]) if lines else type(error).__name__


class CommandError(Exception):
    """Ends the whole command: a one-line message for the operator and an exit code."""

    exit_code = EXIT_USAGE

    @property
    def message(self) -> str:
        return str(self)


class UsageError(CommandError):
    """Configuration, precondition or argument error (exit 2)."""


class DatabaseUnavailable(UsageError):
    """The database cannot be reached: the message names it without its password."""


class SchemaMissing(UsageError):
    """The tables lack the columns this tool works with; the message gives the command that adds them."""


class WatchFailed(CommandError):
    """``watch`` can no longer see changes (exit 1): a supervisor should restart it."""

    exit_code = EXIT_SOME_FAILED


class LockHeld(CommandError):
    """Another run holds the lock (exit 75): cron can simply try again next time."""

    exit_code = EXIT_LOCKED
