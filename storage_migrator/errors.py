"""Errors meant for people, each carrying the exit code the command ends with.

The library raises these; only ``cli.py`` knows Click and turns a ``CommandError`` into one
line on stderr and its exit code. ``GenerationError`` is different: it fails one generation
and the run goes on.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY_PROBLEMS = 3
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130


class GenerationError(Exception):
    """One generation cannot be handled now; the message says what and what to do."""


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


class LockHeld(CommandError):
    """Another run holds the lock (exit 75): cron can simply try again next time."""

    exit_code = EXIT_LOCKED
