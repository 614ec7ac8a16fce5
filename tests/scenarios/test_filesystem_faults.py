"""Faults the filesystem throws at a run (pyfakefs controls the disk, the SQLite database is real):
a target on another filesystem (EXDEV), a full disk (ENOSPC) and permission denied (EACCES).
Each leaves a consistent state; once the fault is gone, a rerun completes."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pyfakefs.fake_filesystem import set_uid
from pyfakefs.fake_filesystem_unittest import Patcher

from storage_migrator.commands.run import run
from storage_migrator.patch import writer
from storage_migrator.storage import libc
from storage_migrator.storage import tree as tree_module
from tests.support.sandbox import Sandbox, build_installation, scan


@pytest.fixture
def installation(sqlite_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(sqlite_url, tmp_path / "projects")


@pytest.fixture
def fake_disk(installation: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """The installation's ROOT inside a fake filesystem (writes stay in memory). libc's
    renameat2, syncfs and getdents64 would act on the real disk behind the fake one's back (a
    descriptor pyfakefs hands out is only a number in its own table: the real one of that number
    is /dev/null or any file the process has open): the tool runs as on a libc without them (its
    fallbacks: check-then-rename, link renamed into place right after a move, an fsync of each
    directory and file written instead of one syncfs, os.scandir for a listing).
    pyfakefs also changes a file's ctime on every read, which Linux never does: here the
    fingerprint leaves ctime out (the real cross-filesystem tests on tmpfs, in test_hostile_fs,
    hold the whole fingerprint)."""
    monkeypatch.setattr(libc, "renameat2_function", lambda: None)
    monkeypatch.setattr(libc, "syncfs_function", lambda: None)
    monkeypatch.setattr(libc, "getdents64_function", lambda: None)
    monkeypatch.setattr(tree_module, "fingerprint_of", lambda status, size=None: (
        status.st_size if size is None else size, status.st_mtime_ns, 0, status.st_ino))
    legacy = {g: scan(installation.root / g).checksums()
              for g in installation.sample.generation_ids if (installation.root / g).is_dir()}
    writer.libgit2_flags()    # libgit2 loads its certificates from the real disk when first used
    writer.memory_blobs()
    with Patcher(additional_skip_names=["sqlalchemy", "alembic"]) as patcher:
        patcher.fs.add_real_directory(str(installation.root), read_only=False)
        patcher.fs.add_real_file(sa.make_url(installation.database_url).database, read_only=False)   # sqlite3 opens it
        patcher.fs.legacy_checksums = legacy
        yield patcher.fs


def generations_by_project(installation: Sandbox) -> dict[str, list[tuple[str, int, str]]]:
    engine = installation.engine()
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT project_id, id, version, status FROM generations ORDER BY version")).all()
    engine.dispose()
    result: dict[str, list[tuple[str, int, str]]] = {}
    for project_id, generation_id, version, status in rows:
        result.setdefault(project_id, []).append((generation_id, version, status))
    return result


def assert_migrated_intact(installation: Sandbox, legacy: dict[str, dict[str, str]]) -> None:
    for project_id, generations in generations_by_project(installation).items():
        for generation_id, version, status in generations:
            if generation_id not in legacy or status in ("pending", "processing"):
                continue
            target = installation.root / project_id / "generations" / f"v{version}__{generation_id}"
            assert scan(target / "source").checksums() == legacy[generation_id]
            assert (installation.root / generation_id).is_symlink(), "the flat path is the tool's link"


def demo_legacy_ids(installation: Sandbox, fs) -> list[str]:
    return [g for g, _, _ in generations_by_project(installation)[installation.sample.demo_project_id]
            if g in fs.legacy_checksums]


def test_target_on_another_filesystem_is_copied_and_verified(installation: Sandbox, fake_disk) -> None:
    fake_disk.add_mount_point(str(installation.root / installation.sample.demo_project_id))
    report = run(installation.settings)
    assert report.failed == 0, [o.error for o in report.outcomes if o.failed]
    assert_migrated_intact(installation, fake_disk.legacy_checksums)
    assert not any((installation.root / ".storage-migrate" / "trash").iterdir())


def test_disk_full_during_a_copy_keeps_the_source_and_resumes(installation: Sandbox, fake_disk) -> None:
    mount = installation.root / installation.sample.demo_project_id
    fake_disk.add_mount_point(str(mount), total_size=20_000)
    report = run(installation.settings)
    failed = {o.id: o.error for o in report.outcomes if o.failed}
    assert failed and all("disk is full" in error for error in failed.values()), failed
    assert report.exit_code == 1
    for generation_id in failed:
        assert scan(installation.root / generation_id).checksums() == fake_disk.legacy_checksums[generation_id]
    assert not list(mount.rglob(".source.partial")), "no half copy is left behind"
    fake_disk.set_disk_usage(10**9, str(mount))
    again = run(installation.settings)
    assert again.failed == 0, [o.error for o in again.outcomes if o.failed]
    assert_migrated_intact(installation, fake_disk.legacy_checksums)


def test_permission_denied_fails_that_generation_only(installation: Sandbox, fake_disk) -> None:
    victim = demo_legacy_ids(installation, fake_disk)[1]
    unreadable = installation.root / victim / "app" / "main.py"
    for path in [installation.root, *installation.root.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)
    os.chmod(unreadable, 0)
    set_uid(1000)     # an ordinary user: root would read the file anyway
    try:
        report = run(installation.settings)
    finally:
        set_uid(0)
    failed = {o.id: o.error for o in report.outcomes if o.failed}
    assert list(failed) == [victim] and "permission denied" in failed[victim]
    assert report.exit_code == 1 and report.migrated > 5
    assert (installation.root / victim).is_dir()
    os.chmod(unreadable, 0o644)
    again = run(installation.settings)
    assert again.failed == 0
    assert_migrated_intact(installation, fake_disk.legacy_checksums)


def test_permission_denied_at_the_copy_target_keeps_the_source(installation: Sandbox, fake_disk) -> None:
    project_dir = installation.root / installation.sample.demo_project_id
    fake_disk.add_mount_point(str(project_dir))
    for path in [installation.root, *installation.root.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)
    (project_dir / "generations").mkdir()
    os.chown(project_dir / "generations", 1000, 1000)
    os.chmod(project_dir / "generations", 0o555)        # the other filesystem refuses our writes
    set_uid(1000)
    try:
        report = run(installation.settings)
    finally:
        set_uid(0)
    failed = {o.id: o.error for o in report.outcomes if o.failed}
    demo_ids = demo_legacy_ids(installation, fake_disk)
    assert set(failed) == set(demo_ids) and all("permission denied" in error for error in failed.values()), failed
    for generation_id in demo_ids:
        assert scan(installation.root / generation_id).checksums() == fake_disk.legacy_checksums[generation_id]
    os.chmod(project_dir / "generations", 0o755)
    again = run(installation.settings)
    assert again.failed == 0, [o.error for o in again.outcomes if o.failed]
    assert_migrated_intact(installation, fake_disk.legacy_checksums)
