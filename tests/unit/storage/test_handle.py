"""storage_migrator.storage.handle: the ``Storage`` object's own methods on real folders.

Every case that plants a link has a sentinel folder OUTSIDE ROOT whose names, types, inodes,
mtimes and contents must be exactly the same afterwards; where a followed link would give a
different answer than the link itself, the test asks exactly that question.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage_migrator.errors import UnsafePath, UsageError
from storage_migrator.storage.handle import Storage, open_storage
from storage_migrator.storage.layout import STATE_DIR, StorageLayout
from tests.support.sandbox import open_fds, snapshot

PREFIX = "./storage/projects"




@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """ROOT with links planted at every kind of component, and a sentinel folder outside it.

    OUTSIDE/secret.txt, OUTSIDE/inner/x.txt, OUTSIDE/empty/, OUTSIDE/inner_link -> inner
    ROOT/dir/file.txt              regular file
    ROOT/dir/sub/                  empty folder
    ROOT/link_dir -> OUTSIDE       first component a link
    ROOT/dir/link_dir -> OUTSIDE   intermediate component a link
    ROOT/dir/link_file -> OUTSIDE/secret.txt
    ROOT/link_empty -> OUTSIDE/empty
    ROOT/dangling -> OUTSIDE/nothing
    """
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "empty").mkdir()
    (outside / "secret.txt").write_bytes(b"do not read")
    (outside / "inner" / "x.txt").write_bytes(b"do not delete")
    (outside / "inner_link").symlink_to("inner")
    root_path = tmp_path / "root"
    (root_path / "dir" / "sub").mkdir(parents=True)
    (root_path / "dir" / "file.txt").write_bytes(b"inside")
    (root_path / "link_dir").symlink_to(outside)
    (root_path / "dir" / "link_dir").symlink_to(outside)
    (root_path / "dir" / "link_file").symlink_to(outside / "secret.txt")
    (root_path / "link_empty").symlink_to(outside / "empty")
    (root_path / "dangling").symlink_to(outside / "nothing")
    before = snapshot(outside)
    with open_storage(StorageLayout(root_path, PREFIX)) as storage:
        yield {"storage": storage, "root_path": root_path, "outside": outside, "before": before}
    assert snapshot(outside) == before


# -- parts ---------------------------------------------------------------------------------------


def test_parts_of_paths_below_root(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    assert storage.path == root_path
    assert storage.parts(root_path) == ()
    assert storage.parts(str(root_path)) == ()
    assert storage.parts(root_path / "dir" / "file.txt") == ("dir", "file.txt")
    assert storage.parts(f"{root_path}/dir/./sub/") == ("dir", "sub")  # spelled loosely, same place
    assert storage.parts(root_path / "dir" / ".." / "x") == ("x",)


@pytest.mark.parametrize(
    "spelling",
    [
        lambda root, outside: outside / "secret.txt",
        lambda root, outside: root.parent,
        lambda root, outside: root / ".." / "outside" / "secret.txt",
        lambda root, outside: root / "dir" / ".." / ".." / "root2" / "x",
        lambda root, outside: root.parent / (root.name + "2") / "x",  # a sibling sharing ROOT's name as prefix
        lambda root, outside: Path("/"),
    ],
    ids=["outside", "parent", "dot-dot out", "dot-dot out nested", "sibling with the same prefix", "slash"],
)
def test_parts_refuses_a_path_outside_root(world: dict[str, Any], spelling: Any) -> None:
    storage: Storage = world["storage"]
    path = spelling(world["root_path"], world["outside"])
    with pytest.raises(UnsafePath) as caught:
        storage.parts(path)
    assert f"is outside the storage root {world['root_path']}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_parts_accepts_a_path_spelled_through_the_resolved_root(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    (real / "a").mkdir(parents=True)
    (real / "a" / "f").write_bytes(b"x")
    (tmp_path / "via").symlink_to(real)       # the operator reaches ROOT through a link
    with open_storage(StorageLayout(tmp_path / "via", PREFIX)) as storage:
        assert storage.resolved_path == str(real)
        assert storage.parts(tmp_path / "via" / "a" / "f") == ("a", "f")
        assert storage.parts(real / "a" / "f") == ("a", "f")   # as inotify reports it
        assert storage.parts(real) == ()
        assert storage.is_folder(real / "a")
        with pytest.raises(UnsafePath, match="is outside the storage root"):
            storage.parts(tmp_path / "realx" / "a")
        with pytest.raises(UnsafePath, match="is outside the storage root"):
            storage.parts(tmp_path)
    monkeypatch.chdir(tmp_path)
    with open_storage(StorageLayout(Path("real"), PREFIX)) as storage:   # a relative ROOT
        assert storage.parts("real/a/f") == ("a", "f")
        assert storage.parts(real / "a") == ("a",)
        with pytest.raises(UnsafePath):
            storage.parts("a/f")


# -- looking, never following a link -----------------------------------------------------------


def test_status_and_its_questions_on_real_entries(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    file_status = storage.status(root_path / "dir" / "file.txt")
    assert file_status is not None and stat.S_ISREG(file_status.st_mode)
    assert file_status.st_ino == os.lstat(root_path / "dir" / "file.txt").st_ino
    root_status = storage.status(root_path)
    assert root_status is not None and root_status.st_ino == os.lstat(root_path).st_ino
    assert storage.is_folder(root_path)
    assert storage.is_folder(root_path / "dir" / "sub")
    assert not storage.is_folder(root_path / "dir" / "file.txt")
    assert not storage.is_link(root_path / "dir" / "file.txt")
    assert storage.occupied(root_path / "dir" / "file.txt")
    assert not storage.occupied(root_path / "nothing")
    assert storage.status(root_path / "nothing" / "below") is None
    assert not storage.occupied(root_path / "dir" / "file.txt" / "below")    # a file is no folder


def test_a_final_link_is_described_not_followed(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    outside: Path = world["outside"]
    for link in (root_path / "link_dir", root_path / "dir" / "link_dir", root_path / "link_empty"):
        found = storage.status(link)
        assert found is not None and stat.S_ISLNK(found.st_mode)
        assert found.st_ino == os.lstat(link).st_ino
        assert not storage.is_folder(link)          # a link to a folder is not a folder
        assert storage.is_link(link)
        assert storage.occupied(link)
    assert storage.is_link(root_path / "dir" / "link_file")
    assert storage.is_link(root_path / "dangling")
    assert storage.occupied(root_path / "dangling")     # a dangling link has the name too
    assert storage.link_text(root_path / "dir" / "link_file") == str(outside / "secret.txt")
    assert storage.link_text(root_path / "dangling") == str(outside / "nothing")
    assert storage.link_text(root_path / "link_dir") == str(outside)


def test_a_link_at_an_intermediate_component_is_nothing_there(world: dict[str, Any]) -> None:
    """Through ROOT/link_dir and ROOT/dir/link_dir, OUTSIDE's folder, file and link would all be
    found if a link were followed: none of them is."""
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    outside: Path = world["outside"]
    assert os.path.isdir(root_path / "link_dir" / "inner")     # what following would see
    for via in (root_path / "link_dir", root_path / "dir" / "link_dir"):
        for name in ("inner", "secret.txt", "inner_link", "empty", "inner/x.txt", "inner_link/x.txt"):
            path = via / name
            assert storage.status(path) is None, path
            assert not storage.is_folder(path), path
            assert not storage.is_link(path), path
            assert not storage.occupied(path), path
            assert storage.link_text(path) is None, path
    # The link itself stays what it was.
    assert os.readlink(root_path / "link_dir") == str(outside)


def test_link_text_is_none_for_anything_but_a_link(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    assert storage.link_text(root_path / "dir" / "file.txt") is None
    assert storage.link_text(root_path / "dir" / "sub") is None
    assert storage.link_text(root_path / "nothing") is None


# -- names and entries -------------------------------------------------------------------------


def test_names_and_entries_of_a_real_folder_are_sorted_and_report_links(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    for name in ("zeta", "alpha", "Mid"):
        (root_path / "dir" / name).write_bytes(b"")
    expected = sorted(["Mid", "alpha", "file.txt", "link_dir", "link_file", "sub", "zeta"])
    assert storage.names(root_path / "dir") == expected
    entries = storage.entries(root_path / "dir")
    assert [name for name, _ in entries] == expected
    kinds = {name: status for name, status in entries}
    assert stat.S_ISLNK(kinds["link_dir"].st_mode)       # lstat: the link, not OUTSIDE
    assert stat.S_ISLNK(kinds["link_file"].st_mode)
    assert stat.S_ISDIR(kinds["sub"].st_mode)
    assert kinds["file.txt"].st_ino == os.lstat(root_path / "dir" / "file.txt").st_ino
    assert STATE_DIR not in storage.names(root_path)
    assert storage.names(root_path / "dir" / "sub") == []


@pytest.mark.parametrize(
    "folder",
    ["link_dir", "dir/link_dir", "link_empty", "link_dir/inner", "dir/link_dir/inner", "link_dir/inner_link"],
)
def test_names_and_entries_refuse_a_symlinked_folder(world: dict[str, Any], folder: str) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    before = open_fds()
    with pytest.raises(UnsafePath, match="is a symlink"):
        storage.names(root_path / folder)
    with pytest.raises(UnsafePath, match="is a symlink"):
        storage.entries(root_path / folder)
    assert open_fds() == before


def test_names_of_a_file_or_nothing_is_an_error(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    with pytest.raises(UnsafePath, match="is not a directory"):
        storage.names(root_path / "dir" / "file.txt")
    with pytest.raises(FileNotFoundError):
        storage.entries(root_path / "missing")
    with pytest.raises(UnsafePath, match="is outside the storage root"):
        storage.names(world["outside"])


# -- changing ----------------------------------------------------------------------------------


def test_remove_entry_removes_a_file_and_a_link_itself(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    storage.remove_entry(root_path / "dir" / "file.txt")
    assert not os.path.lexists(root_path / "dir" / "file.txt")
    storage.remove_entry(root_path / "dir" / "link_file")     # the link, not OUTSIDE/secret.txt
    storage.remove_entry(root_path / "link_dir")              # the link, not OUTSIDE
    storage.remove_entry(root_path / "dangling")
    for gone in ("dir/link_file", "link_dir", "dangling"):
        assert not os.path.lexists(root_path / gone)
    storage.remove_entry(root_path / "dir" / "file.txt")      # gone already is fine
    storage.remove_entry(root_path / "never" / "there")


def test_remove_entry_never_removes_a_folder(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    with pytest.raises(OSError) as caught:
        storage.remove_entry(root_path / "dir" / "sub")          # an empty folder at that
    assert caught.value.errno in (errno.EISDIR, errno.EPERM)
    assert str(root_path / "dir" / "sub") in str(caught.value)
    assert (root_path / "dir" / "sub").is_dir()
    with pytest.raises(OSError):
        storage.remove_entry(root_path / "dir")
    assert (root_path / "dir" / "file.txt").read_bytes() == b"inside"
    with pytest.raises(ValueError):
        storage.remove_entry(root_path)                           # never ROOT itself


@pytest.mark.parametrize("path", ["link_dir/secret.txt", "dir/link_dir/secret.txt", "dir/link_dir/inner/x.txt",
                                  "link_dir/inner_link"])
def test_remove_entry_never_removes_through_a_link(world: dict[str, Any], path: str) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    with pytest.raises(UnsafePath, match="is a symlink"):
        storage.remove_entry(root_path / path)
    assert os.readlink(root_path / "link_dir") == str(world["outside"])
    assert snapshot(world["outside"]) == world["before"]


def test_remove_empty_folder(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    with pytest.raises(OSError) as caught:
        storage.remove_empty_folder(root_path / "dir")            # not empty
    assert caught.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    assert (root_path / "dir" / "file.txt").exists()
    with pytest.raises(NotADirectoryError):
        storage.remove_empty_folder(root_path / "dir" / "file.txt")
    assert (root_path / "dir" / "file.txt").exists()
    storage.remove_empty_folder(root_path / "dir" / "sub")
    assert not os.path.lexists(root_path / "dir" / "sub")
    with pytest.raises(FileNotFoundError):
        storage.remove_empty_folder(root_path / "dir" / "sub")


@pytest.mark.parametrize("link", ["link_empty", "link_dir", "dir/link_dir", "dangling"])
def test_remove_empty_folder_refuses_a_link(world: dict[str, Any], link: str) -> None:
    """ROOT/link_empty points at an empty folder: rmdir through it would remove OUTSIDE/empty."""
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    target = os.readlink(root_path / link)
    with pytest.raises(OSError) as caught:
        storage.remove_empty_folder(root_path / link)
    assert caught.value.errno == errno.ENOTDIR
    assert os.readlink(root_path / link) == target                # the link is still there
    assert (world["outside"] / "empty").is_dir()


@pytest.mark.parametrize("path", ["link_dir/empty", "dir/link_dir/empty", "link_dir/inner_link"])
def test_remove_empty_folder_never_goes_through_a_link(world: dict[str, Any], path: str) -> None:
    storage: Storage = world["storage"]
    with pytest.raises(UnsafePath, match="is a symlink"):
        storage.remove_empty_folder(world["root_path"] / path)
    assert (world["outside"] / "empty").is_dir()


def test_set_mtime_sets_the_entry_itself(world: dict[str, Any]) -> None:
    storage: Storage = world["storage"]
    root_path: Path = world["root_path"]
    storage.set_mtime(root_path / "dir" / "file.txt", 1_500_000_000_123_456_789)
    assert os.lstat(root_path / "dir" / "file.txt").st_mtime_ns == 1_500_000_000_123_456_789
    storage.set_mtime(root_path / "dir" / "link_file", 1_400_000_000_000_000_000)   # the link's own time
    assert os.lstat(root_path / "dir" / "link_file").st_mtime_ns == 1_400_000_000_000_000_000
    with pytest.raises(UnsafePath, match="is a symlink"):
        storage.set_mtime(root_path / "link_dir" / "secret.txt", 0)
    # OUTSIDE unchanged: checked by the fixture.


# -- opening ROOT --------------------------------------------------------------------------------


def test_open_storage_refuses_a_root_that_is_a_file_or_missing(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")
    (tmp_path / "link_to_file").symlink_to(tmp_path / "file")
    before = open_fds()
    for root in (tmp_path / "file", tmp_path / "link_to_file", tmp_path / "missing", tmp_path / "file" / "below"):
        with pytest.raises(UsageError) as caught:
            open_storage(StorageLayout(root, PREFIX))
        assert str(caught.value).startswith(f"storage root {root} is not a folder")
        assert "--storage-root" in str(caught.value)
    assert open_fds() == before
    assert (tmp_path / "file").read_bytes() == b"not a folder"


def test_open_storage_follows_a_link_in_roots_own_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    with open_storage(StorageLayout(tmp_path / "via", PREFIX)) as storage:
        assert storage.path == tmp_path / "via"
        assert os.fstat(storage.root.fileno()).st_ino == os.stat(tmp_path / "real").st_ino
    assert storage.root.fileno() == -1                    # closed by the with block


@pytest.mark.parametrize("kind", ["link to a folder", "link inside ROOT", "dangling link", "file"])
def test_open_storage_refuses_a_state_dir_that_is_not_a_real_folder(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = root / STATE_DIR
    if kind == "link to a folder":
        state.symlink_to(elsewhere)
    elif kind == "link inside ROOT":
        (root / "real_state").mkdir()
        state.symlink_to("real_state")
    elif kind == "dangling link":
        state.symlink_to(tmp_path / "nothing")
    else:
        state.write_bytes(b"")
    before = open_fds()
    with pytest.raises(UsageError) as caught:
        open_storage(StorageLayout(root, PREFIX))
    assert str(caught.value).startswith(f"{state} is not a real folder")
    assert "\n" not in str(caught.value)
    assert open_fds() == before                           # the opened ROOT is closed again
    assert os.listdir(elsewhere) == []
    assert os.path.lexists(state)                         # reported, not removed


def test_open_storage_accepts_a_real_or_missing_state_dir(tmp_path: Path) -> None:
    with open_storage(StorageLayout(tmp_path, PREFIX)) as storage:
        assert not storage.occupied(storage.layout.state_dir)
    assert not os.path.lexists(tmp_path / STATE_DIR)          # opening creates nothing
    (tmp_path / STATE_DIR).mkdir()
    with open_storage(StorageLayout(tmp_path, PREFIX)) as storage:
        assert storage.is_folder(storage.layout.state_dir)
