"""Demo and test data: ``create_demo_installation`` behind ``storage-migrate demo-data`` and the
deterministic sample-data generator it uses, which the tests and the benchmark build on too."""
from __future__ import annotations

from storage_migrator.demo.generate import SampleInstallation, generate_installation
from storage_migrator.demo.install import create_demo_installation
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
)
from storage_migrator.demo.sizes import MIN_PROJECTS, SIZE_MINIMUMS, SampleSize

__all__ = [
    "BINARY_PATHS",
    "CRLF_PATH",
    "EMPTY_PATH",
    "LARGE_FILE_PATH",
    "LATIN1_PATH",
    "MIN_PROJECTS",
    "NO_FINAL_NEWLINE_PATH",
    "ODDITY_PATHS",
    "SIZE_MINIMUMS",
    "SPACE_NAME_PATH",
    "UNICODE_NAME_PATH",
    "SampleInstallation",
    "SampleSize",
    "create_demo_installation",
    "generate_installation",
]
