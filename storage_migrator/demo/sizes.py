"""How big an installation to generate: ``SampleSize``, with the floor on projects that every
edge case needs and ``scaled()`` for a target number of generations and files."""
from __future__ import annotations

from dataclasses import dataclass

MIN_PROJECTS = 5
"""Demo, two edge-case projects, one project without a completed generation, one without any."""

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


DEFAULT_SIZE = SampleSize()
"""The size ``generate_installation`` uses when given none."""
