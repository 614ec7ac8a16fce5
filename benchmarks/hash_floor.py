"""The least a Python program must do per file for what `run` records of it: list the folder,
open the file relative to its folder's descriptor without following a link, read it whole, hash it with SHA-256 (the manifest's
checksum) and SHA-1 over git's blob header (the patch's blob id), close it. No database, no
manifest, no patch, no rename.

bench_run.py times it beside the sha256sum and cat floors: the gap between this and sha256sum is
what the interpreter costs per file before the tool does anything of its own, and the gap between
`run` and this is what the tool adds. Folders directly below ROOT are spread over ``--workers``
processes, as `run` spreads its projects.

With ``--versions DATABASE`` (the legacy SQLite file), the least `run` must compute: the folders
are grouped by project in the order `run` numbers them (created_at, then id), each project goes
to one worker, and every file whose sha256 differs from the version before is also diffed by
libgit2 against its old bytes, as `run`'s patches are made (both blobs' ids given, so libgit2
hashes nothing: ``storage_migrator.patch.writer.memory_blobs``). A file added or deleted whole is
not diffed (run writes it as it is), and no patch is written: the bytes only.

    python benchmarks/hash_floor.py ROOT [--workers N] [--versions DATABASE]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY_FLAGS = READ_FLAGS | os.O_DIRECTORY


Counts = tuple[int, int, int]
"""Files read, their bytes, and the bytes of the diffs made."""


def hash_tree(top: str) -> Counts:
    """The files below ``top``, each read once and hashed twice."""
    tree = read_tree(top)
    return len(tree), sum(len(content) for _, _, content in tree.values()), 0


FileRead = tuple[str, str, bytes]
"""sha256 hex, git blob id, bytes."""


def read_tree(top: str) -> dict[str, FileRead]:
    """Every regular file below ``top`` by its path relative to ``top``, read once and hashed twice."""
    tree: dict[str, FileRead] = {}
    pending = [(top, "")]
    while pending:
        folder, prefix = pending.pop()
        folder_fd = os.open(folder, DIRECTORY_FLAGS)
        try:
            with os.scandir(folder_fd) as listing:
                entries = list(listing)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((os.path.join(folder, entry.name), prefix + entry.name + "/"))
                elif entry.is_file(follow_symlinks=False):
                    tree[prefix + entry.name] = _hash_file(folder_fd, entry.name)
        finally:
            os.close(folder_fd)
    return tree


def diff_versions(folders: list[str]) -> Counts:
    """One project's versions, in order, each read and hashed; each changed file diffed as `run` does."""
    # Loaded here, in the worker, as run loads pygit2 at its first patch: the plain floor never pays for it.
    from pygit2 import Patch

    from storage_migrator.patch.writer import CONTEXT_LINES, libgit2_flags, memory_blobs

    blobs, flags = memory_blobs(), libgit2_flags()
    files = total = patch_bytes = 0
    before: dict[str, FileRead] = {}
    for folder in folders:
        tree = read_tree(folder)
        for path, (checksum, blob_id, content) in tree.items():
            old = before.get(path)
            if old is not None and old[0] != checksum:
                with blobs.holding((old[1], old[2]), (blob_id, content)) as (old_blob, new_blob):
                    patch_bytes += len(Patch.create_from(old_blob, new_blob, old_as_path="file", new_as_path="file",
                                                         flag=flags, context_lines=CONTEXT_LINES).data)
            total += len(content)
        files += len(tree)
        before = tree
    return files, total, patch_bytes


def projects_in_version_order(root: str, database: str) -> list[list[str]]:
    """The legacy folders below ``root`` grouped by project, each group in `run`'s version order."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT project_id, id FROM generations ORDER BY project_id, created_at, id").fetchall()
    finally:
        connection.close()
    projects: dict[str, list[str]] = {}
    for project_id, generation_id in rows:
        folder = os.path.join(root, generation_id)
        if os.path.isdir(folder):
            projects.setdefault(project_id, []).append(folder)
    return list(projects.values())


def _hash_file(folder_fd: int, name: str) -> FileRead:
    descriptor = os.open(name, READ_FLAGS, dir_fd=folder_fd)
    try:
        size = os.fstat(descriptor).st_size
        content = os.read(descriptor, size + 1) if size else b""
        while len(content) <= size and (more := os.read(descriptor, 1 << 20)):
            content += more
    finally:
        os.close(descriptor)
    checksum = hashlib.sha256(content).hexdigest()
    blob = hashlib.sha1(b"blob %d\0" % len(content))
    blob.update(content)
    return checksum, blob.hexdigest(), content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--versions", metavar="DATABASE", help="the legacy SQLite file: diff each version "
                        "against the one before, as run does")
    arguments = parser.parse_args()
    work: Callable[[Any], Counts]
    if arguments.versions:
        work, items = diff_versions, projects_in_version_order(arguments.root, arguments.versions)
    else:
        work, items = hash_tree, sorted(entry.path for entry in os.scandir(arguments.root)
                                        if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode))
    if arguments.workers <= 1:
        counts = [work(item) for item in items]
    else:
        with ProcessPoolExecutor(arguments.workers) as pool:
            counts = list(pool.map(work, items))
    files, total, diffs = (sum(count[index] for count in counts) for index in range(3))
    print(f"{files} files, {total} bytes, {diffs} bytes of diffs", file=sys.stderr)


if __name__ == "__main__":
    main()
