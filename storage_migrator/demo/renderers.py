"""Renders the Python files each entity adds to a generated FastAPI code base: SQLAlchemy model,
Pydantic schema, router, service, API test and Alembic migration."""
from __future__ import annotations

import random

from storage_migrator.demo.vocabulary import WORDS

_FIELDS = (
    ("name", "String(120)", "str"), ("title", "String(200)", "str"), ("description", "Text", "str | None"),
    ("status", "String(20)", "str"), ("amount", "Numeric(12, 2)", "float"), ("quantity", "Integer", "int"),
    ("email", "String(255)", "str"), ("phone", "String(40)", "str | None"), ("notes", "Text", "str | None"),
    ("reference", "String(64)", "str"), ("is_active", "Boolean", "bool"), ("priority", "Integer", "int"),
    ("due_date", "DateTime", "datetime | None"), ("currency", "String(3)", "str"), ("score", "Float", "float"),
)


def plural(entity: str) -> str:
    if entity.endswith("y") and entity[-2:-1] not in "aeiou":
        return entity[:-1] + "ies"
    return entity + ("es" if entity.endswith(("s", "x", "ch")) else "s")


def _class_name(entity: str) -> str:
    return "".join(part.capitalize() for part in entity.split("_"))


def _fields(rng: random.Random) -> list[tuple[str, str, str]]:
    return sorted(rng.sample(_FIELDS, rng.randint(3, 9)))


def _render_model(entity: str, rng: random.Random) -> str:
    cls = _class_name(entity)
    columns = "\n".join(f"    {name} = Column({column}, nullable={rng.random() < 0.4})"
                        for name, column, _ in _fields(rng))
    return (
        f'"""SQLAlchemy model for {entity.replace("_", " ")} records."""\n'
        "from datetime import datetime\n\n"
        "from sqlalchemy import Boolean, Column, DateTime, Float, ForeignKey, Integer, Numeric, String, Text\n\n"
        "from app.database import Base\n\n\n"
        f"class {cls}(Base):\n"
        f'    __tablename__ = "{plural(entity)}"\n\n'
        "    id = Column(Integer, primary_key=True, index=True)\n"
        f"{columns}\n"
        "    owner_id = Column(Integer, ForeignKey(\"users.id\"), nullable=True)\n"
        "    created_at = Column(DateTime, default=datetime.utcnow)\n\n"
        "    def __repr__(self) -> str:\n"
        f'        return f"<{cls} id={{self.id}}>"\n'
    )


def _render_schema(entity: str, rng: random.Random) -> str:
    cls = _class_name(entity)
    fields = "\n".join(f"    {name}: {annotation}" for name, _, annotation in _fields(rng))
    return (
        f'"""Pydantic schemas for the {entity.replace("_", " ")} API."""\n'
        "from datetime import datetime\n\n"
        "from pydantic import BaseModel, ConfigDict\n\n\n"
        f"class {cls}Base(BaseModel):\n{fields}\n\n\n"
        f"class {cls}Create({cls}Base):\n    pass\n\n\n"
        f"class {cls}Update({cls}Base):\n    pass\n\n\n"
        f"class {cls}Read({cls}Base):\n"
        "    model_config = ConfigDict(from_attributes=True)\n\n"
        "    id: int\n    created_at: datetime\n"
    )


def _render_router(entity: str, rng: random.Random) -> str:
    cls = _class_name(entity)
    extra_endpoints = "".join(
        f'\n\n@router.get("/{{{entity}_id}}/{word}")\n'
        f"def {entity}_{word}({entity}_id: int, db: Session = Depends(get_db)) -> dict[str, object]:\n"
        f'    return {{"{entity}_id": {entity}_id, "{word}": service.{word}_of(db, {entity}_id)}}\n'
        for word in rng.sample(WORDS, rng.randint(0, 3))
    )
    return (
        f'"""HTTP endpoints for {plural(entity).replace("_", " ")}."""\n'
        "from fastapi import APIRouter, Depends, HTTPException, status\n"
        "from sqlalchemy.orm import Session\n\n"
        "from app.database import get_db\n"
        f"from app.schemas.{entity} import {cls}Create, {cls}Read, {cls}Update\n"
        f"from app.services import {entity}_service as service\n\n"
        f'router = APIRouter(prefix="/{plural(entity)}", tags=["{plural(entity)}"])\n\n\n'
        f'@router.get("/", response_model=list[{cls}Read])\n'
        f"def list_{plural(entity)}(skip: int = 0, limit: int = {rng.choice((20, 50, 100))}, db: Session = Depends(get_db)):\n"
        "    return service.list_all(db, skip=skip, limit=limit)\n\n\n"
        f'@router.post("/", response_model={cls}Read, status_code=status.HTTP_201_CREATED)\n'
        f"def create_{entity}(payload: {cls}Create, db: Session = Depends(get_db)):\n"
        "    return service.create(db, payload)\n\n\n"
        f'@router.get("/{{{entity}_id}}", response_model={cls}Read)\n'
        f"def get_{entity}({entity}_id: int, db: Session = Depends(get_db)):\n"
        f"    found = service.get(db, {entity}_id)\n"
        "    if found is None:\n"
        f'        raise HTTPException(status_code=404, detail="{cls} not found")\n'
        "    return found\n\n\n"
        f'@router.put("/{{{entity}_id}}", response_model={cls}Read)\n'
        f"def update_{entity}({entity}_id: int, payload: {cls}Update, db: Session = Depends(get_db)):\n"
        f"    return service.update(db, {entity}_id, payload)\n\n\n"
        f'@router.delete("/{{{entity}_id}}", status_code=status.HTTP_204_NO_CONTENT)\n'
        f"def delete_{entity}({entity}_id: int, db: Session = Depends(get_db)) -> None:\n"
        f"    service.delete(db, {entity}_id)\n"
        f"{extra_endpoints}"
    )


