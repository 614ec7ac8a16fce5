"""Which projects exist, the edge-case role each plays and which generations each has (status
and what is on disk), plus the deterministic ids and the epoch all timestamps count from."""
from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from storage_migrator.demo.sizes import SampleSize

_ID_NAMESPACE = uuid.UUID("6f1d3c1e-8a52-4f7e-9d0b-5b8f2a7c4e11")
EPOCH = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)


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
class ProjectBlueprint:
    """One project of the sample before anything is rendered: its position, id, role and the
    kind of each of its generations, in code-history order."""

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
    fixed_roles = {0: ProjectRole.DEMO, 1: ProjectRole.TIE_MISSING_PENDING, 2: ProjectRole.PARTIAL_PROCESSING}
    if index in fixed_roles:
        return fixed_roles[index]
    if index == projects - 2:
        return ProjectRole.NO_COMPLETED
    if index == projects - 1:
        return ProjectRole.NO_GENERATIONS
    return ProjectRole.REGULAR


def plan_projects(size: SampleSize, seed: int) -> list[ProjectBlueprint]:
    roles = [_role_of(index, size.projects) for index in range(size.projects)]
    counts = _generation_counts(roles, size, seed)
    blueprints = []
    for index, (role, count) in enumerate(zip(roles, counts, strict=True)):
        rng = random.Random(f"plan:{seed}:{index}")
        kinds, tie_at = _generation_kinds(role, count, rng)
        blueprints.append(ProjectBlueprint(index, sample_uuid(seed, "project", index), role, kinds, tie_at))
    return blueprints


def _generation_counts(roles: list[ProjectRole], size: SampleSize, seed: int) -> list[int]:
    """Spread ``projects * generations_per_project`` over the projects that evolve, varying each
    by up to a third in zero-sum pairs, then lift the few that need more for their edge cases."""
    fixed_counts = {ProjectRole.NO_COMPLETED: 2, ProjectRole.NO_GENERATIONS: 0}
    evolving = [index for index, role in enumerate(roles) if role not in fixed_counts]
    remaining = max(len(evolving), size.projects * size.generations_per_project - sum(
        fixed_counts[role] for role in roles if role in fixed_counts))
    counts = [fixed_counts.get(role, 0) for role in roles]
    for position, index in enumerate(evolving):
        counts[index] = remaining // len(evolving) + (1 if position < remaining % len(evolving) else 0)
    rng = random.Random(f"counts:{seed}")
    for first, second in zip(evolving[0::2], evolving[1::2], strict=False):
        delta = rng.randint(0, min(counts[first], counts[second]) // 3)
        counts[first] += delta
        counts[second] -= delta
    return [max(count, _MIN_GENERATIONS.get(role, 0)) for count, role in zip(counts, roles, strict=True)]


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
        start = (completed, GenerationKind.FAILED_PARTIAL_FOLDER)
        return (*start, *(completed,) * (count - len(start) - 1), GenerationKind.PROCESSING), None
    return tuple(_regular_kind(rng) for _ in range(count)), None


def _regular_kind(rng: random.Random) -> GenerationKind:
    draw = rng.random()
    if draw < 0.06:
        return GenerationKind.FAILED_NO_FOLDER
    if draw < 0.08:
        return GenerationKind.FAILED_PARTIAL_FOLDER
    return GenerationKind.COMPLETED


def sample_uuid(seed: int, *parts: object) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(map(str, (seed, *parts)))))
