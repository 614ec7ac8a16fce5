"""End to end beside the running application: after `run`, this test plays the application's
part the way its code does (SPEC's list of its behaviour) — creates rows without a version,
writes a generation itself in the new layout (manifest with `metadata`, `diff -ru` patch, its
`changes_summary`, `storage/projects/…` path, `active` repointed), leaves a phased scratch
folder, archives a version, deletes a middle one, fails one with a partial folder, edits a file
through the flat path, and applies a later schema revision that adds a column and replaces the
foreign key — then `resync` and `verify` exit 0 and nothing the application wrote is lost."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.sandbox import Sandbox, build_installation, execute_sql, query_rows, run_cli, verify_json


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


def demo_generations(installation: Sandbox) -> list[sa.Row]:
    return query_rows(installation, "SELECT id, version, status FROM generations WHERE project_id = :p ORDER BY version",
                p=installation.sample.demo_project_id)


def app_inserts(installation: Sandbox, generation_id: str, status: str, version: int | None = None) -> None:
    """The application's generate endpoint: no version (the column default, 1 applies)."""
    columns = "id, project_id, user_id, prompt, status" + (", version" if version else "")
    values = ":id, id, user_id, 'again', :status" + (", :version" if version else "")
    execute_sql(installation, f"INSERT INTO generations ({columns}) SELECT {values} FROM projects WHERE id = :p",
            id=generation_id, status=status, version=version, p=installation.sample.demo_project_id)


def app_writes_new_layout(installation: Sandbox, generation_id: str, version: int, previous: Path) -> Path:
    """The application's FileManager: source/, artifacts/, its manifest, a `diff -ru` patch,
    its storage_path spelling and changes_summary, and the `active` link repointed."""
    project_id = installation.sample.demo_project_id
    target = installation.root / project_id / "generations" / f"v{version}__{generation_id}"
    (target / "source" / "app").mkdir(parents=True)
    (target / "artifacts").mkdir()
    (target / "source" / "app" / "main.py").write_text("print('written by the application')\n")
    manifest = {"generation_id": generation_id, "project_id": project_id, "version": version,
                "created_at": "2026-11-25T10:00:00", "file_count": 1, "total_size_bytes": 35,
                "files": ["app/main.py"], "metadata": {"model": "the application's own key"}}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    patch = subprocess.run(["diff", "-ru", str(previous / "source"), str(target / "source")],
                           capture_output=True).stdout
    (target / f"diff_from_v{version - 1}.patch").write_bytes(patch)
    execute_sql(installation, "UPDATE generations SET status = 'completed', version = :v, storage_path = :path, "
            "changes_summary = :summary, file_count = 1, total_size_bytes = 35 WHERE id = :id",
            v=version, id=generation_id, path=f"storage/projects/{project_id}/generations/{target.name}",
            summary=json.dumps({"diff_created_at": "2026-11-25T10:00:00", "from_version": version - 1,
                                "to_version": version}))
    execute_sql(installation, "UPDATE projects SET latest_version = :v WHERE id = :p", v=version, p=project_id)
    link = target.parent / "active"
    link.unlink()
    link.symlink_to(target.name)
    return target


def later_app_revision(installation: Sandbox) -> None:
    """The application's later revisions: a new column, and the named FK replaced by an unnamed
    one without ON DELETE (on SQLite, where constraints cannot be altered, only the column)."""
    execute_sql(installation, "ALTER TABLE projects ADD COLUMN auto_created BOOLEAN DEFAULT FALSE")
    engine = installation.engine()
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE projects DROP CONSTRAINT fk_projects_active_generation"))
            connection.execute(sa.text("ALTER TABLE projects ADD FOREIGN KEY (active_generation_id) "
                                       "REFERENCES generations (id)"))
    engine.dispose()


