"""Opening an installation: ROOT on disk plus the database, with the preconditions every
command shares checked once, here. Read-only commands open it with ``read_only=True`` and
then create nothing — not a SQLite file, not the tool's state folder."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.engine import Engine

from .config import Settings
from .db import check_schema, create_database_engine
from .errors import UsageError
from .storage.layout import StorageLayout
from .storage.tree import confine_to


@dataclass
class Installation:
    """ROOT's layout and an engine; a context manager that disposes the engine on exit."""

    layout: StorageLayout
    engine: Engine
    legacy_links: bool = True

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.engine.dispose()


def open_installation(settings: Settings, command: str, *, read_only: bool = False) -> Installation:
    """Check that ROOT is a folder, that the tool's state folder (if any) is a real folder on
    ROOT's filesystem, and that the database answers with the versioning columns. Raises
    ``UsageError`` (exit 2) naming the fix otherwise."""
    layout = StorageLayout(settings.storage_root, settings.path_prefix)
    check_storage_root(layout)
    confine_to(layout.root)
    engine = create_database_engine(settings.database_url, command=f"storage-migrate {command}", create=not read_only)
    try:
        check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Installation(layout, engine, settings.legacy_links)


def check_storage_root(layout: StorageLayout) -> None:
    """ROOT must be a folder; ``.storage-migrate`` must not be a symlink or sit on another
    filesystem (the trash relies on one rename from ROOT into it)."""
    root = layout.root
    try:
        root_status = os.stat(root)
    except OSError:
        root_status = None
    if root_status is None or not stat.S_ISDIR(root_status.st_mode):
        raise UsageError(f"storage root {root} is not a folder; pass --storage-root or set STORAGE_ROOT")
    try:
        state_status = os.lstat(layout.state_dir)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(state_status.st_mode):
        raise UsageError(f"{layout.state_dir} is not a real folder (a symlink is never followed); "
                         "remove it and rerun — the tool recreates it")
    if state_status.st_dev != root_status.st_dev:
        raise UsageError(f"{layout.state_dir} is on another filesystem than {root}; "
                         "unmount whatever is there and rerun")
