"""One run at a time (exit 75 naming the holder), and a database that goes away mid-run: the run
reports and exits 1, the disk stays consistent, and a later run completes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.db.connect import create_database_engine
from storage_migrator.engine.lock import RunLock
from storage_migrator.faults import PAUSE_AT_VARIABLE
from storage_migrator.storage.handle import open_storage
from storage_migrator.storage.layout import StorageLayout
from tests.support.sandbox import Sandbox, build_installation, run_cli, wait_until_stopped


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


@pytest.mark.parametrize("command", ["run", "resync", "rollback"])
def test_second_run_exits_75_naming_the_holder(installation: Sandbox, command: str) -> None:
    engine = create_database_engine(installation.database_url, command="storage-migrate run")
    storage = open_storage(StorageLayout(installation.root, "./storage/projects"))
    with storage, RunLock(storage, engine, "storage-migrate run"):
        started = time.monotonic()
        result = run_cli(installation, command)
        elapsed = time.monotonic() - started
    engine.dispose()
    assert result.returncode == 75, result.stderr
    assert f"pid {os.getpid()}" in result.stderr and "storage-migrate run" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30, "the second run must give up at once, not wait"


@pytest.mark.postgres
def test_advisory_lock_is_shared_across_storage_roots(postgres_url: str, tmp_path: Path) -> None:
    installation = build_installation(postgres_url, tmp_path / "projects")
    other_root = tmp_path / "other-root"
    other_root.mkdir()
    engine = create_database_engine(postgres_url, command="storage-migrate run")
    with open_storage(StorageLayout(other_root, "./x")) as storage, RunLock(storage, engine, "storage-migrate run"):
        result = run_cli(installation, "run")
    engine.dispose()
    assert result.returncode == 75
    assert "advisory lock" in result.stderr and f"pid={os.getpid()}" in result.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("pause_at", [3, 12])
def test_database_lost_mid_run(postgres_url: str, tmp_path: Path, pause_at: int) -> None:
    installation = build_installation(postgres_url, tmp_path / "projects")
    database = sa.make_url(postgres_url).database
    admin = sa.create_engine(sa.make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    environment = {**installation.cli_environment(), PAUSE_AT_VARIABLE: str(pause_at)}
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "--json", "run", "--workers", "1"], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_stopped(process)
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            connection.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": database})
        process.send_signal(signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    document = json.loads(stdout)
    assert document["failed"] > 0 or document["error"]
    rerun = run_cli(installation, "--json", "run")
    assert rerun.returncode == 0, rerun.stderr
    assert run_cli(installation, "verify").returncode == 0
    assert json.loads(run_cli(installation, "--json", "run").stdout)["migrated"] == 0


@pytest.mark.parametrize("command", [("db", "upgrade"), ("db", "downgrade", "e011ab9dd223"), ("verify",)],
                         ids=["db upgrade", "db downgrade", "verify"])
def test_schema_changes_and_verify_wait_for_no_run_exit_75(database_url: str, tmp_path: Path,
                                                          command: tuple[str, ...]) -> None:
    """A schema change and a run never overlap, on SQLite too (the run lock's file): `db
    upgrade`/`downgrade` beside a running `run` exit 75 naming it. `verify` then would report
    the run's unfinished work as problems: it exits 75 too, naming the run."""
    installation = build_installation(database_url, tmp_path / "projects")
    environment = {**installation.cli_environment(), PAUSE_AT_VARIABLE: "planned"}
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "run", "--workers", "1"], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_stopped(process)
        blocked = run_cli(installation, *command)
        process.send_signal(signal.SIGCONT)
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert blocked.returncode == 75, blocked.stderr
    assert "storage-migrate run" in blocked.stderr and "Traceback" not in blocked.stderr
    assert process.returncode == 0, "the run was not disturbed"
    assert run_cli(installation, *command).returncode == 0, "free again once the run is over"
