"""storage_migrator.storage.root, and the ``tree`` verbs production reads files with, against real
files: planted symlinks at every component, FIFOs, devices, huge and sparse files, 2,000-level trees
and names that are not UTF-8.

Every hostile case has a sentinel folder outside ROOT whose names, contents, inodes, modes and
mtimes must be exactly the same afterwards.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import resource
import secrets
import shutil
import stat
import tempfile
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage_migrator.errors import GenerationError, UnsafePath
from storage_migrator.storage import libc, tree
from storage_migrator.storage import root as rootfs
from storage_migrator.storage.handle import Storage, open_storage
from storage_migrator.storage.layout import TEMP_SUFFIX, StorageLayout, is_temp_name
from storage_migrator.storage.root import Root, relative_parts
from tests.support.sandbox import open_fds, snapshot

MiB = 1 << 20
DEEP = 2000


# -- helpers -----------------------------------------------------------------------------------




def run_with_timeout(function: Callable[[], Any], timeout: float = 10.0, fifo: Path | None = None) -> Any:
    """Run ``function`` in a thread; fail (instead of hanging) if it blocks. Returns its result or
    the exception it raised."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["value"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if fifo is not None:  # release the reader blocked in open(2) so the thread can end
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(writer)
            thread.join(timeout)
        pytest.fail(f"{function} blocked for {timeout}s")
    return outcome["value"]


