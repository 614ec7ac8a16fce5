"""Test-only crash points: with STORAGE_MIGRATOR_CRASH_AT=k the process kills itself (SIGKILL,
like ``kill -9``) at the k-th step boundary, so a test can interrupt a real run anywhere.

Unset (as in production) a checkpoint costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

CRASH_AT_VARIABLE = "STORAGE_MIGRATOR_CRASH_AT"
_steps_taken = 0


def checkpoint(step: str) -> None:
    """Mark a step boundary: every state the disk and database are in here must be resumable."""
    global _steps_taken
    crash_at = os.environ.get(CRASH_AT_VARIABLE)
    if not crash_at:
        return
    _steps_taken += 1
    if _steps_taken == int(crash_at):
        os.kill(os.getpid(), signal.SIGKILL)
