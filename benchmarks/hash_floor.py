"""The least a Python program must do per file for what `run` records of it: list the folder,
open the file relative to its folder's descriptor without following a link, read it whole, hash it with SHA-256 (the manifest's
checksum) and SHA-1 over git's blob header (the patch's blob id), close it. No database, no
manifest, no patch, no rename.

bench_run.py times it beside the sha256sum and cat floors: the gap between this and sha256sum is
what the interpreter costs per file before the tool does anything of its own, and the gap between
`run` and this is what the tool adds. Projects (the folders directly below ROOT) are spread over
``--workers`` processes, as `run` spreads them.

    python benchmarks/hash_floor.py ROOT [--workers N]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import stat
import sys
from concurrent.futures import ProcessPoolExecutor

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY_FLAGS = READ_FLAGS | os.O_DIRECTORY


def hash_tree(top: str) -> tuple[int, int]:
    """(files, bytes) below ``top``, each file read once and hashed twice."""
    files = total = 0
    pending = [top]
    while pending:
        folder = pending.pop()
        folder_fd = os.open(folder, DIRECTORY_FLAGS)
        try:
            with os.scandir(folder_fd) as listing:
                entries = list(listing)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(os.path.join(folder, entry.name))
                elif entry.is_file(follow_symlinks=False):
                    total += _hash_file(folder_fd, entry.name)
                    files += 1
        finally:
            os.close(folder_fd)
    return files, total


def _hash_file(folder_fd: int, name: str) -> int:
    descriptor = os.open(name, READ_FLAGS, dir_fd=folder_fd)
    try:
        size = os.fstat(descriptor).st_size
        content = os.read(descriptor, size + 1) if size else b""
        while len(content) <= size and (more := os.read(descriptor, 1 << 20)):
            content += more
    finally:
        os.close(descriptor)
    hashlib.sha256(content).digest()
    blob = hashlib.sha1(b"blob %d\0" % len(content))
    blob.update(content)
    blob.digest()
    return len(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    arguments = parser.parse_args()
    projects = sorted(entry.path for entry in os.scandir(arguments.root)
                      if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode))
    if arguments.workers <= 1:
        counts = [hash_tree(project) for project in projects]
    else:
        with ProcessPoolExecutor(arguments.workers) as pool:
            counts = list(pool.map(hash_tree, projects))
    files, total = sum(count[0] for count in counts), sum(count[1] for count in counts)
    print(f"{files} files, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
