"""The progress bar as a person sees it, on a real terminal (a pty): it counts bytes toward the
total the run will move, with a rate and an ETA, and Ctrl-C leaves no half-drawn bar behind."""
from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from storage_migrator.demo import SampleSize
from storage_migrator.faults import PAUSE_AT_VARIABLE
from tests.support.processes import ctrl_c_as_at_a_terminal
from tests.support.sandbox import build_installation, wait_until_stopped

CLEAR_LINE = b"\r\x1b[K"


def read_until(master: int, wanted: bytes, seen: bytearray, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return wanted in seen
            if not chunk:
                break
            seen.extend(chunk)
    return wanted in seen


def test_the_bar_counts_bytes_and_ctrl_c_clears_it(sqlite_url: str, tmp_path: Path) -> None:
    """Ctrl-C comes while the run is stopped at its 40th step (a few claim batches in), so the
    run is still going when it is interrupted however fast the machine is."""
    installation = build_installation(sqlite_url, tmp_path / "projects",
                                      SampleSize(projects=6, generations_per_project=12, files_per_generation=60))
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "run", "--workers", "1"],
                               env={**installation.cli_environment(), PAUSE_AT_VARIABLE: "40"},
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal,
                               start_new_session=True, preexec_fn=ctrl_c_as_at_a_terminal)
    os.close(terminal)
    seen = bytearray()
    try:
        wait_until_stopped(process)
        assert read_until(master, b"B/s", seen, 10), seen.decode(errors="replace")
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGCONT)
        stdout, _ = process.communicate(timeout=120)
        read_until(master, b"interrupted", seen, 10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert process.returncode == 130, text
    bar_lines = [line for line in text.split("\r") if line.startswith("migrating:")]
    assert bar_lines and all(len(line.rstrip()) < 100 for line in bar_lines), "room for the terminal's ^C echo"
    assert "/" in bar_lines[-1] and "<" in bar_lines[-1], bar_lines[-1]        # done/total [elapsed<remaining]
    assert CLEAR_LINE in seen[seen.rindex(b"migrating:"):], "the bar is cleared after the interrupt"
    assert "interrupted: stopped after the generation at hand" in text
