"""The files in contrib/ work as shipped: every systemd unit passes ``systemd-analyze verify``
(with ExecStart pointed at this checkout's command, the one path an operator adjusts), and the
cron file has the shape /etc/cron.d needs."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storage_migrator.db.connect import create_database_engine
from storage_migrator.engine.lock import RunLock
from storage_migrator.storage.handle import open_storage
from storage_migrator.storage.layout import StorageLayout
from tests.support.sandbox import Sandbox, build_installation, run_cli

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
SHIPPED_COMMAND = "/srv/codebegen/.venv/bin/storage-migrate"
UNITS = sorted(path.name for path in CONTRIB.iterdir() if path.suffix in (".service", ".timer"))


def test_contrib_ships_the_resync_timer_and_the_watch_service() -> None:
    assert UNITS == ["storage-migrate-resync.service", "storage-migrate-resync.timer",
                     "storage-migrate-watch.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    command = Path(sys.executable).parent / "storage-migrate"
    for name in UNITS:           # a timer is verified with the service it starts beside it
        (tmp_path / name).write_text((CONTRIB / name).read_text().replace(SHIPPED_COMMAND, str(command)))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def test_units_treat_a_held_lock_and_a_stop_as_success_and_restart_a_failed_watch() -> None:
    resync = (CONTRIB / "storage-migrate-resync.service").read_text()
    watch = (CONTRIB / "storage-migrate-watch.service").read_text()
    assert re.search(r"^SuccessExitStatus=75 130$", resync, re.MULTILINE)
    assert re.search(r"^SuccessExitStatus=130$", watch, re.MULTILINE)
    assert re.search(r"^Restart=on-failure$", watch, re.MULTILINE)
    assert re.search(rf"^ExecStart={re.escape(SHIPPED_COMMAND)} watch$", watch, re.MULTILINE)


def test_the_cron_file_has_the_shape_cron_d_needs() -> None:
    files = [path for path in CONTRIB.iterdir() if "cron" in path.name]
    assert [path.name for path in files] == ["storage-migrate-cron"]
    assert "." not in files[0].name, "cron ignores /etc/cron.d files whose name holds a dot"
    text = files[0].read_text()
    assert "install -m 0644 contrib/storage-migrate-cron /etc/cron.d/storage-migrate" in text
    jobs = [line for line in text.splitlines()
            if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    minute, hour, day, month, weekday, user, command = fields
    assert (minute, hour, day, month, weekday) == ("*/10", "*", "*", "*", "*")
    assert re.fullmatch(r"[a-z_][a-z0-9_-]*", user), "the sixth field of a cron.d line is the user"
    assert command.endswith(f"{SHIPPED_COMMAND} -q resync")


def test_quiet_resync_beside_a_run_exits_75_and_prints_nothing(sqlite_url: str, tmp_path: Path) -> None:
    """What cron sees on a tick while a long run holds the lock: nothing to mail."""
    installation: Sandbox = build_installation(sqlite_url, tmp_path / "projects")
    engine = create_database_engine(installation.database_url)
    with open_storage(StorageLayout(installation.root, "./storage/projects")) as storage, \
            RunLock(storage, engine, "storage-migrate run"):
        quiet = run_cli(installation, "-q", "resync")
        loud = run_cli(installation, "resync")
    engine.dispose()
    assert quiet.returncode == loud.returncode == 75
    assert quiet.stdout == quiet.stderr == ""
    assert "another run holds" in loud.stderr
