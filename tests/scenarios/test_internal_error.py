"""A bug in the tool (an exception it does not expect) at a step of a real `run`: the command
stops with exit 70 and one line asking for a report (the traceback only with -v), never
"this generation failed" and on with the run; what was done stays consistent, so a rerun
without the bug ends where an uninterrupted run does."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage_migrator.demo import SampleSize
from storage_migrator.errors import EXIT_INTERNAL_ERROR
from storage_migrator.faults import BUG_AT_VARIABLE
from tests.support.sandbox import Sandbox, build_installation, end_state, error_lines, run_cli, sqlite_copy

TINY = SampleSize(projects=5, generations_per_project=2, files_per_generation=4)
INTERNAL_ERROR = "storage-migrate: internal error: InjectedBug: injected at the step"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    folder = tmp_path_factory.mktemp("template")
    return build_installation(f"sqlite:///{folder / 'codebegen.db'}", folder / "projects", TINY)


@pytest.fixture(scope="module")
def reference(template: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """The end state of an uninterrupted run."""
    installation = sqlite_copy(template, tmp_path_factory.mktemp("reference") / "x")
    result = run_cli(installation, "run")
    assert result.returncode == 0, result.stderr
    return end_state(installation)


def run_with_bug(installation: Sandbox, step: str, *arguments: str) -> tuple[int, str, str]:
    result = run_cli(installation, *arguments, extra_environment={BUG_AT_VARIABLE: step})
    return result.returncode, result.stdout, result.stderr


ONE_PROCESS = ("run", "--workers", "1")


@pytest.mark.parametrize(("step", "arguments"), [
    ("folder-moved", ONE_PROCESS),              # moved, row not yet pointed at the new place
    ("patch-written", ONE_PROCESS),             # a generation half recorded, earlier ones in the batch
    ("active-link", ONE_PROCESS),               # a project's generations all pending in the batch
    ("before-database-write", ONE_PROCESS),     # in the batch writer itself
    ("folder-moved", ("run", "--workers", "2")),    # raised in a worker process, re-raised here
], ids=["folder-moved", "patch-written", "active-link", "before-database-write", "in-a-worker"])
def test_a_bug_stops_the_run_with_one_line_and_a_rerun_finishes(
        template: Sandbox, reference: tuple[dict, dict], tmp_path: Path, step: str, arguments: tuple[str, ...]) -> None:
    installation = sqlite_copy(template, tmp_path / "x")
    code, stdout, stderr = run_with_bug(installation, step, *arguments)
    assert code == EXIT_INTERNAL_ERROR, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(INTERNAL_ERROR), stderr
    assert "please report" in lines[0] and "-v" in lines[0]
    assert "Traceback" not in stderr and stdout == "", "nothing reports the run as done"
    rerun = run_cli(installation, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert end_state(installation) == reference
    assert run_cli(installation, "verify").returncode == 0


def test_with_verbose_the_traceback_comes_before_the_line(template: Sandbox, tmp_path: Path) -> None:
    installation = sqlite_copy(template, tmp_path / "x")
    code, _, stderr = run_with_bug(installation, "folder-moved", "-v", *ONE_PROCESS)
    assert code == EXIT_INTERNAL_ERROR
    assert "Traceback (most recent call last)" in stderr and "faults.py" in stderr
    last = error_lines(stderr)[-1]
    assert last.startswith(INTERNAL_ERROR) and "with -v" not in last, stderr


@pytest.mark.postgres
def test_a_bug_under_postgresql_leaves_the_database_consistent(postgres_url: str, tmp_path: Path) -> None:
    """The run lock's advisory half is released and the batch left nothing half-written: the
    rerun takes the lock and finishes."""
    installation = build_installation(postgres_url, tmp_path / "projects", TINY)
    code, _, stderr = run_with_bug(installation, "active-link", *ONE_PROCESS)
    assert code == EXIT_INTERNAL_ERROR and len(error_lines(stderr)) == 1, stderr
    rerun = run_cli(installation, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert run_cli(installation, "verify").returncode == 0
