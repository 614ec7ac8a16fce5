"""`storage-migrate --dry-run` and `run` on real SQLite and PostgreSQL against sample installations:
the plan changes nothing, the run produces the SPEC's layout and metadata exactly, and a rerun is a no-op."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storage_migrator.commands.run import run
from storage_migrator.engine import execute as execute_module
from storage_migrator.storage import root as root_module
from storage_migrator.storage.layout import TEMP_SUFFIX, StorageLayout
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    dump_tables,
    error_lines,
    manifest_at,
    run_cli,
    scan,
    tree_digest,
)


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


def rows_by_id(installation: Sandbox, table: str) -> dict[str, sa.RowMapping]:
    engine = installation.engine()
    with engine.connect() as connection:
        rows = {row["id"]: row for row in connection.execute(sa.text(f"SELECT * FROM {table}")).mappings()}
    engine.dispose()
    return rows


def as_json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def test_dry_run_changes_nothing_and_lists_every_generation(installation: Sandbox) -> None:
    tree_before, tables_before = tree_digest(installation.root), dump_tables(installation.database_url)
    result = run_cli(installation, "--json", "--dry-run")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert tree_digest(installation.root) == tree_before
    assert dump_tables(installation.database_url) == tables_before
    assert not (installation.root / ".storage-migrate").exists()
    planned = {entry["id"]: entry for entry in document["generations"]}
    assert set(planned) == set(installation.sample.generation_ids)
    assert {"migrated", "skipped", "failed", "generations"} <= set(document)
    assert planned[installation.sample.processing_generation_id]["action"] == "skipped"
    assert "processing" in planned[installation.sample.processing_generation_id]["reason"]
    assert planned[installation.sample.missing_folder_generation_id]["action"] == "rebuilt"
    moves = [entry for entry in planned.values() if entry["action"] == "moved"]
    assert len(moves) >= len(installation.sample.folder_generation_ids) - 2
    for entry in moves:
        assert entry["storage_path"] == f"storage/projects/{entry['project_id']}/generations/v{entry['version']}__{entry['id']}"
    text = run_cli(installation, "--dry-run")
    assert text.returncode == 0
    assert "nothing was changed" in text.stdout and " -> storage/projects/" in text.stdout


def test_run_builds_the_versioned_layout(installation: Sandbox) -> None:
    legacy_trees = {
        generation_id: scan(installation.root / generation_id).checksums()
        for generation_id in installation.sample.generation_ids
        if (installation.root / generation_id).is_dir()
    }
    report = run(installation.settings)
    assert report.failed == 0, [outcome for outcome in report.outcomes if outcome.failed]
    rows = rows_by_id(installation, "generations")
    projects = rows_by_id(installation, "projects")
    layout = StorageLayout(installation.root, "./storage/projects")
    processing = installation.sample.processing_generation_id
    assert (installation.root / processing).is_dir(), "a processing generation is never moved"
    assert rows[processing]["storage_path"] == f"./storage/projects/{processing}"
    migrated = [row for row in rows.values() if row["storage_path"] and "/generations/" in row["storage_path"]]
    assert len(migrated) == len(legacy_trees) - 1 + 1   # all folders but the processing one, plus the rebuilt one
    for project_id, project in projects.items():
        versions = sorted((row for row in migrated if row["project_id"] == project_id), key=lambda row: row["version"])
        previous = None
        for row in versions:
            target = layout.target_dir(project_id, row["version"], row["id"])
            assert row["storage_path"] == f"storage/projects/{project_id}/generations/{target.name}"
            assert (installation.root / row["id"]).is_symlink(), "the flat path is the tool's link"
            snapshot = scan(target / "source")
            if row["id"] in legacy_trees:
                assert snapshot.checksums() == legacy_trees[row["id"]]
            assert (target / "artifacts").is_dir() and not any((target / "artifacts").iterdir())
            assert row["file_count"] == snapshot.file_count
            assert row["total_size_bytes"] == snapshot.total_size_bytes
            manifest = manifest_at(target / "manifest.json")
            assert manifest is not None and manifest.files == sorted(snapshot.files)
            assert manifest.checksums == snapshot.checksums()
            raw_manifest = json.loads((target / "manifest.json").read_text())
            assert {"generation_id", "project_id", "version", "created_at", "file_count", "total_size_bytes",
                    "files", "checksums"} <= set(raw_manifest)
            summary = as_json(row["changes_summary"])
            if row["status"] != "completed":
                # A failed generation's files are moved and listed, but it gets no diff and is never P.
                assert row["diff_from_previous"] is None and not list(target.glob("diff_from_v*.patch"))
                continue
            if previous is None:
                assert row["diff_from_previous"] is None
                assert summary == {"added": snapshot.file_count, "modified": 0, "deleted": 0, "from_version": None}
            else:
                patch_name = f"diff_from_v{previous['version']}.patch"
                assert row["diff_from_previous"] == f"{row['storage_path']}/{patch_name}"
                assert (target / patch_name).is_file()
                assert summary["from_version"] == previous["version"]
                old = set(scan(layout.target_dir(project_id, previous["version"], previous["id"]) / "source").files)
                assert summary["added"] == len(set(snapshot.files) - old)
                assert summary["deleted"] == len(old - set(snapshot.files))
            previous = row
        all_versions = [row["version"] for row in rows.values() if row["project_id"] == project_id]
        assert project["latest_version"] == max(all_versions, default=0)
        active_id = project["active_generation_id"]
        for row in rows.values():
            if row["project_id"] == project_id:
                assert bool(row["is_active"]) == (row["id"] == active_id)
        link = layout.active_link(project_id)
        if active_id is not None:
            active = rows[active_id]
            assert os.readlink(link) == f"v{active['version']}__{active_id}"
            assert rows[active_id]["status"] == "completed"
        else:
            assert not link.is_symlink()
    rebuilt = rows[installation.sample.missing_folder_generation_id]
    assert "/generations/" in rebuilt["storage_path"] and rebuilt["file_count"] > 0


def test_rerun_is_a_no_op(installation: Sandbox) -> None:
    first = run_cli(installation, "run")
    assert first.returncode == 0, first.stderr
    tree, tables = tree_digest(installation.root), dump_tables(installation.database_url)
    second = run_cli(installation, "--json", "run")
    assert second.returncode == 0, second.stderr
    document = json.loads(second.stdout)
    assert document["migrated"] == 0 and document["failed"] == 0
    assert tree_digest(installation.root) == tree
    assert dump_tables(installation.database_url) == tables


def test_a_second_run_makes_no_folder_that_exists_and_owes_no_sync(
    installation: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing changed since the first run: the second one tries no ``mkdir`` that fails with
    EEXIST, and finds nothing to make durable before its commits (no sync of any kind)."""
    assert run(installation.settings).failed == 0
    existing: list[str] = []
    durable: list[root_module.Durable] = []
    real_mkdir, real_make_durable = os.mkdir, root_module.Root.make_durable

    def mkdir(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        try:
            real_mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            existing.append(name)
            raise

    def make_durable(root: root_module.Root) -> root_module.Durable:
        durable.append(real_make_durable(root))
        return durable[-1]

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(root_module.Root, "make_durable", make_durable)
    report = run(installation.settings, resync=True)
    assert report.failed == 0 and report.migrated == 0
    assert existing == []
    assert durable and set(durable) == {root_module.Durable()}


def test_a_run_opens_each_file_once_for_its_hash_and_its_patches(
    installation: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan's bytes serve both patches a file is in: the new side of its own version's (the
    files it changed) and the old side of the next version's (kept aside until that version is
    scanned). No regular file is opened for reading twice in a run."""
    opened: dict[tuple[int, int], list[str]] = {}
    real_open = os.open

    def recording_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if not flags & (os.O_DIRECTORY | os.O_WRONLY | os.O_RDWR):
            status = os.fstat(fd)
            if stat.S_ISREG(status.st_mode):
                opened.setdefault((status.st_dev, status.st_ino), []).append(os.fsdecode(path))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    report = run(installation.settings)
    assert report.migrated > 0 and report.failed == 0
    assert len(opened) > 100
    assert {names[0]: len(names) for names in opened.values() if len(names) > 1} == {}


def test_a_killed_writes_temp_file_in_a_target_is_swept_and_a_target_the_run_made_is_not_listed_for_one(
    installation: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target a killed run left (its artifacts folder and a temp manifest) is swept of the
    temp file; a target this run made itself cannot hold one, so it is not listed for one."""
    rows = rows_by_id(installation, "generations")
    layout = StorageLayout(installation.root, "./storage/projects")
    moved = sorted((row for row in rows.values() if row["status"] == "completed" and row["version"]
                    and (installation.root / row["id"]).is_dir()), key=lambda row: (row["project_id"], row["version"]))
    left = layout.target_dir(moved[0]["project_id"], moved[0]["version"], moved[0]["id"])
    (left / "artifacts").mkdir(parents=True)
    leftover = left / f".manifest.json.4242.{'0' * 16}{TEMP_SUFFIX}"
    leftover.write_text("half a manifest")
    swept: list[Path] = []
    real_remove_temp_files = execute_module.remove_temp_files
    monkeypatch.setattr(execute_module, "remove_temp_files",
                        lambda storage, folder: (swept.append(folder), real_remove_temp_files(storage, folder))[1])
    report = run(installation.settings)
    assert report.failed == 0
    assert not leftover.exists() and (left / "manifest.json").is_file()
    targets = [path for path in swept if path.parent.name == "generations"]
    assert targets == [left]


def test_a_moved_generations_row_is_written_once(tmp_path: Path, sqlite_url: str) -> None:
    """A move's new place and its metadata go to its row in one write (the claim batch's
    publish), not in two: on SQLite a row that holds ``output_files`` is rewritten whole,
    overflow pages and journal, by every write that changes its size. A trigger counts the
    writes of the columns the tool owns, per row."""
    installation = build_installation(sqlite_url, tmp_path / "projects")
    owned = "storage_path, version, file_count, total_size_bytes, diff_from_previous, changes_summary"
    engine = installation.engine()
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE row_writes (generation_id TEXT)"))
        connection.execute(sa.text(f"CREATE TRIGGER count_row_writes AFTER UPDATE OF {owned} ON generations "
                                   "BEGIN INSERT INTO row_writes VALUES (new.id); END"))
    result = run_cli(installation, "--json", "run")
    assert result.returncode == 0, result.stderr
    moved = [line["id"] for line in json.loads(result.stdout)["generations"] if line["action"] == "moved"]
    assert len(moved) >= 5, "the sample has moves"
    with engine.connect() as connection:
        writes = {row.generation_id: row.writes for row in connection.execute(sa.text(
            "SELECT generation_id, count(*) AS writes FROM row_writes GROUP BY generation_id"))}
    engine.dispose()
    assert {generation_id: writes.get(generation_id) for generation_id in moved} == dict.fromkeys(moved, 1)


def test_database_not_at_head_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects", to_head=False)
    before = tree_digest(installation.root)
    result = run_cli(installation, "run")
    assert result.returncode == 2
    assert "storage-migrate db upgrade" in result.stderr and "Traceback" not in result.stderr
    assert tree_digest(installation.root) == before


def test_unreachable_database_is_one_line_without_password(tmp_path: Path, sqlite_url: str) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    result = run_cli(installation, "run", extra_environment={
        "DATABASE_URL": "postgresql://operator:s3cret-pw@127.0.0.1:1/codebegen"})
    assert result.returncode == 2
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len(error_lines(result.stderr)) == 1
    assert "cannot connect" in result.stderr


def test_missing_storage_root_is_a_usage_error(tmp_path: Path, sqlite_url: str) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    result = run_cli(installation, "run", extra_environment={"STORAGE_ROOT": str(tmp_path / "nowhere")})
    assert result.returncode == 2 and "storage root" in result.stderr


def test_text_mode_report_keeps_only_failures_and_skips(installation: Sandbox) -> None:
    report = run(installation.settings, keep_all=False)
    assert report.migrated > 10 and report.failed == 0
    assert {outcome.action for outcome in report.outcomes} == {"skipped"}
    assert report.skipped == len(report.outcomes)
