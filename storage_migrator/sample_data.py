"""Deterministic sample data: a LEGACY installation (rows at revision e011ab9dd223 plus
``<ROOT>/<generation_id>/`` folders) with every edge case the migration must survive.

The README demo, the tests and the benchmark all build their corpus here: the same seed and size
give the same ids, rows, file bytes and mtimes, on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import enum
import itertools
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION
from storage_migrator.db import current_revision

MIN_PROJECTS = 5
"""Demo, two edge-case projects, one project without a completed generation, one without any."""

BINARY_PATHS = ("static/logo.png", "static/favicon.ico")
CRLF_PATH = "scripts/run.bat"
LATIN1_PATH = "docs/notes-latin1.txt"
EMPTY_PATH = "app/__init__.py"
NO_FINAL_NEWLINE_PATH = ".env.example"
UNICODE_NAME_PATH = "docs/ünïcode-notes.md"
SPACE_NAME_PATH = "docs/release notes.txt"
LARGE_FILE_PATH = "docs/api_reference.md"
ODDITY_PATHS = (*BINARY_PATHS, CRLF_PATH, LATIN1_PATH, UNICODE_NAME_PATH, SPACE_NAME_PATH)
"""Files that regular projects carry only sometimes; the demo and edge-case projects always do."""

_ID_NAMESPACE = uuid.UUID("6f1d3c1e-8a52-4f7e-9d0b-5b8f2a7c4e11")
_EPOCH = datetime(2025, 3, 3, 9, 0, 0, tzinfo=timezone.utc)
_GENERATIONS_PER_PROJECT_FOR_SCALE = 8
_SHARE_OF_FILES_ON_DISK = 0.95
"""About 5% of the files generated never reach disk (failed, pending, missing-folder generations)."""


# --------------------------------------------------------------------------- public interface


@dataclass(frozen=True)
class SampleSize:
    """How big the installation is. Both per-project figures are averages: each project varies
    deterministically around them. A code base always has its skeleton and at least one
    resource (about 20 files), so tiny ``files_per_generation`` values give bigger trees."""

    projects: int = 6
    generations_per_project: int = 6
    files_per_generation: int = 40

    def __post_init__(self) -> None:
        if self.projects < MIN_PROJECTS:
            raise ValueError(f"SampleSize.projects must be at least {MIN_PROJECTS} to hold every edge case")
        if self.generations_per_project < 1 or self.files_per_generation < 1:
            raise ValueError("SampleSize.generations_per_project and files_per_generation must be >= 1")

    @classmethod
    def scaled(cls, generations: int, files: int) -> SampleSize:
        """A size of about ``generations`` generations and ``files`` files in total, with about
        eight generations per project (e.g. ``scaled(1000, 60_000)`` for the benchmark). The
        files written land within a few percent of ``files``: read
        ``SampleInstallation.file_count`` for the exact number."""
        if generations < 1 or files < 1:
            raise ValueError("scaled() needs at least one generation and one file")
        projects = max(MIN_PROJECTS, round(generations / _GENERATIONS_PER_PROJECT_FOR_SCALE))
        return cls(
            projects=projects,
            generations_per_project=max(1, round(generations / projects)),
            files_per_generation=max(1, round(files / (generations * _SHARE_OF_FILES_ON_DISK))),
        )


@dataclass(frozen=True)
class SampleInstallation:
    """What was generated, and where each edge case sits, so tests need not rediscover it."""

    project_ids: tuple[str, ...]
    """Every project inserted, in insertion order."""
    generation_ids: tuple[str, ...]
    """Every generation inserted, in insertion order (the tied pair is inserted in reverse id order)."""
    demo_project_id: str
    """Only completed generations, with edits, adds, deletes, a rename, binary, CRLF and latin-1 changes."""
    file_count: int
    """Files written to disk."""
    total_bytes: int
    """Sum of the sizes of those files."""
    folder_generation_ids: tuple[str, ...]
    """Generations that have a folder ``<ROOT>/<id>/`` (completed, failed partial, processing)."""
    missing_folder_generation_id: str
    """Completed, folder missing on disk, text files held in ``output_files``."""
    processing_generation_id: str
    """Status ``processing``; a partial folder exists (the application may still be writing)."""
    pending_generation_id: str
    """Status ``pending``; no folder."""
    tied_generation_ids: tuple[str, str]
    """Two completed generations of one project with the same ``created_at``, sorted by id (the
    migration's version order). They were inserted in the opposite order."""
    failed_without_folder_generation_ids: tuple[str, ...]
    """Status ``failed``, no folder, ``output_files`` NULL, ``error_message`` set."""
    failed_with_partial_folder_generation_ids: tuple[str, ...]
    """Status ``failed`` with a partial folder (a subset of files, one of them truncated)."""
    project_without_generations_id: str
    project_without_completed_generation_id: str
    """Only failed generations (one with a partial folder, one without)."""


def generate_installation(
    engine: sa.Engine,
    storage_root: Path,
    size: SampleSize = SampleSize(),
    seed: int = 0,
    *,
    store_output_files: bool = True,
) -> SampleInstallation:
    """Insert users, organizations, projects and generations into a database at revision
    e011ab9dd223 and write each generation's legacy folder ``<storage_root>/<generation_id>/``.

    Refuses (ValueError) a database that already has rows or is at another revision, and a
    ``storage_root`` that already contains anything, so demo data never mixes with a real
    installation. Works project by project: memory does not grow with ``size``. The rows go in
    one transaction; a failure leaves the folders written so far on disk.

    ``store_output_files=False`` leaves ``output_files`` NULL for completed generations (the
    benchmark corpus), except the missing-folder generation, which always keeps its files there.
    """
    tables = _reflect_legacy_tables(engine)
    with engine.connect() as connection:
        _refuse_non_empty_database(connection, tables)
    _refuse_non_empty_storage(storage_root)
    storage_root.mkdir(parents=True, exist_ok=True)
    plans = _plan_projects(size, seed)
    tally = _Tally()
    with engine.begin() as connection:
        users, organizations = _account_rows(seed)
        connection.execute(tables["users"].insert(), users)
        connection.execute(tables["organizations"].insert(), organizations)
        for plan in plans:
            project = _build_project(plan, seed, size, users, organizations, store_output_files)
            connection.execute(tables["projects"].insert(), [project.row])
            generation_rows: list[dict[str, object]] = []
            for generation in project.generations:
                generation_rows.append(generation.row)
                tally.record(generation, _write_folder(storage_root, generation))
            if generation_rows:
                connection.execute(tables["generations"].insert(), generation_rows)
            tally.project_ids.append(plan.project_id)
    return tally.installation(plans)


# --------------------------------------------------------------------------- database guards


_TABLES = ("users", "organizations", "projects", "generations")


def _reflect_legacy_tables(engine: sa.Engine) -> dict[str, sa.Table]:
    """The four legacy tables, after checking the database is at the legacy revision."""
    with engine.connect() as connection:
        revision = current_revision(connection)
    if revision != BASE_REVISION:
        raise ValueError(
            f"sample data is a LEGACY installation: the database must be at revision {BASE_REVISION}, "
            f"found {revision!r} (run upgrade_schema(url, {BASE_REVISION!r}) on an empty database)"
        )
    metadata = sa.MetaData()
    metadata.reflect(bind=engine, only=list(_TABLES))
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.JSON):
                # Python None must be SQL NULL ("output_files IS NULL"), not the JSON text 'null'.
                column.type = type(column.type)(none_as_null=True)
    return {name: metadata.tables[name] for name in _TABLES}


