"""Bad input (the SPEC's bad-input rule): each bad generation fails with its own error, the others are migrated,
the exit code is 1, nothing outside ROOT is read or written, and nothing is lost."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.demo import SampleSize
from tests.support.sandbox import Sandbox, build_installation, execute_sql, run_cli, tree_digest

SECRET = b"TOP-SECRET-OUTSIDE-ROOT"


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


def completed_generation(installation: Sandbox, index: int = 0) -> tuple[str, str, int]:
    engine = installation.engine()
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT id, project_id, version FROM generations WHERE status = 'completed' ORDER BY project_id, version")).all()
    engine.dispose()
    with_folder = [row for row in rows if (installation.root / row[0]).is_dir()]
    return tuple(with_folder[index])  # type: ignore[return-value]


def run_json(installation: Sandbox) -> tuple[int, dict]:
    result = run_cli(installation, "--json", "run")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def by_id(document: dict) -> dict[str, dict]:
    return {entry["id"]: entry for entry in document["generations"]}


def assert_others_migrated(document: dict, bad_ids: set[str]) -> None:
    migrated = [entry for entry in document["generations"] if entry["action"] in ("moved", "rebuilt")]
    assert migrated and not bad_ids & {entry["id"] for entry in migrated}
    assert document["failed"] == len(bad_ids)


def insert_generation(installation: Sandbox, generation_id: str, project_id: str, version: int) -> None:
    execute_sql(installation,
            "INSERT INTO generations (id, project_id, user_id, prompt, status, version, storage_path) "
            "SELECT :id, id, user_id, 'p', 'completed', :version, :path FROM projects WHERE id = :project_id",
            id=generation_id, project_id=project_id, version=version, path=f"./storage/projects/{generation_id}")


def test_unsafe_ids_fail_alone(installation: Sandbox, tmp_path: Path) -> None:
    _, project_id, _ = completed_generation(installation)
    outside = tmp_path / "escaped"
    outside.mkdir()
    (outside / "keep.txt").write_text("outside ROOT")
    unsafe = ["../escaped", "a/b", "..", ".hidden"]
    if installation.engine().dialect.name == "sqlite":
        unsafe.append("")
    for number, generation_id in enumerate(unsafe, start=100):
        insert_generation(installation, generation_id, project_id, number)
    code, document = run_json(installation)
    assert code == 1
    entries = by_id(document)
    for generation_id in unsafe:
        assert entries[generation_id]["action"] == "failed"
        assert entries[generation_id]["error"]
    assert_others_migrated(document, set(unsafe))
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_symlink_inside_a_folder_is_never_followed(installation: Sandbox, tmp_path: Path) -> None:
    generation_id, _, _ = completed_generation(installation)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    (installation.root / generation_id / "app" / "leak.py").symlink_to(secret)
    before = tree_digest(installation.root / generation_id)
    code, document = run_json(installation)
    assert code == 1
    entry = by_id(document)[generation_id]
    assert entry["action"] == "failed" and "symlink" in entry["error"]
    assert tree_digest(installation.root / generation_id) == before, "the bad folder is left as it was"
    assert_others_migrated(document, {generation_id})
    for directory, _, files in os.walk(installation.root):
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                assert SECRET not in path.read_bytes(), f"{path} holds bytes read through a symlink"


def test_legacy_folder_that_is_a_symlink_is_not_followed(installation: Sandbox, tmp_path: Path) -> None:
    generation_id, _, _ = completed_generation(installation)
    moved_away = tmp_path / "elsewhere"
    (installation.root / generation_id).rename(moved_away)
    (installation.root / generation_id).symlink_to(moved_away)
    code, document = run_json(installation)
    assert code == 1
    assert by_id(document)[generation_id]["action"] == "failed"
    assert (installation.root / generation_id).is_symlink() and moved_away.is_dir()


def test_target_that_exists_with_other_content(installation: Sandbox) -> None:
    generation_id, project_id, version = completed_generation(installation)
    target = installation.root / project_id / "generations" / f"v{version}__{generation_id}"
    target.mkdir(parents=True)
    (target / "notes-from-someone.txt").write_text("do not lose me")
    legacy_before = tree_digest(installation.root / generation_id)
    code, document = run_json(installation)
    assert code == 1
    entry = by_id(document)[generation_id]
    assert entry["action"] == "failed" and "already exists" in entry["error"]
    assert (target / "notes-from-someone.txt").read_text() == "do not lose me"
    assert tree_digest(installation.root / generation_id) == legacy_before


def test_duplicate_versions_are_renumbered_oldest_keeps_its_number(installation: Sandbox) -> None:
    """The application inserts rows without a version (the default, 1): the oldest keeps the
    number, the later one gets the next free number above latest_version, folder and paths
    follow, and nothing fails."""
    first, project_id, version = completed_generation(installation, 0)
    second, second_project, _ = completed_generation(installation, 1)
    assert project_id == second_project
    execute_sql(installation, "UPDATE generations SET version = :version WHERE id = :id", version=version, id=second)
    latest = installation_rows(installation, "SELECT latest_version FROM projects WHERE id = :p", p=project_id)[0][0]
    code, document = run_json(installation)
    assert code == 0, document
    entries = by_id(document)
    assert entries[first]["version"] == version and entries[second]["version"] == latest + 1
    versions = dict(installation_rows(installation, "SELECT id, version FROM generations WHERE id IN (:a, :b)",
                                      a=first, b=second))
    assert versions == {first: version, second: latest + 1}
    assert (installation.root / project_id / "generations" / f"v{latest + 1}__{second}" / "source").is_dir()
    assert run_cli(installation, "verify").returncode == 0


def installation_rows(installation: Sandbox, sql: str, **parameters: object) -> list[tuple]:
    engine = installation.engine()
    with engine.connect() as connection:
        result = [tuple(row) for row in connection.execute(sa.text(sql), parameters)]
    engine.dispose()
    return result


def test_generation_whose_project_row_is_gone(sqlite_url: str, tmp_path: Path) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    generation_id, project_id, _ = completed_generation(installation)
    execute_sql(installation, "UPDATE projects SET active_generation_id = NULL WHERE id = :id", id=project_id)
    execute_sql(installation, "DELETE FROM projects WHERE id = :id", id=project_id)
    code, document = run_json(installation)
    assert code == 1
    entry = by_id(document)[generation_id]
    assert entry["action"] == "failed" and "no row in projects" in entry["error"]
    assert (installation.root / generation_id).is_dir()


def test_output_files_holding_json_null_is_not_a_rebuild(installation: Sandbox) -> None:
    failed_id = installation.sample.failed_without_folder_generation_ids[0]
    completed_id = installation.sample.missing_folder_generation_id
    cast = "CAST('null' AS JSON)" if installation.engine().dialect.name == "postgresql" else "'null'"
    execute_sql(installation, f"UPDATE generations SET output_files = {cast} WHERE id IN (:a, :b)", a=failed_id, b=completed_id)
    planned = by_id(json.loads(run_cli(installation, "--json", "--dry-run").stdout))
    assert planned[failed_id]["action"] == "skipped"
    assert planned[completed_id]["action"] == "failed" and "output_files is empty" in planned[completed_id]["error"]
    code, document = run_json(installation)
    assert code == 1
    entries = by_id(document)
    assert entries[failed_id]["action"] == "skipped"
    assert entries[completed_id]["action"] == "failed"
    assert_others_migrated(document, {completed_id})


def _wrong_type(document: dict) -> str:
    return json.dumps({**document, "checksums": ["not", "an", "object"]})


def _missing_key(document: dict) -> str:
    return json.dumps({key: value for key, value in document.items() if key != "version"})


def _non_canonical_name(document: dict) -> str:
    """The marker form of a name that is UTF-8 anyway: two keys could name one file."""
    return json.dumps({**document, "checksums": {**document["checksums"], "\x00plain.txt": "0" * 64}})


def _number_too_long_to_parse(document: dict) -> str:
    """json.loads raises a ValueError (not a JSONDecodeError) for an integer of over 4,300 digits."""
    return json.dumps({**document, "version": "HERE"}).replace('"HERE"', "9" * 5000)


MALFORMED_MANIFESTS = [_wrong_type, _missing_key, _non_canonical_name, _number_too_long_to_parse]


def test_malformed_manifests_are_each_their_generations_problem_never_an_internal_error(
        sqlite_url: str, tmp_path: Path) -> None:
    """A manifest of the tool's that is not of its shape is an expected error (``InvalidInput``):
    verify names that generation alone, resync goes on; following verify's advice repairs it."""
    installation = build_installation(sqlite_url, tmp_path / "projects", SampleSize(5, 2, 3))
    assert run_cli(installation, "run").returncode == 0
    manifests = sorted(installation.root.glob("*/generations/v*__*/manifest.json"))[:len(MALFORMED_MANIFESTS)]
    corrupted: set[str] = set()
    for path, corrupt in zip(manifests, MALFORMED_MANIFESTS, strict=True):
        document = json.loads(path.read_text("utf-8"))
        path.write_text(corrupt(document), "utf-8")
        corrupted.add(document["generation_id"])
    result = run_cli(installation, "--json", "verify")
    assert result.returncode == 3 and "internal error" not in result.stderr, result.stderr
    problems = json.loads(result.stdout)["problems"]
    assert {(problem["generation_id"], problem["kind"]) for problem in problems} == \
        {(generation_id, "manifest") for generation_id in corrupted}
    assert all("remove it and run `storage-migrate resync`" in problem["detail"] for problem in problems)
    resync = run_cli(installation, "resync")
    assert resync.returncode in (0, 1) and "internal error" not in resync.stderr, resync.stderr
    for path in manifests:
        path.unlink()
    assert run_cli(installation, "resync").returncode == 0
    assert run_cli(installation, "verify").returncode == 0