@pytest.fixture
def low_fd_limit() -> Iterator[int]:
    """Lower the soft RLIMIT_NOFILE far below the tree depth, so holding a descriptor per level
    fails the test with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    limit = highest + 24
    assert limit < DEEP // 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def make_deep_tree(base: Path, depth: int, file_every: int) -> list[str]:
    """``depth`` nested directories ``d`` below ``base`` (built through descriptors: the path is
    longer than PATH_MAX), a file ``f<level>`` every ``file_every`` levels and at the bottom.
    Returns the relative paths of the files."""
    files: list[str] = []
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if level % file_every == 0 or level == depth:
                name = f"f{level}"
                out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(out, f"level {level}".encode())
                os.close(out)
                files.append("/".join(["d"] * level + [name]))
    finally:
        os.close(fd)
    return files


def no_temp_files(path: Path) -> bool:
    return not [name for name in os.listdir(path) if name.endswith(TEMP_SUFFIX)]


def opened(root_path: Path) -> Storage:
    """ROOT opened as production opens it (``open_installation`` → ``open_storage``)."""
    return open_storage(StorageLayout(root_path, "./storage/projects"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """ROOT with links planted at every kind of component, and a sentinel folder outside it.

    ROOT/dir/file.txt             regular file
    ROOT/dir/sub/                 directory
    ROOT/link_dir -> OUTSIDE      first component a link
    ROOT/dir/link_dir -> OUTSIDE  intermediate component a link
    ROOT/link_file -> OUTSIDE/secret.txt
    ROOT/dir/link_file -> OUTSIDE/secret.txt
    """
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"do not read")
    (outside / "inner" / "x.txt").write_bytes(b"do not delete")
    (outside / "planted").mkdir()
    root_path = tmp_path / "root"
    (root_path / "dir" / "sub").mkdir(parents=True)
    (root_path / "dir" / "file.txt").write_bytes(b"inside")
    (root_path / "link_dir").symlink_to(outside)
    (root_path / "dir" / "link_dir").symlink_to(outside)
    (root_path / "link_file").symlink_to(outside / "secret.txt")
    (root_path / "dir" / "link_file").symlink_to(outside / "secret.txt")
    before = snapshot(outside)
    with opened(root_path) as storage:
        yield {"root": storage.root, "storage": storage, "root_path": root_path, "outside": outside, "before": before}


# -- a symlink at every component --------------------------------------------------------------

REFUSED: list[tuple[str, Callable[[Root], Any]]] = [
    ("open_dir first", lambda r: r.open_dir("link_dir")),
    ("open_dir intermediate", lambda r: r.open_dir("dir/link_dir/inner")),
    ("open_dir final", lambda r: r.open_dir("dir/link_dir")),
    ("lstat first", lambda r: r.lstat("link_dir/secret.txt")),
    ("lstat intermediate", lambda r: r.lstat("dir/link_dir/secret.txt")),
    ("write_atomic first", lambda r: r.write_atomic("link_dir/secret.txt", b"x")),
    ("write_atomic intermediate", lambda r: r.write_atomic("dir/link_dir/new.txt", b"x")),
    ("write_atomic final", lambda r: r.write_atomic("link_file", b"x")),
    ("write_atomic final nested", lambda r: r.write_atomic("dir/link_file", b"x")),
    ("makedirs first", lambda r: r.makedirs("link_dir/new")),
    ("makedirs intermediate", lambda r: r.makedirs("dir/link_dir/new/deeper")),
    ("makedirs final", lambda r: r.makedirs("dir/link_dir")),
    ("rename source through link", lambda r: r.rename("link_dir/secret.txt", "dir/got")),
    ("rename source nested through link", lambda r: r.rename("dir/link_dir/inner", "dir/got")),
    ("rename destination through link", lambda r: r.rename("dir/file.txt", "link_dir/planted/x")),
    ("rename destination nested", lambda r: r.rename("dir/file.txt", "dir/link_dir/planted/x")),
    ("symlink through link", lambda r: r.symlink("link_dir/planted/l", "/etc/passwd")),
    ("symlink nested through link", lambda r: r.symlink("dir/link_dir/l", "/etc/passwd")),
    ("readlink through link", lambda r: r.readlink("dir/link_dir/secret.txt")),
    ("unlink first", lambda r: r.unlink("link_dir/secret.txt")),
    ("unlink intermediate", lambda r: r.unlink("dir/link_dir/inner/x.txt")),
    ("rmtree final", lambda r: r.rmtree("link_dir")),
    ("rmtree final nested", lambda r: r.rmtree("dir/link_dir")),
    ("rmtree intermediate", lambda r: r.rmtree("dir/link_dir/inner")),
    ("copy_tree source final", lambda r: r.copy_tree("link_dir", "dir/copy")),
    ("copy_tree source intermediate", lambda r: r.copy_tree("dir/link_dir/inner", "dir/copy")),
    ("copy_tree meets a link inside", lambda r: r.copy_tree("dir", "copy")),
    ("copy_tree destination first", lambda r: r.copy_tree("dir/link_dir/inner", "link_dir/copy")),
    ("copy_tree destination nested", lambda r: r.copy_tree("dir/link_dir/inner", "dir/link_dir/planted/copy")),
    ("fsync_dir", lambda r: r.fsync_dir("dir/link_dir")),
    ("walk_entries final", lambda r: list(r.walk_entries("link_dir"))),
    ("walk_entries meets a link", lambda r: list(r.walk_entries("dir"))),
    ("open_regular final", lambda r: r.open_regular("dir/link_file")),
    ("open_regular intermediate", lambda r: r.open_regular("dir/link_dir/secret.txt")),
    ("rmdir intermediate", lambda r: r.rmdir("dir/link_dir/planted")),
    ("set_times intermediate", lambda r: r.set_times("dir/link_dir/secret.txt", 0)),
    ("open_lock_file final", lambda r: r.open_lock_file("dir/link_file")),
    ("open_lock_file intermediate", lambda r: r.open_lock_file("dir/link_dir/lock")),
    ("folder_files first", lambda r: r.folder_files("link_dir")),
    ("folder_files final", lambda r: opened_in(r.folder_files("dir"), "link_file")),
    ("folder_files intermediate", lambda r: opened_in(r.folder_files("dir"), "link_dir/secret.txt")),
    ("folder_files after a file", lambda r: opened_in(r.folder_files(()), "dir/file.txt", "dir/link_dir/secret.txt")),
]


def opened_in(files: rootfs.FolderFiles, *paths: str) -> None:
    """Open ``paths`` one after another through ``files`` (closing each), then close it."""
    with files:
        for path in paths:
            os.close(files.open_regular(path)[0])


def read_with(storage: Storage, folder: Path, *paths: str) -> None:
    with tree.FolderReader(storage, folder, {}) as read:
        for path in paths:
            read(path)

# The verbs production reads files with (``storage.tree``): the folder below ROOT as a Path, the
# file below it as a '/' path; a refusal is a ``GenerationError`` whose one line names the path.
READS_REFUSED: list[tuple[str, Callable[[Storage], Any]]] = [
    ("read_regular_file final", lambda s: tree.read_regular_file(s, s.path, "link_file", max_bytes=100)),
    ("read_regular_file final nested", lambda s: tree.read_regular_file(s, s.path / "dir", "link_file", max_bytes=100)),
    ("read_regular_file first", lambda s: tree.read_regular_file(s, s.path, "link_dir/secret.txt", max_bytes=100)),
    ("read_regular_file intermediate",
     lambda s: tree.read_regular_file(s, s.path, "dir/link_dir/secret.txt", max_bytes=100)),
    ("read_regular_file folder a link", lambda s: tree.read_regular_file(s, s.path / "dir/link_dir", "secret.txt")),
    ("open_regular_file final", lambda s: tree.open_regular_file(s, s.path / "dir", "link_file")),
    ("open_regular_file intermediate", lambda s: tree.open_regular_file(s, s.path, "dir/link_dir/secret.txt")),
    ("read_prefix final", lambda s: tree.read_prefix(s, s.path, "dir/link_file", 4)),
    ("sha256_file final", lambda s: tree.sha256_file(s, s.path, "link_file")),
    ("sha256_file intermediate", lambda s: tree.sha256_file(s, s.path, "dir/link_dir/secret.txt")),
    ("hash_file final", lambda s: tree.hash_file(s, s.path, "link_file", keep_up_to=100)),
    ("git_blob_id_file final", lambda s: tree.git_blob_id_file(s, s.path, "link_file")),
    ("walk_files final", lambda s: list(tree.walk_files(s, s.path / "link_dir"))),
    ("walk_files intermediate", lambda s: list(tree.walk_files(s, s.path / "dir/link_dir/inner"))),
    ("walk_files meets a link", lambda s: list(tree.walk_files(s, s.path / "dir"))),
    ("walk_files of ROOT meets a link", lambda s: list(tree.walk_files(s, s.path))),
    ("scan_tree meets a link", lambda s: tree.scan_tree(s, s.path / "dir")),
    ("fingerprint_tree meets a link", lambda s: tree.fingerprint_tree(s, s.path / "dir")),
    ("FolderReader final", lambda s: read_with(s, s.path / "dir", "link_file")),
    ("FolderReader intermediate", lambda s: read_with(s, s.path, "dir/link_dir/secret.txt")),
    ("FolderReader after a read", lambda s: read_with(s, s.path, "dir/file.txt", "dir/link_dir/secret.txt")),
    ("FolderReader folder a link", lambda s: read_with(s, s.path / "dir/link_dir", "secret.txt")),
]


@pytest.mark.parametrize("operation", [op for _, op in REFUSED], ids=[name for name, _ in REFUSED])
def test_every_method_refuses_a_symlink_at_any_component(world: dict[str, Any], operation: Callable[[Root], Any]) -> None:
    with pytest.raises(UnsafePath) as caught:
        operation(world["root"])
    assert "is a symlink" in str(caught.value)
    assert str(world["root_path"]) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert snapshot(world["outside"]) == world["before"]
    assert os.readlink(world["root_path"] / "link_dir") == str(world["outside"])


@pytest.mark.parametrize("operation", [op for _, op in READS_REFUSED], ids=[name for name, _ in READS_REFUSED])
def test_every_read_refuses_a_symlink_at_any_component(world: dict[str, Any], operation: Callable[[Storage], Any]) -> None:
    before = open_fds()
    with pytest.raises(GenerationError) as caught:
        operation(world["storage"])
    assert "is a symlink" in str(caught.value)
    assert str(world["root_path"]) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert open_fds() == before
    assert snapshot(world["outside"]) == world["before"]
    assert os.readlink(world["root_path"] / "link_dir") == str(world["outside"])


def test_operations_on_a_final_symlink_act_on_the_link_itself(world: dict[str, Any]) -> None:
    root: Root = world["root"]
    root_path: Path = world["root_path"]
    link_stat = root.lstat("link_file")
    assert link_stat is not None and stat.S_ISLNK(link_stat.st_mode)
    assert root.readlink("dir/link_file") == str(world["outside"] / "secret.txt")
    root.rename("dir/link_file", "dir/sub/moved_link")
    assert os.readlink(root_path / "dir/sub/moved_link") == str(world["outside"] / "secret.txt")
    root.symlink("link_file", "dir/file.txt")  # replacing a symlink is allowed, and atomic
    assert os.readlink(root_path / "link_file") == "dir/file.txt"
    root.unlink("dir/sub/moved_link")
    root.unlink("link_dir")
    assert not os.path.lexists(root_path / "link_dir")
    assert snapshot(world["outside"]) == world["before"]
    assert no_temp_files(root_path)


def test_a_link_swapped_in_after_the_check_is_still_not_followed(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the lstat and the open/rename, replace the target by a link to OUTSIDE."""
    root: Root = world["root"]
    root_path: Path = world["root_path"]
    real_lstat_at = rootfs._lstat_at

    def lstat_then_swap(dir_fd: int, name: str) -> os.stat_result | None:
        result = real_lstat_at(dir_fd, name)
        if name == "file.txt" and result is not None and stat.S_ISREG(result.st_mode):
            os.unlink(root_path / "dir/file.txt")
            os.symlink(world["outside"] / "secret.txt", root_path / "dir/file.txt")
        return result

    monkeypatch.setattr(rootfs, "_lstat_at", lstat_then_swap)
    with pytest.raises(GenerationError, match="dir/file.txt: is a symlink"):
        tree.read_regular_file(world["storage"], root_path / "dir", "file.txt", max_bytes=100)
    # write_atomic: the check saw a regular file; rename(2) replaces the link, never writes through.
    os.unlink(root_path / "dir/file.txt")
    (root_path / "dir/file.txt").write_bytes(b"inside")
    root.write_atomic("dir/file.txt", b"new content")
    assert not os.path.islink(root_path / "dir/file.txt")
    assert (root_path / "dir/file.txt").read_bytes() == b"new content"
    assert snapshot(world["outside"]) == world["before"]
    assert no_temp_files(root_path / "dir")


