"""Folders under ROOT that no generation row owns: reported by ``resync``, never deleted. The
tool's own flat link ``<ROOT>/<id>`` of a generation whose row is gone and whose target is
missing (the application deleted it while the tool moved or renumbered it) resolves nowhere and
is removed (``remove_dangling_links``); the folder left beside it is reported as an orphan.

The scan reads directory entries only (no symlink is followed, the tool's legacy links are its
own and skipped), and names are looked up in the database in batches, so memory does not grow
with the number of generations. A name that is not valid UTF-8 cannot be a row's id.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import Engine

from storage_migrator.db.reads import existing_generation_ids
from storage_migrator.db.tables import ROWS_PER_STATEMENT
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.layout import (
    ARCHIVE_DIR,
    GENERATIONS_DIR,
    is_utf8_name,
    parse_legacy_link_text,
    parse_target_dir_name,
)
from storage_migrator.storage.steps import remove_symlink

ORPHAN_LOOKUP_BATCH = ROWS_PER_STATEMENT    # folder names looked up in one statement




def _entries(storage: Storage, folder: Path) -> list[tuple[str, os.stat_result]]:
    try:
        return storage.entries(folder)
    except OSError:
        return []


def _candidates(storage: Storage) -> Iterator[tuple[str, Path]]:
    """(generation id the folder would belong to, folder) for every generation-like folder;
    one listing per folder, its entries' types from that listing (nothing is followed)."""
    for name, status in _entries(storage, storage.path):
        if name.startswith(".") or not stat.S_ISDIR(status.st_mode):
            continue
        entry = storage.path / name
        children = {child: child_status for child, child_status in _entries(storage, entry)}
        generations = children.get(GENERATIONS_DIR)
        if generations is not None and stat.S_ISDIR(generations.st_mode):
            for child, child_status in _entries(storage, entry / GENERATIONS_DIR):
                parsed = parse_target_dir_name(child)
                if parsed is not None and stat.S_ISDIR(child_status.st_mode):
                    yield parsed[1], entry / GENERATIONS_DIR / child
        elif not (ARCHIVE_DIR in children and stat.S_ISDIR(children[ARCHIVE_DIR].st_mode)):
            yield name, entry


def find_orphans(storage: Storage, engine: Engine) -> list[str]:
    orphans: list[str] = []
    batch: list[tuple[str, Path]] = []

    def look_up() -> None:
        known = existing_generation_ids(engine, [generation_id for generation_id, _ in batch])
        orphans.extend(str(folder) for generation_id, folder in batch if generation_id not in known)
        batch.clear()

    for generation_id, folder in _candidates(storage):
        if not is_utf8_name(generation_id):
            orphans.append(os.fsencode(folder).decode("utf-8", "backslashreplace"))
            continue
        batch.append((generation_id, folder))
        if len(batch) >= ORPHAN_LOOKUP_BATCH:
            look_up()
    if batch:
        look_up()
    return orphans


def remove_dangling_links(storage: Storage, engine: Engine) -> list[str]:
    """Remove every link ``<ROOT>/<id>`` in the tool's form for generation ``<id>`` whose row is
    gone and whose target (``<project>/generations/v<N>__<id>/source``) is not there; the
    removed links' paths. Only links: nothing they pointed to, no folder, is touched. Call it
    only while holding ROOT (a complete run)."""
    links: list[str] = []
    for name, status in _entries(storage, storage.path):
        if stat.S_ISLNK(status.st_mode) and is_utf8_name(name):
            place = parse_legacy_link_text(storage.link_text(storage.path / name) or "")
            if place is not None and place[2] == name:
                links.append(name)
    removed: list[str] = []
    for start in range(0, len(links), ORPHAN_LOOKUP_BATCH):
        batch = links[start:start + ORPHAN_LOOKUP_BATCH]
        known = existing_generation_ids(engine, batch)
        for name in batch:
            if name in known:
                continue                # its row is there: the link is not read again
            link = storage.path / name
            text = storage.link_text(link)
            if text is None or _target_present(storage, text):
                continue
            remove_symlink(storage, link)
            removed.append(str(link))
    return removed


def _target_present(storage: Storage, link_text: str) -> bool:
    """Anything at the link's target (reached through real folders only; an unreadable path counts)."""
    try:
        return storage.occupied(storage.path / link_text)
    except OSError:
        return True
