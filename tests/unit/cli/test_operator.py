"""An operator's first hour, through the real command: it says what it acts on, refuses what would
surprise (a forgotten DATABASE_URL, a driver it does not have, an empty ROOT option, a reversed
diff) in one line with exit 2 and without creating anything, and takes its global options
before or after the command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sandbox import Sandbox, build_installation, error_lines, run_cli

CLEAN_ENVIRONMENT = {key: value for key, value in os.environ.items()
                     if key not in ("DATABASE_URL", "STORAGE_ROOT", "FILE_STORAGE_PATH", "STORAGE_PATH_PREFIX")}


def storage_migrate(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storage_migrator", *arguments], cwd=cwd,
                          env={**CLEAN_ENVIRONMENT, **environment}, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture
def installation(sqlite_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(sqlite_url, tmp_path / "projects")


def test_every_command_names_its_database_and_root_unless_quiet(tmp_path: Path) -> None:
    url = "postgresql://operator:s3cret@127.0.0.1:1/codebegen"
    result = storage_migrate("verify", cwd=tmp_path, DATABASE_URL=url, STORAGE_ROOT="srv/projects")
    first = result.stderr.splitlines()[0]
    assert first == (f"storage-migrate: database postgresql+psycopg://operator:***@127.0.0.1:1/codebegen, "
                     f"ROOT {tmp_path / 'srv' / 'projects'}"), result.stderr
    assert "s3cret" not in result.stderr
    quiet = storage_migrate("-q", "verify", cwd=tmp_path, DATABASE_URL=url, STORAGE_ROOT="srv/projects")
    assert "storage-migrate: database" not in quiet.stderr


def test_global_options_are_taken_after_the_command_too(installation: Sandbox) -> None:
    before = run_cli(installation, "--json", "-v", "--dry-run")
    after = run_cli(installation, "run", "--dry-run", "--json", "-v")
    assert before.returncode == after.returncode == 0, after.stderr
    planned = [(line["id"], line["action"]) for line in json.loads(before.stdout)["generations"]]
    assert planned and planned == [(line["id"], line["action"]) for line in json.loads(after.stdout)["generations"]]
    elsewhere = installation.root.parent / "elsewhere"
    elsewhere.mkdir()
    moved_root = run_cli(installation, "verify", "--storage-root", str(elsewhere))
    assert f"ROOT {elsewhere}" in moved_root.stderr, "the option after the command wins over STORAGE_ROOT"


def test_quiet_and_verbose_exclude_each_other(installation: Sandbox) -> None:
    assert_one_line_error(run_cli(installation, "-q", "run", "-v"), "-q/--quiet", "-v/--verbose")


def test_help_names_each_environment_variable_and_the_exit_codes(tmp_path: Path) -> None:
    shown = " ".join(storage_migrate("--help", cwd=tmp_path).stdout.split())
    for variable in ("DATABASE_URL", "STORAGE_ROOT", "FILE_STORAGE_PATH", "STORAGE_PATH_PREFIX"):
        assert variable in shown, variable
    for code in ("0 all done", "1 some generations failed", "2 usage", "3 verify", "75 another run", "130 interrupted"):
        assert code in shown, code


@pytest.mark.parametrize("command", [("db", "upgrade"), ("run",), ("verify",), ("db", "current")])
def test_a_forgotten_database_url_creates_no_sqlite_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "storage" / "projects").mkdir(parents=True)
    result = storage_migrate(*command, cwd=tmp_path)
    assert_one_line_error(result, "storage/codebegen.db does not exist", "DATABASE_URL")
    assert not (tmp_path / "storage" / "codebegen.db").exists()


def test_a_driver_the_tool_does_not_have_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "projects").mkdir()
    result = storage_migrate("verify", cwd=tmp_path, DATABASE_URL="postgresql+pg8000://u:pw@127.0.0.1/x",
                             STORAGE_ROOT="projects")
    assert_one_line_error(result, "pg8000", "postgresql://")


def test_demo_data_refuses_a_file_as_root_and_creates_no_database(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    result = storage_migrate("demo-data", cwd=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'demo.db'}",
                             STORAGE_ROOT="not-a-folder")
    assert_one_line_error(result, "not-a-folder is not a folder")
    assert not (tmp_path / "demo.db").exists()


def test_an_empty_storage_root_option_is_refused(installation: Sandbox) -> None:
    assert_one_line_error(run_cli(installation, "--storage-root", "", "verify"), "--storage-root", "is empty")


def test_diff_refuses_versions_in_reverse(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    result = run_cli(installation, "diff", installation.sample.demo_project_id, "--from", "3", "--to", "2")
    assert_one_line_error(result, "--from 3 is above --to 2")
    assert result.stdout == ""


def test_db_upgrade_sql_is_refused_on_sqlite_before_printing_anything(installation: Sandbox) -> None:
    result = run_cli(installation, "db", "upgrade", "e011ab9dd223:39e7f45c72f1", "--sql")
    assert_one_line_error(result, "--sql", "SQLite")
    assert result.stdout == ""


def test_text_summary_counts_unchanged_generations_apart_from_skipped(installation: Sandbox) -> None:
    first = json.loads(run_cli(installation, "--json", "run").stdout)
    again = run_cli(installation, "run")
    summary = again.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"run: migrated 0, unchanged {first['migrated']}, skipped "), summary


def test_watch_refuses_a_negative_debounce(installation: Sandbox) -> None:
    assert_one_line_error(run_cli(installation, "watch", "--debounce", "-1"), "--debounce")
