"""How big an installation to generate: ``SampleSize``, with the floor on projects that every
edge case needs and ``scaled()`` for a target number of generations and files."""
from __future__ import annotations

from dataclasses import dataclass

MIN_PROJECTS = 5
"""Demo, two edge-case projects, one project without a completed generation, one without any."""
MIN_GENERATIONS_PER_PROJECT = 1
MIN_FILES_PER_GENERATION = 1
SIZE_MINIMUMS = {
    "projects": (MIN_PROJECTS, "the sample has one project per edge case"),
    "generations_per_project": (MIN_GENERATIONS_PER_PROJECT, "a project needs a generation to evolve"),
    "files_per_generation": (MIN_FILES_PER_GENERATION, "a generation needs a file"),
}
"""Per ``SampleSize`` field: the smallest value the generator honours, and why."""

_GENERATIONS_PER_PROJECT_FOR_SCALE = 8
_SHARE_OF_FILES_ON_DISK = 0.95
"""About 5% of the files generated never reach disk (failed, pending, missing-folder generations)."""


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
        if self.generations_per_project < MIN_GENERATIONS_PER_PROJECT or self.files_per_generation < MIN_FILES_PER_GENERATION:
            raise ValueError(f"SampleSize.generations_per_project must be at least {MIN_GENERATIONS_PER_PROJECT} and "
                             f"files_per_generation at least {MIN_FILES_PER_GENERATION}")

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


DEFAULT_SIZE = SampleSize()
"""The size ``generate_installation`` uses when given none."""