def test_holding_reaches_a_folder_once_and_never_through_a_folder_moved_out_or_a_link_swapped_in(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within ``holding``, steps in the held folder open none of its components again; yet each
    step goes where walking by name would: a held folder moved out of ROOT is not written to
    (the new folder at its name is), a level replaced by a link is refused as a link, a missing
    one is missing — and every held descriptor is closed at the block's end."""
    root: Root = world["root"]
    root_path: Path = world["root_path"]
    outside: Path = world["outside"]
    root.makedirs("p/generations/v1")
    opened_names: list[Any] = []
    real_open = os.open
    before = open_fds()

    def recording_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened_names.append(path)
        return real_open(path, *args, **kwargs)

    with root.holding("p/generations/v1"):
        monkeypatch.setattr(os, "open", recording_open)
        root.write_atomic("p/generations/v1/one", b"1", fsync=False)
        root.write_atomic("p/generations/v1/two", b"2", fsync=False)
        root.makedirs("p/generations/v1/source")
        root.rename("p/generations/v1/two", "p/generations/v1/source/two")
        assert root.lstat("p/generations/v1/source/two") is not None
        assert root.lstat("p/generations/missing") is None
        assert [name for name in opened_names if name in ("p", "generations", "v1")] == ["p", "generations", "v1"]
        with root.open_dir("p/generations/v1") as handle:
            assert handle.names() == ["one", "source"]
        # The held folder is moved out of ROOT and another made at its name: steps follow the name.
        os.rename(root_path / "p/generations/v1", outside / "planted/v1")
        (root_path / "p/generations/v1").mkdir()
        root.write_atomic("p/generations/v1/three", b"3", fsync=False)
        # A level above it is swapped for a link to outside ROOT: refused as a link, as always.
        os.rename(root_path / "p/generations", root_path / "p/old")
        os.symlink(outside / "planted", root_path / "p/generations")
        with pytest.raises(UnsafePath, match="is a symlink"):
            root.write_atomic("p/generations/v1/four", b"4", fsync=False)
        os.unlink(root_path / "p/generations")
        with pytest.raises(FileNotFoundError):
            root.write_atomic("p/generations/v1/five", b"5", fsync=False)
    monkeypatch.setattr(os, "open", real_open)
    assert open_fds() == before
    assert sorted(os.listdir(outside / "planted/v1")) == ["one", "source"]      # nothing written after the move
    assert os.listdir(root_path / "p/old/v1") == ["three"]
    assert not (outside / "planted/four").exists() and not (outside / "planted/v1/four").exists()


def test_holding_keeps_a_step_s_first_folder_when_its_second_lookup_finds_the_held_one_replaced(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename in the held folder looks up its source's folder, then its destination's: if the
    held folder is replaced between the two, the second lookup opens the new one by name — and the
    source's descriptor still names the folder it was looked up as (as two walks from ROOT would
    give), not a closed number the new open took over. Every descriptor is closed at the end."""
    root: Root = world["root"]
    root_path: Path = world["root_path"]
    outside: Path = world["outside"]
    root.makedirs("p/generations/v1")
    (root_path / "p/generations/v1/a").write_bytes(b"a")
    before = open_fds()
    real_deepest = rootfs._HeldChain.deepest
    lookups: list[int] = []

    def deepest_after_a_swap(self: Any, root_fd: int, depth: int) -> tuple[int, int]:
        lookups.append(depth)
        if len(lookups) == 2:       # the rename's second lookup: v1 is moved out, another made
            os.rename(root_path / "p/generations/v1", outside / "planted/v1")
            (root_path / "p/generations/v1").mkdir()
        return real_deepest(self, root_fd, depth)

    with root.holding("p/generations/v1"):
        assert root.lstat("p/generations/v1/a") is not None       # the chain is open
        monkeypatch.setattr(rootfs._HeldChain, "deepest", deepest_after_a_swap)
        root.rename("p/generations/v1/a", "p/generations/v1/b")
    monkeypatch.setattr(rootfs._HeldChain, "deepest", real_deepest)
    assert len(lookups) == 2
    assert os.listdir(outside / "planted/v1") == []
    assert os.listdir(root_path / "p/generations/v1") == ["b"]
    assert open_fds() == before


def test_rmtree_stops_when_a_directory_is_moved_out_of_root_mid_walk(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root: Root = world["root"]
    root_path: Path = world["root_path"]
    outside: Path = world["outside"]
    root.makedirs("victim/a/b/c")
    (root_path / "victim/a/b/c/file").write_bytes(b"x")
    real_descend = rootfs._Cursor.descend
    moved: list[bool] = []

    def descend_then_move(self: Any, name: str, status: os.stat_result | None = None) -> None:
        real_descend(self, name, status)
        if self.names == ["a", "b", "c"] and not moved:
            # The attacker moves victim/a out of ROOT while the walk is inside it.
            os.rename(root_path / "victim/a", outside / "planted/a")
            moved.append(True)

    monkeypatch.setattr(rootfs._Cursor, "descend", descend_then_move)
    before = open_fds()
    with pytest.raises(UnsafePath, match="was moved during the walk"):
        root.rmtree("victim")
    assert moved
    assert open_fds() == before
    after = snapshot(outside)
    # Only what was moved out of ROOT may have been emptied; the sentinel itself is intact.
    for key, value in world["before"].items():
        if key not in (".", "planted"):
            assert after[key] == value
    assert (outside / "planted/a").is_dir()


# -- FIFOs, devices, huge files ----------------------------------------------------------------


@pytest.fixture
def fifo_root(tmp_path: Path) -> Iterator[tuple[Storage, Path]]:
    os.mkfifo(tmp_path / "pipe")
    with opened(tmp_path) as storage:
        yield storage, tmp_path / "pipe"


@pytest.mark.parametrize(
    ("operation", "refusal"),
    [
        (lambda s: tree.read_regular_file(s, s.path, "pipe", max_bytes=100), GenerationError),
        (lambda s: tree.read_regular_file(s, s.path, "pipe"), GenerationError),
        (lambda s: tree.sha256_file(s, s.path, "pipe"), GenerationError),
        (lambda s: tree.open_regular_file(s, s.path, "pipe"), GenerationError),
        (lambda s: tree.read_prefix(s, s.path, "pipe", 4), GenerationError),
        (lambda s: tree.git_blob_id_file(s, s.path, "pipe"), GenerationError),
    ],
    ids=["read_regular_file", "read_regular_file unbounded", "sha256_file", "open_regular_file", "read_prefix",
         "git_blob_id_file"],
)
def test_a_fifo_is_refused_without_blocking(
    fifo_root: tuple[Storage, Path], operation: Callable[[Storage], Any], refusal: type[Exception]
) -> None:
    storage, fifo = fifo_root
    result = run_with_timeout(lambda: operation(storage), fifo=fifo)
    assert isinstance(result, refusal), result
    assert f"{fifo}: is not a regular file" in str(result)
    assert "\n" not in str(result)
    assert not os.path.exists(fifo.parent / "copy")


def test_a_fifo_swapped_in_after_the_check_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_bytes(b"regular")
    real_lstat_at = rootfs._lstat_at

    def lstat_then_swap(dir_fd: int, name: str) -> os.stat_result | None:
        result = real_lstat_at(dir_fd, name)
        if name == "file" and result is not None and stat.S_ISREG(result.st_mode):
            os.unlink(tmp_path / "file")
            os.mkfifo(tmp_path / "file")
        return result

    monkeypatch.setattr(rootfs, "_lstat_at", lstat_then_swap)
    with opened(tmp_path) as storage:
        result = run_with_timeout(lambda: tree.read_regular_file(storage, tmp_path, "file", max_bytes=100),
                                  fifo=tmp_path / "file")
    assert isinstance(result, GenerationError), result
    assert f"{tmp_path / 'file'}: is not a regular file" in str(result)


def test_a_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    with opened(tmp_path) as storage:
        for operation in (
            lambda: tree.read_regular_file(storage, tmp_path, "zero", max_bytes=10),
            lambda: tree.read_regular_file(storage, tmp_path, "zero"),
            lambda: tree.sha256_file(storage, tmp_path, "zero"),
        ):
            result = run_with_timeout(operation)
            assert isinstance(result, GenerationError), result
            assert f"{tmp_path / 'zero'}: is a symlink" in str(result)


def test_a_device_node_is_refused_without_being_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dev").mkdir()
    try:
        os.mknod(tmp_path / "dev/zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("cannot create device nodes here")
    opened_names: list[Any] = []
    real_open = os.open

    def recording_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened_names.append(path)
        return real_open(path, *args, **kwargs)

    with opened(tmp_path) as storage:
        monkeypatch.setattr(os, "open", recording_open)
        results = [run_with_timeout(lambda: tree.read_regular_file(storage, tmp_path / "dev", "zero", max_bytes=10)),
                   run_with_timeout(lambda: tree.sha256_file(storage, tmp_path / "dev", "zero"))]
    for result in results:
        assert isinstance(result, GenerationError), result
        assert f"{tmp_path / 'dev/zero'}: is not a regular file" in str(result)
    assert opened_names  # the recorder saw the walk down to the parent
    assert "zero" not in opened_names


def test_read_regular_file_refuses_a_large_file_without_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "huge", "wb") as handle:
        handle.truncate(1 << 30)
    (tmp_path / "small").write_bytes(b"12345")
    read_total = [0]
    real_read = os.read

    def counting_read(fd: int, count: int) -> bytes:
        data = real_read(fd, count)
        read_total[0] += len(data)
        return data

    monkeypatch.setattr(os, "read", counting_read)
    with opened(tmp_path) as storage:
        with pytest.raises(GenerationError) as caught:
            tree.read_regular_file(storage, tmp_path, "huge", max_bytes=MiB)
        assert str(caught.value) == f"{tmp_path / 'huge'} is larger than {MiB} bytes; not read"
        assert read_total[0] == 0
        assert tree.read_regular_file(storage, tmp_path, "small", max_bytes=5) == b"12345"
        read_total[0] = 0
        with pytest.raises(GenerationError, match="is larger than 4 bytes"):
            tree.read_regular_file(storage, tmp_path, "small", max_bytes=4)
        assert read_total[0] == 0


def test_read_regular_file_stops_after_max_plus_one_when_the_size_lies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose fstat size is wrong (a growing file, a /proc-like file): reading stops at
    max_bytes + 1 bytes."""
    with open(tmp_path / "huge", "wb") as handle:
        handle.truncate(256 * MiB)
    read_total = [0]
    real_read, real_fstat = os.read, os.fstat

    def counting_read(fd: int, count: int) -> bytes:
        data = real_read(fd, count)
        read_total[0] += len(data)
        return data

    def lying_fstat(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        if stat.S_ISREG(result.st_mode):
            values = list(result)
            values[stat.ST_SIZE] = 0
            return os.stat_result(values)
        return result

    with opened(tmp_path) as storage:
        monkeypatch.setattr(os, "read", counting_read)
        monkeypatch.setattr(os, "fstat", lying_fstat)
        with pytest.raises(GenerationError) as caught:
            tree.read_regular_file(storage, tmp_path, "huge", max_bytes=3 * MiB)
    assert str(tmp_path / "huge") in str(caught.value) and "\n" not in str(caught.value)
    assert read_total[0] == 3 * MiB + 1


def test_sha256_file_streams_a_50_mb_sparse_file(tmp_path: Path) -> None:
    size = 50 * 1000 * 1000
    with open(tmp_path / "sparse", "wb") as handle:
        handle.truncate(size)
        handle.write(b"head")
        handle.seek(size // 2)
        handle.write(b"middle")
        handle.seek(size - 4)
        handle.write(b"tail")
    expected = hashlib.sha256()
    with open(tmp_path / "sparse", "rb") as handle:
        for chunk in iter(lambda: handle.read(MiB), b""):
            expected.update(chunk)
    with opened(tmp_path) as storage:
        tracemalloc.start()
        try:
            digest = tree.sha256_file(storage, tmp_path, "sparse")
            _current, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            hashed = tree.hash_file(storage, tmp_path, "sparse", keep_up_to=MiB)
            _current, hash_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert digest == expected.hexdigest()
    assert hashed == (expected.hexdigest(), size, None)  # too large to keep: not kept
    assert peak < 4 * MiB  # a 1 MiB chunk at a time, not the file
    assert hash_peak < 4 * MiB


# -- deep trees --------------------------------------------------------------------------------


def test_rmtree_removes_a_2000_level_tree_with_few_descriptors(world: dict[str, Any], low_fd_limit: int) -> None:
    root: Root = world["root"]
    root_path: Path = world["root_path"]
    root.makedirs("deep")
    make_deep_tree(root_path / "deep", DEEP, file_every=250)
    # Hostile entries inside the tree are removed as entries, never followed.
    os.symlink(world["outside"], root_path / "deep/d/escape")
    os.mkfifo(root_path / "deep/d/d/pipe")
    before = open_fds()
    root.rmtree("deep")
    assert open_fds() == before
    assert not os.path.lexists(root_path / "deep")
    assert snapshot(world["outside"]) == world["before"]
    root.rmtree("deep", missing_ok=True)
    with pytest.raises(FileNotFoundError):
        root.rmtree("deep")
    with pytest.raises(ValueError):
        root.rmtree(())


def test_walk_files_on_a_2000_level_tree(tmp_path: Path, low_fd_limit: int) -> None:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "a.txt").write_bytes(b"a")
    expected = ["a.txt", *make_deep_tree(tmp_path / "top", DEEP, file_every=100)]
    try:
        walk_a_2000_level_tree(tmp_path, expected)
    finally:  # a failure must not leave a tree pytest's own recursive cleanup cannot remove
        with Root(tmp_path) as cleanup:
            cleanup.rmtree("top", missing_ok=True)
    assert os.listdir(tmp_path) == []



def test_folder_files_reads_a_2000_level_tree_with_few_descriptors(tmp_path: Path, low_fd_limit: int) -> None:
    """A patch's reader (``FolderFiles``) holds a bounded number of descriptors whatever the
    depth: the bottom file, then the shallower ones (path order), then a sibling branch."""
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "a.txt").write_bytes(b"a")
    deep_files = make_deep_tree(tmp_path / "top", DEEP, file_every=500)
    (tmp_path / "top" / "z").mkdir()
    (tmp_path / "top" / "z" / "z.txt").write_bytes(b"z")
    outside = open_fds()
    try:
        with Root(tmp_path) as root, root.folder_files("top") as files:
            before = open_fds()
            for path in sorted(["a.txt", *deep_files, "z/z.txt", deep_files[-1]]):
                fd, _ = files.open_regular(path)
                try:
                    assert open_fds() <= before + rootfs._KEPT_PARENTS + 1, path
                    expected = b"a" if path == "a.txt" else b"z" if path == "z/z.txt" \
                        else f"level {path.count('/')}".encode()
                    assert os.read(fd, 100) == expected
                finally:
                    os.close(fd)
            assert open_fds() <= before + rootfs._KEPT_PARENTS
        assert open_fds() == outside
    finally:
        with Root(tmp_path) as cleanup:
            cleanup.rmtree("top", missing_ok=True)

def walk_a_2000_level_tree(tmp_path: Path, expected: list[str]) -> None:
    with opened(tmp_path) as storage:
        root = storage.root
        before = open_fds()
        found = list(tree.walk_files(storage, tmp_path / "top"))
        assert open_fds() == before
        assert [path for path, _ in found] == expected
        assert all(stat.S_ISREG(st_.st_mode) for _, st_ in found)
        deepest = found[-1][0]
        assert tree.read_regular_file(storage, tmp_path / "top", deepest, max_bytes=100) == f"level {DEEP}".encode()
        assert tree.fingerprint_tree(storage, tmp_path / "top") == {
            path: (st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_ino) for path, st_ in found
        }
        assert open_fds() == before
        with pytest.raises(UnsafePath, match="is too deep"):
            list(root.walk_entries("top", max_depth=DEEP - 1))
        # An abandoned walk closes its descriptors.
        walk = tree.walk_files(storage, tmp_path / "top")
        next(walk)
        next(walk)
        walk.close()
        assert open_fds() == before
        root.rmtree("top")


def test_walk_files_refuses_fifos_and_reports_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z").write_bytes(b"z")
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "c").write_bytes(b"c")
    with opened(tmp_path) as storage:
        assert [p for p, _ in tree.walk_files(storage, tmp_path)] == ["a", "c", "b/z"]
        os.mkfifo(tmp_path / "b" / "pipe")
        result = run_with_timeout(lambda: list(tree.walk_files(storage, tmp_path)), fifo=tmp_path / "b" / "pipe")
        scanned = run_with_timeout(lambda: tree.scan_tree(storage, tmp_path), fifo=tmp_path / "b" / "pipe")
    for refused in (result, scanned):
        assert isinstance(refused, GenerationError), refused
        assert f"{tmp_path}/b/pipe: is not a regular file" in str(refused)