def _refuse_non_empty_database(connection: sa.Connection, tables: dict[str, sa.Table]) -> None:
    for name in _TABLES:
        if connection.execute(sa.select(sa.literal(1)).select_from(tables[name]).limit(1)).first():
            raise ValueError(
                f"refusing to add sample data: table {name!r} already has rows "
                "(sample data goes into an empty database only)"
            )


def _refuse_non_empty_storage(storage_root: Path) -> None:
    if storage_root.exists() and not storage_root.is_dir():
        raise ValueError(f"refusing to add sample data: {storage_root} exists and is not a directory")
    if storage_root.is_dir() and any(storage_root.iterdir()):
        raise ValueError(
            f"refusing to add sample data: {storage_root} is not empty "
            "(sample data goes into an empty storage root only)"
        )


# --------------------------------------------------------------------------- planning


class ProjectRole(enum.Enum):
    """Which edge cases a project carries; the position in the project list decides it."""

    DEMO = "demo"
    TIE_MISSING_PENDING = "tie_missing_pending"
    PARTIAL_PROCESSING = "partial_processing"
    REGULAR = "regular"
    NO_COMPLETED = "no_completed"
    NO_GENERATIONS = "no_generations"


class GenerationKind(enum.Enum):
    """A generation's status plus what is on disk for it."""

    COMPLETED = "completed"
    COMPLETED_MISSING_FOLDER = "completed_missing_folder"
    FAILED_NO_FOLDER = "failed_no_folder"
    FAILED_PARTIAL_FOLDER = "failed_partial_folder"
    PROCESSING = "processing"
    PENDING = "pending"

    @property
    def status(self) -> str:
        return self.value.split("_")[0]

    @property
    def has_folder(self) -> bool:
        return self in (GenerationKind.COMPLETED, GenerationKind.FAILED_PARTIAL_FOLDER, GenerationKind.PROCESSING)

    @property
    def builds_on_tree(self) -> bool:
        """Whether the next generation starts from this one's code (failed attempts are discarded)."""
        return self in (GenerationKind.COMPLETED, GenerationKind.COMPLETED_MISSING_FOLDER)


@dataclass(frozen=True)
class ProjectPlan:
    index: int
    project_id: str
    role: ProjectRole
    kinds: tuple[GenerationKind, ...]
    tie_at: int | None
    """Index of the generation that gets the same created_at as the one before it."""


_MIN_GENERATIONS = {
    ProjectRole.DEMO: 5,
    ProjectRole.TIE_MISSING_PENDING: 7,
    ProjectRole.PARTIAL_PROCESSING: 4,
    ProjectRole.REGULAR: 1,
}


def _role_of(index: int, projects: int) -> ProjectRole:
    fixed = {0: ProjectRole.DEMO, 1: ProjectRole.TIE_MISSING_PENDING, 2: ProjectRole.PARTIAL_PROCESSING}
    if index in fixed:
        return fixed[index]
    if index == projects - 2:
        return ProjectRole.NO_COMPLETED
    if index == projects - 1:
        return ProjectRole.NO_GENERATIONS
    return ProjectRole.REGULAR


