"""Where the database and the storage live: defaults, environment variables and URL spelling.

One place for these facts so that the CLI, Alembic's env.py and the tests agree on them. The
application's own settings (``DATABASE_URL`` in any of its spellings, ``FILE_STORAGE_PATH``) are
accepted as they are, so an operator can source the application's ``.env``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath

DEFAULT_DATABASE_URL = "sqlite:///storage/codebegen.db"
DEFAULT_STORAGE_ROOT = "./storage/projects"
HEAD_REVISION = "39e7f45c72f1"
BASE_REVISION = "e011ab9dd223"
DB_UPGRADE_COMMAND = "storage-migrate db upgrade"

# Every driver name of a PostgreSQL URL the application uses; this tool talks psycopg 3 for all.
_POSTGRES_DRIVERNAMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2"})


def normalize_database_url(url: str) -> str:
    """Spell a URL the way SQLAlchemy 2 needs it here: every PostgreSQL spelling means psycopg 3.

    SQLAlchemy would otherwise pick psycopg2 or asyncpg, which this project does not install.
    Any other URL, and one that does not parse (opening it names the problem), is returned as given.
    """
    import sqlalchemy as sa  # here, not at the top: --help and --version do not load SQLAlchemy

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return url
    if parsed.drivername not in _POSTGRES_DRIVERNAMES:
        return url
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def database_url_from_env() -> str:
    """The URL Alembic and the tool use when none is given on the command line."""
    return normalize_database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


def normalize_path_prefix(prefix: str) -> str:
    """Spell a path prefix the way the application spells ``str(Path(FILE_STORAGE_PATH))``:
    no leading ``./``, no trailing or doubled ``/`` (``./storage/projects/`` → ``storage/projects``)."""
    return str(PurePath(prefix))


def default_path_prefix() -> str:
    """How the application spells ROOT in new rows: ``FILE_STORAGE_PATH``, normalised."""
    return normalize_path_prefix(os.environ.get("FILE_STORAGE_PATH") or DEFAULT_STORAGE_ROOT)


def ensure_sqlite_parent(database_file: Path) -> None:
    """Create the folder of a SQLite database file, so a fresh checkout can start from nothing."""
    database_file.parent.mkdir(parents=True, exist_ok=True)  # not below ROOT: the SQLite file


@dataclass(frozen=True)
class Settings:
    """What every command needs; built once by the CLI from options and environment.

    ``path_prefix`` is stored the way the application spells it, however it was given
    (``--path-prefix ./storage/projects`` writes ``storage/projects/…``), so every command and
    every library caller writes the same spelling."""

    database_url: str
    storage_root: Path
    path_prefix: str = "storage/projects"
    legacy_links: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_prefix", normalize_path_prefix(self.path_prefix))
