"""The application's cloud copies (Supabase Storage, ``{project_id}/generations/v{N}__{id}.tar.gz``,
uploaded at save time when ``USE_CLOUD_STORAGE`` is on) keep the number a generation had when it
was saved: when the tool renumbers it, the dry run, run and resync list the object key under the
old number and the key it now belongs at — text and JSON — and never call the cloud."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.application import app_saves, next_version, row_of
from tests.support.sandbox import Sandbox, build_installation, check_json_output, execute_sql, run_cli

CLOUD_ON = {"USE_CLOUD_STORAGE": "True", "SUPABASE_BUCKET": "team-bucket"}
CLOUD_OFF = {"USE_CLOUD_STORAGE": "false"}


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    built = build_installation(database_url, tmp_path / "projects")
    assert run_cli(built, "run").returncode == 0
    return built


def two_saves_at_one_number(installation: Sandbox) -> tuple[str, str, int]:
    """Two generations the application saved at the same version (its create path's default
    number): the older keeps it, the later is renumbered by the next resync."""
    number = next_version(installation)
    older, _ = app_saves(installation, number, status="completed", with_storage_path=True)
    execute_sql(installation, "UPDATE generations SET created_at = '2020-01-01 00:00:00' WHERE id = :id", id=older)
    later, _ = app_saves(installation, number, status="completed", with_storage_path=True)
    return older, later, number


def key(installation: Sandbox, version: int, generation_id: str) -> str:
    return f"{installation.sample.demo_project_id}/generations/v{version}__{generation_id}.tar.gz"


def report(installation: Sandbox, *arguments: str, environment: dict[str, str]) -> dict:
    result = run_cli(installation, "--json", *arguments, extra_environment=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    return check_json_output("report", result.stdout)


@pytest.mark.parametrize("output", ["json", "text"])
def test_a_renumbering_lists_the_cloud_keys_to_rename(installation: Sandbox, output: str) -> None:
    _, later, number = two_saves_at_one_number(installation)
    assert report(installation, "--dry-run", environment=CLOUD_OFF)["cloud_keys_to_rename"] == []
    planned = report(installation, "--dry-run", environment=CLOUD_ON)["cloud_keys_to_rename"]
    assert len(planned) == 1 and planned[0]["generation_id"] == later
    assert planned[0]["from"] == key(installation, number, later)

    if output == "json":
        found = report(installation, "resync", environment=CLOUD_ON)["cloud_keys_to_rename"]
    else:
        result = run_cli(installation, "-q", "resync", extra_environment=CLOUD_ON)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 1 and "team-bucket" in lines[0], result.stdout
        old_key, new_key = lines[0].rsplit(": ", 1)[1].split(" -> ")
        found = [{"generation_id": later, "from": old_key, "to": new_key}]

    renumbered = row_of(installation, later)["version"]
    assert renumbered > number
    assert found == [{"generation_id": later, "from": key(installation, number, later),
                      "to": key(installation, renumbered, later)}]
    assert found == planned, "the dry run predicted the same keys"
    assert report(installation, "resync", environment=CLOUD_ON)["cloud_keys_to_rename"] == [], "listed once"


def test_without_cloud_storage_nothing_is_listed(installation: Sandbox) -> None:
    _, later, number = two_saves_at_one_number(installation)
    result = run_cli(installation, "resync", extra_environment=CLOUD_OFF)
    assert result.returncode == 0, result.stderr
    assert row_of(installation, later)["version"] > number
    assert "cloud copy" not in result.stdout + result.stderr
    document = json.loads(run_cli(installation, "--json", "resync", extra_environment=CLOUD_OFF).stdout)
    assert document["cloud_keys_to_rename"] == []
