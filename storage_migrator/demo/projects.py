"""Streams one project's generations in insertion order: ids, created_at, the code tree each
produced and its row, with only one project's trees in memory at a time."""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage_migrator.demo.blueprint import EPOCH, GenerationKind, ProjectBlueprint, ProjectRole, sample_uuid
from storage_migrator.demo.codebase import DEMO_SCHEDULE, CodeBase
from storage_migrator.demo.paths import ODDITY_PATHS
from storage_migrator.demo.rows import DOMAINS, PROJECT_NAMES, build_generation_row, build_project_row
from storage_migrator.demo.sizes import SampleSize
from storage_migrator.demo.vocabulary import ENTITIES


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


def build_project(blueprint: ProjectBlueprint, seed: int, size: SampleSize, users: list[dict[str, object]],
                  organizations: list[dict[str, object]], store_output_files: bool) -> GeneratedProject:
    rng = random.Random(f"project:{seed}:{blueprint.index}")
    name = f"{PROJECT_NAMES[blueprint.index % len(PROJECT_NAMES)]}" + (
        f" {blueprint.index // len(PROJECT_NAMES) + 1}" if blueprint.index >= len(PROJECT_NAMES) else "")
    domain = DOMAINS[blueprint.index % len(DOMAINS)]
    entities = rng.sample(ENTITIES, len(ENTITIES))
    created_at = EPOCH + timedelta(hours=7 * blueprint.index, minutes=rng.randint(0, 59))
    project_row = build_project_row(blueprint, name, domain, entities, created_at, users, organizations, rng)
    return GeneratedProject(project_row, _project_generations(blueprint, seed, size, project_row, entities, rng,
                                                              store_output_files))


def _project_generations(blueprint: ProjectBlueprint, seed: int, size: SampleSize,
                         project_row: dict[str, object], entities: list[str], rng: random.Random,
                         store_output_files: bool) -> Iterator[GeneratedGeneration]:
    full_oddities = blueprint.role is not ProjectRole.REGULAR
    code_base = CodeBase(str(project_row["name"]), entities, size.files_per_generation, rng)
    code_base.start(with_large_file=blueprint.role is ProjectRole.DEMO or rng.random() < 0.2,
                    oddities=ODDITY_PATHS if full_oddities else tuple(p for p in ODDITY_PATHS if rng.random() < 0.7))
    ids = [sample_uuid(seed, "generation", blueprint.index, position) for position in range(len(blueprint.kinds))]
    if blueprint.tie_at is not None:
        # Code history follows id order (the migration's order), insertion goes the other way.
        pair = sorted(ids[blueprint.tie_at - 1:blueprint.tie_at + 1])
        ids[blueprint.tie_at - 1:blueprint.tie_at + 1] = pair
    created_at = project_row["created_at"]
    assert isinstance(created_at, datetime)
    held_back: list[GeneratedGeneration] = []
    for position, kind in enumerate(blueprint.kinds):
        if position > 0 and position != blueprint.tie_at:
            created_at += timedelta(minutes=rng.randint(5, 3 * 24 * 60))
        tree, prompt = _next_tree(code_base, blueprint, position, kind, rng)
        tied = blueprint.tie_at is not None and position in (blueprint.tie_at - 1, blueprint.tie_at)
        generation = GeneratedGeneration(
            ids[position], kind, created_at, tree,
            build_generation_row(ids[position], project_row, kind, created_at, prompt, tree, store_output_files, rng),
            tied,
        )
        if tied and blueprint.tie_at is not None and position == blueprint.tie_at - 1:
            held_back.append(generation)
            continue
        yield generation
        yield from held_back
        held_back.clear()


def _next_tree(code_base: CodeBase, blueprint: ProjectBlueprint, position: int, kind: GenerationKind,
               rng: random.Random) -> tuple[dict[str, bytes] | None, str]:
    if kind is GenerationKind.PENDING:
        return None, f"Add {rng.choice(code_base.entities)} reporting endpoints"
    if position == 0 or not code_base.has_history:
        tree, prompt = code_base.tree, f"Create a FastAPI backend for {code_base.project_name}"
    else:
        forced = DEMO_SCHEDULE.get(position, frozenset()) if blueprint.role is ProjectRole.DEMO else frozenset()
        tree, prompt = code_base.evolved(forced)
    if kind.builds_on_tree:
        code_base.accept(tree)
    return tree, prompt
