"""Keeping disk and database in agreement after the migration: verify finds tampering, resync
repairs it (incrementally), stragglers and completed-since-run generations are migrated,
orphans survive, and rollback is byte-exact (watch: test_watch.py)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path, PurePath

import pytest
import sqlalchemy as sa

from storage_migrator.commands.run import run
from storage_migrator.config import BASE_REVISION
from storage_migrator.db.revisions import downgrade_schema, upgrade_schema
from storage_migrator.demo import SampleSize
from storage_migrator.storage.manifest import HEAD_BYTES
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    demo_versions,
    dump_tables,
    edit_a_diff_base_in_place,
    execute_sql,
    query_rows,
    run_cli,
    source_of,
    tree_digest,
    verify_json,
)


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


@pytest.fixture
def migrated(installation: Sandbox) -> Sandbox:
    result = run_cli(installation, "run")
    assert result.returncode == 0, result.stderr
    return installation


def summary(row: sa.Row) -> dict:
    value = row.changes_summary
    return json.loads(value) if isinstance(value, str) else value


def test_verify_is_clean_after_run(migrated: Sandbox) -> None:
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])
    assert document["ok"] is True


def test_tampered_middle_version_is_found_and_repaired(migrated: Sandbox) -> None:
    v1, v2, v3 = demo_versions(migrated)[:3]
    middle = source_of(migrated, v2.id, v2.version)
    (middle / "app" / "main.py").write_bytes((middle / "app" / "main.py").read_bytes() + b"# edited by hand\n")
    (middle / "HAND_ADDED.md").write_text("added by hand\n")
    deleted = sorted(p for p in middle.rglob("*.py") if p.name != "main.py" and p.stat().st_size > 0)[0]
    deleted.unlink()
    tables_before = dump_tables(migrated.database_url)

    code, document = verify_json(migrated)
    assert code == 3
    kinds = {(problem["generation_id"], problem["kind"]) for problem in document["problems"]}
    assert (v2.id, "checksum") in kinds and (v2.id, "size") in kinds
    assert dump_tables(migrated.database_url) == tables_before, "verify is read-only"

    result = run_cli(migrated, "--json", "resync")
    assert result.returncode == 0, result.stderr
    refreshed = {entry["id"] for entry in json.loads(result.stdout)["generations"] if entry["action"] == "refreshed"}
    assert refreshed == {v2.id, v3.id}, "the changed version and the next one, no other"
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])
    new_v1, new_v2, new_v3 = demo_versions(migrated)[:3]
    assert new_v2.file_count == v2.file_count
    assert summary(new_v2)["added"] == summary(v2)["added"] + 1
    assert summary(new_v3)["from_version"] == v2.version
    assert summary(new_v3)["deleted"] == summary(v3)["deleted"] + 1, "HAND_ADDED.md is gone again in v3"
    assert new_v1 == v1


def test_a_rewrite_that_sets_the_mtime_back_is_seen_by_the_next_resync(migrated: Sandbox) -> None:
    """What ``cp -p``, ``rsync -t --inplace``, ``tar x`` and ``touch -r`` do: same size, other
    bytes, the old mtime. The ctime (which no call sets back) tells resync to read the folder."""
    assert run_cli(migrated, "resync").returncode == 0
    v1, v2 = demo_versions(migrated)[:2]
    old, middle = source_of(migrated, v1.id, v1.version), source_of(migrated, v2.id, v2.version)
    edited = next(path for path in sorted(middle.rglob("*"))
                  if path.is_file() and path.stat().st_size > 0
                  and (old / path.relative_to(middle)).is_file()
                  and (old / path.relative_to(middle)).read_bytes() == path.read_bytes())
    status = edited.stat()
    edited.write_bytes(bytes(byte ^ 1 for byte in edited.read_bytes()))
    os.utime(edited, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (edited.stat().st_size, edited.stat().st_mtime_ns) == (status.st_size, status.st_mtime_ns)

    result = run_cli(migrated, "--json", "resync")
    assert result.returncode == 0, result.stderr
    refreshed = {entry["id"] for entry in json.loads(result.stdout)["generations"] if entry["action"] == "refreshed"}
    assert v2.id in refreshed, "the rewritten version is read again"
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])
    manifest = json.loads((middle.parent / "manifest.json").read_text("utf-8"))
    assert manifest["checksums"][edited.relative_to(middle).as_posix()] == hashlib.sha256(edited.read_bytes()).hexdigest()
    assert summary(demo_versions(migrated)[1])["modified"] == summary(v2)["modified"] + 1


def _patch_files(installation: Sandbox) -> dict[Path, tuple[int, bytes]]:
    return {path: (path.stat().st_ino, path.read_bytes())
            for path in sorted(installation.root.glob("*/generations/v*__*/diff_from_v*.patch"))}


@pytest.mark.parametrize("and_one_edit", [False, True], ids=["stats-only", "and-one-edit"])
def test_a_resync_after_every_files_ctime_moved_reads_them_and_keeps_the_patches(
        migrated: Sandbox, and_one_edit: bool) -> None:
    """What ``chown -R``, ``chmod -R`` or a hard-link backup of ROOT do: every fingerprint moves,
    no byte does. Resync reads every folder again (a rewrite that kept size and mtime looks the
    same), records the new fingerprints, and keeps every patch and changes summary, whose two
    sides hold the bytes they were written from; with one base edited in place as well, the
    patch from it, and its own, are written again, and only those."""
    patches = _patch_files(migrated)
    for path in migrated.root.glob("*/generations/*/source/**/*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, path.stat().st_mode & 0o7777)
    edited: set[Path] = set()
    if and_one_edit:
        project_id, base_id = edit_a_diff_base_in_place(migrated)
        rows = query_rows(migrated, "SELECT id, version FROM generations WHERE project_id = :p AND status = 'completed' "
                                    "ORDER BY version", p=project_id)
        ids = [row.id for row in rows]
        touched = ids[ids.index(base_id):ids.index(base_id) + 2]
        edited = {path for path in patches if path.parent.name.split("__")[1] in touched}
        assert len(edited) >= 1
    columns = "id, file_count, total_size_bytes, diff_from_previous, changes_summary"
    rows_before = query_rows(migrated, f"SELECT {columns} FROM generations ORDER BY id")

    result = run_cli(migrated, "--json", "resync")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["failed"] == 0
    after = _patch_files(migrated)
    assert after.keys() == patches.keys()
    rewritten = {path for path in patches if after[path][0] != patches[path][0]}
    assert rewritten == edited, "a patch is written again only where a side's bytes changed"
    assert {path for path in patches if after[path][1] != patches[path][1]} <= edited
    if not and_one_edit:
        assert query_rows(migrated, f"SELECT {columns} FROM generations ORDER BY id") == rows_before
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])
    again = run_cli(migrated, "--json", "resync")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["migrated"] == 0, "the new fingerprints were recorded"


def test_a_failed_duplicate_with_nothing_on_disk_gets_the_next_number_once(migrated: Sandbox) -> None:
    """Versions are unique per project (the SPEC's metadata rules). A failed row sharing v1 with an older generation
    and with no folder at all takes the next free number; later resyncs take no other."""
    project_id = migrated.sample.demo_project_id
    v1 = demo_versions(migrated)[0]
    duplicate = "d0f00000-0000-4000-8000-000000000001"
    execute_sql(migrated, "INSERT INTO generations (id, project_id, user_id, prompt, status, version, storage_path, "
            "created_at) SELECT :id, id, user_id, 'again', 'failed', :v, :path, :at FROM projects WHERE id = :p",
            id=duplicate, p=project_id, v=v1.version, path=f"storage/projects/{duplicate}", at="2099-01-01 00:00:00")
    latest = query_rows(migrated, "SELECT latest_version FROM projects WHERE id = :p", p=project_id)[0].latest_version
    for attempt in range(3):
        result = run_cli(migrated, "resync")
        assert result.returncode == 0, (attempt, result.stdout, result.stderr)
        numbers = query_rows(migrated, "SELECT g.version, p.latest_version FROM generations g JOIN projects p "
                       "ON p.id = g.project_id WHERE g.id = :id", id=duplicate)[0]
        assert tuple(numbers) == (latest + 1, latest + 1), (attempt, tuple(numbers), latest)
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])


def test_resync_of_unchanged_storage_reads_no_file(migrated: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, flags, *args, **kwargs):
        if "/source/" in os.fsdecode(path) or "/generations/" in os.fsdecode(path) and os.fsdecode(path).endswith(".patch"):
            opened.append(os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    report = run(migrated.settings, resync=True)
    assert report.migrated == 0 and report.failed == 0
    assert opened == []


def test_a_manifest_damaged_past_its_first_4_kib_is_rewritten_by_resync(database_url: str, tmp_path: Path) -> None:
    """Resync decides "unchanged" from a manifest's head (its first 4 KiB) and a stat of the files;
    a body cut short or with a checksum digit changed behind an intact head is found all the same:
    that generation alone is refreshed, its manifest written again byte for byte as the run wrote
    it, and every other generation stays unchanged."""
    installation = build_installation(database_url, tmp_path / "projects",
                                      SampleSize(projects=5, generations_per_project=4, files_per_generation=40))
    assert run_cli(installation, "run").returncode == 0
    clean = run_cli(installation, "--json", "resync")
    assert clean.returncode == 0, clean.stderr
    unchanged = {entry["id"] for entry in json.loads(clean.stdout)["generations"] if entry["action"] == "unchanged"}
    # The last completed version of two projects: no later version takes its diff from it.
    last = {}
    for project_id, generation_id, version in query_rows(
            installation, "SELECT project_id, id, version FROM generations WHERE status = 'completed' ORDER BY version"):
        last[project_id] = (generation_id, version)
    victims = [(project_id, *last[project_id]) for project_id in sorted(last) if last[project_id][0] in unchanged][:2]
    assert len(victims) == 2
    manifests = [tmp_path / "projects" / project_id / "generations" / f"v{version}__{generation_id}" / "manifest.json"
                 for project_id, generation_id, version in victims]
    written = [path.read_bytes() for path in manifests]
    assert all(len(data) > HEAD_BYTES + 1000 for data in written)
    manifests[0].write_bytes(written[0][:HEAD_BYTES + 500])
    digit = written[1].index(b'"', written[1].index(b'": "', HEAD_BYTES) + 4) - 1    # a checksum's last digit
    manifests[1].write_bytes(written[1][:digit] + (b"0" if written[1][digit:digit + 1] != b"0" else b"1")
                             + written[1][digit + 1:])
    with pytest.raises(ValueError):
        json.loads(manifests[0].read_text("utf-8"))                # the application cannot read it
    assert json.loads(manifests[1].read_text("utf-8"))["checksums"] != json.loads(written[1])["checksums"]

    result = run_cli(installation, "--json", "resync")
    assert result.returncode == 0, result.stderr
    entries = {entry["id"]: entry for entry in json.loads(result.stdout)["generations"]}
    for _, generation_id, _ in victims:
        assert entries[generation_id]["action"] == "refreshed", entries[generation_id]
        assert "unreadable" in entries[generation_id]["reason"], entries[generation_id]
    assert {gid for gid, entry in entries.items() if entry["action"] == "unchanged"} == \
        unchanged - {generation_id for _, generation_id, _ in victims}
    assert [path.read_bytes() for path in manifests] == written
    assert all(json.loads(path.read_text("utf-8")) for path in manifests)
    again = run_cli(installation, "--json", "resync")
    assert {entry["id"] for entry in json.loads(again.stdout)["generations"] if entry["action"] == "unchanged"} == unchanged
    code, document = verify_json(installation)
    assert (code, document["problems"]) == (0, [])


def test_resync_migrates_stragglers_and_completed_since_run(migrated: Sandbox) -> None:
    processing = migrated.sample.processing_generation_id
    execute_sql(migrated, "UPDATE generations SET status = 'completed' WHERE id = :id", id=processing)
    project_id, latest = query_rows(migrated, "SELECT id, latest_version FROM projects WHERE id = "
                              "(SELECT project_id FROM generations WHERE id = :id)", id=processing)[0]
    straggler = "0a0a0a0a-0000-4000-8000-00000000beef"
    folder = migrated.root / straggler
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "main.py").write_text("print('written by the old code')\n")
    execute_sql(migrated, "INSERT INTO generations (id, project_id, user_id, prompt, status, version, storage_path) "
            "SELECT :id, id, user_id, 'p', 'completed', :version, :path FROM projects WHERE id = :project",
            id=straggler, version=latest + 1, path=f"./storage/projects/{straggler}", project=project_id)

    result = run_cli(migrated, "--json", "resync")
    assert result.returncode == 0, result.stderr
    actions = {entry["id"]: entry["action"] for entry in json.loads(result.stdout)["generations"]}
    assert actions[processing] == "moved" and actions[straggler] == "moved"
    assert folder.is_symlink() and (migrated.root / processing).is_symlink()
    assert query_rows(migrated, "SELECT latest_version FROM projects WHERE id = :p", p=project_id)[0][0] == latest + 1
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])


def test_orphans_are_reported_never_deleted(migrated: Sandbox) -> None:
    orphan = migrated.root / "not-a-known-generation"
    orphan.mkdir()
    (orphan / "file.txt").write_text("keep me")
    ghost = migrated.root / migrated.sample.demo_project_id / "generations" / "v99__ghost-generation"
    (ghost / "source").mkdir(parents=True)
    result = run_cli(migrated, "--json", "resync")
    assert result.returncode == 0
    assert set(json.loads(result.stdout)["orphans"]) == {str(orphan), str(ghost)}
    assert (orphan / "file.txt").read_text() == "keep me" and ghost.is_dir()


def test_rollback_restores_the_legacy_installation(installation: Sandbox, database_url: str) -> None:
    before_tree, before_tables = tree_digest(installation.root), dump_tables(installation.database_url)
    assert run_cli(installation, "run").returncode == 0
    result = run_cli(installation, "--json", "rollback")
    assert result.returncode == 0, result.stderr
    after_tree = tree_digest(installation.root)
    rebuilt = installation.sample.missing_folder_generation_id
    extra = {path for path in after_tree if path.split("/")[0] == rebuilt}
    assert {path: value for path, value in after_tree.items() if path not in extra} == before_tree
    assert extra, "the generation rebuilt from output_files is now a legacy folder too"
    after_tables = dump_tables(installation.database_url)
    for table in ("projects", "generations"):
        for row in before_tables[table] + after_tables[table]:
            row.pop("updated_at", None)
    for row in before_tables["generations"] + after_tables["generations"]:
        # The same place however spelled: the schema migration wrote ./storage/projects/<id>, the
        # tool writes the application's spelling, storage/projects/<id>.
        row["storage_path"] = row["storage_path"] and str(PurePath(row["storage_path"]))
    assert after_tables == before_tables
    downgrade_schema(database_url, BASE_REVISION)
    upgrade_schema(database_url, "head")
    assert run_cli(installation, "run").returncode == 0
    assert run_cli(installation, "verify").returncode == 0


def test_the_applications_settings_are_enough(database_url: str, tmp_path: Path) -> None:
    """An operator sources the application's .env as it is and runs from the application's
    folder: FILE_STORAGE_PATH=./storage/projects (no STORAGE_ROOT, no prefix) and its
    DATABASE_URL spelling (postgresql+asyncpg:// or +psycopg2:// mean psycopg 3)."""
    installation = build_installation(database_url, tmp_path / "storage" / "projects")
    assert run_cli(installation, "run").returncode == 0
    environment = {key: value for key, value in installation.cli_environment().items()
                   if key not in ("STORAGE_ROOT", "STORAGE_PATH_PREFIX")}
    environment["FILE_STORAGE_PATH"] = "./storage/projects"
    spellings = ("postgresql+asyncpg://", "postgresql+psycopg2://") if database_url.startswith("postgresql") else ("",)
    for spelling in spellings:
        if spelling:
            environment["DATABASE_URL"] = spelling + database_url.split("://", 1)[1]
        for command in ("verify", "resync"):
            result = subprocess.run([sys.executable, "-m", "storage_migrator", command], env=environment, cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120)
            assert "Traceback" not in result.stderr, result.stderr
            assert result.returncode == 0, result.stdout + result.stderr
