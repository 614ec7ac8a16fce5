"""Demo and test data: ``create_demo_installation`` behind ``storage-migrate demo-data`` and the
deterministic sample-data generator it uses, which the tests and the benchmark build on too."""
from __future__ import annotations

from storage_migrator.demo.generate import SampleInstallation, generate_installation
from storage_migrator.demo.install import create_demo_installation
from storage_migrator.demo.sizes import MIN_PROJECTS, SIZE_MINIMUMS, SampleSize

__all__ = [
    "MIN_PROJECTS",
    "SIZE_MINIMUMS",
    "SampleInstallation",
    "SampleSize",
    "create_demo_installation",
    "generate_installation",
]
