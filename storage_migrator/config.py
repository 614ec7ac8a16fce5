"""Where the database and the storage live: defaults, environment variables and URL spelling.

One place for these facts so that the CLI, Alembic's env.py and the tests agree on them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///storage/codebegen.db"
DEFAULT_STORAGE_ROOT = "./storage/projects"
DEFAULT_PATH_PREFIX = "./storage/projects"
HEAD_REVISION = "39e7f45c72f1"
BASE_REVISION = "e011ab9dd223"


def normalize_database_url(url: str) -> str:
    """Spell a URL the way SQLAlchemy 2 needs it: plain ``postgresql://`` means psycopg 3.

    SQLAlchemy would otherwise pick psycopg2, which this project does not install.
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def database_url_from_env() -> str:
    """The URL Alembic and the tool use when none is given on the command line."""
    return normalize_database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


def ensure_sqlite_parent(url: str) -> None:
    """Create the folder of a file-based SQLite URL, so a fresh checkout can start from nothing."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        Path(url[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Settings:
    """The three facts every command needs; built once by the CLI from options and environment."""

    database_url: str
    storage_root: Path
    path_prefix: str = DEFAULT_PATH_PREFIX