def test_the_application_keeps_working_beside_the_tool(installation: Sandbox) -> None:
    root = installation.root
    project_id = installation.sample.demo_project_id
    assert run_cli(installation, "run").returncode == 0
    before = demo_generations(installation)
    completed = [row for row in before if row.status == "completed"]
    latest = max(row.version for row in before)

    # The flat layout still reads every migrated generation, and an edit through it is seen.
    for row in completed:
        assert (root / row.id).is_symlink() and any((root / row.id).iterdir())
    edited = completed[-1]
    (root / edited.id / "EDITED.md").write_text("edited through the flat path\n")

    # The application creates a generation (no version), then writes it itself in the new layout.
    app_inserts(installation, "app-made-0000-0000-0000-000000000001", "processing")
    active_target = root / project_id / "generations" / os.readlink(root / project_id / "generations" / "active")
    app_target = app_writes_new_layout(installation, "app-made-0000-0000-0000-000000000001", latest + 1, active_target)
    # Its phased generator leaves the scratch copy beside the finished folder.
    (root / "app-made-0000-0000-0000-000000000001").mkdir()
    (root / "app-made-0000-0000-0000-000000000001" / "scratch.py").write_text("# work in progress\n")
    # Another create with the default version 1: a duplicate the tool must renumber, not refuse.
    app_inserts(installation, "app-made-0000-0000-0000-000000000002", "completed")
    (root / "app-made-0000-0000-0000-000000000002").mkdir()
    (root / "app-made-0000-0000-0000-000000000002" / "main.py").write_text("print('v1 again')\n")
    # A failed generation with a partial folder, and one still processing.
    app_inserts(installation, "app-made-0000-0000-0000-000000000003", "failed", version=latest + 2)
    (root / "app-made-0000-0000-0000-000000000003").mkdir()
    (root / "app-made-0000-0000-0000-000000000003" / "half.py").write_text("# partial\n")
    # cleanup_old_generations archives the oldest version; a delete leaves a gap.
    oldest = completed[0]
    archive = root / project_id / "archive"
    archive.mkdir()
    (root / project_id / "generations" / f"v{oldest.version}__{oldest.id}").rename(archive / f"v{oldest.version}__{oldest.id}")
    deleted = completed[1]
    execute_sql(installation, "UPDATE projects SET active_generation_id = NULL WHERE active_generation_id = :id", id=deleted.id)
    execute_sql(installation, "DELETE FROM generations WHERE id = :id", id=deleted.id)
    later_app_revision(installation)

    resync = run_cli(installation, "--json", "resync")
    assert resync.returncode == 0, resync.stdout + resync.stderr
    document = json.loads(resync.stdout)
    assert str(root / "app-made-0000-0000-0000-000000000001") in document["leftovers"]
    code, verified = verify_json(installation)
    assert (code, verified["problems"]) == (0, [])

    # Nothing the application wrote is lost.
    manifest = json.loads((app_target / "manifest.json").read_text())
    assert manifest["metadata"] == {"model": "the application's own key"}
    assert manifest["created_at"] == "2026-11-25T10:00:00" and "checksums" in manifest
    summary, storage_path = query_rows(installation, "SELECT changes_summary, storage_path FROM generations WHERE id = :id",
                                 id="app-made-0000-0000-0000-000000000001")[0]
    summary = summary if isinstance(summary, dict) else json.loads(summary)
    assert summary["diff_created_at"] == "2026-11-25T10:00:00" and summary["to_version"] == latest + 1
    assert storage_path == f"storage/projects/{project_id}/generations/{app_target.name}", "left as written"
    assert (root / "app-made-0000-0000-0000-000000000001" / "scratch.py").is_file(), "scratch copy untouched"
    assert (archive / f"v{oldest.version}__{oldest.id}" / "source").is_dir()
    assert not (root / project_id / "generations" / f"v{oldest.version}__{oldest.id}").exists(), "never rebuilt"
    # The duplicate got the next free number; latest_version never went down.
    renumbered = query_rows(installation, "SELECT version FROM generations WHERE id = :id",
                      id="app-made-0000-0000-0000-000000000002")[0][0]
    assert renumbered > latest + 2
    project_latest = query_rows(installation, "SELECT latest_version FROM projects WHERE id = :p", p=project_id)[0][0]
    assert project_latest >= renumbered
    # The failed generation is kept, counted, never a diff base; the edit was picked up.
    failed_target = root / project_id / "generations" / f"v{latest + 2}__app-made-0000-0000-0000-000000000003"
    assert (failed_target / "source" / "half.py").is_file() and not list(failed_target.glob("*.patch"))
    edited_count = query_rows(installation, "SELECT file_count FROM generations WHERE id = :id", id=edited.id)[0][0]
    assert edited_count == sum(len(files) for _, _, files in os.walk(root / edited.id / ""))
    assert (root / edited.id / "EDITED.md").is_file()

    # Rollback deletes nothing the application wrote.
    assert run_cli(installation, "rollback").returncode in (0, 1)
    assert (app_target / "manifest.json").is_file(), "its manifest (with metadata) stays"
    assert (app_target / f"diff_from_v{latest}.patch").exists() or not (app_target / "source").exists()
    assert (root / "app-made-0000-0000-0000-000000000001" / "scratch.py").is_file()
