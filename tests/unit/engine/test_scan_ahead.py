"""Reading ahead (``scan_ahead``): the forked reader walks every other folder of a plan, and the
summaries are the walks this process would make; a reader that died, failed or stopped costs
only the speed, and every wait for it is bounded. End to end: a one-project run and resync with
a spare core use the reader and end as they would without it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_migrator.demo import SampleSize
from storage_migrator.engine.scan_ahead import ANSWER_TIMEOUT_VARIABLE, ScanAhead, SummaryOrError, summarize_trees
from storage_migrator.errors import GenerationError
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.manifest import TreeSummary, fingerprint_digest, summarize_tree
from storage_migrator.storage.tree import fingerprint_tree
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    dump_tables,
    execute_sql,
    query_rows,
    run_cli,
    sqlite_copy,
    storage_around,
    tree_digest,
)

SAMPLE = SampleSize(projects=5, generations_per_project=6, files_per_generation=10)


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)


@pytest.fixture
def two_versions(tmp_path: Path) -> Iterator[tuple[Storage, Path, Path]]:
    """ROOT holding an older and a newer version of one tree (some files changed, one added)."""
    root = tmp_path / "projects"
    older = {f"pkg/module_{n}.py": b"line\n" * (n * 40) for n in range(12)} | {"README.md": b"# readme\n"}
    newer = {**older, "pkg/module_3.py": b"changed\n" * 90, "pkg/new.py": b"added\n", "README.md": b"# readme 2\n"}
    write_tree(root / "v1", older)
    write_tree(root / "v2", newer)
    storage = storage_around(root / "v1")
    try:
        yield storage, root / "v1", root / "v2"
    finally:
        storage.close()


def test_a_reader_leaves_with_its_parent(two_versions: tuple[Storage, Path, Path]) -> None:
    """Closed, the reader's process is gone: a run leaves no process behind."""
    storage, older, newer = two_versions
    reader = ScanAhead(storage)
    summarize_trees(storage, [older, newer], reader)
    assert reader.count.summarized == 1
    process = reader._process
    reader.close()
    assert not process.is_alive()


