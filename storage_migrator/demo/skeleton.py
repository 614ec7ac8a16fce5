"""Renders the skeleton every code base starts from (entry point, config, README, Alembic) with
the odd files: binary, CRLF, latin-1, empty, no final newline, unicode and a space in the name."""
from __future__ import annotations

import random

from storage_migrator.demo.paths import (
    BINARY_PATHS,
    CRLF_PATH,
    EMPTY_PATH,
    LARGE_FILE_PATH,
    LATIN1_PATH,
    NO_FINAL_NEWLINE_PATH,
    ODDITY_PATHS,
    SPACE_NAME_PATH,
    UNICODE_NAME_PATH,
    encoding_of,
)
from storage_migrator.demo.renderers import plural
from storage_migrator.demo.vocabulary import LATIN1_WORDS, PACKAGES, UNICODE_WORDS, WORDS, phrase


def render_binary(path: str, rng: random.Random) -> bytes:
    """PNG/ICO-looking bytes: a real signature and header (full of NUL bytes), then noise."""
    body = rng.randbytes(rng.randint(200, 1500))
    if path.endswith(".png"):
        side = rng.choice((32, 48, 64, 128))
        return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + side.to_bytes(4, "big") * 2 + b"\x08\x06\x00\x00\x00" + body
    return b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + body


def _render_large_reference(entities: list[str], rng: random.Random) -> str:
    sections = []
    for number in range(rng.randint(130, 400)):
        entity = rng.choice(entities)
        sections.append(
            f"## {rng.choice(('GET', 'POST', 'PUT', 'DELETE'))} /{plural(entity)}/{{id}}/{rng.choice(WORDS)} ({number})\n\n"
            f"{phrase(rng).capitalize()} for one {entity}. Returns 200 with the {entity} record, 404 when "
            f"it does not exist and 422 when the payload fails validation.\n\n"
            "```json\n"
            f'{{"id": {rng.randint(1, 9999)}, "{rng.choice(WORDS)}": "{rng.choice(WORDS)}", "status": "active"}}\n'
            "```\n"
        )
    return "# API reference\n\n" + "\n".join(sections)


def render_skeleton(project_name: str, entities: list[str], rng: random.Random, with_large_file: bool,
                    oddities: tuple[str, ...]) -> dict[str, bytes]:
    slug = project_name.lower().replace(" ", "-")
    routers = "\n".join(f"app.include_router({plural(entity)}.router)" for entity in entities)
    texts = {
        EMPTY_PATH: "",
        "app/main.py": (
            f'"""{project_name}: FastAPI application entry point."""\n'
            "from fastapi import FastAPI\n\n"
            f"from app.routers import {', '.join(f'{plural(entity)}' for entity in entities)}\n\n"
            f'app = FastAPI(title="{project_name}", version="0.1.0")\n\n'
            f"{routers}\n\n\n"
            '@app.get("/health")\n'
            "def health() -> dict[str, str]:\n"
            '    return {"status": "ok"}\n'
        ),
        "app/config.py": (
            '"""Settings read from the environment."""\n'
            "from pydantic_settings import BaseSettings\n\n\n"
            "class Settings(BaseSettings):\n"
            f'    app_name: str = "{project_name}"\n'
            f'    database_url: str = "postgresql://app@localhost/{slug}"\n'
            f"    page_size: int = {rng.choice((20, 50, 100))}\n\n\n"
            "settings = Settings()\n"
        ),
        "app/database.py": (
            '"""Database engine and session factory."""\n'
            "from sqlalchemy import create_engine\n"
            "from sqlalchemy.orm import declarative_base, sessionmaker\n\n"
            "from app.config import settings\n\n"
            "engine = create_engine(settings.database_url, pool_pre_ping=True)\n"
            "SessionLocal = sessionmaker(bind=engine, autoflush=False)\n"
            "Base = declarative_base()\n\n\n"
            "def get_db():\n"
            "    db = SessionLocal()\n"
            "    try:\n        yield db\n    finally:\n        db.close()\n"
        ),
        "app/models/__init__.py": "",
        "tests/conftest.py": (
            "import pytest\nfrom fastapi.testclient import TestClient\n\nfrom app.main import app\n\n\n"
            "@pytest.fixture\ndef client() -> TestClient:\n    return TestClient(app)\n"
        ),
        "requirements.txt": "".join(f"{package}=={rng.randint(0, 3)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}\n"
                                    for package in PACKAGES[:8]),
        "README.md": (
            f"# {project_name}\n\nGenerated FastAPI backend.\n\n## Run\n\n"
            "```\npip install -r requirements.txt\nuvicorn app.main:app --reload\n```\n\n## Resources\n\n"
            + "".join(f"- `/{plural(entity)}`\n" for entity in entities)
        ),
        "alembic.ini": "[alembic]\nscript_location = alembic\nsqlalchemy.url = driver://user:pass@localhost/dbname\n",
        "alembic/env.py": (
            "from alembic import context\n\nfrom app.database import Base, engine\n\n"
            "target_metadata = Base.metadata\n\n"
            "with engine.connect() as connection:\n"
            "    context.configure(connection=connection, target_metadata=target_metadata)\n"
            "    with context.begin_transaction():\n        context.run_migrations()\n"
        ),
        NO_FINAL_NEWLINE_PATH: f"APP_NAME={slug}\nDATABASE_URL=postgresql://app@localhost/{slug}\nSECRET_KEY=change-me",
        CRLF_PATH: "\r\n".join(("@echo off", f"REM Start the {project_name} API", "set APP_ENV=development",
                                "python -m uvicorn app.main:app --reload --port 8000", "")),
        LATIN1_PATH: "Notes de version (latin-1)\n\n" + "".join(
            f"- {phrase(rng)} ({word})\n" for word in rng.sample(LATIN1_WORDS, 4)),
        UNICODE_NAME_PATH: "# Notes ünïcode\n\n" + "".join(f"- {phrase(rng)} {word}\n"
                                                            for word in rng.sample(UNICODE_WORDS, 3)),
        SPACE_NAME_PATH: "Release notes\n\n- Initial generated version.\n",
    }
    if with_large_file:
        texts[LARGE_FILE_PATH] = _render_large_reference(entities, rng)
    tree = {path: text.encode(encoding_of(path)) for path, text in texts.items()
            if path not in ODDITY_PATHS or path in oddities}
    for path in BINARY_PATHS:
        if path in oddities:
            tree[path] = render_binary(path, rng)
    return tree


SKELETON_PATHS = frozenset((
    EMPTY_PATH, "app/main.py", "app/config.py", "app/database.py", "app/models/__init__.py",
    "tests/conftest.py", "requirements.txt", "README.md", "alembic.ini", "alembic/env.py",
    NO_FINAL_NEWLINE_PATH, LARGE_FILE_PATH, *ODDITY_PATHS,
))
