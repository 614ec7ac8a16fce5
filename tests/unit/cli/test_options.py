"""The command line itself, in its own process: ``--version``, ``demo-data`` refusing sizes the
generator cannot honour, and database paths spelled the way the application spells them
whatever spelling of the prefix the operator gave."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.sandbox import PATH_PREFIX, Sandbox, build_installation, run_cli

CLEAN_ENVIRONMENT = {key: value for key, value in os.environ.items()
                     if key not in ("DATABASE_URL", "STORAGE_ROOT", "FILE_STORAGE_PATH", "STORAGE_PATH_PREFIX")}


def storage_migrate(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storage_migrator", *arguments], cwd=cwd, env=CLEAN_ENVIRONMENT,
                          capture_output=True, text=True, timeout=300)


def test_version_prints_the_installed_distributions_version(tmp_path: Path) -> None:
    result = storage_migrate("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"storage-migrate {version('storage-migrator')}"


@pytest.mark.parametrize("launch", [
    "from storage_migrator.cli.main import console_script; console_script()",   # the installed command's entry
    "import runpy; runpy.run_module('storage_migrator', run_name='__main__')",   # python -m storage_migrator
])
def test_the_command_process_freezes_what_its_modules_left_and_collects_young_objects_less_often(
        tmp_path: Path, launch: str) -> None:
    from importlib.metadata import entry_points

    from storage_migrator.cli.main import YOUNG_COLLECTION_THRESHOLD

    script = entry_points(group="console_scripts")["storage-migrate"]
    assert script.value == "storage_migrator.cli.main:console_script", "the installed command skips the set-up"
    report = ("import atexit, gc, sys; sys.argv = ['storage-migrate', '--version']; "
              f"atexit.register(lambda: print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)); {launch}")
    result = subprocess.run([sys.executable, "-c", report], cwd=tmp_path, env=CLEAN_ENVIRONMENT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{YOUNG_COLLECTION_THRESHOLD} True", result.stdout


@pytest.mark.parametrize(("option", "minimum"), [("--projects", 5), ("--generations", 1), ("--files", 1)])
def test_demo_data_takes_its_minimum_and_refuses_one_less_in_one_line(tmp_path: Path, option: str,
                                                                      minimum: int) -> None:
    refused = storage_migrate("demo-data", option, str(minimum - 1), cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    errors = refused.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and f"'{option}'" in errors[0] and f"use {minimum} or more" in errors[0], refused.stderr
    assert not (tmp_path / "storage").exists(), "a refused size creates nothing"
    taken = storage_migrate("demo-data", "--projects", "5", "--generations", "1", "--files", "1", option, str(minimum),
                            cwd=tmp_path)
    assert taken.returncode == 0, taken.stdout + taken.stderr


@pytest.mark.parametrize("option", ["--projects", "--generations", "--files"])
def test_demo_data_refuses_a_negative_size_without_a_traceback(tmp_path: Path, option: str) -> None:
    result = storage_migrate("demo-data", option, "-3", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"Invalid value for '{option}': -3" in result.stderr


def migrated_paths(installation: Sandbox) -> list[tuple[str, int, str, str, str | None]]:
    engine = installation.engine()
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT project_id, version, id, storage_path, diff_from_previous FROM generations "
            "WHERE storage_path LIKE '%/generations/%' ORDER BY project_id, version")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("arguments", [(), ("--path-prefix", "./storage/projects/")],
                         ids=["STORAGE_PATH_PREFIX", "--path-prefix"])
def test_a_dot_slash_prefix_is_written_the_way_the_application_spells_it(sqlite_url: str, tmp_path: Path,
                                                                         arguments: tuple[str, ...]) -> None:
    assert PATH_PREFIX == "./storage/projects"          # what run_cli puts in STORAGE_PATH_PREFIX
    installation = build_installation(sqlite_url, tmp_path / "projects")
    result = run_cli(installation, *arguments, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = migrated_paths(installation)
    assert rows and any(diff is not None for *_, diff in rows)
    for project_id, generation_version, generation_id, storage_path, diff in rows:
        assert storage_path == f"storage/projects/{project_id}/generations/v{generation_version}__{generation_id}"
        assert diff is None or (diff.startswith(f"{storage_path}/diff_from_v") and diff.endswith(".patch")), diff
    verify = run_cli(installation, *arguments, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
