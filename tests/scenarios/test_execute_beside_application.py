"""The executor beside the application, end to end through the real command: a renumbering whose
database write was lost is finished from the disk alone, only numbers actually given count, a
flat path the application replaced does not stop its generation from syncing, the application's
spelling of a path stays, and a project folder that is a link is never cleaned over there."""
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

from storage_migrator.faults import PAUSE_AT_VARIABLE
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    execute_sql,
    first_project,
    query_rows,
    query_scalar,
    run_cli,
)


@pytest.fixture
def migrated(database_url: str, tmp_path: Path) -> Sandbox:
    installation = build_installation(database_url, tmp_path / "projects")
    assert run_cli(installation, "run").returncode == 0
    return installation


def app_writes_at_version_one(installation: Sandbox, project_id: str, generation_id: str) -> Path:
    """The router path: a row with the default version 1, written by the application itself in
    the new layout (a duplicate of the project's v1)."""
    execute_sql(installation, "INSERT INTO generations (id, project_id, user_id, prompt, status, storage_path) "
            "SELECT :id, id, user_id, 'again', 'completed', :path FROM projects WHERE id = :p",
            id=generation_id, p=project_id, path=f"storage/projects/{project_id}/generations/v1__{generation_id}")
    target = installation.root / project_id / "generations" / f"v1__{generation_id}"
    (target / "source").mkdir(parents=True)
    (target / "artifacts").mkdir()
    (target / "source" / "main.py").write_text("print('a duplicate v1')\n")
    return target


def latest_version(installation: Sandbox, project_id: str) -> int:
    return int(query_scalar(installation, "SELECT latest_version FROM projects WHERE id = :p", p=project_id))


@pytest.mark.postgres
def test_a_renumbering_whose_database_write_was_lost_is_finished_from_the_disk(postgres_url: str,
                                                                              tmp_path: Path) -> None:
    installation = build_installation(postgres_url, tmp_path / "projects")
    assert run_cli(installation, "run").returncode == 0
    project_id = first_project(installation)
    duplicate = "dup00000-0000-0000-0000-000000000001"
    app_writes_at_version_one(installation, project_id, duplicate)
    environment = {**installation.cli_environment(), PAUSE_AT_VARIABLE: "renumbered"}
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "--json", "resync", "--workers", "1"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        deadline = time.monotonic() + 120
        while Path(f"/proc/{process.pid}/stat").read_text().split(") ")[1][0] != "T":
            assert process.poll() is None and time.monotonic() < deadline, "resync never renamed the folder"
            time.sleep(0.02)
        renamed = [path.name for path in (installation.root / project_id / "generations").glob(f"v*__{duplicate}")]
        # The connection drops (a failover), and meanwhile the application takes latest_version + 1.
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                       "application_name LIKE 'storage-migrate%' AND datname = current_database() "
                                       "AND pid <> pg_backend_pid()"))
        taken = latest_version(installation, project_id) + 1
        execute_sql(installation, "INSERT INTO generations (id, project_id, user_id, prompt, status, version) "
                "SELECT 'app-next-0000-0000-0000-000000000001', id, user_id, 'next', 'processing', :v "
                "FROM projects WHERE id = :p", v=taken, p=project_id)
        execute_sql(installation, "UPDATE projects SET latest_version = :v WHERE id = :p", v=taken, p=project_id)
        process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        admin.dispose()
    assert "Traceback" not in stderr
    assert len(renamed) == 1 and renamed[0] != f"v1__{duplicate}", renamed
    rerun = run_cli(installation, "--json", "resync")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    version = query_scalar(installation, "SELECT version FROM generations WHERE id = :id", id=duplicate)
    storage_path = query_scalar(installation, "SELECT storage_path FROM generations WHERE id = :id", id=duplicate)
    assert f"v{version}__{duplicate}" == renamed[0], "the number of the folder already renamed is kept"
    assert storage_path == f"storage/projects/{project_id}/generations/{renamed[0]}"
    assert version != taken and latest_version(installation, project_id) >= max(int(str(version)), taken)
    assert (installation.root / project_id / "generations" / renamed[0] / "source" / "main.py").is_file()
    verified = run_cli(installation, "--json", "verify")
    assert verified.returncode == 0, verified.stdout


