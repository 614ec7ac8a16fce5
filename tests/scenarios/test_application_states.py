"""The application's newest commit leaves states the tool must report, keep and accept (README,
"Running beside the application"): failed rows whose folder is complete, completed rows with NULL
storage_path beside the folder it wrote, NULL storage_path with both its flat and its hierarchical
folder (equal and different), `<ROOT>/<id>.zip` downloads and other files at ROOT's top level, and
its `changes_summary` keys across a renumbering. Seeded as its FileManager writes them (manifest
first, then the files; `storage_path` spelled `storage/projects/…`; `output_files` as JSON)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.application import FILES, app_saves, next_version, row_of
from tests.support.sandbox import Sandbox, build_installation, execute_sql, run_cli, tree_digest


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    built = build_installation(database_url, tmp_path / "projects")
    assert run_cli(built, "run").returncode == 0
    return built


def flat_copy(installation: Sandbox, generation_id: str, files: dict[str, str]) -> Path:
    """The phased generator's scratch copy `<ROOT>/<id>/` (or what a broken save left there)."""
    folder = installation.root / generation_id
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content, encoding="utf-8")
    return folder


def json_of(installation: Sandbox, *arguments: str) -> tuple[int, dict]:
    result = run_cli(installation, "--json", *arguments)
    return result.returncode, json.loads(result.stdout)