def _plan_projects(size: SampleSize, seed: int) -> list[ProjectPlan]:
    roles = [_role_of(index, size.projects) for index in range(size.projects)]
    counts = _generation_counts(roles, size, seed)
    plans = []
    for index, (role, count) in enumerate(zip(roles, counts)):
        rng = random.Random(f"plan:{seed}:{index}")
        kinds, tie_at = _generation_kinds(role, count, rng)
        plans.append(ProjectPlan(index, _sample_uuid(seed, "project", index), role, kinds, tie_at))
    return plans


def _generation_counts(roles: list[ProjectRole], size: SampleSize, seed: int) -> list[int]:
    """Spread ``projects * generations_per_project`` over the projects that evolve, varying each
    by up to a third in zero-sum pairs, then lift the few that need more for their edge cases."""
    fixed = {ProjectRole.NO_COMPLETED: 2, ProjectRole.NO_GENERATIONS: 0}
    evolving = [index for index, role in enumerate(roles) if role not in fixed]
    remaining = max(len(evolving), size.projects * size.generations_per_project - sum(
        fixed[role] for role in roles if role in fixed))
    counts = [fixed.get(role, 0) for role in roles]
    for position, index in enumerate(evolving):
        counts[index] = remaining // len(evolving) + (1 if position < remaining % len(evolving) else 0)
    rng = random.Random(f"counts:{seed}")
    for first, second in zip(evolving[0::2], evolving[1::2]):
        delta = rng.randint(0, min(counts[first], counts[second]) // 3)
        counts[first] += delta
        counts[second] -= delta
    return [max(count, _MIN_GENERATIONS.get(role, 0)) for count, role in zip(counts, roles)]


def _generation_kinds(role: ProjectRole, count: int, rng: random.Random) -> tuple[tuple[GenerationKind, ...], int | None]:
    completed = GenerationKind.COMPLETED
    if role is ProjectRole.NO_GENERATIONS:
        return (), None
    if role is ProjectRole.NO_COMPLETED:
        return (GenerationKind.FAILED_NO_FOLDER, GenerationKind.FAILED_PARTIAL_FOLDER), None
    if role is ProjectRole.DEMO:
        return (completed,) * count, None
    if role is ProjectRole.TIE_MISSING_PENDING:
        head = (completed, completed, completed, GenerationKind.FAILED_NO_FOLDER,
                GenerationKind.COMPLETED_MISSING_FOLDER)
        return (*head, *(completed,) * (count - len(head) - 1), GenerationKind.PENDING), 2
    if role is ProjectRole.PARTIAL_PROCESSING:
        head = (completed, GenerationKind.FAILED_PARTIAL_FOLDER)
        return (*head, *(completed,) * (count - len(head) - 1), GenerationKind.PROCESSING), None
    return tuple(_regular_kind(rng) for _ in range(count)), None


def _regular_kind(rng: random.Random) -> GenerationKind:
    draw = rng.random()
    if draw < 0.06:
        return GenerationKind.FAILED_NO_FOLDER
    if draw < 0.08:
        return GenerationKind.FAILED_PARTIAL_FOLDER
    return GenerationKind.COMPLETED


def _sample_uuid(seed: int, *parts: object) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(map(str, (seed, *parts)))))


# --------------------------------------------------------------------------- rows


