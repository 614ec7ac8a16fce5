"""The undo from any revision of the application's schema: `rollback --project ID` (one project,
under the run lock, byte for byte, crash-safe), and `db downgrade`/`db upgrade` at a revision
this tool does not know (the application's later ``7e78789cc89a``, which adds
``preview_instances``): one line each, never an Alembic error."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from storage_migrator.config import HEAD_REVISION
from storage_migrator.db.connect import create_database_engine
from storage_migrator.demo import SampleSize
from storage_migrator.engine.lock import RunLock
from storage_migrator.faults import CRASH_AT_VARIABLE
from storage_migrator.storage.handle import open_storage
from storage_migrator.storage.layout import StorageLayout
from tests.support.processes import Cli, rerun_until_done
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    dump_tables,
    end_state,
    error_lines,
    execute_sql,
    query_rows,
    query_scalar,
    run_cli,
    sqlite_copy,
    tree_digest,
)

if TYPE_CHECKING:
    from tests.conftest import CliForkServer

LATER_REVISION = "7e78789cc89a"     # the application's: preview_instances, after add_auto_created_projects


def move_to_the_applications_later_revision(installation: Sandbox) -> None:
    """What the application's own migrations leave after this tool's head: ``projects.auto_created``,
    a ``preview_instances`` table, and a revision id this tool's scripts do not know."""
    execute_sql(installation, "ALTER TABLE projects ADD COLUMN auto_created BOOLEAN NOT NULL DEFAULT FALSE")
    execute_sql(installation, "CREATE TABLE preview_instances (id VARCHAR(36) PRIMARY KEY, "
                "generation_id VARCHAR(36) NOT NULL REFERENCES generations (id), status VARCHAR(20) NOT NULL)")
    execute_sql(installation, "UPDATE alembic_version SET version_num = :revision", revision=LATER_REVISION)


def generation_rows(installation: Sandbox) -> dict[str, dict]:
    """Every generation's row by id, with ``updated_at`` left out and ``storage_path`` normalised
    (the schema migration wrote ``./storage/projects/<id>``, the tool writes ``storage/projects/<id>``)."""
    rows = {}
    for row in dump_tables(installation.database_url)["generations"]:
        row.pop("updated_at", None)
        row["storage_path"] = row["storage_path"] and str(PurePath(row["storage_path"]))
        rows[row["id"]] = row
    return rows


def part_of(tree: dict[str, str], owners: set[str]) -> dict[str, str]:
    """The entries of ``tree`` whose first component is one of ``owners`` (a project's folder,
    its generations' legacy folders and links)."""
    return {path: value for path, value in tree.items() if path.split("/")[0] in owners}


def project_generations(installation: Sandbox, project_id: str) -> set[str]:
    return {row[0] for row in query_rows(installation, "SELECT id FROM generations WHERE project_id = :p", p=project_id)}


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


def test_rollback_of_one_project_restores_it_byte_for_byte_and_leaves_the_others(installation: Sandbox) -> None:
    """At the application's later revision (the schema stays there): one project goes back to
    its legacy folders and rows exactly; every other project, folder and row, is as the run left
    it; the whole rollback afterwards finishes the rest."""
    legacy_tree, legacy_rows = tree_digest(installation.root), generation_rows(installation)
    assert run_cli(installation, "run").returncode == 0
    move_to_the_applications_later_revision(installation)
    migrated_tree, migrated_rows = tree_digest(installation.root), generation_rows(installation)
    project_id = installation.sample.demo_project_id
    ours = project_generations(installation, project_id)
    others = set(migrated_rows) - ours
    owners = ours | {project_id}

    result = run_cli(installation, "--json", "rollback", "--project", project_id)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {line["generation_id"] for line in document["generations"]} == ours
    assert {line["action"] for line in document["generations"]} == {"restored"}
    tree = tree_digest(installation.root)
    assert part_of(tree, owners) == part_of(legacy_tree, owners)
    everything_else = set(migrated_tree) | set(tree)
    everything_else -= set(part_of(tree, owners)) | set(part_of(migrated_tree, owners))
    assert {path: tree.get(path) for path in everything_else} == \
        {path: migrated_tree.get(path) for path in everything_else}
    rows = generation_rows(installation)
    assert {gid: rows[gid] for gid in ours} == {gid: legacy_rows[gid] for gid in ours}
    assert {gid: rows[gid] for gid in others} == {gid: migrated_rows[gid] for gid in others}
    assert query_scalar(installation, "SELECT version_num FROM alembic_version") == LATER_REVISION

    assert run_cli(installation, "rollback").returncode == 0
    tree = tree_digest(installation.root)
    rebuilt = installation.sample.missing_folder_generation_id      # rebuilt from output_files: now a folder too
    assert {path: value for path, value in tree.items() if path.split("/")[0] != rebuilt} == legacy_tree
    assert generation_rows(installation) == legacy_rows