def test_read_directory_lists_every_entry_on_the_descriptor_itself(tmp_path: Path) -> None:
    """More entries than one getdents64 buffer holds, a name that is not UTF-8, a folder and a
    link among them: the same names os.listdir gives (no "." or ".."), with their types."""
    base = os.fsencode(tmp_path)
    names = {f"{index:04d}-{'x' * 60}" for index in range(1500)}
    for name in names:
        (tmp_path / name).write_bytes(b"")
    os.mkdir(base + b"/d\xff")
    os.symlink("/etc", tmp_path / "link")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listed = libc.read_directory(fd)
        assert libc.read_directory(fd) == []            # read from the descriptor's offset: at its end now
    finally:
        os.close(fd)
    assert listed is not None
    assert sorted(name for name, _, _ in listed) == sorted(os.listdir(tmp_path))
    kinds = {name: kind for name, kind, _ in listed}
    if set(kinds.values()) != {libc.DT_UNKNOWN}:        # a filesystem that gives types
        assert kinds["d\udcff"] == libc.DT_DIR and kinds["0000-" + "x" * 60] == libc.DT_REG
        assert kinds["link"] not in (libc.DT_DIR, libc.DT_REG)
    assert {name: inode for name, _, inode in listed}["link"] == os.lstat(tmp_path / "link").st_ino


