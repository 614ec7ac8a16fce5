"""The legacy tables the sample goes into and the rows inserted there: users, an organization,
projects and generations (timings, review, error message, ``output_files``)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION
from storage_migrator.db.tables import current_revision
from storage_migrator.demo.blueprint import EPOCH, GenerationKind, ProjectBlueprint, sample_uuid

LEGACY_TABLES = ("users", "organizations", "projects", "generations")


def reflect_legacy_tables(engine: sa.Engine) -> dict[str, sa.Table]:
    """The four legacy tables, after checking the database is at the legacy revision."""
    with engine.connect() as connection:
        revision = current_revision(connection)
    if revision != BASE_REVISION:
        raise ValueError(
            f"sample data is a LEGACY installation: the database must be at revision {BASE_REVISION}, "
            f"found {revision!r} (run upgrade_schema(url, {BASE_REVISION!r}) on an empty database)"
        )
    metadata = sa.MetaData()
    metadata.reflect(bind=engine, only=list(LEGACY_TABLES))
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                # Python None must be SQL NULL ("output_files IS NULL"), not the JSON text 'null'.
                column.type = type(column.type)(none_as_null=True)
    return {name: metadata.tables[name] for name in LEGACY_TABLES}

DOMAINS = ("ecommerce", "healthcare", "fintech", "education", "logistics", "hospitality")
PROJECT_NAMES = (
    "Inventory API", "Clinic Scheduler", "Invoice Hub", "Course Portal", "Fleet Tracker",
    "Booking Service", "Marketplace Backend", "Support Desk", "Payroll Engine", "Event Planner",
)
_ERRORS = (
    "LLM provider timeout after 120s during code generation",
    "Schema extraction failed: ambiguous relationship between entities",
    "Review step crashed: generated code did not parse (SyntaxError in app/main.py)",
    "Rate limit exceeded (429) from model provider",
)
_USER_COUNT = 3


def build_account_rows(seed: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    users = [
        {"id": sample_uuid(seed, "user", number), "email": f"dev{number}@example.com",
         "created_at": EPOCH - timedelta(days=30 - number), "updated_at": EPOCH - timedelta(days=30 - number)}
        for number in range(_USER_COUNT)
    ]
    organizations = [
        {"id": sample_uuid(seed, "organization", 0), "name": "Acme Software",
         "created_at": EPOCH - timedelta(days=40), "updated_at": EPOCH - timedelta(days=40)}
    ]
    return users, organizations


def build_project_row(blueprint: ProjectBlueprint, name: str, domain: str, entities: list[str],
                      created_at: datetime, users: list[dict[str, object]],
                      organizations: list[dict[str, object]], rng: random.Random) -> dict[str, object]:
    return {
        "id": blueprint.project_id,
        "created_at": created_at,
        "updated_at": created_at,
        "user_id": users[blueprint.index % len(users)]["id"],
        "organization_id": organizations[0]["id"] if blueprint.index % 2 == 0 else None,
        "name": name,
        "description": f"A {domain} backend managing {', '.join(entities[:3])}.",
        "domain": domain,
        "tech_stack": "fastapi_postgres",
        "constraints": {"auth": rng.choice(["jwt", "oauth2", "api_key"]), "database": "postgresql",
                        "max_endpoints": rng.randint(10, 60)},
        "status": "active" if blueprint.kinds else "draft",
        "is_public": rng.random() < 0.3,
    }


def build_generation_row(generation_id: str, project_row: dict[str, object], kind: GenerationKind,
                         created_at: datetime, prompt: str, tree: dict[str, bytes] | None,
                         store_output_files: bool, rng: random.Random) -> dict[str, object]:
    status = kind.status
    times = _step_times(kind, rng)
    total_time = round(sum(time for time in times.values() if time), 3) if status in ("completed", "failed") else None
    keeps_files = kind is GenerationKind.COMPLETED_MISSING_FOLDER or (
        kind is GenerationKind.COMPLETED and store_output_files)
    entities = sorted({Path(path).stem for path in tree or {} if path.startswith("app/models/")} - {"__init__"})
    finished = status == "completed"
    return {
        "id": generation_id,
        "created_at": created_at,
        "updated_at": created_at + timedelta(seconds=total_time or 0),
        "project_id": project_row["id"],
        "user_id": project_row["user_id"],
        "prompt": prompt,
        "context": {"tech_stack": project_row["tech_stack"], "domain": project_row["domain"]},
        "extracted_schema": {"entities": entities} if kind is not GenerationKind.PENDING else None,
        "output_files": _text_files(tree) if keeps_files and tree is not None else None,
        "review_feedback": {"score": round(rng.uniform(6, 10), 1), "issues": rng.randint(0, 5)} if finished else None,
        "documentation": {"readme": "README.md", "api": "docs/api_reference.md"} if finished else None,
        "quality_score": round(rng.uniform(0.6, 0.98), 3) if finished else None,
        "status": status,
        "error_message": rng.choice(_ERRORS) if status == "failed" else None,
        **times,
        "total_time": total_time,
    }


def _step_times(kind: GenerationKind, rng: random.Random) -> dict[str, float | None]:
    steps = ("schema_extraction_time", "code_generation_time", "review_time", "docs_generation_time")
    steps_done = {GenerationKind.PENDING: 0, GenerationKind.PROCESSING: 1, GenerationKind.FAILED_NO_FOLDER: 1,
            GenerationKind.FAILED_PARTIAL_FOLDER: 2}.get(kind, len(steps))
    return {step: round(rng.uniform(1, 40), 3) if position < steps_done else None
            for position, step in enumerate(steps)}


def _text_files(tree: dict[str, bytes]) -> dict[str, str]:
    """The files the application keeps in ``output_files``: UTF-8 text only (no binary, no latin-1)."""
    texts = {}
    for path, content in sorted(tree.items()):
        if b"\0" in content:
            continue
        try:
            texts[path] = content.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts
