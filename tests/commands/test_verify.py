"""`verify` against the application's normal states and against a silent pass: each test builds
a realistic installation, migrates it with `run`, then plays what the application (or a hostile
disk) does by hand, and reads verify's JSON verdict.

Normal, never an alarm: a generation the application wrote itself in the new layout without a
flat link; a patch whose base the application just archived or deleted; the application's own
`diff -ru` patches (read by their file list below `source/`, wherever its folders were); names
with a trailing space or a backslash. A problem, never a pass: a symlink where an archived
generation or the archive folder should be; a patch that names the wrong files or blob ids."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.sandbox import (
    Sandbox,
    build_installation,
    demo_versions,
    execute_sql,
    run_cli,
    source_of,
    verify_json,
)

APP_GENERATION_ID = "app-made-0000-4000-8000-00000000a001"


@pytest.fixture
def migrated(database_url: str, tmp_path: Path) -> Sandbox:
    installation = build_installation(database_url, tmp_path / "projects")
    result = run_cli(installation, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    return installation


def kinds(document: dict) -> set[tuple[str | None, str]]:
    return {(problem["generation_id"], problem["kind"]) for problem in document["problems"]}


def generations_dir(installation: Sandbox) -> Path:
    return installation.root / installation.sample.demo_project_id / "generations"


def app_writes_generation(installation: Sandbox, base_source: Path, patch_names: tuple[str, str] | None = None,
                          scratch: Path | None = None) -> Path:
    """The application's FileManager writes the next version itself: `source/` (the base's files
    with one edited, one deleted, a new file and a new folder), `artifacts/`, its manifest
    (`indent=2`, no checksums), `diff_from_v<P>.patch` by `diff -ru <old>/source <new>/source`,
    its storage_path spelling and changes_summary; then GenerationService makes it active. With
    ``patch_names``, the patch is made where the two folders were (other names) when it ran."""
    project_id = installation.sample.demo_project_id
    latest = demo_versions(installation)[-1]
    version = latest.version + 1
    target = generations_dir(installation) / f"v{version}__{APP_GENERATION_ID}"
    shutil.copytree(base_source, target / "source")
    (target / "artifacts").mkdir()
    files = sorted(path for path in (target / "source").rglob("*") if path.is_file())
    files[0].write_bytes(files[0].read_bytes() + b"# edited by the application\n")
    files[-1].unlink()
    (target / "source" / "NEW_BY_APP.md").write_text("new\n")
    (target / "source" / "app_new_pkg").mkdir()
    (target / "source" / "app_new_pkg" / "__init__.py").write_text("")
    (target / "source" / "app_new_pkg" / "core.py").write_text("VALUE = 1\n")
    listed = sorted(str(path.relative_to(target / "source")) for path in (target / "source").rglob("*") if path.is_file())
    size = sum((target / "source" / path).stat().st_size for path in listed)
    manifest = {"generation_id": APP_GENERATION_ID, "project_id": project_id, "version": version,
                "created_at": "2026-11-25T10:00:00", "file_count": len(listed), "total_size_bytes": size,
                "files": listed, "metadata": {"model": "the application's own key"}}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    old, new = base_source, target / "source"
    if patch_names is not None and scratch is not None:
        old, new = scratch / patch_names[0] / "source", scratch / patch_names[1] / "source"
        shutil.copytree(base_source, old)
        shutil.copytree(target / "source", new)
    patch = subprocess.run(["diff", "-ru", str(old), str(new)], capture_output=True).stdout
    assert b"\nOnly in " in patch and b"\n--- " in patch
    (target / f"diff_from_v{latest.version}.patch").write_bytes(patch)
    execute_sql(installation, "INSERT INTO generations (id, project_id, user_id, prompt, status, version, storage_path, "
            "changes_summary, file_count, total_size_bytes) SELECT :id, id, user_id, 'again', 'completed', :v, :path, "
            ":summary, :count, :size FROM projects WHERE id = :p",
            id=APP_GENERATION_ID, v=version, p=project_id, count=len(listed), size=size,
            path=f"storage/projects/{project_id}/generations/{target.name}",
            summary=json.dumps({"diff_created_at": "2026-11-25T10:00:00", "from_version": latest.version,
                                "to_version": version}))
    execute_sql(installation, "UPDATE generations SET is_active = (id = :id) WHERE project_id = :p", id=APP_GENERATION_ID,
            p=project_id)
    execute_sql(installation, "UPDATE projects SET latest_version = :v, active_generation_id = :id WHERE id = :p",
            v=version, id=APP_GENERATION_ID, p=project_id)
    active = target.parent / "active"
    active.unlink()
    active.symlink_to(target.name)
    return target


def test_a_generation_the_application_wrote_needs_no_flat_link_but_a_wrong_one_is_found(migrated: Sandbox) -> None:
    latest = demo_versions(migrated)[-1]
    app_writes_generation(migrated, source_of(migrated, latest.id, latest.version))
    assert not os.path.lexists(migrated.root / APP_GENERATION_ID)
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, []), "no flat link yet is normal: the next resync adds it"

    (migrated.root / APP_GENERATION_ID).symlink_to(f"{migrated.sample.demo_project_id}/generations/elsewhere/source")
    code, document = verify_json(migrated)
    assert (code, kinds(document)) == (3, {(APP_GENERATION_ID, "legacy-link")})


def test_a_patch_whose_base_was_archived_or_deleted_is_a_gap_not_an_alarm(migrated: Sandbox) -> None:
    versions = demo_versions(migrated)
    archived, deleted, after_deleted = versions[0], versions[2], versions[3]
    project = migrated.root / migrated.sample.demo_project_id
    # cleanup_old_generations archives v1; a delete removes v3's row and folder.
    (project / "archive").mkdir()
    (project / "generations" / f"v1__{archived.id}").rename(project / "archive" / f"v1__{archived.id}")
    execute_sql(migrated, "UPDATE generations SET parent_generation_id = NULL WHERE parent_generation_id = :id", id=deleted.id)
    execute_sql(migrated, "DELETE FROM generations WHERE id = :id", id=deleted.id)
    shutil.rmtree(project / "generations" / f"v{deleted.version}__{deleted.id}")
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, []), "v2 and v4 name a base that is gone until resync re-bases them"

    # The gap hides nothing else about the version after it.
    (source_of(migrated, after_deleted.id, after_deleted.version) / "HAND_ADDED.md").write_text("by hand\n")
    code, document = verify_json(migrated)
    assert code == 3 and {(after_deleted.id, "checksum"), (after_deleted.id, "file-count")} <= kinds(document)


def test_the_applications_diff_ru_patch_is_read_by_its_file_list(migrated: Sandbox, tmp_path: Path) -> None:
    latest = demo_versions(migrated)[-1]
    # The patch names the folders as they were when the application wrote it (its own folder
    # then v1__…, since renumbered), with absolute paths, timestamps and `Only in` lines.
    target = app_writes_generation(migrated, source_of(migrated, latest.id, latest.version),
                                   patch_names=(f"v{latest.version}__{latest.id}", f"v1__{APP_GENERATION_ID}"),
                                   scratch=tmp_path / "then" / "storage" / "projects")
    (migrated.root / APP_GENERATION_ID).symlink_to(
        f"{migrated.sample.demo_project_id}/generations/{target.name}/source")   # as resync would add it
    patch_file = target / f"diff_from_v{latest.version}.patch"
    assert f"/v1__{APP_GENERATION_ID}/source".encode() in patch_file.read_bytes()
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])

    # The same patch without the line of the new folder: it no longer names every changed file.
    lines = patch_file.read_bytes().splitlines(keepends=True)
    patch_file.write_bytes(b"".join(line for line in lines if not line.endswith(b": app_new_pkg\n")))
    code, document = verify_json(migrated)
    assert (code, kinds(document)) == (3, {(APP_GENERATION_ID, "patch")})
    assert "app_new_pkg/core.py" in document["problems"][0]["detail"]


def test_names_with_a_trailing_space_or_a_backslash_are_listed(migrated: Sandbox, tmp_path: Path) -> None:
    versions = demo_versions(migrated)
    before, last = versions[-2], versions[-1]
    old, new = source_of(migrated, before.id, before.version), source_of(migrated, last.id, last.version)
    (old / "notes ").write_text("first\n")
    (new / "notes ").write_text("second\n")
    (new / "docs\\windows path.txt").write_text("added\n")
    result = run_cli(migrated, "resync")
    assert result.returncode == 0, result.stdout + result.stderr
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])

    # The patch verify accepted is right: git apply in a copy of the old tree gives the new one.
    copy = tmp_path / "applied"
    shutil.copytree(old, copy)
    patch = generations_dir(migrated) / f"v{last.version}__{last.id}" / f"diff_from_v{before.version}.patch"
    subprocess.run(["git", "apply", "--binary", str(patch)], cwd=copy, check=True, capture_output=True)
    assert (copy / "notes ").read_text() == "second\n" and (copy / "docs\\windows path.txt").is_file()


@pytest.mark.parametrize("linked", ["archive entry", "archive folder"])
def test_a_symlink_where_an_archive_should_be_is_a_problem(migrated: Sandbox, tmp_path: Path, linked: str) -> None:
    archived = demo_versions(migrated)[0]
    project = migrated.root / migrated.sample.demo_project_id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / "generations" / f"v1__{archived.id}").rename(elsewhere / f"v1__{archived.id}")
    moved_source = elsewhere / f"v1__{archived.id}" / "source"
    for path in sorted(path for path in moved_source.rglob("*") if path.is_file())[:3]:
        path.unlink()                   # files missing behind the link
    if linked == "archive entry":
        (project / "archive").mkdir()
        (project / "archive" / f"v1__{archived.id}").symlink_to(elsewhere / f"v1__{archived.id}")
        expected = (archived.id, "symlink")
    else:
        (project / "archive").symlink_to(elsewhere)
        expected = (None, "symlink")
    code, document = verify_json(migrated)
    assert code == 3 and expected in kinds(document), document


def test_patches_that_name_wrong_files_or_blob_ids_are_still_found(migrated: Sandbox) -> None:
    versions = demo_versions(migrated)
    target_of = {row.id: generations_dir(migrated) / f"v{row.version}__{row.id}" for row in versions}
    # v2: the first file's section is gone from the patch.
    v2_patch = target_of[versions[1].id] / "diff_from_v1.patch"
    text = v2_patch.read_bytes()
    second = text.index(b"\ndiff --git ", 1) + 1
    v2_patch.write_bytes(text[second:])
    # v3: one blob id is not the file's.
    v3_patch = target_of[versions[2].id] / "diff_from_v2.patch"
    text = v3_patch.read_bytes()
    index = text.index(b"\nindex ") + len(b"\nindex ")
    v3_patch.write_bytes(text[:index] + (b"1" if text[index:index + 1] != b"1" else b"2") + text[index + 1:])
    # v5: its folder is gone (not archived, row still there).
    shutil.rmtree(target_of[versions[4].id] / "source")
    code, document = verify_json(migrated)
    assert code == 3
    assert {(versions[1].id, "patch"), (versions[2].id, "patch"), (versions[4].id, "missing-folder")} <= kinds(document)
    assert (versions[5].id, "changes-summary") in kinds(document), "a base whose row is there but folder gone is no gap"


def test_a_missing_or_unreadable_manifest_is_a_problem_and_a_changed_file_counts_once(migrated: Sandbox) -> None:
    first, second = demo_versions(migrated)[:2]
    missing = source_of(migrated, first.id, first.version).parent / "manifest.json"
    missing.unlink()
    broken = source_of(migrated, second.id, second.version).parent / "manifest.json"
    broken.write_bytes(b"\x00not json")
    code, document = verify_json(migrated)
    assert code == 3 and {(first.id, "manifest"), (second.id, "manifest")} <= kinds(document), document
    assert run_cli(migrated, "resync").returncode == 0
    code, document = verify_json(migrated)
    assert (code, document["problems"]) == (0, [])

    edited = next(path for path in sorted(source_of(migrated, first.id, first.version).rglob("*")) if path.is_file())
    edited.write_bytes(edited.read_bytes() + b"# one more line\n")
    code, document = verify_json(migrated)
    details = [problem["detail"] for problem in document["problems"] if problem["kind"] == "checksum"]
    assert code == 3 and len(details) == 1 and details[0].startswith("1 file(s) differ"), details
