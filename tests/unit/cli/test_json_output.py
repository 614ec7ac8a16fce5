"""Every command's --json output against the one vocabulary written down in
docs/output.schema.json: the real command's output, not an object built for the test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

from tests.support.sandbox import SCHEMA_FILE, Sandbox, build_installation, check_json_output, execute_sql, run_cli


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def test_every_command_speaks_the_schema(database_url: str, tmp_path: Path) -> None:
    installation: Sandbox = build_installation(database_url, tmp_path / "projects")
    demo = installation.sample.demo_project_id

    planned = check_json_output("report", run_cli(installation, "--json", "-v", "--dry-run").stdout)
    migrated = check_json_output("report", run_cli(installation, "--json", "run").stdout)
    assert planned["dry_run"] and not migrated["dry_run"]
    by_id = {line["generation_id"]: line["action"] for line in migrated["generations"]}
    for line in planned["generations"]:
        assert line["id"] == line["generation_id"]
        if line["action"] != "failed":
            assert by_id[line["generation_id"]] == line["action"], "a dry run and a run use the same words"

    resynced = check_json_output("report", run_cli(installation, "--json", "resync").stdout)
    assert resynced["unchanged"] > 0 and resynced["unchanged"] <= resynced["skipped"]
    check_json_output("diff", run_cli(installation, "--json", "diff", demo, "--patch").stdout)
    check_json_output("diff", run_cli(installation, "--json", "diff", demo, "--from", "1", "--to", "2").stdout)
    check_json_output("verify", run_cli(installation, "--json", "verify").stdout)
    check_json_output("db_current", run_cli(installation, "--json", "db", "current").stdout)
    rolled_back = check_json_output("report", run_cli(installation, "--json", "rollback").stdout)
    assert {line["action"] for line in rolled_back["generations"]} >= {"restored"}


def test_a_run_with_failures_still_speaks_the_schema(sqlite_url: str, tmp_path: Path) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    broken = installation.sample.missing_folder_generation_id      # no folder and, now, no output_files
    execute_sql(installation, "UPDATE generations SET output_files = 'null' WHERE id = :id", id=broken)
    result = run_cli(installation, "--json", "run")
    document = check_json_output("report", result.stdout)
    assert result.returncode == 1 and document["failed"] >= 1
    assert any(line["generation_id"] == broken and line["action"] == "failed" and line["error"]
               for line in document["generations"])


def test_demo_data_speaks_the_schema(tmp_path: Path) -> None:
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
                   "STORAGE_ROOT": str(tmp_path / "projects")}
    result = subprocess.run([sys.executable, "-m", "storage_migrator", "--json", "demo-data"], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    check_json_output("demo_data", result.stdout)