def test_walks_and_listings_need_no_scandir_and_give_the_same_without_getdents64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where libc has getdents64, nothing lists through os.scandir / os.listdir (each lists a dup
    of the descriptor: six system calls more per folder); where it has not, the walk, the scan
    and the listings fall back to os.scandir and give exactly the same."""
    (tmp_path / "b" / "c").mkdir(parents=True)
    for path in ("a", "b/z", "b/c/y", "b/c/x"):
        (tmp_path / path).write_bytes(path.encode())
    os.symlink("a", tmp_path / "b" / "alink")

    def look(storage: Storage) -> tuple[object, ...]:
        with storage.root.open_dir("b") as handle:
            twice = (handle.entries(), handle.names(), handle.entries(), handle.folder_marks())
        return (sorted(tree.fingerprint_tree(storage, tmp_path / "b" / "c").items()),
                tree.scan_tree(storage, tmp_path / "b" / "c", {}).contents,
                [name for name, _ in twice[0]], twice[1], [name for name, _ in twice[2]], twice[3])

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("listed through a duplicate descriptor")

    with opened(tmp_path) as storage, pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "scandir", refused)
        patch.setattr(os, "listdir", refused)
        with_getdents = look(storage)
    monkeypatch.setattr(libc, "getdents64_function", lambda: None)
    with opened(tmp_path) as storage:
        assert look(storage) == with_getdents
    assert with_getdents[1] == {"x": b"b/c/x", "y": b"b/c/y"}
    assert with_getdents[2] == with_getdents[3] == with_getdents[4] == ["alink", "c", "z"]
    assert with_getdents[5] == [("alink", False), ("c", True), ("z", False)]     # a link is no folder


# -- names that are not UTF-8 ------------------------------------------------------------------


def test_non_utf8_names_round_trip(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    os.mkdir(base + b"/src")
    os.mkdir(base + b"/src/d\xff")
    fd = os.open(base + b"/src/d\xff/caf\xe9.txt", os.O_WRONLY | os.O_CREAT, 0o640)
    os.write(fd, b"latin-1 name")
    os.close(fd)
    os.mkdir(base + b"/dst")
    with opened(tmp_path) as storage:
        root = storage.root
        found = list(tree.walk_files(storage, tmp_path / "src"))
        assert [path for path, _ in found] == ["d\udcff/caf\udce9.txt"]
        rel = found[0][0]
        assert relative_parts(rel) == ("d\udcff", "caf\udce9.txt")
        assert tree.read_regular_file(storage, tmp_path / "src", rel, max_bytes=100) == b"latin-1 name"
        assert tree.sha256_file(storage, tmp_path / "src", rel) == hashlib.sha256(b"latin-1 name").hexdigest()
        assert tree.hash_file(storage, tmp_path / "src", rel, keep_up_to=100) == (
            hashlib.sha256(b"latin-1 name").hexdigest(), 12, b"latin-1 name")
        assert tree.scan_tree(storage, tmp_path / "src", {}).contents == {rel: b"latin-1 name"}
        os.rmdir(base + b"/dst")
        root.copy_tree("src", "dst")
        root.write_atomic(("dst", "d\udcff", "n\udce9w"), b"written")
        root.rename(("dst", "d\udcff", "n\udce9w"), ("dst", "d\udcff", "r\udce9named"))
    assert sorted(os.listdir(base + b"/dst/d\xff")) == [b"caf\xe9.txt", b"r\xe9named"]
    assert Path(os.fsdecode(base + b"/dst/d\xff/caf\xe9.txt")).read_bytes() == b"latin-1 name"


def test_error_messages_stay_printable_one_line(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    os.symlink(b"/etc", base + b"/bad\xfe\nname")
    with opened(tmp_path) as storage:
        with pytest.raises(UnsafePath) as caught:
            list(storage.root.walk_entries())
        with pytest.raises(GenerationError) as wrapped:
            list(tree.walk_files(storage, tmp_path))
        with pytest.raises(GenerationError) as read:
            tree.read_regular_file(storage, tmp_path, os.fsdecode(b"bad\xfe\nname"), max_bytes=10)
    message = str(caught.value)
    assert message.endswith("bad\\xfe\\nname: is a symlink")
    assert "\n" not in message
    message.encode("utf-8")  # no lone surrogates
    assert caught.value.path.endswith("bad\udcfe\nname")
    clone = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(clone, UnsafePath) and str(clone) == message
    for error in (wrapped.value, read.value):
        text = str(error)
        assert text.startswith(message)  # the one line naming the path, then what to do
        assert "\n" not in text
        text.encode("utf-8")
        assert str(pickle.loads(pickle.dumps(error))) == text


# -- write_atomic ------------------------------------------------------------------------------


def test_write_atomic_writes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    with Root(tmp_path) as root:
        root.makedirs("etc")
        root.write_atomic("etc/config.yml", b"a: 1\n", mode=0o640)
        root.write_atomic("etc/config.yml", lambda handle: handle.write(b"a: 2\n"), fsync=False)
        with pytest.raises(ValueError):
            root.write_atomic("etc/config.yml", b"x", mode=0o4755)
    target = tmp_path / "etc/config.yml"
    assert target.read_bytes() == b"a: 2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path / "etc") == ["config.yml"]


def test_write_atomic_writes_every_byte_of_a_stream_longer_than_a_chunk_and_the_owner_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writing callable's pieces, small and past ``CHUNK_SIZE``, all land in order; no file
    object is made for it; ``owner`` is the file's when it appears (as root; else the owner the
    file already has is asked for, and nothing is changed)."""
    pieces = [b"head\n", secrets.token_bytes(3 * MiB + 17), b"", b"x" * (MiB - 5), b"tail\n"]
    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: pytest.fail("a file object was made"))
    owner = (12345, 23456) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    renamed_with: list[tuple[int, int]] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        made = os.stat(src, dir_fd=kwargs["src_dir_fd"], follow_symlinks=False)
        renamed_with.append((made.st_uid, made.st_gid))
        real_replace(src, dst, **kwargs)

    with Root(tmp_path) as root:
        root.write_atomic("streamed", lambda out: [out.write(piece) for piece in pieces], fsync=False)
        monkeypatch.setattr(os, "replace", replace)
        root.write_atomic("owned", b"".join(pieces), fsync=False, owner=owner)
    assert (tmp_path / "streamed").read_bytes() == (tmp_path / "owned").read_bytes() == b"".join(pieces)
    assert renamed_with == [owner]
    assert ((tmp_path / "owned").stat().st_uid, (tmp_path / "owned").stat().st_gid) == owner


