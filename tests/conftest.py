"""Shared fixtures: real SQLite files and a throwaway database on a real PostgreSQL server.

PostgreSQL comes from TEST_DATABASE_URL (default: the local trust-auth server). Without a server
the PostgreSQL tests skip and say why — unless STORAGE_MIGRATOR_REQUIRE_PG=1 (set by .ci/run),
which turns the skip into a failure.

``forked_cli`` (session): a fork server that starts the command without paying Python's start-up
and imports each time — see ``CliForkServer``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.config import normalize_database_url
from tests.support.sandbox import Sandbox, empty_public_schema

DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _server_url() -> sa.URL:
    return sa.make_url(normalize_database_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """Create one throwaway database for the session, drop it at the end."""
    server_url = _server_url()
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"storage_migrator_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        reason = f"no PostgreSQL server at {server_url.render_as_string(hide_password=True)}: {error.orig}"
        if os.environ.get("STORAGE_MIGRATOR_REQUIRE_PG") == "1":
            pytest.fail(f"STORAGE_MIGRATOR_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    try:
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """The session's database, emptied before each test (faster than a database per test)."""
    empty_public_schema(postgres_database)
    yield postgres_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'codebegen.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'codebegen.db'}"
    return request.getfixturevalue("postgres_url")


# The fork server: imports every module of the tool (what `python -m storage_migrator` would import
# on its way), then per request line {"argv", "env", "cwd", "stdout", "stderr"} forks a child that
# takes that environment, folder and output files and runs the package's __main__ as `-m` does;
# the server answers {"pid"} at once and {"status"} (the raw wait status) when the child is gone.
FORK_SERVER = r"""
import io, json, os, pkgutil, runpy, sys, traceback, importlib
import storage_migrator
for module in pkgutil.walk_packages(storage_migrator.__path__, "storage_migrator."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
import sqlalchemy.dialects.sqlite, sqlite3
replies = os.fdopen(os.dup(1), "w", buffering=1)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            encoding, out_errors, err_errors = sys.stdout.encoding, sys.stdout.errors, sys.stderr.errors
            sys.stdin = open(0, encoding=encoding, closefd=False)
            sys.stdout = open(1, "w", encoding=encoding, errors=out_errors, closefd=False)
            sys.stderr = open(2, "w", encoding=encoding, errors=err_errors, closefd=False)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = ["storage_migrator", *request["argv"]]
            try:
                runpy.run_module("storage_migrator", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit:
                if exit.code is None or isinstance(exit.code, int):
                    code = exit.code or 0
                else:
                    print(exit.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(code)
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.write(json.dumps({"status": os.waitpid(pid, 0)[1]}) + "\n")
"""


class CliForkServer:
    """``run(installation, *arguments)`` like ``sandbox.run_cli``, the process forked from one
    interpreter that has the tool imported already: for tests that start the command hundreds
    of times (tests/scenarios/test_crash.py, tests/scenarios/test_hostile_filesystems.py), where starting Python and importing
    the tool cost four times what the command does. Each command is still its own process, with
    its own environment, working folder, stdout, stderr and exit status (-9 when killed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.process = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)

    def _reply(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the fork server died (exit {self.process.poll()})"
        return json.loads(line)

    def run(self, installation: Sandbox, *arguments: str, extra_environment: dict[str, str] | None = None,
            timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        assert self.process.stdin is not None
        self.count += 1
        stdout, stderr = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        environment = {**installation.cli_environment(), **(extra_environment or {})}
        self.process.stdin.write(json.dumps({"argv": list(arguments), "env": environment, "cwd": str(cwd or os.getcwd()),
                                             "stdout": str(stdout), "stderr": str(stderr)}) + "\n")
        pid = self._reply()["pid"]
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            status = self._reply()["status"]
        finally:
            timer.cancel()
        if expired:
            raise subprocess.TimeoutExpired([*arguments], timeout)
        result = subprocess.CompletedProcess([sys.executable, "-m", "storage_migrator", *arguments],
                                             os.waitstatus_to_exitcode(status), stdout.read_text(), stderr.read_text())
        stdout.unlink()
        stderr.unlink()
        return result

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def forked_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliForkServer]:
    server = CliForkServer(tmp_path_factory.mktemp("fork-server"))
    try:
        yield server
    finally:
        server.close()
