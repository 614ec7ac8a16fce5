"""Folders under ROOT that no generation row owns: reported by ``resync``, never deleted.

The scan reads directory entries only (no symlink is followed, the tool's legacy links are its
own and skipped), and names are looked up in the database in batches, so memory does not grow
with the number of generations. A name that is not valid UTF-8 cannot be a row's id.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

from sqlalchemy.engine import Engine

from .db import ROWS_PER_STATEMENT, existing_generation_ids
from .storage.layout import ARCHIVE_DIR, GENERATIONS_DIR, StorageLayout, is_utf8_name, parse_target_dir_name
from .storage.tree import is_real_dir

ORPHAN_LOOKUP_BATCH = ROWS_PER_STATEMENT    # folder names looked up in one statement




def _sorted_names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _candidates(layout: StorageLayout) -> Iterator[tuple[str, str]]:
    """(generation id the folder would belong to, folder) for every generation-like folder."""
    root = os.fspath(layout.root)
    for name in _sorted_names(root):
        entry = os.path.join(root, name)
        if name.startswith(".") or not is_real_dir(entry):
            continue
        generations_dir = os.path.join(entry, GENERATIONS_DIR)
        if is_real_dir(generations_dir):
            for child in (*_sorted_names(generations_dir),):
                parsed = parse_target_dir_name(child)
                if parsed is not None and is_real_dir(os.path.join(generations_dir, child)):
                    yield parsed[1], os.path.join(generations_dir, child)
        elif not is_real_dir(os.path.join(entry, ARCHIVE_DIR)):
            yield name, entry




def find_orphans(layout: StorageLayout, engine: Engine) -> list[str]:
    orphans: list[str] = []
    batch: list[tuple[str, str]] = []

    def look_up() -> None:
        known = existing_generation_ids(engine, [generation_id for generation_id, _ in batch])
        orphans.extend(folder for generation_id, folder in batch if generation_id not in known)
        batch.clear()

    for generation_id, folder in _candidates(layout):
        if not is_utf8_name(generation_id):
            orphans.append(os.fsencode(folder).decode("utf-8", "backslashreplace"))
            continue
        batch.append((generation_id, folder))
        if len(batch) >= ORPHAN_LOOKUP_BATCH:
            look_up()
    if batch:
        look_up()
    return orphans