def seed_every_state(installation: Sandbox) -> dict[str, str]:
    failed_complete, _ = app_saves(installation, next_version(installation), status="failed", with_storage_path=True)
    completed_null, _ = app_saves(installation, next_version(installation), status="completed", with_storage_path=False)
    pair_equal, _ = app_saves(installation, next_version(installation), status="completed", with_storage_path=False)
    flat_copy(installation, pair_equal, FILES)
    pair_different, _ = app_saves(installation, next_version(installation), status="failed", with_storage_path=False,
                                  broke_after=1)
    flat_copy(installation, pair_different, {**FILES, "app/phase3.py": "x = 3\n"})
    (installation.root / f"{failed_complete}.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (installation.root / f"{completed_null}.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (installation.root / "notes.txt").write_text("an operator's note\n")
    return {"failed_complete": failed_complete, "completed_null": completed_null, "pair_equal": pair_equal,
            "pair_different": pair_different}


def expected_states(ids: dict[str, str], **overrides: list[str]) -> dict[str, list[str]]:
    states = {
        "failed_but_complete": [ids["failed_complete"]],
        "completed_without_storage_path": [ids["completed_null"]],
        "flat_and_hierarchical_without_storage_path": sorted([ids["pair_equal"], ids["pair_different"]]),
        "adopted": [],
        "root_zips": sorted([f"{ids['failed_complete']}.zip", f"{ids['completed_null']}.zip"]),
        "root_files": ["notes.txt"],
    }
    return {**states, **overrides}


def test_every_command_reports_the_application_states(installation: Sandbox) -> None:
    ids = seed_every_state(installation)
    for arguments in (("--dry-run",), ("verify",), ("resync",)):
        code, document = json_of(installation, *arguments)
        assert code == 0, (arguments, document)
        assert document["application_states"] == expected_states(ids), arguments
    # after that resync the NULL storage_path rows are filled: they are ordinary states now
    code, document = json_of(installation, "run")
    assert code == 0
    assert document["application_states"] == expected_states(
        ids, completed_without_storage_path=[], flat_and_hierarchical_without_storage_path=[])
    text = run_cli(installation, "--dry-run").stdout
    assert f"application state failed_but_complete (1): {ids['failed_complete']}" in text
    assert "application state root_files (1): notes.txt" in text


def test_nothing_the_application_wrote_is_deleted_and_nothing_fails(installation: Sandbox) -> None:
    ids = seed_every_state(installation)
    flat_before = {key: tree_digest(installation.root / ids[key]) for key in ("pair_equal", "pair_different")}
    zips_before = {name: (installation.root / name).read_bytes() for name in os.listdir(installation.root)
                   if name.endswith(".zip") or name == "notes.txt"}
    for _ in range(2):
        code, document = json_of(installation, "resync")
        assert (code, document["failed"]) == (0, 0), document
        assert {str(installation.root / ids[key]) for key in ("pair_equal", "pair_different")} <= set(document["leftovers"])
        assert document["orphans"] == []
    for key, digest in flat_before.items():
        assert tree_digest(installation.root / ids[key]) == digest, key
    assert {name: (installation.root / name).read_bytes() for name in zips_before} == zips_before
    # completed rows with NULL storage_path get it filled (their folder is the application's); no status changes
    for key in ("completed_null", "pair_equal", "pair_different"):
        row = row_of(installation, ids[key])
        assert row["storage_path"] == f"storage/projects/{installation.sample.demo_project_id}/generations/" \
                                      f"v{row['version']}__{ids[key]}", key
    assert row_of(installation, ids["failed_complete"])["status"] == "failed"
    assert row_of(installation, ids["pair_different"])["status"] == "failed"
    assert run_cli(installation, "verify").returncode == 0


def test_verify_accepts_every_state_before_a_resync(installation: Sandbox) -> None:
    seed_every_state(installation)
    code, document = json_of(installation, "verify")
    assert (code, document["problems"]) == (0, [])


def test_adopt_complete_marks_only_matching_failed_generations(installation: Sandbox) -> None:
    matching, _ = app_saves(installation, next_version(installation), status="failed", with_storage_path=True)
    edited, edited_target = app_saves(installation, next_version(installation), status="failed", with_storage_path=True)
    (edited_target / "source" / "README.md").write_text("# edited by hand\n")
    code, document = json_of(installation, "resync")
    assert code == 0 and document["application_states"]["adopted"] == []
    assert row_of(installation, matching)["status"] == "failed"          # never without the option
    code, document = json_of(installation, "resync", "--adopt-complete")
    assert code == 0, document
    assert document["application_states"]["adopted"] == [matching]
    assert row_of(installation, matching)["status"] == "completed"
    assert row_of(installation, edited)["status"] == "failed"            # its files are not its output_files
    assert run_cli(installation, "verify").returncode == 0


def test_adoption_is_conditional_on_the_row_as_read(installation: Sandbox) -> None:
    from storage_migrator.db.writes import adopt_failed_generation
    from storage_migrator.records import RowSeen

    generation_id, _ = app_saves(installation, next_version(installation), status="failed", with_storage_path=True)
    row = row_of(installation, generation_id)
    size = sum(len(content.encode()) for content in FILES.values())
    stale = RowSeen("failed", row["version"], None)                       # the application wrote storage_path since
    engine = installation.engine()
    try:
        assert not adopt_failed_generation(engine, generation_id, stale, len(FILES), size)
        assert row_of(installation, generation_id)["status"] == "failed"
        seen = RowSeen("failed", row["version"], row["storage_path"])
        assert not adopt_failed_generation(engine, generation_id, seen, len(FILES) + 1, size)
        assert adopt_failed_generation(engine, generation_id, seen, len(FILES), size)
    finally:
        engine.dispose()
    assert row_of(installation, generation_id)["status"] == "completed"


def test_renumbering_makes_the_application_version_facts_follow(installation: Sandbox) -> None:
    """The application writes vN with its summary; another row takes vN first (older): resync
    renumbers the application's generation, and its `to_version` follows."""
    number = next_version(installation)
    older, _ = app_saves(installation, number, status="completed", with_storage_path=True)
    execute_sql(installation, "UPDATE generations SET created_at = '2020-01-01 00:00:00' WHERE id = :id", id=older)
    summary = {"diff_created_at": "2026-11-25T10:00:00", "from_version": number - 1, "to_version": number}
    later, _ = app_saves(installation, number, status="completed", with_storage_path=True, summary=summary,
                         files={"app/main.py": "print('later')\n"})
    code, document = json_of(installation, "resync")
    assert code == 0, document
    row = row_of(installation, later)
    assert row["version"] > number
    stored = row["changes_summary"] if isinstance(row["changes_summary"], dict) else json.loads(row["changes_summary"])
    assert stored["to_version"] == row["version"]
    assert stored["from_version"] == number                                 # its diff base is the older vN now
    assert stored["diff_created_at"] == summary["diff_created_at"]
    assert run_cli(installation, "verify").returncode == 0


def test_a_failed_generation_renumbered_keeps_its_to_version_right(installation: Sandbox) -> None:
    number = next_version(installation)
    older, _ = app_saves(installation, number, status="completed", with_storage_path=True)
    execute_sql(installation, "UPDATE generations SET created_at = '2020-01-01 00:00:00' WHERE id = :id", id=older)
    summary = {"diff_created_at": "2026-11-25T10:00:00", "from_version": number - 1, "to_version": number}
    later, _ = app_saves(installation, number, status="failed", with_storage_path=True, summary=summary)
    assert run_cli(installation, "resync").returncode == 0
    row = row_of(installation, later)
    stored = row["changes_summary"] if isinstance(row["changes_summary"], dict) else json.loads(row["changes_summary"])
    assert row["version"] > number and stored["to_version"] == row["version"]
    assert stored["diff_created_at"] == summary["diff_created_at"]


@pytest.mark.parametrize("command", [("verify",), ("--dry-run",), ("resync",)])
def test_the_state_folder_is_kept_fresh(installation: Sandbox, command: tuple[str, ...]) -> None:
    """The application's `cleanup_old_files` removes top-level entries of ROOT older than 30 days."""
    state_dir = installation.root / ".storage-migrate"
    old = time.time() - 40 * 86400
    os.utime(state_dir, (old, old))
    assert run_cli(installation, *command).returncode == 0
    assert state_dir.stat().st_mtime > time.time() - 600