def test_write_atomic_never_collides_with_a_real_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yml").write_bytes(b"old")
    (tmp_path / ".config.yml.tmp").write_bytes(b"someone's real file")
    taken = f".config.yml.{os.getpid()}.{'a' * 16}{TEMP_SUFFIX}"
    (tmp_path / taken).write_bytes(b"a real file named like our temp file")
    tokens = iter(["a" * 16, "b" * 16])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(tokens))
    with Root(tmp_path) as root:
        root.write_atomic("config.yml", b"new")
    assert (tmp_path / "config.yml").read_bytes() == b"new"
    assert (tmp_path / ".config.yml.tmp").read_bytes() == b"someone's real file"
    assert (tmp_path / taken).read_bytes() == b"a real file named like our temp file"
    assert sorted(os.listdir(tmp_path)) == sorted([".config.yml.tmp", "config.yml", taken])
    assert is_temp_name(taken) and not is_temp_name(".config.yml.tmp")


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_bytes(b"old")

    def failing_writer(handle: Any) -> None:
        handle.write(b"half")
        raise RuntimeError("writer failed")

    with Root(tmp_path) as root, pytest.raises(RuntimeError):
        root.write_atomic("config.yml", failing_writer)
    assert (tmp_path / "config.yml").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["config.yml"]


def test_write_atomic_refuses_a_symlink_or_directory_target(world: dict[str, Any]) -> None:
    """Decision: an unexpected link at the target is reported, not silently replaced."""
    root: Root = world["root"]
    with pytest.raises(UnsafePath, match="is a symlink"):
        root.write_atomic("dir/link_file", b"x")
    with pytest.raises(UnsafePath, match="is a directory"):
        root.write_atomic("dir/sub", b"x")
    assert os.readlink(world["root_path"] / "dir/link_file") == str(world["outside"] / "secret.txt")
    assert snapshot(world["outside"]) == world["before"]
    assert no_temp_files(world["root_path"] / "dir")


# -- the other methods -------------------------------------------------------------------------


def test_copy_tree_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    os.mkfifo(tmp_path / "src/pipe")
    with opened(tmp_path) as storage:
        result = run_with_timeout(lambda: storage.root.copy_tree("src", "dst"), fifo=tmp_path / "src/pipe")
    assert isinstance(result, UnsafePath) and "src/pipe: is not a regular file" in str(result), result


def test_copy_tree_keeps_mode_and_mtime_but_never_setuid(tmp_path: Path) -> None:
    (tmp_path / "src/sub").mkdir(parents=True)
    source = tmp_path / "src/sub/tool"
    source.write_bytes(b"#!/bin/sh\n" * 100_000)
    os.chmod(source, 0o4755)
    os.utime(source, ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789))
    (tmp_path / "src/empty").mkdir()
    synced: list[int] = []
    real_fsync = os.fsync
    with opened(tmp_path) as storage:
        root = storage.root
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
            root.copy_tree("src", "dst")
        copied = (tmp_path / "dst/sub/tool").stat()
        assert stat.S_IMODE(copied.st_mode) == 0o755
        assert copied.st_mtime_ns == 1_500_000_000_123_456_789
        assert (tmp_path / "dst/sub/tool").read_bytes() == source.read_bytes()
        assert (tmp_path / "dst/empty").is_dir()
        with pytest.raises(FileExistsError):
            root.copy_tree("src", "dst")                       # the destination must be new
    assert len(synced) == 4  # always: the file, then each of the three folders once it is full
    assert sorted(os.listdir(tmp_path / "dst")) == ["empty", "sub"]
    assert os.listdir(tmp_path / "dst/sub") == ["tool"]