_DOMAINS = ("ecommerce", "healthcare", "fintech", "education", "logistics", "hospitality")
_PROJECT_NAMES = (
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


def _account_rows(seed: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    users = [
        {"id": _sample_uuid(seed, "user", number), "email": f"dev{number}@example.com",
         "created_at": _EPOCH - timedelta(days=30 - number), "updated_at": _EPOCH - timedelta(days=30 - number)}
        for number in range(_USER_COUNT)
    ]
    organizations = [
        {"id": _sample_uuid(seed, "organization", 0), "name": "Acme Software",
         "created_at": _EPOCH - timedelta(days=40), "updated_at": _EPOCH - timedelta(days=40)}
    ]
    return users, organizations


def _project_row(plan: ProjectPlan, name: str, domain: str, entities: list[str], created_at: datetime,
                 users: list[dict[str, object]], organizations: list[dict[str, object]],
                 rng: random.Random) -> dict[str, object]:
    return {
        "id": plan.project_id,
        "created_at": created_at,
        "updated_at": created_at,
        "user_id": users[plan.index % len(users)]["id"],
        "organization_id": organizations[0]["id"] if plan.index % 2 == 0 else None,
        "name": name,
        "description": f"A {domain} backend managing {', '.join(entities[:3])}.",
        "domain": domain,
        "tech_stack": "fastapi_postgres",
        "constraints": {"auth": rng.choice(["jwt", "oauth2", "api_key"]), "database": "postgresql",
                        "max_endpoints": rng.randint(10, 60)},
        "status": "active" if plan.kinds else "draft",
        "is_public": rng.random() < 0.3,
    }


def _generation_row(generation_id: str, project_row: dict[str, object], kind: GenerationKind,
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
    done = {GenerationKind.PENDING: 0, GenerationKind.PROCESSING: 1, GenerationKind.FAILED_NO_FOLDER: 1,
            GenerationKind.FAILED_PARTIAL_FOLDER: 2}.get(kind, len(steps))
    return {step: round(rng.uniform(1, 40), 3) if position < done else None for position, step in enumerate(steps)}


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


# --------------------------------------------------------------------------- projects


@dataclass(frozen=True)
class GeneratedGeneration:
    generation_id: str
    kind: GenerationKind
    created_at: datetime
    tree: dict[str, bytes] | None
    """The code as the generator produced it; None for pending. Not all of it is on disk for
    partial folders, none of it for failed-without-folder and missing-folder generations."""
    row: dict[str, object]
    tied: bool
    """One of the two generations sharing a created_at."""


@dataclass(frozen=True)
class GeneratedProject:
    row: dict[str, object]
    generations: Iterator[GeneratedGeneration]
    """Lazy, so only one project's current trees are in memory at a time."""


def _build_project(plan: ProjectPlan, seed: int, size: SampleSize, users: list[dict[str, object]],
                   organizations: list[dict[str, object]], store_output_files: bool) -> GeneratedProject:
    rng = random.Random(f"project:{seed}:{plan.index}")
    name = f"{_PROJECT_NAMES[plan.index % len(_PROJECT_NAMES)]}" + (
        f" {plan.index // len(_PROJECT_NAMES) + 1}" if plan.index >= len(_PROJECT_NAMES) else "")
    domain = _DOMAINS[plan.index % len(_DOMAINS)]
    entities = rng.sample(_ENTITIES, len(_ENTITIES))
    created_at = _EPOCH + timedelta(hours=7 * plan.index, minutes=rng.randint(0, 59))
    row = _project_row(plan, name, domain, entities, created_at, users, organizations, rng)
    return GeneratedProject(row, _project_generations(plan, seed, size, row, entities, rng, store_output_files))


def _project_generations(plan: ProjectPlan, seed: int, size: SampleSize, project_row: dict[str, object],
                         entities: list[str], rng: random.Random,
                         store_output_files: bool) -> Iterator[GeneratedGeneration]:
    full_oddities = plan.role is not ProjectRole.REGULAR
    code_base = _CodeBase(str(project_row["name"]), entities, size.files_per_generation, rng)
    code_base.start(with_large_file=plan.role is ProjectRole.DEMO or rng.random() < 0.2,
                    oddities=ODDITY_PATHS if full_oddities else tuple(p for p in ODDITY_PATHS if rng.random() < 0.7))
    ids = [_sample_uuid(seed, "generation", plan.index, position) for position in range(len(plan.kinds))]
    if plan.tie_at is not None:
        # Code history follows id order (the migration's order), insertion goes the other way.
        pair = sorted(ids[plan.tie_at - 1:plan.tie_at + 1])
        ids[plan.tie_at - 1:plan.tie_at + 1] = pair
    created_at = project_row["created_at"]
    assert isinstance(created_at, datetime)
    held_back: list[GeneratedGeneration] = []
    for position, kind in enumerate(plan.kinds):
        if position > 0 and position != plan.tie_at:
            created_at += timedelta(minutes=rng.randint(5, 3 * 24 * 60))
        tree, prompt = _next_tree(code_base, plan, position, kind, rng)
        tied = plan.tie_at is not None and position in (plan.tie_at - 1, plan.tie_at)
        generation = GeneratedGeneration(
            ids[position], kind, created_at, tree,
            _generation_row(ids[position], project_row, kind, created_at, prompt, tree, store_output_files, rng),
            tied,
        )
        if tied and position == plan.tie_at - 1:
            held_back.append(generation)
            continue
        yield generation
        yield from held_back
        held_back.clear()


def _next_tree(code_base: _CodeBase, plan: ProjectPlan, position: int, kind: GenerationKind,
               rng: random.Random) -> tuple[dict[str, bytes] | None, str]:
    if kind is GenerationKind.PENDING:
        return None, f"Add {rng.choice(code_base.entities)} reporting endpoints"
    if position == 0 or not code_base.has_history:
        tree, prompt = code_base.tree, f"Create a FastAPI backend for {code_base.project_name}"
    else:
        forced = _DEMO_SCHEDULE.get(position, frozenset()) if plan.role is ProjectRole.DEMO else frozenset()
        tree, prompt = code_base.evolved(forced)
    if kind.builds_on_tree:
        code_base.accept(tree)
    return tree, prompt


# --------------------------------------------------------------------------- disk


@dataclass(frozen=True)
class WrittenFolder:
    file_count: int
    total_bytes: int


def _write_folder(storage_root: Path, generation: GeneratedGeneration) -> WrittenFolder:
    """Write ``<ROOT>/<id>/`` as the application left it, every mtime set from created_at."""
    if not generation.kind.has_folder or generation.tree is None:
        return WrittenFolder(0, 0)
    files = _files_on_disk(generation)
    folder = storage_root / generation.generation_id
    mtime_ns = int(generation.created_at.timestamp()) * 1_000_000_000
    directories = sorted({"/".join(parts[:depth]) for parts in (path.split("/") for path, _ in files)
                          for depth in range(len(parts))}, key=lambda path: (path.count("/"), path))
    for directory in directories:
        (folder / directory).mkdir()
    for relative, content in files:
        target = folder / relative
        target.write_bytes(content)
        os.utime(target, ns=(mtime_ns, mtime_ns))
    for directory in reversed(directories):
        os.utime(folder / directory, ns=(mtime_ns, mtime_ns))
    return WrittenFolder(len(files), sum(len(content) for _, content in files))


def _files_on_disk(generation: GeneratedGeneration) -> list[tuple[str, bytes]]:
    """All files for completed generations; a sorted prefix for partial ones (the writer stopped
    there), with the last file of a failed one cut in half."""
    assert generation.tree is not None
    files = sorted(generation.tree.items())
    if generation.kind is GenerationKind.COMPLETED:
        return files
    share = 0.4 if generation.kind is GenerationKind.FAILED_PARTIAL_FOLDER else 0.7
    kept = files[:max(1, int(len(files) * share))]
    if generation.kind is GenerationKind.FAILED_PARTIAL_FOLDER:
        last_path, last_content = kept[-1]
        kept[-1] = (last_path, last_content[: len(last_content) // 2])
    return kept


@dataclass
class _Tally:
    """Collects what the caller needs to know while generations stream past."""

    project_ids: list[str] = field(default_factory=list)
    generation_ids: list[str] = field(default_factory=list)
    folder_generation_ids: list[str] = field(default_factory=list)
    tied_generation_ids: list[str] = field(default_factory=list)
    by_kind: dict[GenerationKind, list[str]] = field(default_factory=dict)
    file_count: int = 0
    total_bytes: int = 0

    def record(self, generation: GeneratedGeneration, written: WrittenFolder) -> None:
        self.generation_ids.append(generation.generation_id)
        if generation.kind.has_folder:
            self.folder_generation_ids.append(generation.generation_id)
        if generation.tied:
            self.tied_generation_ids.append(generation.generation_id)
        self.by_kind.setdefault(generation.kind, []).append(generation.generation_id)
        self.file_count += written.file_count
        self.total_bytes += written.total_bytes

    def of_kind(self, kind: GenerationKind) -> tuple[str, ...]:
        return tuple(self.by_kind.get(kind, ()))

    def installation(self, plans: list[ProjectPlan]) -> SampleInstallation:
        by_role = {plan.role: plan for plan in plans}
        tied = sorted(self.tied_generation_ids)
        return SampleInstallation(
            project_ids=tuple(self.project_ids),
            generation_ids=tuple(self.generation_ids),
            demo_project_id=by_role[ProjectRole.DEMO].project_id,
            file_count=self.file_count,
            total_bytes=self.total_bytes,
            folder_generation_ids=tuple(self.folder_generation_ids),
            missing_folder_generation_id=self.of_kind(GenerationKind.COMPLETED_MISSING_FOLDER)[0],
            processing_generation_id=self.of_kind(GenerationKind.PROCESSING)[0],
            pending_generation_id=self.of_kind(GenerationKind.PENDING)[0],
            tied_generation_ids=(tied[0], tied[1]),
            failed_without_folder_generation_ids=self.of_kind(GenerationKind.FAILED_NO_FOLDER),
            failed_with_partial_folder_generation_ids=self.of_kind(GenerationKind.FAILED_PARTIAL_FOLDER),
            project_without_generations_id=by_role[ProjectRole.NO_GENERATIONS].project_id,
            project_without_completed_generation_id=by_role[ProjectRole.NO_COMPLETED].project_id,
        )


# --------------------------------------------------------------------------- code bases


class Change(enum.Enum):
    MODIFY = "modify"
    ADD = "add"
    DELETE = "delete"
    RENAME = "rename"
    BINARY = "binary"
    ODD_TEXT = "odd_text"
    """Edit the CRLF, latin-1 and unicode-named files."""


_DEMO_SCHEDULE = {
    1: frozenset({Change.MODIFY, Change.ADD}),
    2: frozenset({Change.DELETE, Change.RENAME}),
    3: frozenset({Change.BINARY, Change.ODD_TEXT}),
}
"""Demo versions 2-4 each show given kinds of change, so the README's diff has them all."""

_RENAMED_FOLDERS = {
    "app/models/": "app/db/models/",
    "app/routers/": "app/api/routes/",
    "app/services/": "app/domain/",
    "app/schemas/": "app/api/schemas/",
    "tests/": "tests/api/",
}


class _CodeBase:
    """One project's code as it evolves: the last accepted tree plus files waiting to be added.

    Every version keeps the tree near ``target_files``: it adds more when short, deletes more when
    over. Skeleton files (main, config, the oddities) are edited but never deleted or renamed.
    """

    def __init__(self, project_name: str, entities: list[str], target_files: int, rng: random.Random) -> None:
        self.project_name = project_name
        self.entities = entities
        self.target_files = target_files
        self.rng = rng
        self.tree: dict[str, bytes] = {}
        self.has_history = False
        self._upcoming = iter(self._entity_files())
        self._migration_number = 0

    def start(self, *, with_large_file: bool, oddities: tuple[str, ...]) -> None:
        self.tree = _skeleton(self.project_name, self.entities[:4], self.rng, with_large_file, oddities)
        skeleton_size = len(self.tree)
        while len(self.tree) < max(self.target_files, skeleton_size + _FILES_PER_ENTITY):
            self._add_file(self.tree)

    def accept(self, tree: dict[str, bytes]) -> None:
        self.tree = tree
        self.has_history = True

    def evolved(self, forced: frozenset[Change]) -> tuple[dict[str, bytes], str]:
        """A new tree from the accepted one (which stays untouched) and the prompt that asked for it."""
        tree = dict(self.tree)
        rng = self.rng
        drift = len(tree) - self.target_files
        adds = rng.choice((0, 1, 1, 2)) + (1 if drift < -2 else 0) + (1 if Change.ADD in forced else 0)
        deletes = rng.choice((0, 0, 1, 1)) + (1 if drift > 2 else 0) + (1 if Change.DELETE in forced else 0)
        added = [self._add_file(tree) for _ in range(adds)]
        # Files added or renamed in this version are left alone by the other changes, so a
        # rename stays a pure move and an add stays an add.
        untouched = set(added)
        if Change.RENAME in forced or rng.random() < 0.1:
            untouched.update(self._rename_file(tree, untouched))
        for _ in range(deletes):
            self._delete_file(tree, untouched)
        if Change.BINARY in forced or rng.random() < 0.2:
            self._change_binary(tree, forced=Change.BINARY in forced)
        if Change.ODD_TEXT in forced or rng.random() < 0.2:
            for path in (CRLF_PATH, LATIN1_PATH, UNICODE_NAME_PATH):
                if path in tree:
                    tree[path] = _edited(path, tree[path], rng)
        self._modify_files(tree, rng.randint(1, 4) + (1 if Change.MODIFY in forced else 0), untouched)
        subject = Path(added[0]).stem if added else rng.choice(self.entities[:4])
        return tree, rng.choice(_FOLLOW_UP_PROMPTS).format(subject=subject.replace("_", " "))

    def _entity_files(self) -> Iterator[tuple[str, bytes]]:
        """Files a growing project gains, entity by entity; names get a suffix once entities run out."""
        for round_number in itertools.count():
            for entity in self.entities:
                name = entity if round_number == 0 else f"{entity}_{round_number + 1}"
                for template, render in _ENTITY_FILES:
                    yield template.format(entity=name, entities=_plural(name)), render(name, self.rng).encode("utf-8")
                self._migration_number += 1
                revision = f"{self.rng.getrandbits(48):012x}"
                yield (f"alembic/versions/{self._migration_number:03d}_{revision}_create_{_plural(name)}.py",
                       _render_migration(name, revision, self.rng).encode("utf-8"))

    def _add_file(self, tree: dict[str, bytes]) -> str:
        path, content = next(self._upcoming)
        while path in tree:
            path, content = next(self._upcoming)
        tree[path] = content
        return path

    def _movable(self, tree: dict[str, bytes], untouched: set[str]) -> list[str]:
        return sorted(path for path in tree if path not in _SKELETON_PATHS and path not in untouched
                      and not path.startswith("alembic/"))

    def _delete_file(self, tree: dict[str, bytes], untouched: set[str]) -> None:
        movable = self._movable(tree, untouched)
        if movable:
            del tree[self.rng.choice(movable)]

    def _rename_file(self, tree: dict[str, bytes], untouched: set[str]) -> list[str]:
        """Move one file to another folder, unchanged; returns the new path (none if nothing fits)."""
        movable = self._movable(tree, untouched)
        for path in self.rng.sample(movable, len(movable)):
            for old, new in _RENAMED_FOLDERS.items():
                renamed = new + path[len(old):]
                if path.startswith(old) and not path.startswith(new) and renamed not in tree:
                    tree[renamed] = tree.pop(path)
                    return [renamed]
        return []

    def _change_binary(self, tree: dict[str, bytes], *, forced: bool) -> None:
        """Redraw one binary file; the logo when the change is forced (the demo shows it)."""
        present = [path for path in BINARY_PATHS if path in tree]
        if present:
            path = BINARY_PATHS[0] if forced and BINARY_PATHS[0] in tree else self.rng.choice(present)
            tree[path] = _render_binary(path, self.rng)

    def _modify_files(self, tree: dict[str, bytes], count: int, untouched: set[str]) -> None:
        editable = sorted(path for path, content in tree.items() if content and path not in untouched
                          and path not in BINARY_PATHS and path != LARGE_FILE_PATH)
        for path in self.rng.sample(editable, min(count, len(editable))):
            tree[path] = _edited(path, tree[path], self.rng)
        if LARGE_FILE_PATH in tree and self.rng.random() < 0.3:
            tree[LARGE_FILE_PATH] = _edited(LARGE_FILE_PATH, tree[LARGE_FILE_PATH], self.rng)


_FOLLOW_UP_PROMPTS = (
    "Add {subject} endpoints with pagination",
    "Fix validation errors in the {subject} schema",
    "Refactor the {subject} service and add tests",
    "Add filtering by status to {subject}",
    "Improve error handling around {subject}",
)


# --------------------------------------------------------------------------- text editing


def _encoding_of(path: str) -> str:
    return "latin-1" if path == LATIN1_PATH else "utf-8"


def _edited(path: str, content: bytes, rng: random.Random) -> bytes:
    """Edit one to three lines below the first, keeping the file's encoding, line endings and
    presence or absence of a final newline. The bytes always change."""
    edited = _edited_once(path, content, rng)
    while edited == content:
        edited = _edited_once(path, content, rng)
    return edited


def _edited_once(path: str, content: bytes, rng: random.Random) -> bytes:
    encoding = _encoding_of(path)
    text = content.decode(encoding)
    newline = "\r\n" if "\r\n" in text else "\n"
    ends_with_newline = text.endswith(newline)
    lines = text.split(newline)
    if ends_with_newline:
        lines.pop()
    new_line = _line_maker(path)
    extra = rng.choices(("insert", "replace", "delete"), weights=(5, 3, 2), k=rng.randint(0, 1))
    operations = [*extra, "insert"]
    for operation in operations:
        at = rng.randint(1, len(lines))
        if operation == "insert" or at >= len(lines):
            lines.insert(at, new_line(_indent_near(lines, at), rng))
        elif operation == "replace":
            lines[at] = new_line(_indent_near(lines, at), rng)
        elif len(lines) > 2:
            del lines[at]
    return (newline.join(lines) + (newline if ends_with_newline else "")).encode(encoding)


def _indent_near(lines: list[str], at: int) -> str:
    for candidate in (lines[at] if at < len(lines) else "", lines[at - 1]):
        if candidate.strip():
            return candidate[: len(candidate) - len(candidate.lstrip())]
    return ""


def _line_maker(path: str) -> Callable[[str, random.Random], str]:
    if path.endswith(".py"):
        return _python_line
    if path == "requirements.txt":
        return lambda indent, rng: f"{rng.choice(_PACKAGES)}=={rng.randint(0, 3)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    if path == CRLF_PATH:
        return lambda indent, rng: rng.choice((f"REM {_phrase(rng)}", f"set {rng.choice(_WORDS).upper()}_LIMIT={rng.randint(1, 500)}"))
    if path == NO_FINAL_NEWLINE_PATH or path.endswith(".ini"):
        return lambda indent, rng: f"{rng.choice(_WORDS).upper()}_TIMEOUT={rng.randint(1, 120)}"
    if path == LATIN1_PATH:
        return lambda indent, rng: f"{indent}- {_phrase(rng)} ({rng.choice(_LATIN1_WORDS)})"
    if path == UNICODE_NAME_PATH:
        return lambda indent, rng: f"{indent}- {_phrase(rng)} {rng.choice(_UNICODE_WORDS)}"
    return lambda indent, rng: f"{indent}- {_phrase(rng).capitalize()}."


def _python_line(indent: str, rng: random.Random) -> str:
    word, other = rng.choice(_WORDS), rng.choice(_WORDS)
    return indent + rng.choice((
        f"# TODO: {_phrase(rng)}",
        f"logger.debug(\"{word} {other} checked\")",
        f"{word.upper()}_LIMIT = {rng.randint(1, 1000)}",
        f"# {word.capitalize()} {other} handling reviewed",
        f"{word}_{other} = settings.{word}_{other}",
    ))


def _phrase(rng: random.Random) -> str:
    return f"{rng.choice(_VERBS)} the {rng.choice(_WORDS)} {rng.choice(_WORDS)}"


# --------------------------------------------------------------------------- file content


_ENTITIES = [
    "user", "order", "product", "invoice", "customer", "payment", "shipment", "category", "review",
    "cart", "coupon", "address", "warehouse", "supplier", "employee", "department", "ticket",
    "comment", "tag", "subscription", "plan", "report", "notification", "message", "attachment",
    "appointment", "patient", "doctor", "course", "lesson", "student", "enrollment", "vehicle",
    "route", "driver", "booking", "room", "event", "venue", "refund",
]
_WORDS = ("cache", "token", "retry", "status", "limit", "audit", "owner", "price", "batch", "region",
          "quota", "email", "session", "timeout", "filter", "index", "export", "webhook")
_VERBS = ("validate", "cache", "log", "paginate", "normalize", "index", "retry", "sanitize", "document")
_PACKAGES = ("fastapi", "uvicorn", "sqlalchemy", "pydantic", "alembic", "httpx", "python-jose",
             "passlib", "pytest", "psycopg", "redis", "celery", "structlog")
_LATIN1_WORDS = ("café", "naïve", "façade", "señor", "Ærøskøbing", "crème brûlée", "déjà vu", "Zürich",
                 "jalapeño", "garçon")
_UNICODE_WORDS = ("→ ✓", "日本語", "Überblick", "Δ delta", "naïve ☕", "emoji 🚀")
_FIELDS = (
    ("name", "String(120)", "str"), ("title", "String(200)", "str"), ("description", "Text", "str | None"),
    ("status", "String(20)", "str"), ("amount", "Numeric(12, 2)", "float"), ("quantity", "Integer", "int"),
    ("email", "String(255)", "str"), ("phone", "String(40)", "str | None"), ("notes", "Text", "str | None"),
    ("reference", "String(64)", "str"), ("is_active", "Boolean", "bool"), ("priority", "Integer", "int"),
    ("due_date", "DateTime", "datetime | None"), ("currency", "String(3)", "str"), ("score", "Float", "float"),
)


def _plural(entity: str) -> str:
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
        f'    __tablename__ = "{_plural(entity)}"\n\n'
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
    extra = "".join(
        f'\n\n@router.get("/{{{entity}_id}}/{word}")\n'
        f"def {entity}_{word}({entity}_id: int, db: Session = Depends(get_db)) -> dict[str, object]:\n"
        f'    return {{"{entity}_id": {entity}_id, "{word}": service.{word}_of(db, {entity}_id)}}\n'
        for word in rng.sample(_WORDS, rng.randint(0, 3))
    )
    return (
        f'"""HTTP endpoints for {_plural(entity).replace("_", " ")}."""\n'
        "from fastapi import APIRouter, Depends, HTTPException, status\n"
        "from sqlalchemy.orm import Session\n\n"
        "from app.database import get_db\n"
        f"from app.schemas.{entity} import {cls}Create, {cls}Read, {cls}Update\n"
        f"from app.services import {entity}_service as service\n\n"
        f'router = APIRouter(prefix="/{_plural(entity)}", tags=["{_plural(entity)}"])\n\n\n'
        f'@router.get("/", response_model=list[{cls}Read])\n'
        f"def list_{_plural(entity)}(skip: int = 0, limit: int = {rng.choice((20, 50, 100))}, db: Session = Depends(get_db)):\n"
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
        f"{extra}"
    )


def _render_service(entity: str, rng: random.Random) -> str:
    cls = _class_name(entity)
    return (
        f'"""Business rules for {_plural(entity).replace("_", " ")}, kept out of the HTTP layer."""\n'
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
        f'    response = client.get("/{_plural(entity)}/?limit={rng.randint(1, 50)}")\n'
        "    assert response.status_code == 200\n"
        for word in rng.sample(_WORDS, rng.randint(1, 4))
    )
    return (
        f'"""API tests for {_plural(entity).replace("_", " ")}."""\n\n\n'
        f"def test_create_{entity}(client) -> None:\n"
        f'    response = client.post("/{_plural(entity)}/", json={{"name": "sample {rng.randint(1, 99)}"}})\n'
        "    assert response.status_code == 201\n"
        f"{cases}"
    )


def _render_migration(entity: str, revision: str, rng: random.Random) -> str:
    columns = "".join(f'        sa.Column("{name}", sa.{column.split("(")[0]}()),\n'
                      for name, column, _ in _fields(rng))
    return (
        f'"""create {_plural(entity)}\n\nRevision ID: {revision}\n"""\n'
        "from alembic import op\nimport sqlalchemy as sa\n\n"
        f'revision = "{revision}"\n\n\n'
        "def upgrade() -> None:\n"
        "    op.create_table(\n"
        f'        "{_plural(entity)}",\n'
        '        sa.Column("id", sa.Integer(), primary_key=True),\n'
        f"{columns}"
        "    )\n\n\n"
        "def downgrade() -> None:\n"
        f'    op.drop_table("{_plural(entity)}")\n'
    )


_ENTITY_FILES = (
    ("app/models/{entity}.py", _render_model),
    ("app/schemas/{entity}.py", _render_schema),
    ("app/routers/{entities}.py", _render_router),
    ("app/services/{entity}_service.py", _render_service),
    ("tests/test_{entities}.py", _render_test),
)


_FILES_PER_ENTITY = len(_ENTITY_FILES) + 1
"""The entity's files plus its Alembic migration."""


def _render_binary(path: str, rng: random.Random) -> bytes:
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
            f"## {rng.choice(('GET', 'POST', 'PUT', 'DELETE'))} /{_plural(entity)}/{{id}}/{rng.choice(_WORDS)} ({number})\n\n"
            f"{_phrase(rng).capitalize()} for one {entity}. Returns 200 with the {entity} record, 404 when "
            f"it does not exist and 422 when the payload fails validation.\n\n"
            "```json\n"
            f'{{"id": {rng.randint(1, 9999)}, "{rng.choice(_WORDS)}": "{rng.choice(_WORDS)}", "status": "active"}}\n'
            "```\n"
        )
    return "# API reference\n\n" + "\n".join(sections)


def _skeleton(project_name: str, entities: list[str], rng: random.Random, with_large_file: bool,
              oddities: tuple[str, ...]) -> dict[str, bytes]:
    slug = project_name.lower().replace(" ", "-")
    routers = "\n".join(f"app.include_router({_plural(entity)}.router)" for entity in entities)
    texts = {
        EMPTY_PATH: "",
        "app/main.py": (
            f'"""{project_name}: FastAPI application entry point."""\n'
            "from fastapi import FastAPI\n\n"
            f"from app.routers import {', '.join(f'{_plural(entity)}' for entity in entities)}\n\n"
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
                                    for package in _PACKAGES[:8]),
        "README.md": (
            f"# {project_name}\n\nGenerated FastAPI backend.\n\n## Run\n\n"
            "```\npip install -r requirements.txt\nuvicorn app.main:app --reload\n```\n\n## Resources\n\n"
            + "".join(f"- `/{_plural(entity)}`\n" for entity in entities)
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
            f"- {_phrase(rng)} ({word})\n" for word in rng.sample(_LATIN1_WORDS, 4)),
        UNICODE_NAME_PATH: "# Notes ünïcode\n\n" + "".join(f"- {_phrase(rng)} {word}\n"
                                                            for word in rng.sample(_UNICODE_WORDS, 3)),
        SPACE_NAME_PATH: "Release notes\n\n- Initial generated version.\n",
    }
    if with_large_file:
        texts[LARGE_FILE_PATH] = _render_large_reference(entities, rng)
    tree = {path: text.encode(_encoding_of(path)) for path, text in texts.items()
            if path not in ODDITY_PATHS or path in oddities}
    for path in BINARY_PATHS:
        if path in oddities:
            tree[path] = _render_binary(path, rng)
    return tree


_SKELETON_PATHS = frozenset((
    EMPTY_PATH, "app/main.py", "app/config.py", "app/database.py", "app/models/__init__.py",
    "tests/conftest.py", "requirements.txt", "README.md", "alembic.ini", "alembic/env.py",
    NO_FINAL_NEWLINE_PATH, LARGE_FILE_PATH, *ODDITY_PATHS,
))
