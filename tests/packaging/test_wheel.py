"""An operator's install: the built wheel in a fresh virtualenv, run in an empty folder with no
checkout around — it carries the migrations and runs the whole job."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result


def test_the_wheel_installs_and_does_the_job_without_a_checkout(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DATABASE_URL", "STORAGE_ROOT", "FILE_STORAGE_PATH", "STORAGE_PATH_PREFIX",
                                  "PYTHONPATH")}
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(wheels), str(REPOSITORY)], tmp_path, environment)
    wheel = next(wheels.glob("storage_migrator-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, environment)
    run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], tmp_path, environment)
    work = tmp_path / "empty"
    work.mkdir()
    tool = str(venv / "bin" / "storage-migrate")
    assert run([tool, "--version"], work, environment).stdout.strip() == f"storage-migrate {version('storage-migrator')}"
    run([tool, "demo-data"], work, environment)
    run([tool, "db", "upgrade"], work, environment)
    assert "39e7f45c72f1" in run([tool, "db", "current"], work, environment).stdout
    offline = {**environment, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/offline"}   # never connected
    assert "CREATE INDEX" in run([tool, "db", "upgrade", "e011ab9dd223:39e7f45c72f1", "--sql"], work, offline).stdout
    run([tool, "--dry-run"], work, environment)
    run([tool, "run"], work, environment)
    run([tool, "verify"], work, environment)
    # The package carries the scripts; nothing named `alembic` shadows the library.
    site = run([str(venv / "bin" / "python"), "-c", "import alembic, storage_migrator.db.revisions as s; "
                "print(alembic.__file__); print(s.script_location())"], work, environment).stdout.split()
    assert "site-packages/alembic/" in site[0] and site[1].endswith("storage_migrator/migrations")
