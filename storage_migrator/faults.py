"""Test-only step hooks: with STORAGE_MIGRATOR_CRASH_AT=k the process kills itself (SIGKILL, like
``kill -9``) at the k-th step boundary; with STORAGE_MIGRATOR_PAUSE_AT=k it stops itself
(SIGSTOP) there, so a test can break the database connection — or play the application —
before it continues. ``PAUSE_AT=<step name>`` stops at the first boundary of that name. With
STORAGE_MIGRATOR_BUG_AT=<step name> every boundary of that name raises ``InjectedBug``, an
exception no code expects: it stands for a programming error at that point.

Unset (as in production) a checkpoint costs three dictionary lookups.
"""
from __future__ import annotations

import os
import signal

CRASH_AT_VARIABLE = "STORAGE_MIGRATOR_CRASH_AT"
PAUSE_AT_VARIABLE = "STORAGE_MIGRATOR_PAUSE_AT"
BUG_AT_VARIABLE = "STORAGE_MIGRATOR_BUG_AT"
_steps_taken = 0


class InjectedBug(Exception):
    """Raised at the step ``BUG_AT_VARIABLE`` names: what any unexpected exception does there."""


def checkpoint(step: str) -> None:
    """Mark a step boundary: every state the disk and database are in here must be resumable."""
    global _steps_taken
    crash_at = os.environ.get(CRASH_AT_VARIABLE)
    pause_at = os.environ.get(PAUSE_AT_VARIABLE)
    bug_at = os.environ.get(BUG_AT_VARIABLE)
    if not (crash_at or pause_at or bug_at):
        return
    if bug_at == step:
        raise InjectedBug(f"injected at the step {step!r} ({BUG_AT_VARIABLE})")
    _steps_taken += 1
    if crash_at and _steps_taken == int(crash_at):
        os.kill(os.getpid(), signal.SIGKILL)
    if pause_at and (_steps_taken == int(pause_at) if pause_at.isdigit() else step == pause_at):
        os.environ.pop(PAUSE_AT_VARIABLE)           # a named step pauses once
        os.kill(os.getpid(), signal.SIGSTOP)
