"""`rollback` against an application that is still running and a storage volume someone has
tampered with: a generation the application is writing is left exactly as it is, and a symlinked
folder anywhere on the way to a generation is never followed out of ROOT."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.sandbox import Sandbox, build_installation, dump_tables, run_cli, tree_digest


def query(installation: Sandbox, sql: str, **parameters: object) -> list[sa.Row]:
    engine = installation.engine()
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(sql), parameters)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def generation_row(installation: Sandbox, generation_id: str) -> dict:
    """Every column of one generation, as ``dump_tables`` normalises them."""
    return next(row for row in dump_tables(installation.database_url)["generations"] if row["id"] == generation_id)


def rollback_entries(installation: Sandbox) -> tuple[int, str, dict[str, dict]]:
    """Run the real ``rollback --json``: exit code, stderr, and its lines by generation id."""
    result = run_cli(installation, "--json", "rollback")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr, {entry["id"]: entry for entry in json.loads(result.stdout)["generations"]}


def write_like_the_application(installation: Sandbox, generation_id: str) -> Path:
    """Turn the demo's partial processing folder into what the application's newer code writes
    while it works: ``v<N>__<id>/`` with ``source/``, ``artifacts/`` and its manifest, the row's
    ``storage_path`` naming that folder (spelled without ``./``, as the application does)."""
    project_id, version = query(installation, "SELECT project_id, version FROM generations WHERE id = :id",
                                id=generation_id)[0]
    folder = installation.root / project_id / "generations" / f"v{version}__{generation_id}"
    folder.mkdir(parents=True, exist_ok=True)
    (installation.root / generation_id).rename(folder / "source")
    (folder / "artifacts").mkdir()
    (folder / "artifacts" / "build.log").write_text("still generating\n")
    manifest = {"generation_id": generation_id, "project_id": project_id, "version": version,
                "created_at": "2024-05-01T10:00:00", "file_count": 0, "total_size_bytes": 0, "files": [],
                "metadata": {"phase": "code_generation"}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    query(installation, "UPDATE generations SET storage_path = :path WHERE id = :id", id=generation_id,
          path=f"storage/projects/{project_id}/generations/{folder.name}")
    return folder


@pytest.mark.parametrize("status", ["processing", "pending"])
def test_rollback_leaves_a_generation_the_application_is_writing_untouched(
        database_url: str, tmp_path: Path, status: str) -> None:
    installation = build_installation(database_url, tmp_path / "projects")
    assert run_cli(installation, "run").returncode == 0
    generation_id = installation.sample.processing_generation_id
    folder = write_like_the_application(installation, generation_id)
    query(installation, "UPDATE generations SET status = :status WHERE id = :id", status=status, id=generation_id)
    flat_link = installation.root / generation_id
    if status == "pending":             # a flat link of the tool's shape must stay too
        flat_link.symlink_to(os.path.relpath(folder / "source", installation.root))
    link_before = os.readlink(flat_link) if flat_link.is_symlink() else None
    tree_before, row_before = tree_digest(folder), generation_row(installation, generation_id)

    code, stderr, entries = rollback_entries(installation)

    assert code == 0, stderr
    assert entries[generation_id]["action"] == "skipped" and entries[generation_id]["reason"]
    assert tree_digest(folder) == tree_before
    assert generation_row(installation, generation_id) == row_before
    assert (os.readlink(flat_link) if flat_link.is_symlink() else None) == link_before
    assert flat_link.is_symlink() or not os.path.lexists(flat_link)
    restored = [entry for entry in entries.values() if entry["action"] == "restored"]
    assert restored, "the finished generations still go back"


def test_rollback_leaves_a_generation_the_application_archived_as_it_is(database_url: str, tmp_path: Path) -> None:
    """The application's ``cleanup_old_generations`` moves an old version's folder to
    ``<project>/archive/`` and leaves the row alone: rollback neither "refreshes" that row
    (zero files, no diff) nor touches the archive."""
    installation = build_installation(database_url, tmp_path / "projects")
    assert run_cli(installation, "run").returncode == 0
    project_id = installation.sample.demo_project_id
    generations = installation.root / project_id / "generations"
    folder = sorted(path for path in generations.iterdir() if path.name.startswith("v1__"))[0]
    generation_id = folder.name.split("__", 1)[1]
    (installation.root / project_id / "archive").mkdir()
    archived = installation.root / project_id / "archive" / folder.name
    folder.rename(archived)
    tree_before, row_before = tree_digest(archived), generation_row(installation, generation_id)

    code, stderr, entries = rollback_entries(installation)

    assert code == 0, stderr
    assert entries[generation_id]["action"] == "skipped" and "archived" in entries[generation_id]["reason"]
    assert generation_row(installation, generation_id) == row_before
    assert tree_digest(archived) == tree_before
    assert [entry for entry in entries.values() if entry["action"] == "restored"], "the others still go back"


def migrated_generations(installation: Sandbox) -> dict[str, str]:
    """Generation id → project id of every generation ``run`` put in the new layout."""
    return {generation_id: project_id for generation_id, project_id in query(
        installation, "SELECT id, project_id FROM generations WHERE storage_path LIKE '%/generations/v%'")}


@pytest.mark.parametrize("level", ["project", "generations", "version", "source"])
def test_rollback_never_follows_a_symlinked_folder_out_of_root(sqlite_url: str, tmp_path: Path, level: str) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    assert run_cli(installation, "run").returncode == 0
    migrated = migrated_generations(installation)
    project_id = installation.sample.demo_project_id
    generations_dir = installation.root / project_id / "generations"
    version_dir = sorted(path for path in generations_dir.iterdir() if path.name.startswith("v"))[0]
    planted = {"project": generations_dir.parent, "generations": generations_dir,
               "version": version_dir, "source": version_dir / "source"}[level]
    other_disk = tmp_path / "other-disk"
    other_disk.mkdir()
    planted.rename(other_disk / planted.name)
    planted.symlink_to(other_disk / planted.name)
    if level in ("project", "generations"):
        affected = {generation_id for generation_id, owner in migrated.items() if owner == project_id}
    else:
        affected = {version_dir.name.split("__", 1)[1]}
    flat_links = {generation_id: os.readlink(installation.root / generation_id) for generation_id in affected}
    outside_before = tree_digest(other_disk)

    code, _, entries = rollback_entries(installation)

    assert code == 1
    assert tree_digest(other_disk) == outside_before
    assert os.readlink(planted) == str(other_disk / planted.name)
    assert {generation_id for generation_id, entry in entries.items() if entry["action"] == "failed"} == affected
    for generation_id in affected:
        error = entries[generation_id]["error"]
        assert str(planted) in error and "\n" not in error, error
        assert os.readlink(installation.root / generation_id) == flat_links[generation_id]
    for generation_id in set(migrated) - affected:
        assert entries[generation_id]["action"] == "restored", entries[generation_id]
        assert (installation.root / generation_id).is_dir() and not (installation.root / generation_id).is_symlink()
