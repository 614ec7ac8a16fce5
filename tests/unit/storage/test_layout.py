"""Pure path logic: safe ids, names in the versioned layout, database paths ↔ disk paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage_migrator.errors import UnsafePathComponent
from storage_migrator.storage.layout import (
    StorageLayout,
    check_path_component,
    check_relative_file_path,
    join_storage_path,
    parse_patch_file_name,
    parse_target_dir_name,
    patch_file_name,
    target_dir_name,
)

LAYOUT = StorageLayout(Path("/srv/storage/projects"), "./storage/projects")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "a\\b", "nul\x00byte", "tab\there", ".hidden", "x" * 300, None, 7])
def test_unsafe_ids_are_rejected(bad: object) -> None:
    with pytest.raises(UnsafePathComponent):
        check_path_component(bad, "generation id")


@pytest.mark.parametrize("good", ["3f2b8c1e-0000-4000-8000-000000000001", "gen_1", "ünïcode-id", "a.b"])
def test_safe_ids_pass(good: str) -> None:
    assert check_path_component(good, "generation id") == good


def test_layout_paths() -> None:
    assert LAYOUT.legacy_dir("g1") == Path("/srv/storage/projects/g1")
    assert LAYOUT.target_dir("p1", 3, "g1") == Path("/srv/storage/projects/p1/generations/v3__g1")
    assert LAYOUT.active_link("p1") == Path("/srv/storage/projects/p1/generations/active")
    assert LAYOUT.legacy_storage_path("g1") == "./storage/projects/g1"
    assert LAYOUT.target_storage_path("p1", 3, "g1") == "./storage/projects/p1/generations/v3__g1"
    assert LAYOUT.patch_storage_path("p1", 3, "g1", 2) == "./storage/projects/p1/generations/v3__g1/diff_from_v2.patch"
    assert LAYOUT.lock_file == Path("/srv/storage/projects/.storage-migrate/lock")


def test_layout_refuses_unsafe_ids_in_every_path() -> None:
    with pytest.raises(UnsafePathComponent):
        LAYOUT.legacy_dir("..")
    with pytest.raises(UnsafePathComponent):
        LAYOUT.target_dir("../etc", 1, "g1")
    with pytest.raises(UnsafePathComponent):
        LAYOUT.target_storage_path("p1", 1, "a/b")


def test_names_round_trip() -> None:
    assert parse_target_dir_name(target_dir_name(12, "abc__def")) == (12, "abc__def")
    assert parse_target_dir_name("active") is None
    assert parse_target_dir_name("v0__x") is None
    assert parse_patch_file_name(patch_file_name(4)) == 4
    assert parse_patch_file_name("diff_from_v4.patch.tmp") is None


def test_database_paths_map_to_disk_only_below_root() -> None:
    assert LAYOUT.disk_path("./storage/projects/g1") == Path("/srv/storage/projects/g1")
    assert LAYOUT.disk_path("./storage/projects/p1/generations/v1__g1") == Path("/srv/storage/projects/p1/generations/v1__g1")
    assert LAYOUT.disk_path("/etc/passwd") is None
    assert LAYOUT.disk_path("./storage/projects/../../etc") is None
    assert LAYOUT.disk_path("./storage/projects/") is None


def test_join_storage_path_never_doubles_slashes() -> None:
    assert join_storage_path("./storage/projects/", "p", "generations") == "./storage/projects/p/generations"
    assert join_storage_path("/abs", "g") == "/abs/g"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\x00b", "a\\b"])
def test_output_file_paths_must_be_plain_relative(bad: str) -> None:
    with pytest.raises(UnsafePathComponent):
        check_relative_file_path(bad)


def test_output_file_paths_may_start_with_a_dot() -> None:
    assert check_relative_file_path(".env.example") == ".env.example"
    assert check_relative_file_path("app/.gitignore") == "app/.gitignore"
