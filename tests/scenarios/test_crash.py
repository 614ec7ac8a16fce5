"""kill -9 at every step boundary of the real `run` and `rollback` processes, then a rerun: the end
state must equal an uninterrupted run byte for byte (disk tree and tables).

Every step boundary is killed at. Starting Python costs more than a step's work, so the crashed
command and its rerun come from a fork server (``CliForkServer``): one interpreter that imported
the tool once and forks a fresh process per command (conftest.py), with the command's own
environment, working directory, stdout and stderr, and exit status (-9 for the kill). The kill is
SIGKILL of a separate OS process in the middle of a step, and workers are forked by the tool
itself. The reference runs (the uninterrupted `run` and `rollback`) and the random-moment kills
start ``python -m storage_migrator`` from scratch.

Knob: STORAGE_MIGRATOR_CRASH_EXEC=1 starts every crashed command and rerun as a new interpreter
too (same steps, same assertions, slower: docs/benchmarks.md).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from storage_migrator.demo import SampleSize
from storage_migrator.faults import CRASH_AT_VARIABLE
from tests.support.processes import Cli, rerun_until_done
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    edit_a_diff_base_in_place,
    end_state,
    run_cli,
    sqlite_copy,
)

if TYPE_CHECKING:
    from tests.conftest import CliForkServer

TINY = SampleSize(projects=5, generations_per_project=2, files_per_generation=4)
pytestmark = pytest.mark.slow
CRASH_EXEC = os.environ.get("STORAGE_MIGRATOR_CRASH_EXEC") == "1"

@pytest.fixture
def cli(forked_cli: CliForkServer) -> Cli:
    """How the crash tests start a command: the fork server, or ``run_cli`` with CRASH_EXEC."""
    return run_cli if CRASH_EXEC else forked_cli.run


def crash_then_rerun(cli: Cli, installation: Sandbox, command: str, step: int, workers: int = 1) -> bool:
    """Kill the command at ``step``; False if it finished before reaching it. Then rerun it.

    With one process the kill takes the whole command; with workers, each worker that reaches
    the step is killed and the parent reports the broken pool (exit 1, no traceback)."""
    arguments = (command, "--workers", str(workers)) if command in ("run", "resync") else (command,)
    crashed = cli(installation, *arguments, extra_environment={CRASH_AT_VARIABLE: str(step)})
    if crashed.returncode == 0:
        return False
    assert crashed.returncode in (-signal.SIGKILL, 1), crashed.stderr
    assert "Traceback" not in crashed.stderr
    rerun_until_done(cli, installation, *arguments)
    return True


def kill_at_every_step(cli: Cli, start: Sandbox, command: str, expected: tuple[dict, dict], tmp_path: Path,
                       verify: bool = False, killed: Callable[[Sandbox, int], bool] | None = None) -> int:
    """``command`` on a copy of ``start`` killed at step 1, 2, … and rerun, until it finishes
    before the step; after each rerun the end state must be ``expected`` (and, with ``verify``,
    ``verify`` must find nothing). ``killed(installation, step)`` kills and reruns in another
    way (default: ``crash_then_rerun`` of ``command``). Returns the first step it did not reach."""
    kill = killed or (lambda installation, step: crash_then_rerun(cli, installation, command, step))
    step = 0
    while True:
        step += 1
        installation = sqlite_copy(start, tmp_path / f"{command}{step}")
        if not kill(installation, step):
            return step
        if verify:
            checked = run_cli(installation, "verify")
            assert checked.returncode == 0, f"{command} killed at step {step}: {checked.stdout}"
        assert end_state(installation) == expected, f"{command} killed at step {step}"
        shutil.rmtree(tmp_path / f"{command}{step}")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    folder = tmp_path_factory.mktemp("template")
    return build_installation(f"sqlite:///{folder / 'codebegen.db'}", folder / "projects", TINY)


@pytest.fixture(scope="module")
def reference(template: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    installation = sqlite_copy(template, tmp_path_factory.mktemp("reference") / "x")
    assert run_cli(installation, "run", "--workers", "1").returncode == 0
    return end_state(installation)


def test_workers_reach_the_same_end_state(template: Sandbox, reference: tuple[dict, dict], tmp_path: Path) -> None:
    installation = sqlite_copy(template, tmp_path / "workers")
    result = run_cli(installation, "run", "--workers", "3")
    assert result.returncode == 0, result.stderr
    assert end_state(installation) == reference


@pytest.mark.parametrize(("workers", "stride"), [(1, 1), (2, 3)])
def test_kill_at_every_step_of_run(cli: Cli, template: Sandbox, reference: tuple[dict, dict], tmp_path: Path,
                                   workers: int, stride: int) -> None:
    step = 0
    while True:
        step += stride
        installation = sqlite_copy(template, tmp_path / f"step{step}")
        if not crash_then_rerun(cli, installation, "run", step, workers):
            break
        assert end_state(installation) == reference, f"killed at step {step}"
        shutil.rmtree(tmp_path / f"step{step}")
    assert step > 20, "the run should pass many step boundaries"


def test_kill_at_random_moments(template: Sandbox, reference: tuple[dict, dict], tmp_path: Path) -> None:
    chooser = random.Random(7)
    for attempt in range(6):
        workers = 1 + attempt % 2
        installation = sqlite_copy(template, tmp_path / f"attempt{attempt}")
        process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "run", "--workers", str(workers)],
                                   env=installation.cli_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chooser.uniform(0.3, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        rerun_until_done(run_cli, installation, "run")
        assert end_state(installation) == reference, f"attempt {attempt}"


def test_kill_at_every_step_of_rollback(cli: Cli, template: Sandbox, tmp_path: Path) -> None:
    migrated = sqlite_copy(template, tmp_path / "migrated")
    assert run_cli(migrated, "run").returncode == 0
    uninterrupted = sqlite_copy(migrated, tmp_path / "uninterrupted")
    assert run_cli(uninterrupted, "rollback").returncode == 0
    steps = kill_at_every_step(cli, migrated, "rollback", end_state(uninterrupted), tmp_path)
    assert steps > 10


def test_kill_at_every_step_of_a_resync_that_records_an_edit(cli: Cli, template: Sandbox, tmp_path: Path) -> None:
    """Killed anywhere in the resync that records an edit (size kept) of a diff base, a rerun
    still redoes both patches read from the old bytes — the edited version's own and the next
    version's — although the edited version's manifest may already record the new bytes, as
    the uninterrupted resync does; ``verify`` then finds nothing."""
    edited = sqlite_copy(template, tmp_path / "edited")
    assert run_cli(edited, "run", "--workers", "1").returncode == 0
    edit_a_diff_base_in_place(edited)
    uninterrupted = sqlite_copy(edited, tmp_path / "uninterrupted")
    assert run_cli(uninterrupted, "resync", "--workers", "1").returncode == 0
    assert run_cli(uninterrupted, "verify").returncode == 0
    steps = kill_at_every_step(cli, edited, "resync", end_state(uninterrupted), tmp_path, verify=True)
    assert steps > 3, "the resync should pass several step boundaries"


def _wait_for(condition: str, check: Callable[[], object], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{condition} within {seconds} s"
        time.sleep(0.05)


def watch_killed_while_it_records_an_edit(installation: Sandbox, step: int, folder: Path) -> bool:
    """``watch --json`` killed at ``step``; the edit (``edit_a_diff_base_in_place``) is made once
    it watches. True if the kill came before watch reported the resync of that edit; otherwise
    watch is stopped (SIGTERM) and False is returned."""
    out, err = folder / f"watch{step}.out", folder / f"watch{step}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "--json", "watch", "--debounce", "0.2"],
                                   env={**installation.cli_environment(), CRASH_AT_VARIABLE: str(step)},
                                   stdout=stdout, stderr=stderr)
    try:
        _wait_for("watch watches", lambda: b"watch: watching" in err.read_bytes() or process.poll() is not None)
        assert process.poll() is None, err.read_text()
        edit_a_diff_base_in_place(installation)
        _wait_for("watch reports the edit's resync or is killed", lambda: process.poll() is not None or out.read_bytes())
        if process.poll() is None:
            return False
        assert process.returncode == -signal.SIGKILL, err.read_text()
        return True
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def test_kill_at_every_step_of_a_watch_that_records_an_edit(cli: Cli, template: Sandbox, tmp_path: Path) -> None:
    """watch calls the same resync, so the same order: killed anywhere while it records an edit
    (size kept) of a diff base, the cron's next resync still redoes both patches read from the
    old bytes and ends where an uninterrupted resync of that edit ends; ``verify`` finds nothing."""
    migrated = sqlite_copy(template, tmp_path / "migrated")
    assert run_cli(migrated, "run", "--workers", "1").returncode == 0
    uninterrupted = sqlite_copy(migrated, tmp_path / "uninterrupted")
    edit_a_diff_base_in_place(uninterrupted)
    assert run_cli(uninterrupted, "resync", "--workers", "1").returncode == 0

    def killed(installation: Sandbox, step: int) -> bool:
        if not watch_killed_while_it_records_an_edit(installation, step, tmp_path):
            return False
        rerun_until_done(cli, installation, "resync", "--workers", "1")
        return True

    steps = kill_at_every_step(cli, migrated, "watch", end_state(uninterrupted), tmp_path, verify=True, killed=killed)
    assert steps > 3, "the watch's resync should pass several step boundaries"