def test_rollback_of_an_unknown_project_is_one_line_and_changes_nothing(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    tree, tables = tree_digest(installation.root), dump_tables(installation.database_url)

    result = run_cli(installation, "rollback", "--project", "no-such-project")

    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "no-such-project" in lines[0] and "not found" in lines[0], result.stderr
    assert result.stdout == ""
    assert tree_digest(installation.root) == tree
    assert dump_tables(installation.database_url) == tables


def test_rollback_of_one_project_takes_the_run_lock(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    tree = tree_digest(installation.root)
    engine = create_database_engine(installation.database_url, command="storage-migrate run")
    storage = open_storage(StorageLayout(installation.root, "./storage/projects"))
    with storage, RunLock(storage, engine, "storage-migrate run"):
        started = time.monotonic()
        result = run_cli(installation, "rollback", "--project", installation.sample.demo_project_id)
        elapsed = time.monotonic() - started
    engine.dispose()
    assert result.returncode == 75, result.stderr
    assert f"pid {os.getpid()}" in result.stderr and elapsed < 30
    assert tree_digest(installation.root) == tree


TINY = SampleSize(projects=5, generations_per_project=2, files_per_generation=4)


@pytest.mark.slow
def test_kill_at_every_step_of_a_one_project_rollback(forked_cli: CliForkServer, tmp_path: Path) -> None:
    """kill -9 at every step boundary, then the same command again: the end state is the
    uninterrupted one, byte for byte, tables included."""
    cli: Cli = forked_cli.run
    migrated = build_installation(f"sqlite:///{tmp_path / 'template.db'}", tmp_path / "template", TINY)
    assert run_cli(migrated, "run").returncode == 0
    project_id = migrated.sample.demo_project_id
    uninterrupted = sqlite_copy(migrated, tmp_path / "uninterrupted")
    assert run_cli(uninterrupted, "rollback", "--project", project_id).returncode == 0
    expected = end_state(uninterrupted)
    arguments = ("rollback", "--project", project_id)
    step = 0
    while True:
        step += 1
        installation = sqlite_copy(migrated, tmp_path / f"step{step}")
        crashed = cli(installation, *arguments, extra_environment={CRASH_AT_VARIABLE: str(step)})
        if crashed.returncode == 0:
            break
        assert crashed.returncode == -signal.SIGKILL and "Traceback" not in crashed.stderr, crashed.stderr
        rerun_until_done(cli, installation, *arguments)
        assert end_state(installation) == expected, f"killed at step {step}"
        shutil.rmtree(tmp_path / f"step{step}")
    assert step > 5


def schema_facts(installation: Sandbox) -> tuple[object, set[str], set[str], set[str]]:
    engine = installation.engine()
    try:
        inspector = sa.inspect(engine)
        facts = (set(inspector.get_table_names()), {c["name"] for c in inspector.get_columns("generations")},
                 {c["name"] for c in inspector.get_columns("projects")})
    finally:
        engine.dispose()
    return (query_scalar(installation, "SELECT version_num FROM alembic_version"), *facts)


def test_db_downgrade_at_the_applications_later_revision_refuses_in_one_line(installation: Sandbox) -> None:
    move_to_the_applications_later_revision(installation)
    before = schema_facts(installation)

    result = run_cli(installation, "db", "downgrade", "e011ab9dd223")

    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert LATER_REVISION in lines[0] and "`storage-migrate rollback`" in lines[0] and "--project" in lines[0]
    assert "schema stays" in lines[0]
    assert schema_facts(installation) == before


@pytest.mark.parametrize("revision", ["head", HEAD_REVISION])
def test_db_upgrade_at_the_applications_later_revision_has_nothing_to_do(installation: Sandbox,
                                                                          revision: str) -> None:
    move_to_the_applications_later_revision(installation)
    before = schema_facts(installation)

    result = run_cli(installation, "db", "upgrade", revision)

    assert result.returncode == 0, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "already past" in lines[0] and LATER_REVISION in lines[0], result.stderr
    assert schema_facts(installation) == before
    quiet = run_cli(installation, "-q", "db", "upgrade")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
