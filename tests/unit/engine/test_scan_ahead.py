"""Reading ahead (``scan_ahead``): the forked reader's scan is the scan this process would make,
and it is used only while the folder still stats as it was read — written, grown, added to or
emptied since, it is read again here; a reader that died or failed costs only the speed.
End to end: a one-project run with a spare core reads ahead and ends as a run without it, and an
edit the application makes while the tool is stopped between two generations is in the manifest."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from storage_migrator.demo import SampleSize
from storage_migrator.engine.execute import CLAIM_BATCH
from storage_migrator.engine.scan_ahead import ANSWER_TIMEOUT_VARIABLE, ScanAhead, SummaryOrError, summarize_trees
from storage_migrator.errors import GenerationError
from storage_migrator.faults import PAUSE_AT_VARIABLE
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.manifest import TreeSummary, fingerprint_digest, summarize_tree
from storage_migrator.storage.tree import fingerprint_tree, scan_tree
from tests.support.processes import run_paused_at
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    dump_tables,
    execute_sql,
    process_tree,
    query_rows,
    run_cli,
    sqlite_copy,
    storage_around,
    tree_digest,
    wait_until_stopped,
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


def read_ahead(storage: Storage, folder: Path) -> ScanAhead:
    """A reader with the scan of ``folder`` begun and finished (nothing taken yet)."""
    reader = ScanAhead(storage)
    reader.start(folder)
    assert reader.ready(timeout=30), "the reader never answered"
    return reader


def test_a_scan_read_ahead_is_the_scan_this_process_would_make(two_versions: tuple[Storage, Path, Path]) -> None:
    """The same records; no file's bytes through the pipe; every file's blob id, as git names it."""
    storage, _, newer = two_versions
    with read_ahead(storage, newer) as reader:
        taken = reader.take(newer)
    assert taken is not None and reader.count.used == 1
    assert taken.root == newer and taken.storage is storage
    assert taken.files == scan_tree(storage, newer).files
    assert taken.contents == {}
    git_ids = subprocess.run(["git", "hash-object", *taken.files], cwd=newer, capture_output=True, text=True,
                             check=True).stdout.split()
    assert taken.blob_ids == dict(zip(taken.files, git_ids, strict=True))


WRITES: dict[str, Callable[[Path], None]] = {
    "a file rewritten": lambda folder: os.utime(folder / "pkg/module_3.py", ns=(1, 1)),
    "a file grown": lambda folder: (folder / "pkg/module_1.py").write_bytes(b"line\n" * 41),
    "a file added": lambda folder: (folder / "pkg/EDITED.md").write_text("edited\n"),
    "a file removed": lambda folder: (folder / "pkg/module_5.py").unlink(),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_folder_written_after_it_was_read_ahead_is_read_again(
        two_versions: tuple[Storage, Path, Path], write: Callable[[Path], None]) -> None:
    """The reader has answered; the application writes; the answer is not used."""
    storage, older, newer = two_versions
    with read_ahead(storage, newer) as reader:
        write(newer)
        assert reader.take(newer) is None
        assert (reader.count.used, reader.count.stale) == (0, 1)


def test_a_scan_begun_for_another_folder_is_dropped_and_the_next_one_answers(
        two_versions: tuple[Storage, Path, Path]) -> None:
    storage, older, newer = two_versions
    with read_ahead(storage, older) as reader:
        assert reader.take(newer) is None           # not what was read ahead: the answer is dropped
        reader.start(newer)
        reader.start(older)                         # the first one is never taken either
        taken = reader.take(older)
    assert taken is not None and taken.files == scan_tree(storage, older).files
    assert (reader.count.used, reader.count.missed) == (1, 1)


def test_a_folder_the_reader_cannot_read_is_left_to_this_process(two_versions: tuple[Storage, Path, Path]) -> None:
    """A link inside: the reader answers "failed", and the scan here raises the one-line error."""
    storage, older, newer = two_versions
    os.symlink("/etc/passwd", newer / "pkg" / "link.py")
    with read_ahead(storage, newer) as reader:
        assert reader.take(newer) is None
    with pytest.raises(GenerationError, match="link"):
        scan_tree(storage, newer)


def test_a_reader_that_died_costs_only_the_read_ahead(two_versions: tuple[Storage, Path, Path]) -> None:
    storage, older, newer = two_versions
    with ScanAhead(storage) as reader:
        pid = reader._process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        reader._process.join(timeout=10)
        reader.start(newer)
        assert reader.take(newer) is None
        reader.start(older)                         # still no error: reading ahead is off now
        assert reader.take(older) is None


def test_a_reader_leaves_with_its_parent(two_versions: tuple[Storage, Path, Path]) -> None:
    """Closed, the reader's process is gone: a run leaves no process behind."""
    storage, _, newer = two_versions
    reader = read_ahead(storage, newer)
    process = reader._process
    reader.close()
    assert not process.is_alive()


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


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_one_project_run_with_a_spare_core_reads_ahead_and_ends_as_a_run_without(
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


def test_an_edit_made_while_the_next_folder_was_read_ahead_is_in_its_manifest(database_url: str,
                                                                             tmp_path: Path) -> None:
    """Stopped after the first claim batch of moves, with the next batch's first folder read
    ahead (the run has one child: the reader), the application edits that folder through its
    flat path; without a resync the generation's manifest must already have the edit."""
    one_project = one_project_installation(database_url, tmp_path / "projects",
                                           replace(SAMPLE, generations_per_project=3 * CLAIM_BATCH))
    rows = query_rows(one_project, "SELECT id, status FROM generations ORDER BY version, created_at, id")
    legacy = [row for row in rows if row.status in ("completed", "failed") and (one_project.root / row.id).is_dir()]
    assert len(legacy) > CLAIM_BATCH and all(row.status == "completed" for row in legacy[: CLAIM_BATCH + 1]), \
        "the sample has a first claim batch of moves, and a completed move after it"
    victim = legacy[CLAIM_BATCH].id
    new_text = "edited while the next folder was read ahead\n"
    seen_children: list[int] = []

    def application_edits() -> None:
        time.sleep(0.5)                             # the reader has read the victim by now
        edited = next(path for path in sorted((one_project.root / victim).rglob("*")) if path.is_file())
        edited.write_text(new_text)

    code, document = run_paused_at(one_project, "moved", application_edits, workers="2",
                                   while_paused=lambda pid: seen_children.extend(children_of(pid)))
    assert code == 0, document
    assert len(seen_children) == 1, f"a one-project run on two workers has one reader, saw {seen_children}"
    verify = run_cli(one_project, "--json", "verify")
    assert verify.returncode == 0, verify.stdout
    target = next(one_project.root.glob(f"*/generations/v*__{victim}"))
    manifest = json.loads((target / "manifest.json").read_text())
    digest = hashlib.sha256(new_text.encode()).hexdigest()
    assert digest in manifest["checksums"].values(), "the edit is missing from the manifest"



def test_a_stopped_reader_is_ended_and_the_run_finishes(one_project: Sandbox) -> None:
    """The reader stopped (SIGSTOP) while the run is paused after its first move: the run waits
    for its answer no longer than the timeout (2 s here), ends it (killed and reaped), says so
    in one stderr line, reads the folders itself and ends as it would have."""
    legacy = [row.id for row in query_rows(one_project, "SELECT id FROM generations WHERE status = 'completed'")
              if (one_project.root / row.id).is_dir()]
    assert len(legacy) >= 3, "the sample has a move whose folder is read ahead after the reader stops"
    environment = {**one_project.cli_environment(), PAUSE_AT_VARIABLE: "moved", ANSWER_TIMEOUT_VARIABLE: "2"}
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "--json", "run", "--workers", "2"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_stopped(process)
        (reader,) = children_of(process.pid)
        os.kill(reader, signal.SIGSTOP)
        process.send_signal(signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            for pid in process_tree(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stdout + stderr
    said = [line for line in stderr.splitlines() if "read-ahead helper" in line]
    assert len(said) == 1 and f"pid {reader}" in said[0] and "its work is done here" in said[0], stderr
    assert not Path(f"/proc/{reader}").exists(), "the stopped reader was not ended and reaped"
    document = json.loads(stdout)
    assert document["failed"] == 0 and all(line["action"] != "failed" for line in document["generations"])
    verify = run_cli(one_project, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr

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
