"""The schema migration 39e7f45c72f1 on real SQLite and PostgreSQL: the seed's five data steps,
the four corrections, a clean downgrade to e011ab9dd223 and the offline --sql mode."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION, HEAD_REVISION
from storage_migrator.db.revisions import downgrade_schema, upgrade_schema

REPO = Path(__file__).resolve().parents[3]
NEW_GENERATION_COLUMNS = {
    "version", "version_name", "is_active", "storage_path", "file_count",
    "total_size_bytes", "diff_from_previous", "changes_summary",
}
NEW_PROJECT_COLUMNS = {"active_generation_id", "latest_version"}


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, tzinfo=UTC)


# project -> [(generation id, created_at, status)]; ids chosen so that id order differs from insert order.
GENERATIONS = {
    "proj-main": [
        ("gen-c", at(1), "completed"),
        ("gen-b", at(2), "completed"),   # tie with gen-a on created_at: id breaks it, gen-a first
        ("gen-a", at(2), "completed"),
        ("gen-d", at(3), "failed"),
        ("gen-e", at(4), "processing"),
    ],
    "proj-no-completed": [
        ("gen-f", at(5), "failed"),
        ("gen-g", at(6), "pending"),
    ],
    "proj-empty": [],
}
EXPECTED_VERSIONS = {"gen-c": 1, "gen-a": 2, "gen-b": 3, "gen-d": 4, "gen-e": 5, "gen-f": 1, "gen-g": 2}


def insert_legacy_rows(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO users (id, email) VALUES ('user-1', 'dev@example.com')"))
        connection.execute(sa.text("INSERT INTO organizations (id, name) VALUES ('org-1', 'Example')"))
        for project_id, generations in GENERATIONS.items():
            connection.execute(
                sa.text(
                    "INSERT INTO projects (id, user_id, organization_id, name, tech_stack) "
                    "VALUES (:id, 'user-1', 'org-1', :id, 'fastapi')"
                ),
                {"id": project_id},
            )
            for generation_id, created_at, status in generations:
                connection.execute(
                    sa.text(
                        "INSERT INTO generations (id, created_at, project_id, user_id, prompt, status, output_files) "
                        "VALUES (:id, :created_at, :project_id, 'user-1', 'make an API', :status, :files)"
                    ),
                    {"id": generation_id, "created_at": created_at, "project_id": project_id,
                     "status": status, "files": '{"app/main.py": "print(1)\\n"}'},
                )


def columns(engine: sa.Engine, table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns(table)}


def rows(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql))]


def assert_seed_data_steps(engine: sa.Engine) -> None:
    versions = dict(rows(engine, "SELECT id, version FROM generations"))
    assert versions == EXPECTED_VERSIONS
    for generation_id, storage_path in rows(engine, "SELECT id, storage_path FROM generations"):
        assert storage_path == f"./storage/projects/{generation_id}"
    projects = {row[0]: row[1:] for row in rows(engine, "SELECT id, latest_version, active_generation_id FROM projects")}
    assert projects == {
        "proj-main": (5, "gen-b"),          # newest completed, by version (gen-b wins the tie)
        "proj-no-completed": (2, None),
        "proj-empty": (0, None),
    }
    active = {row[0] for row in rows(engine, "SELECT id FROM generations WHERE is_active = TRUE")}
    assert active == {"gen-b"}


@pytest.fixture
def migrated(database_url: str) -> sa.Engine:
    upgrade_schema(database_url, BASE_REVISION)
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    assert len(columns(engine, "generations")) == 21   # the SPEC's 19 plus is_iteration, parent_generation_id
    assert len(columns(engine, "projects")) == 15   # the SPEC's 12 plus github_repo_url, github_repo_name, settings
    insert_legacy_rows(engine)
    upgrade_schema(database_url, HEAD_REVISION)
    yield engine
    engine.dispose()


def test_upgrade_runs_the_five_data_steps(migrated: sa.Engine) -> None:
    assert_seed_data_steps(migrated)


def test_upgrade_adds_exactly_the_seed_columns(migrated: sa.Engine) -> None:
    generation_columns = columns(migrated, "generations")
    project_columns = columns(migrated, "projects")
    assert len(generation_columns) == 29 and NEW_GENERATION_COLUMNS <= generation_columns
    assert len(project_columns) == 17 and NEW_PROJECT_COLUMNS <= project_columns
    by_name = {column["name"]: column for column in sa.inspect(migrated).get_columns("generations")}
    assert isinstance(by_name["total_size_bytes"]["type"], sa.BigInteger)
    assert by_name["version"]["nullable"] is False
    keys = sa.inspect(migrated).get_foreign_keys("projects")
    active_key = [key for key in keys if key["name"] == "fk_projects_active_generation"]
    assert active_key and active_key[0]["referred_table"] == "generations"
    assert active_key[0]["options"].get("ondelete") == "SET NULL"


def test_version_defaults_to_one_and_duplicates_are_accepted(migrated: sa.Engine) -> None:
    """The application's create path inserts without a version (the default, 1) into projects
    that already have a v1: the index on (project_id, version) must not refuse it."""
    with migrated.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO generations (id, project_id, user_id, prompt, status) "
            "VALUES ('gen-new', 'proj-empty', 'user-1', 'p', 'pending')"))
        connection.execute(sa.text(
            "INSERT INTO generations (id, project_id, user_id, prompt, status) "
            "VALUES ('gen-dup', 'proj-main', 'user-1', 'p', 'processing')"))
    assert rows(migrated, "SELECT version FROM generations WHERE id IN ('gen-new', 'gen-dup')") == [(1,), (1,)]
    indexes = {index["name"]: index for index in sa.inspect(migrated).get_indexes("generations")}
    assert indexes["ix_generations_project_id_version"]["unique"] in (False, 0)


def test_deleting_the_active_generation_sets_null(migrated: sa.Engine) -> None:
    with migrated.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
        connection.execute(sa.text("DELETE FROM generations WHERE id = 'gen-b'"))
    assert rows(migrated, "SELECT active_generation_id FROM projects WHERE id = 'proj-main'") == [(None,)]


def test_downgrade_drops_the_new_schema_and_keeps_the_data(migrated: sa.Engine, database_url: str) -> None:
    before = rows(migrated, "SELECT id, project_id, status, prompt FROM generations ORDER BY id")
    downgrade_schema(database_url, BASE_REVISION)
    assert columns(migrated, "generations").isdisjoint(NEW_GENERATION_COLUMNS)
    assert len(columns(migrated, "generations")) == 21
    assert len(columns(migrated, "projects")) == 15
    key_names = {key["name"] for key in sa.inspect(migrated).get_foreign_keys("projects")}
    assert "fk_projects_active_generation" not in key_names
    assert rows(migrated, "SELECT id, project_id, status, prompt FROM generations ORDER BY id") == before
    upgrade_schema(database_url, HEAD_REVISION)
    assert_seed_data_steps(migrated)


@pytest.mark.postgres
def test_offline_sql_runs_on_postgresql(postgres_url: str) -> None:
    upgrade_schema(postgres_url, BASE_REVISION)
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    insert_legacy_rows(engine)
    environment = {**os.environ, "DATABASE_URL": postgres_url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    offline_sql = subprocess.run(
        [*alembic, "upgrade", f"{BASE_REVISION}:{HEAD_REVISION}", "--sql"],
        env=environment, capture_output=True, text=True, check=True,
    ).stdout
    assert "SELECT" in offline_sql and "fk_projects_active_generation" in offline_sql
    with engine.begin() as connection:
        connection.exec_driver_sql(offline_sql)
    assert_seed_data_steps(engine)
    assert rows(engine, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    engine.dispose()
