"""Opening an installation: ROOT on disk plus the database, with the preconditions every
command shares checked once, here. Opening creates nothing — not a SQLite file (only
``demo-data`` does), not the tool's state folder (the run lock does)."""
from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.engine import Engine

from storage_migrator.config import Settings
from storage_migrator.db.connect import create_database_engine
from storage_migrator.db.tables import check_schema
from storage_migrator.storage.handle import Storage, open_storage
from storage_migrator.storage.layout import StorageLayout


@dataclass
class Installation:
    """The opened ROOT and an engine; a context manager that closes both on exit."""

    storage: Storage
    engine: Engine
    legacy_links: bool = True

    @property
    def layout(self) -> StorageLayout:
        return self.storage.layout

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.engine.dispose()
        self.storage.close()


def open_installation(settings: Settings, command: str) -> Installation:
    """Open ROOT (``open_storage`` checks it and the tool's state folder) and the database, and
    check that it answers with the versioning columns. Raises ``UsageError`` (exit 2) naming
    the fix otherwise."""
    storage = open_storage(StorageLayout(settings.storage_root, settings.path_prefix))
    try:
        engine = create_database_engine(settings.database_url, command=f"storage-migrate {command}")
    except BaseException:
        storage.close()
        raise
    try:
        check_schema(engine)
    except BaseException:
        engine.dispose()
        storage.close()
        raise
    return Installation(storage, engine, settings.legacy_links)