@pytest.mark.skipif(os.geteuid() != 0, reason="handing folders to another user needs root")
def test_makedirs_gives_the_folders_it_made_and_only_those_to_the_owner(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with Root(tmp_path) as root:
        made = root.makedirs("old/new/deeper", owner=(12345, 23456))
    assert made == [("old", "new"), ("old", "new", "deeper")]
    assert [(p.stat().st_uid, p.stat().st_gid) for p in (tmp_path / "old/new", tmp_path / "old/new/deeper")] \
        == [(12345, 23456)] * 2
    assert (tmp_path / "old").stat().st_uid == os.geteuid()          # what was there keeps its owner


def test_rename_makedirs_symlink_readlink_unlink(tmp_path: Path) -> None:
    with Root(tmp_path) as root:
        assert root.makedirs("a/b/c") == [("a",), ("a", "b"), ("a", "b", "c")]
        assert root.makedirs("a/b/c") == []  # existing is fine, and not reported as made
        root.write_atomic("a/b/c/f", b"1")
        root.write_atomic("a/g", b"2")
        with pytest.raises(UnsafePath, match="is not a directory"):
            root.makedirs("a/g/h")
        with pytest.raises(FileExistsError):
            root.rename("a/b/c/f", "a/g")
        assert (tmp_path / "a/b/c/f").read_bytes() == b"1"
        root.rename("a/b/c/f", "a/g", overwrite=True)
        assert (tmp_path / "a/g").read_bytes() == b"1"
        root.rename("a/b", "moved")
        assert (tmp_path / "moved/c").is_dir()
        assert root.readlink("current") is None
        root.symlink("current", "a/g")
        root.symlink("current", "moved")
        assert root.readlink("current") == "moved"
        with pytest.raises(UnsafePath, match="not a symlink"):
            root.symlink("a/g", "moved")
        with pytest.raises(UnsafePath, match="is not a symlink"):
            root.readlink("a/g")
        assert root.lstat("nothing/here") is None
        assert root.lstat(()) is not None
        root.unlink("a/g")
        root.unlink("a/g", missing_ok=True)
        with pytest.raises(FileNotFoundError, match="a/g"):
            root.unlink("a/g")
        with root.open_dir("moved") as handle:
            assert [name for name, _ in handle.entries()] == ["c"]
        with root.open_dir(()) as handle:
            assert "current" in [name for name, _ in handle.entries()]
        root.fsync_dir("moved")
    assert os.readlink(tmp_path / "current") == "moved"
    assert [name for name in os.listdir(tmp_path) if is_temp_name(name)] == []


def test_unsafe_path_strings_are_refused_before_any_system_call(tmp_path: Path) -> None:
    with Root(tmp_path) as root:
        for bad in ("/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "a\0b", ""):
            with pytest.raises(UnsafePath):
                root.lstat(bad)
        with pytest.raises(UnsafePath, match="leaves ROOT"):
            root.open_regular(("a", "..", "b"))
        with pytest.raises(UnsafePath):
            root.write_atomic(("a/b",), b"x")
    with opened(tmp_path) as storage, pytest.MonkeyPatch.context() as patch:
        calls: list[Any] = []
        for name in ("open", "stat", "lstat", "scandir", "readlink"):
            real = getattr(os, name)
            patch.setattr(os, name, lambda *args, _real=real, **kwargs: (calls.append(args), _real(*args, **kwargs))[1])
        with pytest.raises(GenerationError, match=r"^a/\.\./b: leaves ROOT"):
            tree.read_regular_file(storage, tmp_path, "a/../b", max_bytes=10)
        for bad in ("/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "a\0b", ""):
            for operation in (
                lambda bad=bad: tree.read_regular_file(storage, tmp_path, bad, max_bytes=10),
                lambda bad=bad: tree.sha256_file(storage, tmp_path, bad),
                lambda bad=bad: tree.open_regular_file(storage, tmp_path, bad),
            ):
                with pytest.raises(GenerationError) as caught:
                    operation()
                assert "\n" not in str(caught.value)
        assert calls == []
    assert os.listdir(tmp_path) == []


def permission_scenario(base: str) -> dict[str, Any]:
    """As a user without root's override: rmtree over a directory without read permission and one
    without search permission must raise an error naming the path, with no descriptor leaked."""
    os.makedirs(os.path.join(base, "top/unreadable/inner"))
    Path(base, "top/unreadable/inner/f").write_bytes(b"")
    os.makedirs(os.path.join(base, "top/nosearch"))
    Path(base, "top/nosearch/f").write_bytes(b"")
    os.chmod(os.path.join(base, "top/unreadable"), 0)
    os.chmod(os.path.join(base, "top/nosearch"), 0o600)
    fds = open_fds()
    outcome: dict[str, Any] = {}
    try:
        with Root(base) as root:
            for name in ("top/unreadable", "top/nosearch", "top"):
                try:
                    root.rmtree(name)
                    outcome[name] = None
                except OSError as error:
                    outcome[name] = [type(error).__name__, str(error)]
        outcome["fds_equal"] = fds == open_fds()
    finally:
        os.chmod(os.path.join(base, "top/unreadable"), 0o700)
        os.chmod(os.path.join(base, "top/nosearch"), 0o700)
    return outcome


def run_as_nobody(function: Callable[[str], dict[str, Any]], base: str) -> dict[str, Any]:
    """``function(base)`` in a forked child that dropped root for uid/gid 65534."""
    os.chown(base, 65534, 65534)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            payload = json.dumps(function(base))
            status = 0
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            payload = json.dumps({"child_error": repr(error)})
        with os.fdopen(write_end, "w") as out:
            out.write(payload)
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as incoming:
        payload = incoming.read()
    os.waitpid(pid, 0)
    outcome: dict[str, Any] = json.loads(payload)
    return outcome


def test_rmtree_reports_permission_errors_for_a_non_root_user() -> None:
    base = tempfile.mkdtemp(prefix="rootfs-perm-")
    try:
        outcome = run_as_nobody(permission_scenario, base) if os.geteuid() == 0 else permission_scenario(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert "child_error" not in outcome, outcome
    assert outcome["fds_equal"]
    for name in ("top/unreadable", "top/nosearch", "top"):
        kind, message = outcome[name]
        assert kind == "PermissionError", outcome
        assert "top/" in message and "\n" not in message


# -- relative_parts ----------------------------------------------------------------------------

BAD_COMPONENTS = {"", ".", ".."}
ALPHABET = st.sampled_from(["a", "b", "é", "/", ".", "\\", "\0", " ", "\udcff", "\ud800", "\n"])


def check_parts(path: str, parts: tuple[str, ...]) -> None:
    assert parts
    for name in parts:
        assert name not in BAD_COMPONENTS
        assert "/" not in name and "\0" not in name
        os.fsencode(name)
    assert "/".join(parts) == path


@given(st.one_of(st.text(), st.text(alphabet=ALPHABET, max_size=20)))
def test_relative_parts_never_returns_an_unsafe_component(path: str) -> None:
    try:
        parts = relative_parts(path)
    except UnsafePath as error:
        assert "\n" not in str(error)
        return
    check_parts(path, parts)


SAFE_COMPONENT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/\0"), min_size=1, max_size=12
).filter(lambda name: name not in BAD_COMPONENTS)


@given(st.lists(SAFE_COMPONENT, min_size=1, max_size=8))
def test_relative_parts_round_trips_valid_paths(names: list[str]) -> None:
    path = "/".join(names)
    assert relative_parts(path) == tuple(names)
    assert relative_parts(os.fsencode(path)) == tuple(names)


@given(
    st.lists(
        st.binary(min_size=1, max_size=12).filter(
            lambda raw: b"/" not in raw and b"\0" not in raw and b"\\" not in raw and raw not in (b".", b"..")
        ),
        min_size=1,
        max_size=6,
    )
)
def test_relative_parts_round_trips_any_byte_name(names: list[bytes]) -> None:
    parts = relative_parts(b"/".join(names))
    assert [os.fsencode(name) for name in parts] == names


def test_relative_parts_reasons() -> None:
    cases = {
        "/abs": "absolute",
        "a/../b": "leaves ROOT",
        "..": "leaves ROOT",
        "a//b": "empty component",
        "a/./b": "'.' component",
        "a\0b": "NUL",
        "": "is empty",
    }
    for path, reason in cases.items():
        with pytest.raises(UnsafePath, match=reason):
            relative_parts(path)
    assert relative_parts("generations/42/src/main.py") == ("generations", "42", "src", "main.py")
    assert relative_parts("app\\models\\user.py") == ("app\\models\\user.py",), "a backslash is part of a name"


def test_a_scan_keeps_only_the_bytes_the_patch_will_read(tmp_path: Path) -> None:
    # Against a diff base: the bytes of added and changed files are kept, an unchanged file's are
    # not (it is read again only if a diff needs it); without a base nothing is kept.
    folder = tmp_path / "tree"
    folder.mkdir()
    contents = {"same.py": b"unchanged\n", "changed.py": b"new text\n", "added.py": b"hello\n"}
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    base = {"same.py": hashlib.sha256(b"unchanged\n").hexdigest(), "changed.py": hashlib.sha256(b"old\n").hexdigest(),
            "gone.py": hashlib.sha256(b"gone\n").hexdigest()}
    with opened(tmp_path) as storage:
        snapshot = tree.scan_tree(storage, folder, base)
        assert snapshot.contents == {"changed.py": b"new text\n", "added.py": b"hello\n"}
        assert snapshot.read("same.py") == b"unchanged\n"
        assert tree.scan_tree(storage, folder).contents == {}
        assert set(tree.scan_tree(storage, folder).checksums()) == set(contents)


def test_a_file_that_grew_since_its_stat_is_hashed_to_its_end(tmp_path: Path) -> None:
    # The first read asks for the stat's size + 1 bytes: a file longer than its stat said (it grew
    # in between) is read on, not cut at the size seen.
    content = b"x" * 5000 + b"tail\n"
    (tmp_path / "grown").write_bytes(content)
    fd = os.open(tmp_path / "grown", os.O_RDONLY)
    said = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 10, 0, 0, 0))    # st_size 10
    checksum, size, kept = tree._hash_descriptor(fd, said, "grown", keep_up_to=1 << 20)
    assert (checksum, size, kept) == (hashlib.sha256(content).hexdigest(), len(content), content)


def test_a_folder_reader_reads_in_any_order_and_keeps_one_descriptor_per_level(tmp_path: Path) -> None:
    """Path order (a patch's) and any other order give each file's bytes; kept bytes are not read
    from disk; while reading, at most one descriptor per level of the path is held, none after."""
    root_path = tmp_path / "root"
    files = {f"a/b{n % 3}/c{n % 2}/f{n}.txt": f"content {n}\n".encode() for n in range(24)} | {"top.txt": b"top\n"}
    for relative, content in files.items():
        (root_path / "src" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root_path / "src" / relative).write_bytes(content)
    before = open_fds()
    with opened(root_path) as storage:
        for order in (sorted(files), sorted(files, reverse=True), [*sorted(files)[::3], *sorted(files)[1::3]]):
            with tree.FolderReader(storage, root_path / "src", {"top.txt": b"kept, not read"}) as read:
                for relative in order:
                    expected = b"kept, not read" if relative == "top.txt" else files[relative]
                    assert read(relative) == expected
                    assert open_fds() <= before + 1 + 1 + 3      # ROOT, the folder, a/bN/cN
    assert open_fds() == before


def test_a_folder_reader_never_follows_a_link_swapped_in_for_a_kept_directory(tmp_path: Path) -> None:
    """``a`` is replaced by a link to a folder outside ROOT between two reads: the kept chain
    still names the directory it opened (now ``a_old``), so the second read gets its file, never
    the outside one; a reader opened afterwards refuses the link."""
    root_path, outside = tmp_path / "root", tmp_path / "outside"
    (root_path / "src" / "a").mkdir(parents=True)
    (root_path / "src" / "a" / "one.txt").write_bytes(b"one")
    (root_path / "src" / "a" / "two.txt").write_bytes(b"two")
    outside.mkdir()
    (outside / "two.txt").write_bytes(b"do not read")
    with opened(root_path) as storage:
        with tree.FolderReader(storage, root_path / "src", {}) as read:
            assert read("a/one.txt") == b"one"
            (root_path / "src" / "a").rename(root_path / "src" / "a_old")
            (root_path / "src" / "a").symlink_to(outside)
            assert read("a/two.txt") == b"two"
        with pytest.raises(GenerationError, match="is a symlink"):
            read_with(storage, root_path / "src", "a/two.txt")


# -- durability and folders made once ------------------------------------------------------------


def _touch_a_batch(root: Root) -> None:
    """What a batch of two generations does to the disk: folders made, files written, a folder
    renamed into place, a link made."""
    for version in (1, 2):
        root.makedirs(f"p/generations/v{version}/artifacts")
        root.write_atomic(f"p/generations/v{version}/manifest.json", b"{}", fsync=False)
        root.write_atomic(f"p/generations/v{version}/changes.patch", b"", fsync=False)
    root.makedirs("legacy")
    root.rename("legacy", "p/generations/v2/source")
    root.symlink("g2", "p/generations/v2/source")


def test_make_durable_fsyncs_each_touched_directory_and_written_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libc, "syncfs_function", lambda: None)      # a libc without syncfs
    with Root(tmp_path) as root:
        _touch_a_batch(root)
        done = root.make_durable()
        assert done.synced_filesystems == 0
        assert len(done.fsynced) == len(set(done.fsynced))               # each once
        generations = ("p", "generations")
        assert set(done.fsynced) == {
            (), ("p",), generations,
            *((*generations, f"v{v}") for v in (1, 2)),
            *((*generations, f"v{v}", name) for v in (1, 2) for name in ("manifest.json", "changes.patch")),
        }
        assert root.unsynced() == frozenset()
        assert root.make_durable() == rootfs.Durable()                   # nothing new: nothing done
        root.write_atomic("p/generations/v1/manifest.json", b"[]", fsync=False)
        assert root.make_durable().fsynced == (("p", "generations", "v1", "manifest.json"),
                                               ("p", "generations", "v1"))