def test_a_duplicate_with_nothing_on_disk_takes_one_number_once(migrated: Sandbox) -> None:
    """The row (its version from the schema's default, shared with v1) takes the next free
    number on the first resync, and no other on the next ones (no creep)."""
    project_id = first_project(migrated)
    execute_sql(migrated, "INSERT INTO generations (id, project_id, user_id, prompt, status) "
            "SELECT 'failed00-0000-0000-0000-000000000001', id, user_id, 'x', 'failed' FROM projects WHERE id = :p",
            p=project_id)
    before = latest_version(migrated, project_id)
    for _ in range(3):
        resync = run_cli(migrated, "--json", "resync")
        assert resync.returncode == 0, resync.stdout + resync.stderr
        assert latest_version(migrated, project_id) == before + 1, "one number, taken once"
    assert query_scalar(migrated, "SELECT version FROM generations WHERE id = 'failed00-0000-0000-0000-000000000001'") \
        == before + 1
    assert run_cli(migrated, "verify").returncode == 0


def test_a_renumbered_duplicate_takes_its_number_from_the_database(migrated: Sandbox) -> None:
    project_id = first_project(migrated)
    duplicate = "dup00000-0000-0000-0000-000000000002"
    app_writes_at_version_one(migrated, project_id, duplicate)
    before = latest_version(migrated, project_id)
    resync = run_cli(migrated, "--json", "resync")
    assert resync.returncode == 0, resync.stdout + resync.stderr
    version = query_scalar(migrated, "SELECT version FROM generations WHERE id = :id", id=duplicate)
    assert version == before + 1 and latest_version(migrated, project_id) == before + 1
    assert (migrated.root / project_id / "generations" / f"v{version}__{duplicate}" / "source").is_dir()
    second = json.loads(run_cli(migrated, "--json", "resync").stdout)
    assert second["migrated"] == 0 and latest_version(migrated, project_id) == before + 1


def completed_in_new_layout(installation: Sandbox, project_id: str) -> list[tuple[str, int]]:
    found = query_rows(installation, "SELECT id, version FROM generations WHERE project_id = :p AND "
                       "status = 'completed' ORDER BY version", p=project_id)
    return [(row.id, row.version) for row in found if (installation.root / row.id).is_symlink()]


def test_a_flat_path_the_application_replaced_does_not_stop_its_generation(migrated: Sandbox) -> None:
    project_id = first_project(migrated)
    (replaced, version), (following, _) = completed_in_new_layout(migrated, project_id)[:2]
    flat = migrated.root / replaced
    flat.unlink()
    flat.write_text("the application put a file here\n")
    source = migrated.root / project_id / "generations" / f"v{version}__{replaced}" / "source"
    (source / "ADDED.md").write_text("edited in the real folder\n")
    for _ in range(2):
        resync = run_cli(migrated, "--json", "resync")
        assert resync.returncode == 0, resync.stdout + resync.stderr
        document = json.loads(resync.stdout)
        assert str(flat) in document["leftovers"], "the foreign entry is reported"
    assert flat.read_text() == "the application put a file here\n", "left alone"
    file_count = query_scalar(migrated, "SELECT file_count FROM generations WHERE id = :id", id=replaced)
    assert file_count == sum(1 for path in source.rglob("*") if path.is_file()), "its edits reach the database"
    summary = query_scalar(migrated, "SELECT changes_summary FROM generations WHERE id = :id", id=following)
    summary = summary if isinstance(summary, dict) else json.loads(str(summary))
    assert summary["from_version"] == version, "the next version is still diffed from it"


