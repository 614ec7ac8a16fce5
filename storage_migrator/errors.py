"""Errors meant for people, each with the exit code SPEC §6 gives it.

``GenerationError`` fails one generation and the run goes on; the ``click.ClickException``
subclasses end the command with a one-line message and their exit code, never a traceback.
"""
from __future__ import annotations

import click

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY_PROBLEMS = 3
EXIT_LOCKED = 75


class GenerationError(Exception):
    """One generation cannot be handled now; the message says what and what to do."""


class UsageError(click.ClickException):
    """Configuration, precondition or argument error (exit 2)."""

    exit_code = EXIT_USAGE


class DatabaseUnavailable(UsageError):
    """The database cannot be reached: the message names it without its password."""


class DatabaseNotAtHead(UsageError):
    """The schema is not at the revision this tool writes; the message gives the fix."""


class LockHeld(click.ClickException):
    """Another run holds the lock (exit 75): cron can simply try again next time."""

    exit_code = EXIT_LOCKED