def test_a_stopped_reader_is_ended_and_its_walks_are_made_here(
        two_versions: tuple[Storage, Path, Path], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The reader stopped (SIGSTOP): this process waits for its answer no longer than the
    timeout (1 s here), ends it (killed and reaped), says so in one stderr line, and walks the
    folders itself; the summaries are the ones it would have made."""
    storage, older, newer = two_versions
    monkeypatch.setenv(ANSWER_TIMEOUT_VARIABLE, "1")
    with ScanAhead(storage) as reader:
        pid = reader._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        found = summarize_trees(storage, [older, newer], reader)
        waited = time.monotonic() - started
        assert reader.count.summarized == 0
        assert as_compared(found) == walked_here(storage, [older, newer])
        assert waited < 30, f"waited {waited:.1f} s for a stopped reader"
        assert not Path(f"/proc/{pid}").exists(), "the stopped reader was not ended and reaped"
    said = [line for line in capfd.readouterr().err.splitlines() if "read-ahead helper" in line]
    assert len(said) == 1 and f"pid {pid}" in said[0] and "its work is done here" in said[0], said


# -- end to end: the real command ------------------------------------------------------------


def one_project_installation(database_url: str, root: Path, size: SampleSize = SAMPLE) -> Sandbox:
    """The sample installation cut down to the project with the most legacy folders: the other
    projects' rows and folders are gone, as if the application had deleted them."""
    installation = build_installation(database_url, root, size, seed=3)
    legacy_count: Counter[str] = Counter(
        row.project_id for row in query_rows(installation, "SELECT id, project_id FROM generations")
        if (root / row.id).is_dir() and not (root / row.id).is_symlink())
    kept = legacy_count.most_common(1)[0][0]
    for row in query_rows(installation, "SELECT id FROM generations WHERE project_id <> :p", p=kept):
        if (root / row.id).is_dir() and not (root / row.id).is_symlink():
            shutil.rmtree(root / row.id)
    execute_sql(installation, "DELETE FROM generations WHERE project_id <> :p", p=kept)
    execute_sql(installation, "DELETE FROM projects WHERE id <> :p", p=kept)
    return installation


@pytest.fixture
def one_project(database_url: str, tmp_path: Path) -> Sandbox:
    return one_project_installation(database_url, tmp_path / "projects")


def test_a_one_project_run_with_a_spare_core_walks_half_its_plan_ahead_and_ends_as_a_run_without(
        sqlite_url: str, tmp_path: Path) -> None:
    reading_ahead = one_project_installation(sqlite_url, tmp_path / "projects")
    alone = sqlite_copy(reading_ahead, tmp_path / "alone")
    first = run_cli(alone, "--json", "run", "--workers", "1")
    assert first.returncode == 0, first.stderr
    second = run_cli(reading_ahead, "--json", "run", "--workers", "2")
    assert second.returncode == 0, second.stderr
    counts = ("migrated", "skipped", "failed", "bytes")
    assert [json.loads(second.stdout)[key] for key in counts] == [json.loads(first.stdout)[key] for key in counts]
    assert tree_digest(reading_ahead.root) == tree_digest(alone.root)
    assert dump_tables(reading_ahead.database_url) == dump_tables(alone.database_url)
    assert run_cli(reading_ahead, "verify").returncode == 0


# -- the stat walks of a plan (summarize_trees) ----------------------------------------------


@pytest.fixture
def five_versions(tmp_path: Path) -> Iterator[tuple[Storage, list[Path]]]:
    """ROOT holding five versions of one tree, each with a file of its own."""
    root = tmp_path / "projects"
    folders = [root / f"v{n}" for n in range(1, 6)]
    for n, folder in enumerate(folders, start=1):
        write_tree(folder, {f"pkg/module_{m}.py": b"line\n" * (m + n) for m in range(6)} | {f"only_v{n}.txt": b"x"})
    storage = storage_around(folders[0])
    try:
        yield storage, folders
    finally:
        storage.close()


def walked_here(storage: Storage, folders: list[Path]) -> dict[Path, object]:
    """What one stat walk per folder here says: a summary, or the one-line error it raised."""
    found: dict[Path, object] = {}
    for folder in folders:
        try:
            found[folder] = summarize_tree(storage, folder)
        except GenerationError as error:
            found[folder] = str(error)
    return found


def as_compared(found: dict[Path, SummaryOrError]) -> dict[Path, object]:
    return {folder: str(value) if isinstance(value, Exception) else value for folder, value in found.items()}


def test_the_reader_walks_every_other_folder_and_the_summaries_are_the_walks_made_here(
        five_versions: tuple[Storage, list[Path]]) -> None:
    storage, folders = five_versions
    with ScanAhead(storage) as reader:
        found = summarize_trees(storage, folders, reader)
    assert reader.count.summarized == 2, "v2 and v4 are the reader's"
    assert list(found) == folders
    assert as_compared(found) == walked_here(storage, folders)
    assert found[folders[1]] == TreeSummary(7, sum(len(b"line\n") * (m + 2) for m in range(6)) + 1,
                                            fingerprint_digest(fingerprint_tree(storage, folders[1])))


def test_a_folder_the_reader_cannot_walk_is_walked_here_and_fails_with_the_one_line_error(
        five_versions: tuple[Storage, list[Path]]) -> None:
    storage, folders = five_versions
    os.symlink("/etc/passwd", folders[3] / "pkg" / "link.py")       # v4: the reader's half
    with ScanAhead(storage) as reader:
        found = summarize_trees(storage, folders, reader)
    assert reader.count.summarized == 1
    assert isinstance(found[folders[3]], GenerationError) and "link" in str(found[folders[3]])
    assert as_compared(found) == walked_here(storage, folders)


def test_an_edit_after_the_reader_answered_is_seen_by_the_next_walk(five_versions: tuple[Storage, list[Path]]) -> None:
    """Nothing is kept between calls: the digest of an edited folder changes at the next call."""
    storage, folders = five_versions
    with ScanAhead(storage) as reader:
        before = summarize_trees(storage, folders, reader)
        (folders[1] / "pkg" / "module_0.py").write_bytes(b"edited by the application\n")
        after = summarize_trees(storage, folders, reader)
    changed = [folder for folder in folders if before[folder] != after[folder]]
    assert changed == [folders[1]]


def test_without_a_reader_or_with_a_dead_one_every_folder_is_walked_here(
        five_versions: tuple[Storage, list[Path]]) -> None:
    storage, folders = five_versions
    assert as_compared(summarize_trees(storage, folders, None)) == walked_here(storage, folders)
    with ScanAhead(storage) as reader:
        pid = reader._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        reader._process.join(timeout=10)
        assert as_compared(summarize_trees(storage, folders, reader)) == walked_here(storage, folders)
        assert reader.count.summarized == 0


def test_a_resync_with_a_reader_refreshes_exactly_the_edited_generations(one_project: Sandbox) -> None:
    """One project on two workers: this process and the reader share the stat walks. An edit in
    the reader's half and one in this process's half are both found (their manifests name the
    new bytes; the next versions' diffs are redone for them); no other generation's row moves."""
    assert run_cli(one_project, "run", "--workers", "1").returncode == 0
    sources = sorted(one_project.root.glob("*/generations/v*__*/source"),
                     key=lambda folder: int(folder.parent.name[1:].split("__")[0]))
    assert len(sources) >= 4, "the sample project has four migrated generations"
    edited = {sources[1].parent.name, sources[2].parent.name}       # odd: the reader's; even: this process's
    new_text = "edited between two resyncs\n"
    for folder in (sources[1], sources[2]):
        next(path for path in sorted(folder.rglob("*")) if path.is_file()).write_text(new_text)
    before = dump_tables(one_project.database_url)
    result = run_cli(one_project, "--json", "resync", "--workers", "2")
    assert result.returncode == 0, result.stderr
    lines = json.loads(result.stdout)["generations"]
    assert {Path(line["storage_path"]).name for line in lines if line["reason"] == "files changed on disk"} == edited
    digest = hashlib.sha256(new_text.encode()).hexdigest()
    for folder in (sources[1], sources[2]):
        assert digest in json.loads((folder.parent / "manifest.json").read_text())["checksums"].values()
    assert run_cli(one_project, "verify").returncode == 0
    untouched = {line["id"] for line in lines if line["action"] == "unchanged"}
    assert len(untouched) == len(lines) - 3, "v2 and v3 (edited) and v4 (its diff from v3 is redone) are not"
    after = dump_tables(one_project.database_url)
    assert [row for row in after["generations"] if row["id"] in untouched] == \
        [row for row in before["generations"] if row["id"] in untouched]
