"""Starting the real command and stopping it where a test needs it: at a pause point (the
process stops itself with SIGSTOP at a named step, the test acts, then lets it go on), or again
until it is done after a kill."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from storage_migrator.faults import PAUSE_AT_VARIABLE
from tests.support.sandbox import Sandbox, wait_until_stopped

Cli = Callable[..., subprocess.CompletedProcess[str]]


def ctrl_c_as_at_a_terminal() -> None:
    """``preexec_fn`` for a command a test interrupts with SIGINT: Python turns SIGINT into
    KeyboardInterrupt only if the process did not inherit it ignored, and a test runner started
    in the background by a non-interactive shell (``make test &``, CI) passes it on ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_paused_at(installation: Sandbox, step: str, act: Callable[[], None],
                  command: str = "run", workers: str = "1",
                  while_paused: Callable[[int], None] | None = None) -> tuple[int, dict]:
    """Start `command`, wait until it stops itself at ``step``, ``act`` (after ``while_paused``,
    given the stopped process's id, has looked at it), let it go on."""
    environment = {**installation.cli_environment(), PAUSE_AT_VARIABLE: step}
    arguments = [sys.executable, "-m", "storage_migrator", "--json", command, "--workers", workers]
    process = subprocess.Popen(arguments, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_stopped(process)
        if while_paused is not None:
            while_paused(process.pid)
        act()
        process.send_signal(signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in stderr, stderr
    return process.returncode, json.loads(stdout)


def rerun_until_done(cli: Cli, installation: Sandbox, *arguments: str) -> None:
    """Rerun; a 75 (a dying worker of the killed run still holds the lock for an instant) is retried."""
    for _ in range(50):
        rerun = cli(installation, *arguments)
        if rerun.returncode != 75:
            break
        time.sleep(0.1)
    assert rerun.returncode == 0, rerun.stderr
