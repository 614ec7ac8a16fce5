"""The schema migration driven through Alembic's command API: ``storage-migrate db …``, the demo
and the tests build databases through the very migrations an operator runs.

The scripts ship inside the wheel as ``storage_migrator/migrations`` (mapped from the
repository's top-level ``alembic/``); in a checkout they are read from ``alembic/`` directly.
No ``alembic.ini`` is needed: the configuration is built here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from storage_migrator.config import normalize_database_url
from storage_migrator.errors import UsageError

if TYPE_CHECKING:
    from alembic.config import Config

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # not below ROOT: the package itself, storage_migrator/


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, else the checkout."""
    for candidate in (PACKAGE_DIR / "migrations", PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():  # not below ROOT: the package itself
            return candidate
    raise UsageError("the migration scripts are missing from this installation; reinstall storage-migrator")


def alembic_config(database_url: str, output: TextIO | None = None) -> Config:
    """An Alembic config pointing at the shipped scripts and at ``database_url``."""
    from alembic.config import Config

    config = Config(stdout=output) if output is not None else Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = normalize_database_url(database_url)
    return config


def upgrade_schema(database_url: str, revision: str = "head", sql: bool = False) -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision, sql=sql)


def downgrade_schema(database_url: str, revision: str, sql: bool = False) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision, sql=sql)



def known_revisions() -> frozenset[str]:
    """Every revision id of this tool's migration scripts. A database at any other revision
    was migrated further by the application (``7e78789cc89a`` and the ones before it): Alembic
    cannot move it from there with these scripts."""
    from alembic.script import ScriptDirectory

    return frozenset(script.revision for script in ScriptDirectory(str(script_location())).walk_revisions())
