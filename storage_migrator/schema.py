"""Alembic driven from Python: the demo and the tests build databases through the very
migrations an operator runs (``alembic upgrade``), never through a schema of their own."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at this repository's scripts and at ``database_url``."""
    if not ALEMBIC_INI.is_file():
        raise FileNotFoundError(
            f"{ALEMBIC_INI} not found: install storage-migrator from its checkout (pip install -e .)"
        )
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    return config


def upgrade_schema(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade_schema(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