def test_the_applications_spelling_of_the_patch_path_is_left_as_written(migrated: Sandbox) -> None:
    project_id = first_project(migrated)
    _, (generation_id, _) = completed_in_new_layout(migrated, project_id)[:2]
    written = str(query_scalar(migrated, "SELECT diff_from_previous FROM generations WHERE id = :id", id=generation_id))
    assert written.startswith("storage/projects/")
    execute_sql(migrated, "UPDATE generations SET diff_from_previous = :d WHERE id = :id", d="./" + written,
            id=generation_id)
    (migrated.root / generation_id / "NEW.md").write_text("an edit, so the generation is refreshed\n")
    resync = run_cli(migrated, "--json", "resync")
    assert resync.returncode == 0, resync.stdout + resync.stderr
    assert query_scalar(migrated, "SELECT diff_from_previous FROM generations WHERE id = :id",
                  id=generation_id) == "./" + written


def test_a_project_folder_that_is_a_link_is_never_cleaned_over_there(migrated: Sandbox, tmp_path: Path) -> None:
    project_id = first_project(migrated)
    elsewhere = tmp_path / "other-disk"
    (migrated.root / project_id).rename(elsewhere)
    (migrated.root / project_id).symlink_to(elsewhere)
    planted = [elsewhere / "generations" / ".leftover.storage-migrate-tmp",
               next((elsewhere / "generations").glob("v*")) / ".manifest.json.x.storage-migrate-tmp"]
    for path in planted:
        path.write_text("not the tool's to delete: it is outside ROOT\n")
    before = sorted(str(path.relative_to(elsewhere)) for path in elsewhere.rglob("*"))
    resync = run_cli(migrated, "--json", "resync")
    assert "Traceback" not in resync.stderr
    assert all(path.is_file() for path in planted)
    assert sorted(str(path.relative_to(elsewhere)) for path in elsewhere.rglob("*")) == before
    assert os.readlink(migrated.root / project_id) == str(elsewhere)


def test_a_reserved_number_the_application_also_took_stays_the_applications(migrated: Sandbox) -> None:
    """The application's `latest_version + 1` reads and writes without a lock: if it read just
    before the tool reserved a number, both hold it. The tool's duplicate gives way (no rename,
    `changed`) and takes a fresh number at the next resync; the application's number stays."""
    from tests.scenarios.test_races import run_paused_at

    project_id = first_project(migrated)
    duplicate = "dup00000-0000-0000-0000-000000000003"
    app_writes_at_version_one(migrated, project_id, duplicate)
    before = latest_version(migrated, project_id)
    app_generation = "app-same-0000-0000-0000-000000000001"

    def application_takes_the_same_number() -> None:
        reserved = latest_version(migrated, project_id)
        assert reserved == before + 1, "the tool reserved its number while planning"
        execute_sql(migrated, "INSERT INTO generations (id, project_id, user_id, prompt, status, version) "
                "SELECT :g, id, user_id, 'next', 'processing', :v FROM projects WHERE id = :p",
                g=app_generation, v=reserved, p=project_id)

    code, document = run_paused_at(migrated, "planned", application_takes_the_same_number, command="resync")
    assert code == 0, document
    assert [line["action"] for line in document["generations"] if line["id"] == duplicate] == ["changed"]
    assert (migrated.root / project_id / "generations" / f"v1__{duplicate}").is_dir(), "not renamed"
    second = run_cli(migrated, "--json", "resync")
    assert second.returncode == 0, second.stdout + second.stderr
    assert query_scalar(migrated, "SELECT version FROM generations WHERE id = :g", g=app_generation) == before + 1
    version = query_scalar(migrated, "SELECT version FROM generations WHERE id = :g", g=duplicate)
    assert version == before + 2, "a fresh number above the application's"
    assert (migrated.root / project_id / "generations" / f"v{version}__{duplicate}" / "source").is_dir()
