"""`storage-migrate diff PROJECT_ID` on SQLite and PostgreSQL, and the patches `run` writes for the
sample data, checked with the real tools: `git apply` in a copy of version P gives version N."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.sandbox import Sandbox, build_installation, error_lines, run_cli, scan


@pytest.fixture
def migrated(database_url: str, tmp_path: Path) -> Sandbox:
    installation = build_installation(database_url, tmp_path / "projects")
    result = run_cli(installation, "run")
    assert result.returncode == 0, result.stderr
    return installation


def versions_on_disk(installation: Sandbox, project_id: str) -> dict[int, Path]:
    folders = {}
    for folder in (installation.root / project_id / "generations").iterdir():
        if folder.name.startswith("v") and not folder.is_symlink():
            folders[int(folder.name[1:].split("__")[0])] = folder / "source"
    return dict(sorted(folders.items()))


def apply_with_git(old_source: Path, patch: bytes, workdir: Path) -> Path:
    copy = workdir / "applied"
    shutil.copytree(old_source, copy)
    (workdir / "change.patch").write_bytes(patch)
    subprocess.run(["git", "apply", "--whitespace=nowarn", str(workdir / "change.patch")], cwd=copy, check=True,
                   capture_output=True)
    return copy


def test_every_patch_written_by_run_applies_with_git(migrated: Sandbox, tmp_path: Path) -> None:
    engine = migrated.engine()
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT g.project_id, g.version, g.diff_from_previous, g.changes_summary FROM generations g "
            "WHERE g.diff_from_previous IS NOT NULL ORDER BY g.project_id, g.version")).all()
    engine.dispose()
    assert len(rows) > 10
    for index, (project_id, version, patch_path, summary) in enumerate(rows):
        summary = json.loads(summary) if isinstance(summary, str) else summary
        folders = versions_on_disk(migrated, project_id)
        patch_file = migrated.root / patch_path.removeprefix("storage/projects/")
        workdir = tmp_path / f"apply{index}"
        workdir.mkdir()
        applied = apply_with_git(folders[summary["from_version"]], patch_file.read_bytes(), workdir)
        assert scan(applied).checksums() == scan(folders[version]).checksums(), patch_path


def test_diff_lists_every_version(migrated: Sandbox) -> None:
    project_id = migrated.sample.demo_project_id
    result = run_cli(migrated, "--json", "diff", project_id)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["project_id"] == project_id
    versions = document["versions"]
    assert [entry["version"] for entry in versions] == sorted(entry["version"] for entry in versions)
    first, second = versions[0], versions[1]
    assert first["from_version"] is None and first["patch"] is None and first["added"] > 0
    assert second["from_version"] == first["version"]
    assert second["patch"].endswith(f"/diff_from_v{first['version']}.patch")
    assert {"version", "generation_id", "from_version", "added", "modified", "deleted", "patch"} <= set(second)
    text = run_cli(migrated, "diff", project_id)
    assert text.returncode == 0 and f"v{second['version']} {second['generation_id']} from v1" in text.stdout


def test_diff_patch_and_any_two_versions(migrated: Sandbox, tmp_path: Path) -> None:
    project_id = migrated.sample.demo_project_id
    folders = versions_on_disk(migrated, project_id)
    low, high = list(folders)[0], list(folders)[3]
    result = subprocess.run(
        [sys.executable, "-m", "storage_migrator", "diff", project_id, "--from", str(low), "--to", str(high), "--patch"],
        env=migrated.cli_environment(), capture_output=True)
    assert result.returncode == 0, result.stderr
    header, _, patch = result.stdout.partition(b"\n")
    assert header.startswith(f"v{high} ".encode()) and f"from v{low}".encode() in header
    applied = apply_with_git(folders[low], patch, tmp_path)
    assert scan(applied).checksums() == scan(folders[high]).checksums()
    as_json = json.loads(run_cli(migrated, "--json", "diff", project_id, "--from", str(low), "--to", str(high)).stdout)
    only = as_json["versions"][0]
    assert (only["from_version"], only["version"]) == (low, high)
    assert only["added"] + only["modified"] + only["deleted"] > 0


@pytest.mark.parametrize("arguments", [["no-such-project"], ["{demo}", "--from", "1", "--to", "99"], ["{demo}", "--from", "1"]])
def test_unknown_project_or_version_is_exit_2(migrated: Sandbox, arguments: list[str]) -> None:
    arguments = [argument.format(demo=migrated.sample.demo_project_id) for argument in arguments]
    result = run_cli(migrated, "diff", *arguments)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(error_lines(result.stderr)) == 1
