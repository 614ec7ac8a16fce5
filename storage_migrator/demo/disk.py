"""Writes a generation's legacy folder ``<ROOT>/<id>/`` as the application left it (all files,
or a partial prefix for failed and processing ones), every mtime set from created_at."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from storage_migrator.demo.blueprint import GenerationKind
from storage_migrator.demo.projects import GeneratedGeneration


@dataclass(frozen=True)
class WrittenFolder:
    file_count: int
    total_bytes: int


def write_folder(storage_root: Path, generation: GeneratedGeneration) -> WrittenFolder:
    """Write ``<ROOT>/<id>/`` as the application left it, every mtime set from created_at."""
    if not generation.kind.has_folder or generation.tree is None:
        return WrittenFolder(0, 0)
    files = _files_on_disk(generation)
    folder = storage_root / generation.generation_id
    mtime_ns = int(generation.created_at.timestamp()) * 1_000_000_000
    directories = sorted({"/".join(parts[:depth]) for parts in (path.split("/") for path, _ in files)
                          for depth in range(len(parts))}, key=lambda path: (path.count("/"), path))
    for directory in directories:
        (folder / directory).mkdir()
    for relative, content in files:
        target = folder / relative
        target.write_bytes(content)
        os.utime(target, ns=(mtime_ns, mtime_ns))
    for directory in reversed(directories):
        os.utime(folder / directory, ns=(mtime_ns, mtime_ns))
    return WrittenFolder(len(files), sum(len(content) for _, content in files))


def _files_on_disk(generation: GeneratedGeneration) -> list[tuple[str, bytes]]:
    """All files for completed generations; a sorted prefix for partial ones (the writer stopped
    there), with the last file of a failed one cut in half."""
    assert generation.tree is not None
    files = sorted(generation.tree.items())
    if generation.kind is GenerationKind.COMPLETED:
        return files
    share = 0.4 if generation.kind is GenerationKind.FAILED_PARTIAL_FOLDER else 0.7
    kept = files[:max(1, int(len(files) * share))]
    if generation.kind is GenerationKind.FAILED_PARTIAL_FOLDER:
        last_path, last_content = kept[-1]
        kept[-1] = (last_path, last_content[: len(last_content) // 2])
    return kept