def _render_service(entity: str, rng: random.Random) -> str:
    cls = _class_name(entity)
    return (
        f'"""Business rules for {plural(entity).replace("_", " ")}, kept out of the HTTP layer."""\n'
        "from sqlalchemy.orm import Session\n\n"
        f"from app.models.{entity} import {cls}\n"
        f"from app.schemas.{entity} import {cls}Create, {cls}Update\n\n"
        f"PAGE_SIZE_LIMIT = {rng.choice((100, 200, 500))}\n\n\n"
        f"def list_all(db: Session, skip: int = 0, limit: int = 100) -> list[{cls}]:\n"
        f"    return db.query({cls}).offset(skip).limit(min(limit, PAGE_SIZE_LIMIT)).all()\n\n\n"
        f"def get(db: Session, {entity}_id: int) -> {cls} | None:\n"
        f"    return db.get({cls}, {entity}_id)\n\n\n"
        f"def create(db: Session, payload: {cls}Create) -> {cls}:\n"
        f"    record = {cls}(**payload.model_dump())\n"
        "    db.add(record)\n    db.commit()\n    db.refresh(record)\n    return record\n\n\n"
        f"def update(db: Session, {entity}_id: int, payload: {cls}Update) -> {cls}:\n"
        f"    record = db.get({cls}, {entity}_id)\n"
        "    for key, value in payload.model_dump(exclude_unset=True).items():\n"
        "        setattr(record, key, value)\n"
        "    db.commit()\n    return record\n\n\n"
        f"def delete(db: Session, {entity}_id: int) -> None:\n"
        f"    db.delete(db.get({cls}, {entity}_id))\n    db.commit()\n"
    )


def _render_test(entity: str, rng: random.Random) -> str:
    cases = "".join(
        f"\n\ndef test_{entity}_{word}(client) -> None:\n"
        f'    response = client.get("/{plural(entity)}/?limit={rng.randint(1, 50)}")\n'
        "    assert response.status_code == 200\n"
        for word in rng.sample(WORDS, rng.randint(1, 4))
    )
    return (
        f'"""API tests for {plural(entity).replace("_", " ")}."""\n\n\n'
        f"def test_create_{entity}(client) -> None:\n"
        f'    response = client.post("/{plural(entity)}/", json={{"name": "sample {rng.randint(1, 99)}"}})\n'
        "    assert response.status_code == 201\n"
        f"{cases}"
    )


def render_migration(entity: str, revision: str, rng: random.Random) -> str:
    columns = "".join(f'        sa.Column("{name}", sa.{column.split("(")[0]}()),\n'
                      for name, column, _ in _fields(rng))
    return (
        f'"""create {plural(entity)}\n\nRevision ID: {revision}\n"""\n'
        "from alembic import op\nimport sqlalchemy as sa\n\n"
        f'revision = "{revision}"\n\n\n'
        "def upgrade() -> None:\n"
        "    op.create_table(\n"
        f'        "{plural(entity)}",\n'
        '        sa.Column("id", sa.Integer(), primary_key=True),\n'
        f"{columns}"
        "    )\n\n\n"
        "def downgrade() -> None:\n"
        f'    op.drop_table("{plural(entity)}")\n'
    )


ENTITY_FILES = (
    ("app/models/{entity}.py", _render_model),
    ("app/schemas/{entity}.py", _render_schema),
    ("app/routers/{entities}.py", _render_router),
    ("app/services/{entity}_service.py", _render_service),
    ("tests/test_{entities}.py", _render_test),
)


FILES_PER_ENTITY = len(ENTITY_FILES) + 1
"""The entity's files plus its Alembic migration."""