def test_make_durable_is_one_syncfs_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = libc.syncfs_function()
    if real is None:
        pytest.skip("this libc has no syncfs")

    def counting(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(libc, "syncfs_function", lambda: counting)
    with Root(tmp_path) as root:
        _touch_a_batch(root)
        assert root.make_durable() == rootfs.Durable(synced_filesystems=1)
        assert calls == [root.fd]
        assert root.make_durable() == rootfs.Durable()
        assert calls == [root.fd]


def test_a_failed_sync_keeps_what_was_to_be_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with Root(tmp_path) as root:
        root.write_atomic("f", b"x", fsync=False)
        monkeypatch.setattr(libc, "syncfs", failing)
        with pytest.raises(OSError, match="Input/output"):
            root.make_durable()
        assert root.unsynced() == frozenset({(), ("f",)})
        monkeypatch.undo()
        root.make_durable()
        assert root.unsynced() == frozenset()


def test_makedirs_makes_no_folder_twice_and_remakes_a_removed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[str, bool]] = []
    real_mkdir = os.mkdir

    def mkdir(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        try:
            real_mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            made.append((name, False))
            raise
        made.append((name, True))

    with Root(tmp_path) as root:
        root.makedirs("p/generations/v1/artifacts")
        monkeypatch.setattr(os, "mkdir", mkdir)
        for version in (2, 3):
            assert root.makedirs(f"p/generations/v{version}/artifacts") == [
                ("p", "generations", f"v{version}"), ("p", "generations", f"v{version}", "artifacts")]
        assert made == [("v2", True), ("artifacts", True), ("v3", True), ("artifacts", True)]   # no EEXIST
        shutil.rmtree(tmp_path / "p")                   # the application removed the project meanwhile
        made.clear()
        assert root.makedirs("p/generations/v4") == [("p",), ("p", "generations"), ("p", "generations", "v4")]
        assert made == [("p", True), ("generations", True), ("v4", True)]
    assert (tmp_path / "p/generations/v4").is_dir()


def test_write_atomic_gives_the_mode_without_fchmod_unless_the_umask_takes_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fchmod
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: (calls.append(mode), real(fd, mode)))
    with Root(tmp_path) as root:
        monkeypatch.setattr(libc, "umask", lambda: 0o022)
        previous = os.umask(0o022)
        try:
            root.write_atomic("plain", b"x", mode=0o644, fsync=False)
            monkeypatch.setattr(libc, "umask", lambda: 0o077)
            os.umask(0o077)
            root.write_atomic("private-umask", b"x", mode=0o644, fsync=False)
        finally:
            os.umask(previous)
    assert calls == [0o644]
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private-umask").stat().st_mode) == 0o644
