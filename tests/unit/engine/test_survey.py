"""``engine/survey``'s listings: one look at a folder answers for every generation, and says
what the lookup of each generation alone (``is_archived``) would have said."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_migrator.engine.survey import probe_disk
from storage_migrator.records import GenerationRow
from storage_migrator.storage.handle import Storage, archived_folder_names, is_archived
from tests.support.sandbox import storage_around

PROJECT = "7f3c2a10-0000-4000-8000-000000000001"
IDS = [f"9a0b1c2d-0000-4000-8000-00000000000{n}" for n in range(1, 5)]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Storage, Path]]:
    projects = tmp_path / "projects"
    (projects / PROJECT / "generations").mkdir(parents=True)
    storage = storage_around(projects / PROJECT)
    try:
        yield storage, projects
    finally:
        storage.close()


def _row(number: int) -> GenerationRow:
    return GenerationRow(id=IDS[number - 1], project_id=PROJECT, version=number, status="completed", created_at=None,
                         storage_path=None, file_count=0, total_size_bytes=None, diff_from_previous=None,
                         changes_summary=None, is_active=False, has_output_files=False)


def test_without_an_archive_folder_nothing_is_archived(root: tuple[Storage, Path]) -> None:
    storage, _ = root
    assert archived_folder_names(storage, PROJECT) == frozenset()
    assert not probe_disk(storage, _row(1), frozenset()).archived


def test_the_listing_says_what_each_lookup_says(root: tuple[Storage, Path]) -> None:
    """v1 archived (a folder), v2 a file and v3 a link where an archive would be: neither is an
    archive, as ``is_archived`` says too; v4 not there."""
    storage, projects = root
    archive = projects / PROJECT / "archive"
    (archive / f"v1__{IDS[0]}").mkdir(parents=True)
    (archive / f"v2__{IDS[1]}").write_text("not a folder")
    (projects / "elsewhere").mkdir()
    os.symlink(projects / "elsewhere", archive / f"v3__{IDS[2]}")
    names = archived_folder_names(storage, PROJECT)
    assert names == frozenset({f"v1__{IDS[0]}"})
    for number in range(1, 5):
        row = _row(number)
        assert probe_disk(storage, row, names).archived is is_archived(storage, row) is (number == 1)


def test_an_archive_that_cannot_be_listed_leaves_each_generation_to_its_own_lookup(root: tuple[Storage, Path]) -> None:
    """``archive`` a link to a folder holding v1: never followed, so nothing is archived, and
    the listing answers None (each generation looked up alone, which says the same)."""
    storage, projects = root
    (projects / "other" / f"v1__{IDS[0]}").mkdir(parents=True)
    os.symlink(projects / "other", projects / PROJECT / "archive")
    assert archived_folder_names(storage, PROJECT) is None
    assert not probe_disk(storage, _row(1), None).archived
    assert not is_archived(storage, _row(1))
