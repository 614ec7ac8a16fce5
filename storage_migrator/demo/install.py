"""``storage-migrate demo-data``: a fresh database at the base revision plus sample folders,
built with the project's own sample-data generator, for the README's quick start."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION, Settings
from storage_migrator.db.connect import create_database_engine, display_url, first_line
from storage_migrator.db.revisions import downgrade_schema, upgrade_schema
from storage_migrator.db.tables import current_revision
from storage_migrator.demo.generate import SampleInstallation, generate_installation
from storage_migrator.demo.sizes import SampleSize
from storage_migrator.errors import UsageError
from storage_migrator.storage.handle import open_storage
from storage_migrator.storage.layout import StorageLayout
from storage_migrator.storage.steps import remove_tree


def create_demo_installation(settings: Settings, projects: int, generations: int, files: int, seed: int) -> SampleInstallation:
    """Refuses any database that already has a schema and any non-empty ROOT: demo data never
    mixes with a real installation."""
    root = settings.storage_root
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise UsageError(f"storage root {root} is not a folder; point --storage-root / STORAGE_ROOT at a folder "
                         "(it is created if missing)")
    engine = create_database_engine(settings.database_url, command="storage-migrate demo-data", create=True)
    try:
        try:
            with engine.connect() as connection:
                revision = current_revision(connection)
        except sa.exc.DBAPIError as error:
            raise UsageError(f"cannot connect to the database {display_url(settings.database_url)}: "
                             f"{first_line(error)}") from None
        if revision is not None:
            raise UsageError(f"the database {display_url(settings.database_url)} already has a schema (revision "
                             f"{revision}); demo-data needs an empty one — remove it or point --database-url elsewhere")
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"{root} is not empty; demo-data needs an empty storage root")
        size = SampleSize(projects=projects, generations_per_project=generations, files_per_generation=files)
        upgrade_schema(settings.database_url, BASE_REVISION)
        try:
            return generate_installation(engine, root, size, seed=seed)
        except BaseException:
            _undo(settings, root)
            raise
    finally:
        engine.dispose()


def _undo(settings: Settings, root: Path) -> None:
    """A failed demo-data leaves what it found (an empty database and an empty ROOT), so a
    retry works; both were checked empty before anything was written."""
    downgrade_schema(settings.database_url, "base")
    if root.is_dir():
        with open_storage(StorageLayout(root, "")) as storage:
            for name in storage.names(root):
                if storage.is_folder(root / name):
                    remove_tree(storage, root / name)
                else:
                    storage.remove_entry(root / name)
