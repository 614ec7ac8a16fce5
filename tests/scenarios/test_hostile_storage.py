"""Hostile storage: anything under ROOT may have been planted by whoever can write it. Nothing
outside ROOT is read, written or deleted; no hang; one bad item fails alone."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage_migrator.faults import PAUSE_AT_VARIABLE
from tests.support.processes import ctrl_c_as_at_a_terminal
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    error_lines,
    execute_sql,
    query_rows,
    run_cli,
    wait_until_stopped,
)


@pytest.fixture
def installation(sqlite_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(sqlite_url, tmp_path / "projects")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside ROOT with a file that must never be touched or read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text("must never leave this folder\n")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(path): (path.stat().st_mtime_ns, path.read_bytes()) for path in folder.rglob("*") if path.is_file()}


def test_symlinked_state_folder_is_refused_and_outside_untouched(installation: Sandbox, outside: Path) -> None:
    (installation.root / ".storage-migrate").symlink_to(outside)
    before = snapshot(outside)
    result = run_cli(installation, "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ".storage-migrate" in result.stderr and len(error_lines(result.stderr)) == 1
    assert snapshot(outside) == before and sorted(os.listdir(outside)) == ["secret"]


def test_symlinked_trash_is_refused(installation: Sandbox, outside: Path) -> None:
    (installation.root / ".storage-migrate").mkdir()
    (installation.root / ".storage-migrate" / "trash").symlink_to(outside)
    before = snapshot(outside)
    result = run_cli(installation, "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert snapshot(outside) == before


def test_manifest_key_outside_root_never_enters_a_patch(installation: Sandbox, outside: Path) -> None:
    assert run_cli(installation, "run").returncode == 0
    project_id = installation.sample.demo_project_id
    generations = sorted((installation.root / project_id / "generations").glob("v*__*"),
                         key=lambda path: int(path.name[1:].split("__")[0]))
    first = generations[0]
    manifest = json.loads((first / "manifest.json").read_text())
    escape = os.path.relpath(outside / "secret", first / "source")
    manifest["checksums"][escape] = "0" * 64
    manifest["fingerprints"][escape] = [1, 1]
    (first / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli(installation, "resync")
    assert result.returncode == 0, result.stderr
    for patch in (installation.root / project_id).rglob("*.patch"):
        assert b"must never leave" not in patch.read_bytes()


def test_fifo_as_manifest_does_not_hang(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    project_id = installation.sample.demo_project_id
    target = next((installation.root / project_id / "generations").glob("v*__*"))
    (target / "manifest.json").unlink()
    os.mkfifo(target / "manifest.json")
    for command in ("verify", "resync", "--dry-run"):
        result = run_cli(installation, command, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1, 3)


def test_odd_column_types_fail_alone(installation: Sandbox) -> None:
    ids = [row[0] for row in query_rows(installation, "SELECT id FROM generations WHERE status = 'completed' "
                                   "ORDER BY project_id, version")]
    execute_sql(installation, "UPDATE generations SET changes_summary = '[1, 2]' WHERE id = :id", id=ids[0])
    execute_sql(installation, "UPDATE generations SET changes_summary = '\"text\"' WHERE id = :id", id=ids[1])
    execute_sql(installation, "UPDATE generations SET created_at = 12345 WHERE id = :id", id=ids[2])
    execute_sql(installation, "UPDATE generations SET changes_summary = '{not json' WHERE id = :id", id=ids[3])
    result = run_cli(installation, "--json", "run")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1)
    document = json.loads(result.stdout)
    assert document["migrated"] > 10


def test_directory_named_like_a_patch_fails_that_generation_only(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    project_id = installation.sample.demo_project_id
    generations = sorted((installation.root / project_id / "generations").glob("v*__*"),
                         key=lambda path: int(path.name[1:].split("__")[0]))
    second = generations[1]
    for patch in second.glob("*.patch"):
        patch.unlink()
    (second / "diff_from_v1.patch").mkdir()
    (second / "source" / "new_file.py").write_text("x = 1\n")
    result = run_cli(installation, "--json", "resync")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1)
    assert json.loads(result.stdout)["failed"] <= 1


def test_non_utf8_folder_name_in_root(installation: Sandbox) -> None:
    os.mkdir(os.fsencode(installation.root) + b"/\xff\xfe-not-utf8")
    for command in ("run", "resync", "verify"):
        result = run_cli(installation, command)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1, 3)


@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1:notaport/db", "mysql+nodriver://x/y",
                                 "postgresql+asyncpg://postgres@127.0.0.1:1/x", "::::"])
def test_malformed_or_unreachable_database_url_is_one_line(installation: Sandbox, url: str) -> None:
    result = run_cli(installation, "verify", extra_environment={"DATABASE_URL": url})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(error_lines(result.stderr)) == 1


def test_read_only_commands_create_no_database(installation: Sandbox, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "missing.db"
    for command in ("verify", "--dry-run"):
        result = run_cli(installation, command, extra_environment={"DATABASE_URL": f"sqlite:///{missing}"})
        assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_reports_what_was_done_and_exits_130(installation: Sandbox, signal_number: int) -> None:
    environment = {**installation.cli_environment(), PAUSE_AT_VARIABLE: "40"}
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "--json", "run", "--workers", "1"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_as_at_a_terminal)
    try:
        wait_until_stopped(process)
        process.send_signal(signal_number)
        process.send_signal(signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (stderr, stdout[-2000:], signal.getsignal(signal.SIGINT))
    assert "Traceback" not in stderr
    document = json.loads(stdout)
    assert document["interrupted"] is True and document["migrated"] >= 1
    rerun = run_cli(installation, "run")
    assert rerun.returncode == 0, rerun.stderr
    assert run_cli(installation, "verify").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_a_run_as_root_leaves_storage_the_application_can_write(installation: Sandbox) -> None:
    application_user = 65534
    for path in [installation.root, *installation.root.rglob("*")]:
        os.chown(path, application_user, application_user, follow_symlinks=False)
    assert run_cli(installation, "run").returncode == 0
    created = [path for path in installation.root.rglob("*") if ".storage-migrate" not in path.parts]
    wrong = [str(path) for path in created if path.lstat().st_uid != application_user]
    assert created and not wrong, wrong[:5]


def test_rollback_after_a_version_change_moves_and_reports_truthfully(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    generation_id, project_id, version = query_rows(
        installation, "SELECT id, project_id, version FROM generations WHERE status = 'completed' "
        "AND storage_path LIKE '%/generations/%' ORDER BY project_id, version")[0]
    execute_sql(installation, "UPDATE generations SET version = :v WHERE id = :id", v=version + 100, id=generation_id)
    result = run_cli(installation, "--json", "rollback")
    assert "Traceback" not in result.stderr
    entry = {g["id"]: g for g in json.loads(result.stdout)["generations"]}[generation_id]
    assert entry["action"] == "restored"
    assert (installation.root / generation_id).is_dir() and not (installation.root / generation_id).is_symlink()
    assert not (installation.root / project_id / "generations" / f"v{version}__{generation_id}").exists()


def test_rebuild_keeps_every_file_and_fails_alone_on_a_lone_surrogate(installation: Sandbox) -> None:
    ids = [row[0] for row in query_rows(installation, "SELECT id FROM generations WHERE status = 'completed' "
                                  "ORDER BY project_id, version")]
    fine, broken = ids[0], ids[1]
    for generation_id in (fine, broken):
        shutil.rmtree(installation.root / generation_id)
    execute_sql(installation, "UPDATE generations SET output_files = :files WHERE id = :id", id=fine,
            files=json.dumps({"config.yml": "a: 1\n", ".config.yml.tmp": "draft\n", "app/main.py": "print(1)\n"}))
    execute_sql(installation, "UPDATE generations SET output_files = :files WHERE id = :id", id=broken,
            files='{"bad\\ud800.py": "x", "ok.py": "\\ud800"}')
    result = run_cli(installation, "--json", "run")
    assert "Traceback" not in result.stderr, result.stderr
    entries = {g["id"]: g for g in json.loads(result.stdout)["generations"]}
    assert entries[fine]["action"] == "rebuilt"
    assert entries[broken]["action"] == "failed" and result.returncode == 1
    source = installation.root / fine / ""
    assert sorted(os.listdir(source)) == [".config.yml.tmp", "app", "config.yml"]


def test_diff_patch_never_prints_through_a_symlink(installation: Sandbox, outside: Path) -> None:
    assert run_cli(installation, "run").returncode == 0
    project_id = installation.sample.demo_project_id
    patches = sorted((installation.root / project_id / "generations").glob("v*__*/diff_from_v*.patch"))
    patches[0].unlink()
    patches[0].symlink_to(outside / "secret")
    second = patches[1]
    target_dir = second.parent
    moved = installation.root.parent / "moved-away"
    target_dir.rename(moved)
    shutil.copytree(moved, outside / "copy", symlinks=True)
    target_dir.symlink_to(outside / "copy")
    result = run_cli(installation, "diff", project_id, "--patch")
    assert "Traceback" not in result.stderr
    assert "must never leave" not in result.stdout
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1
