"""Real code history for the benchmark, fetched once as sdists (never built, only unpacked) and laid
out as a LEGACY installation with one project per package and one completed generation per release.

Three pinned corpora: ``app``, shaped like the application's own data (many projects, each a long
run of small generations of tens of files): 24 consecutive releases of each of dozens of small
pure-Python packages; ``real``, 24 consecutive releases of five popular Python packages (many
short files, about 370 a generation); and ``long``, 24 consecutive patch releases of SQLAlchemy
(modules of thousands of lines, small edits between versions).

    .venv/bin/python benchmarks/real_corpus.py [--corpus app|real|long|all]   # fetch into benchmarks/.cache/, print sizes
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import tarfile
import tempfile
import threading
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION
from storage_migrator.db.tables import current_revision

CACHE = Path(__file__).resolve().parent / ".cache"
RELEASES: dict[str, tuple[str, ...]] = {
    # Pinned, not "the latest 24": the corpus must be the same bytes on every machine and every
    # day. Each line is 24 consecutive non-pre-releases in version order (yanked ones skipped by
    # the index). starlette brings a uv.lock and PNGs, fastapi long modules and a large test
    # tree, pydantic a long changelog, requests and rich many small edits.
    "fastapi": ("0.156.7", "0.156.8", "0.157.0", "0.158.0", "0.158.1", "0.158.2", "0.159.0", "0.159.1",
                "0.160.0", "0.161.0", "0.161.1", "0.162.0", "0.162.1", "0.162.2", "0.162.3", "0.162.4",
                "0.162.5", "0.162.6", "0.162.7", "0.163.0", "0.163.1", "0.163.2", "0.164.0", "0.165.0"),
    "starlette": ("0.49.0", "0.49.1", "0.49.2", "0.49.3", "0.50.0", "0.51.0", "0.52.0", "0.52.1",
                  "1.0.0", "1.0.1", "1.1.0", "1.2.0", "1.2.1", "1.3.0", "1.3.1", "1.4.0",
                  "1.4.1", "1.5.0", "1.5.1", "1.6.0", "1.7.0", "1.8.0", "1.9.0", "1.10.0"),
    "pydantic": ("2.11.3", "2.11.4", "2.11.5", "2.11.6", "2.11.7", "2.11.8", "2.11.9", "2.11.10",
                 "2.12.0", "2.12.2", "2.12.3", "2.12.4", "2.12.5", "2.13.0", "2.13.1", "2.13.2",
                 "2.13.3", "2.13.4", "2.13.5", "2.14.0", "2.14.1", "2.14.2", "2.14.3", "2.14.4"),
    "requests": ("2.21.0", "2.22.0", "2.23.0", "2.24.0", "2.25.0", "2.25.1", "2.26.0", "2.27.0",
                 "2.27.1", "2.28.0", "2.28.1", "2.28.2", "2.29.0", "2.30.0", "2.31.0", "2.32.2",
                 "2.32.3", "2.32.4", "2.32.5", "2.33.0", "2.33.1", "2.34.0", "2.34.1", "2.34.2"),
    "rich": ("13.4.2", "13.5.0", "13.5.1", "13.5.2", "13.5.3", "13.6.0", "13.7.0", "13.7.1",
             "13.8.0", "13.8.1", "13.9.0", "13.9.1", "13.9.2", "13.9.3", "13.9.4", "14.0.0",
             "14.1.0", "14.2.0", "14.3.0", "14.3.1", "14.3.2", "14.3.3", "14.3.4", "15.0.0"),
}
LONG_RELEASES: dict[str, tuple[str, ...]] = {
    # The opposite shape: one project whose modules run to thousands of lines (sql/compiler.py,
    # sql/selectable.py, test/sql/test_compiler.py: 7,000 to 8,500 each) and whose patch releases
    # edit a few lines of some of them. 2.0.35 .. 2.0.58 are the newest 24 of the 2.0 line, all
    # patch releases, none yanked, no pre-release among them: every pair is one small step. Pinned
    # for the same reason as RELEASES. The sdist also ships the built HTML docs, long pages that
    # change by a few lines per release.
    "sqlalchemy": ("2.0.35", "2.0.36", "2.0.37", "2.0.38", "2.0.39", "2.0.40", "2.0.41", "2.0.42",
                   "2.0.43", "2.0.44", "2.0.45", "2.0.46", "2.0.47", "2.0.48", "2.0.49", "2.0.50",
                   "2.0.51", "2.0.52", "2.0.53", "2.0.54", "2.0.55", "2.0.56", "2.0.57", "2.0.58"),
}
APP_RELEASES: dict[str, tuple[str, ...]] = {
    # The application's shape: many projects, each a long run of small generations (tens of files,
    # 30 to 150 here). Small, mostly pure-Python packages, each the newest 24 non-pre-release
    # versions with an sdist on the day they were pinned (yanked ones skipped by the index), oldest
    # first; pinned for the same reason as RELEASES. Left out for not fitting: fewer than 30 files
    # in a release at one end of the range (asgiref, croniter, cloudpickle, colorama, idna,
    # pathspec, portalocker, responses, semver, platformdirs, pytest-mock, cachecontrol, rich-click)
    # or in the middle of it (arrow 0.15.3: 20; packaging 20.5 and 20.7: 14 and 17; build: 9 to 17
    # in eight releases; freezegun: 26 to 29 in three; flake8's package folder: 27 in two; execnet
    # 2.0.0: 23); more than 150 with a package folder of fewer than 30 (tomlkit, pyparsing, wcwidth,
    # pip-tools, cattrs) or in one release (pytest-cov 2.7.0: 208); a release whose sdist is
    # missing, or whose metadata no longer builds or names another version (more-itertools,
    # sqlparse, filelock, flask-cors 2.1.1, flask-migrate 2.5.0, pipdeptree 4.2.16, flit-core 2.0.2,
    # jsonpickle 4.1.3; setuptools-scm 10.0.2 and 10.0.3, whose build backend lies outside the
    # sdist).
    "anyio": ("4.1.0", "4.2.0", "4.3.0", "4.4.0", "4.5.0", "4.5.1", "4.5.2", "4.6.0", "4.6.1",
              "4.6.2.post1", "4.7.0", "4.8.0", "4.9.0", "4.10.0", "4.11.0", "4.12.0", "4.12.1",
              "4.13.0", "4.14.0", "4.14.1", "4.14.2", "4.15.0", "4.15.1", "4.16.0"),
    "attrs": ("17.4.0", "18.1.0", "18.2.0", "19.1.0", "19.2.0", "19.3.0", "20.1.0", "20.2.0", "20.3.0",
              "21.2.0", "21.3.0", "21.4.0", "22.1.0", "22.2.0", "23.1.0", "23.2.0", "24.1.0", "24.2.0",
              "24.3.0", "25.1.0", "25.2.0", "25.3.0", "25.4.0", "26.1.0"),
    "boltons": ("17.0.0", "17.1.0", "17.2.0", "18.0.0", "18.0.1", "19.0.0", "19.0.1", "19.1.0",
                "19.2.0", "19.3.0", "20.0.0", "20.1.0", "20.2.0", "20.2.1", "21.0.0", "23.0.0",
                "23.1.0", "23.1.1", "24.0.0", "24.1.0", "25.0.0", "26.0.0", "26.1.0", "26.2.0"),
    "cachetools": ("7.1.2", "7.1.3", "7.1.4", "7.1.5", "7.1.6", "7.1.7", "7.1.8", "7.2.0", "7.2.1",
                   "7.2.2", "7.2.3", "7.2.4", "7.2.5", "7.2.6", "7.2.7", "7.2.8", "7.3.0", "7.3.1",
                   "7.3.2", "7.3.3", "8.0.0", "8.0.1", "8.0.2", "8.0.3"),
    "click": ("8.0.1", "8.0.2", "8.0.3", "8.0.4", "8.1.0", "8.1.1", "8.1.2", "8.1.3", "8.1.4", "8.1.5",
              "8.1.6", "8.1.7", "8.1.8", "8.2.0", "8.2.1", "8.3.0", "8.3.1", "8.3.2", "8.3.3", "8.4.0",
              "8.4.1", "8.4.2", "8.5.0", "8.5.1"),
    "hatchling": ("1.18.0", "1.19.0", "1.20.0", "1.21.0", "1.21.1", "1.22.2", "1.22.3", "1.22.4",
                  "1.22.5", "1.23.0", "1.24.0", "1.24.1", "1.24.2", "1.25.0", "1.26.3", "1.27.0",
                  "1.28.0", "1.29.0", "1.30.1", "1.31.0", "1.32.0", "1.32.3", "1.32.4", "1.33.0"),
    "httpcore": ("0.14.4", "0.14.5", "0.14.6", "0.14.7", "0.15.0", "0.16.0", "0.16.1", "0.16.2",
                 "0.16.3", "0.17.0", "0.17.1", "0.17.2", "0.17.3", "0.18.0", "1.0.0", "1.0.1", "1.0.2",
                 "1.0.3", "1.0.4", "1.0.5", "1.0.6", "1.0.7", "1.0.8", "1.0.9"),
    "httpx": ("0.18.2", "0.19.0", "0.20.0", "0.21.0", "0.21.1", "0.21.2", "0.21.3", "0.22.0", "0.23.0",
              "0.23.1", "0.23.2", "0.23.3", "0.24.0", "0.24.1", "0.25.0", "0.25.1", "0.25.2", "0.26.0",
              "0.27.0", "0.27.1", "0.27.2", "0.28.0", "0.28.1", "0.29.0"),
    "humanfriendly": ("4.12.1", "4.13", "4.14", "4.15", "4.15.1", "4.16", "4.16.1", "4.17", "4.18", "5.0",
                      "6.0", "6.1", "7.0", "7.1", "7.1.1", "7.2", "7.3", "8.0", "8.1", "8.2", "9.0", "9.1",
                      "9.2", "10.0"),
    "humanize": ("4.0.0", "4.1.0", "4.2.0", "4.2.1", "4.2.2", "4.2.3", "4.3.0", "4.4.0", "4.5.0",
                 "4.6.0", "4.7.0", "4.8.0", "4.9.0", "4.10.0", "4.11.0", "4.12.0", "4.12.1", "4.12.2",
                 "4.12.3", "4.13.0", "4.14.0", "4.15.0", "4.16.0", "4.17.0"),
    "importlib-metadata": ("7.0.0", "7.0.1", "7.0.2", "7.1.0", "7.2.0", "7.2.1", "8.0.0", "8.1.0",
                           "8.2.0", "8.3.0", "8.4.0", "8.5.0", "8.6.0", "8.6.1", "8.7.0", "8.7.1",
                           "8.8.0", "8.9.0", "9.0.0", "9.0.1", "9.1.0", "10.0.0", "10.1.0", "10.2.0"),
    "importlib-resources": ("5.11.1", "5.12.0", "5.13.0", "6.0.0", "6.0.1", "6.1.0", "6.1.1", "6.1.2",
                            "6.1.3", "6.2.0", "6.3.0", "6.3.1", "6.3.2", "6.4.0", "6.4.1", "6.4.2",
                            "6.4.3", "6.4.4", "6.4.5", "6.5.0", "6.5.1", "6.5.2", "7.0.0", "7.1.0"),
    "inflect": ("5.3.0", "5.4.0", "5.5.1", "5.5.2", "5.6.0", "5.6.1", "5.6.2", "6.0.0", "6.0.1",
                "6.0.2", "6.0.3", "6.0.4", "6.0.5", "6.1.0", "6.1.1", "6.2.0", "7.0.0", "7.2.0",
                "7.2.1", "7.3.0", "7.3.1", "7.4.0", "7.5.0", "7.6.0"),
    "keyring": ("23.9.3", "23.10.0", "23.11.0", "23.12.1", "23.13.0", "23.13.1", "24.0.0", "24.0.1",
                "24.1.0", "24.1.1", "24.2.0", "24.3.0", "24.3.1", "25.0.0", "25.0.1", "25.1.0",
                "25.2.0", "25.2.1", "25.3.0", "25.4.0", "25.4.1", "25.5.0", "25.6.0", "25.7.0"),
    "markdown": ("3.3.7", "3.4", "3.4.1", "3.4.2", "3.4.3", "3.4.4", "3.5", "3.5.1", "3.5.2", "3.6",
                 "3.7", "3.8", "3.8.1", "3.8.2", "3.9", "3.10", "3.10.1", "3.10.2", "3.10.3", "3.11",
                 "3.11.1", "3.11.2", "3.11.3", "3.11.4"),
    "markdown-it-py": ("0.4.9", "0.5.0", "0.5.1", "0.5.2", "0.5.3", "0.5.4", "0.5.5", "0.5.6", "0.5.7",
                       "0.5.8", "0.6.0", "0.6.1", "0.6.2", "1.0.0", "1.1.0", "2.0.0", "2.0.1", "2.1.0",
                       "2.2.0", "3.0.0", "4.0.0", "4.1.0", "4.2.0", "4.3.0"),
    "marshmallow": ("3.23.1", "3.23.2", "3.23.3", "3.24.0", "3.24.1", "3.24.2", "3.25.0", "3.25.1",
                    "3.26.0", "3.26.1", "3.26.2", "4.0.0", "4.0.1", "4.1.0", "4.1.1", "4.1.2", "4.2.0",
                    "4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.3.0", "4.3.1", "4.4.0"),
    "mistune": ("0.8.4", "2.0.0", "2.0.1", "2.0.2", "2.0.3", "2.0.4", "2.0.5", "2.1.0", "3.0.0",
                "3.0.1", "3.0.2", "3.1.0", "3.1.1", "3.1.2", "3.1.3", "3.1.4", "3.2.0", "3.2.1",
                "3.3.0", "3.3.1", "3.3.2", "3.3.3", "3.3.4", "3.4.0"),
    "natsort": ("5.2.0", "5.3.0", "5.3.1", "5.3.2", "5.3.3", "5.4.0", "5.4.1", "5.5.0", "6.0.0",
                "6.1.0", "6.2.0", "6.2.1", "7.0.0", "7.0.1", "7.1.0", "7.1.1", "8.0.0", "8.0.1",
                "8.0.2", "8.1.0", "8.2.0", "8.3.0", "8.3.1", "8.4.0"),
    "nox": ("2020.5.24", "2020.8.22", "2020.12.31", "2021.6.6", "2021.6.12", "2021.10.1", "2022.1.7",
            "2022.8.7", "2022.11.21", "2023.4.22", "2024.3.2", "2024.4.15", "2024.10.9", "2025.2.9",
            "2025.5.1", "2025.10.14", "2025.10.16", "2025.11.12", "2026.2.9", "2026.4.10", "2026.7.11",
            "2026.8.10", "2026.8.17", "2026.10.20"),
    "pre-commit": ("3.3.0", "3.3.1", "3.3.2", "3.3.3", "3.4.0", "3.5.0", "3.6.0", "3.6.1", "3.6.2",
                   "3.7.0", "3.7.1", "3.8.0", "4.0.0", "4.0.1", "4.1.0", "4.2.0", "4.3.0", "4.4.0",
                   "4.5.0", "4.5.1", "4.6.0", "4.6.1", "4.6.2", "4.7.0"),
    "pydantic-settings": ("2.5.1", "2.5.2", "2.6.0", "2.6.1", "2.7.0", "2.7.1", "2.8.0", "2.8.1",
                          "2.9.0", "2.9.1", "2.10.0", "2.10.1", "2.11.0", "2.12.0", "2.13.0", "2.13.1",
                          "2.14.0", "2.14.1", "2.14.2", "2.15.0", "2.16.0", "2.16.1", "2.16.2",
                          "2.16.3"),
    "pyflakes": ("1.4.0", "1.5.0", "1.6.0", "2.0.0", "2.1.0", "2.1.1", "2.2.0", "2.3.0", "2.3.1",
                 "2.4.0", "2.5.0", "3.0.0", "3.0.1", "3.1.0", "3.2.0", "3.3.0", "3.3.1", "3.3.2",
                 "3.4.0", "4.0.0", "4.0.1", "4.0.2", "4.0.3", "4.1.0"),
    "pyjwt": ("1.6.3", "1.6.4", "1.7.0", "1.7.1", "2.0.0", "2.0.1", "2.1.0", "2.2.0", "2.3.0", "2.4.0",
              "2.5.0", "2.6.0", "2.7.0", "2.8.0", "2.9.0", "2.10.0", "2.10.1", "2.11.0", "2.12.0",
              "2.12.1", "2.13.0", "2.14.0", "2.15.0", "2.15.1"),
    "pytest-asyncio": ("0.23.1", "0.23.2", "0.23.3", "0.23.4", "0.23.5", "0.23.5.post1", "0.23.6",
                       "0.23.7", "0.23.8", "0.24.0", "0.25.0", "0.25.1", "0.25.2", "0.25.3", "0.26.0",
                       "1.0.0", "1.1.0", "1.1.1", "1.2.0", "1.3.0", "1.4.0", "1.4.1", "1.4.1.post1",
                       "1.5.0"),
    "pytest-xdist": ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "2.0.0", "2.1.0",
                     "2.2.0", "2.2.1", "2.3.0", "2.4.0", "2.5.0", "3.0.2", "3.1.0", "3.2.0", "3.2.1",
                     "3.3.0", "3.3.1", "3.4.0", "3.5.0", "3.6.1", "3.7.0", "3.8.0"),
    "python-dotenv": ("0.11.0", "0.12.0", "0.13.0", "0.14.0", "0.15.0", "0.16.0", "0.17.0", "0.17.1",
                      "0.18.0", "0.19.0", "0.19.1", "0.19.2", "0.20.0", "0.21.0", "0.21.1", "1.0.0",
                      "1.0.1", "1.1.0", "1.1.1", "1.2.0", "1.2.1", "1.2.2", "1.2.3", "1.2.4"),
    "python-multipart": ("0.0.9", "0.0.10", "0.0.11", "0.0.12", "0.0.15", "0.0.16", "0.0.17", "0.0.18",
                         "0.0.19", "0.0.20", "0.0.21", "0.0.22", "0.0.23", "0.0.24", "0.0.25", "0.0.26",
                         "0.0.27", "0.0.28", "0.0.29", "0.0.30", "0.0.31", "0.0.32", "0.0.33",
                         "0.0.34"),
    "simplejson": ("3.15.0", "3.16.0", "3.17.0", "3.17.2", "3.17.3", "3.17.4", "3.17.5", "3.17.6",
                   "3.18.0", "3.18.1", "3.18.2", "3.18.3", "3.18.4", "3.19.1", "3.19.2", "3.19.3",
                   "3.20.1", "3.20.2", "4.0.1", "4.1.0", "4.1.1", "4.1.2", "4.2.0", "4.3.0"),
    "soupsieve": ("2.4", "2.4.1", "2.5", "2.6", "2.7", "2.8", "2.8.1", "2.8.2", "2.8.3", "2.8.4", "2.9",
                  "2.9.1", "2.9.2", "2.10", "3.0.2", "3.0.3", "3.0.4", "4.0", "4.0.1", "4.1", "4.1.1",
                  "4.1.2", "4.1.3", "4.1.4"),
    "structlog": ("19.2.0", "20.1.0", "20.2.0", "21.1.0", "21.2.0", "21.3.0", "21.4.0", "21.5.0",
                  "22.1.0", "22.2.0", "22.3.0", "23.1.0", "23.2.0", "23.3.0", "24.1.0", "24.2.0",
                  "24.3.0", "24.4.0", "25.1.0", "25.2.0", "25.3.0", "25.4.0", "25.5.0", "26.1.0"),
    "tenacity": ("5.1.5", "6.0.0", "6.1.0", "6.2.0", "6.3.0", "6.3.1", "7.0.0", "8.0.0", "8.0.1",
                 "8.1.0", "8.2.0", "8.2.1", "8.2.2", "8.2.3", "8.3.0", "8.4.0", "8.4.1", "8.4.2",
                 "8.5.0", "9.0.0", "9.1.2", "9.1.3", "9.1.4", "9.2.1"),
    "tqdm": ("4.64.1", "4.65.0", "4.65.1", "4.65.2", "4.66.0", "4.66.1", "4.66.2", "4.66.3", "4.66.4",
             "4.66.5", "4.66.6", "4.67.0", "4.67.1", "4.67.2", "4.67.3", "4.68.0", "4.68.1", "4.68.2",
             "4.68.3", "4.68.4", "4.69.0", "4.69.1", "4.70.0", "4.70.1"),
    "twine": ("2.0.0", "3.0.0", "3.1.0", "3.1.1", "3.2.0", "3.3.0", "3.4.0", "3.4.1", "3.4.2", "3.5.0",
              "3.6.0", "3.7.0", "3.7.1", "3.8.0", "4.0.0", "4.0.1", "4.0.2", "5.0.0", "5.1.1", "6.0.0",
              "6.0.1", "6.1.0", "6.2.0", "7.0.0"),
    "typeguard": ("3.0.0", "3.0.1", "3.0.2", "4.0.0", "4.0.1", "4.1.0", "4.1.1", "4.1.2", "4.1.3",
                  "4.1.4", "4.1.5", "4.2.0", "4.2.1", "4.3.0", "4.4.0", "4.4.1", "4.4.2", "4.4.3",
                  "4.4.4", "4.5.0", "4.5.1", "4.5.2", "4.6.0", "4.6.1"),
    "uvicorn": ("0.38.0", "0.39.0", "0.40.0", "0.41.0", "0.42.0", "0.43.0", "0.44.0", "0.45.0",
                "0.46.0", "0.47.0", "0.48.0", "0.49.0", "0.50.0", "0.50.1", "0.50.2", "0.51.0",
                "0.52.0", "0.52.1", "0.52.2", "0.52.3", "0.52.4", "0.53.0", "0.54.0", "0.55.0"),
    "validators": ("0.20.0", "0.21.0", "0.21.1", "0.21.2", "0.22.0", "0.23.0", "0.23.1", "0.23.2",
                   "0.24.0", "0.25.0", "0.26.0", "0.27.0", "0.28.0", "0.28.1", "0.28.2", "0.28.3",
                   "0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0", "0.34.0", "0.35.0", "0.36.0"),
    "watchdog": ("2.1.2", "2.1.3", "2.1.4", "2.1.5", "2.1.6", "2.1.7", "2.1.8", "2.1.9", "2.2.0", "2.2.1",
                 "2.3.0", "2.3.1", "3.0.0", "4.0.0", "4.0.1", "4.0.2", "5.0.0", "5.0.1", "5.0.2", "5.0.3",
                 "6.0.0", "7.0.0", "7.1.0", "7.1.1"),
    "wheel": ("0.35.1", "0.36.0", "0.36.1", "0.36.2", "0.37.0", "0.37.1", "0.38.1", "0.38.2", "0.38.3",
              "0.38.4", "0.40.0", "0.41.0", "0.41.1", "0.41.2", "0.41.3", "0.42.0", "0.43.0", "0.44.0",
              "0.45.0", "0.45.1", "0.46.2", "0.46.3", "0.47.0", "0.48.0"),
    "zipp": ("3.13.0", "3.14.0", "3.15.0", "3.16.0", "3.16.1", "3.16.2", "3.17.0", "3.18.0", "3.18.1",
             "3.18.2", "3.19.0", "3.19.1", "3.19.2", "3.19.3", "3.20.0", "3.20.1", "3.20.2", "3.21.0",
             "3.22.0", "3.23.0", "3.23.1", "4.1.0", "4.1.1", "4.1.2"),
}
APP_PACKAGE_FOLDERS: dict[str, tuple[str, ...]] = {
    # sdists of more than 150 files (docs, tests): the generation is the package alone.
    "anyio": ("src/anyio",),
    "markdown": ("markdown",),
}

_ID_NAMESPACE = uuid.UUID("0c9e6a57-3f0b-4d43-9a41-7d2f1b5e8c60")
_EPOCH = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)
_NAMED_PACKAGES = 8
"""A corpus of more packages than this is described by their count, not their names."""
_DOWNLOAD_JOBS = 8
"""Downloads wait on the network, not on the machine: the app corpus is nearly a thousand sdists."""


@dataclass(frozen=True)
class Release:
    package: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.package}-{self.version}"


@dataclass(frozen=True)
class ReleaseCorpus:
    """One pinned release history: one project per package, one generation per version.

    ``name`` is what ``--corpus`` says; ``title`` heads the benchmark's description of it.
    """

    name: str
    title: str
    releases: Mapping[str, tuple[str, ...]] = field(hash=False)
    package_folders: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """For a package whose whole sdist is too big for the corpus's shape: the folders (relative to
    the unpacked sdist, first one present wins) whose content alone is each generation."""
    files_per_generation: tuple[int, int] | None = None
    """The fewest and most files one generation may hold (None: any): a pin that breaks the
    corpus's shape fails the benchmark rather than quietly measuring another shape."""

    def generation_folder(self, release: Release, tree: Path) -> Path:
        """What one release's generation holds: its unpacked sdist, or only its package folder."""
        candidates = self.package_folders.get(release.package)
        if not candidates:
            return tree
        for candidate in candidates:
            if (tree / candidate).is_dir():
                return tree / candidate
        raise ValueError(f"{release.label}: none of {', '.join(candidates)} in its sdist")

    def all_releases(self) -> list[Release]:
        return [Release(package, version) for package, versions in self.releases.items() for version in versions]

    def versions_per_project(self) -> int:
        return min(len(versions) for versions in self.releases.values())


APP = ReleaseCorpus("app", "application-shaped (small packages, many releases)", APP_RELEASES, APP_PACKAGE_FOLDERS,
                    files_per_generation=(30, 150))
REAL = ReleaseCorpus("real", "real code history", RELEASES)
LONG = ReleaseCorpus("long", "long files, small edits", LONG_RELEASES)
CORPORA: dict[str, ReleaseCorpus] = {corpus.name: corpus for corpus in (APP, REAL, LONG)}


@dataclass(frozen=True)
class LineLengths:
    """Lines per text file over every release: how long the files a line diff walks through are."""

    median: int
    longest: int
    longest_file: str

    def describe(self) -> str:
        return (f"file lengths: median {self.median:,} lines, longest {self.longest:,} lines "
                f"({self.longest_file}), text files only")


@dataclass(frozen=True)
class RealInstallation:
    """What build_real_installation laid out; the benchmark prints it and divides by it."""

    corpus: ReleaseCorpus
    projects: int
    generations: int
    files: int
    bytes: int
    lines: LineLengths

    def describe(self) -> str:
        projects = f"{self.projects} project{'s' if self.projects != 1 else ''}"
        packages = self.corpus.releases
        named = ", ".join(packages) if len(packages) <= _NAMED_PACKAGES else f"{len(packages)} packages"
        return (f"{self.corpus.title}: {projects} x {self.corpus.versions_per_project()} releases "
                f"({named}), {self.generations} generations, {self.files:,} files "
                f"({self.files / max(self.generations, 1):.0f} per generation), {self.bytes / 1024**2:.0f} MiB")


@dataclass(frozen=True)
class TreeSize:
    files: int
    bytes: int


# --------------------------------------------------------------------------- fetching


def sdist_path(release: Release, cache: Path = CACHE) -> Path | None:
    """The cached sdist, whatever archive suffix and name spelling the index served."""
    folder = cache / "sdists" / release.label
    found = sorted(folder.glob("*")) if folder.is_dir() else []
    return found[0] if found else None


INDEX_URL = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
"""The package index's simple API (PEP 691, JSON): the same files pip would download."""
_index_pages: dict[str, list[dict]] = {}
_index_lock = threading.Lock()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _index_files(package: str) -> list[dict]:
    """The index's file list for ``package``, asked for once per process."""
    with _index_lock:
        if package not in _index_pages:
            request = urllib.request.Request(f"{INDEX_URL}/{_normalized(package)}/",
                                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                _index_pages[package] = json.load(response)["files"]
        return _index_pages[package]


def _sdist_entry(release: Release) -> dict:
    """The index's entry for the release's sdist: ``<name>-<version>.tar.gz`` (or ``.zip``), the
    name compared as PEP 503 normalizes it."""
    for entry in _index_files(release.package):
        filename = entry["filename"]
        for suffix in (".tar.gz", ".zip"):
            stem = filename[:-len(suffix)] if filename.endswith(suffix) else None
            if stem and stem.endswith(f"-{release.version}") \
                    and _normalized(stem[:-len(release.version) - 1]) == _normalized(release.package):
                return entry
    raise RuntimeError(f"{release.label}: the index at {INDEX_URL} lists no sdist of it")


def fetch_sdist(release: Release, cache: Path = CACHE) -> Path:
    """Download one sdist from the index's simple API into its own cache folder, checked against
    the SHA-256 the index gives.

    Nothing is built, not even metadata: the archive is all the corpus needs (``pip download``
    prepares each sdist's metadata, a build per release). The archive lands in a scratch folder
    first so that an interrupted download never looks cached.
    """
    cached = sdist_path(release, cache)
    if cached:
        return cached
    entry = _sdist_entry(release)
    target = cache / "sdists" / release.label
    scratch = Path(tempfile.mkdtemp(prefix=f".{release.label}-", dir=cache))
    try:
        archive = scratch / entry["filename"]
        digest = hashlib.sha256()
        with urllib.request.urlopen(entry["url"], timeout=300) as response, archive.open("wb") as sink:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
        expected = entry.get("hashes", {}).get("sha256")
        if expected and digest.hexdigest() != expected:
            raise RuntimeError(f"{release.label}: {entry['filename']} does not match the index's SHA-256")
        target.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(archive), target / archive.name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stripped(name: str) -> str | None:
    """An archive member's path without the top-level ``name-version/`` folder (None: that folder)."""
    parts = PurePosixPath(name).parts
    return str(PurePosixPath(*parts[1:])) if len(parts) > 1 else None


def _extract_tar(archive: Path, destination: Path) -> None:
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            # Only files and folders: a code generator writes neither links nor devices.
            stripped = _stripped(member.name)
            if stripped and (member.isfile() or member.isdir()):
                member.name = stripped
                members.append(member)
        tar.extractall(destination, members=members, filter="data")


def _extract_zip(archive: Path, destination: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            stripped = _stripped(info.filename)
            if not stripped or info.is_dir():
                continue
            target = destination / stripped
            if not target.resolve().is_relative_to(destination.resolve()):
                raise ValueError(f"{archive.name}: {info.filename} points outside the archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)


def extracted_tree(release: Release, cache: Path = CACHE) -> Path:
    """The release's files, unpacked once under the cache; renamed into place when complete."""
    tree = cache / "trees" / release.package / release.version
    if tree.is_dir():
        return tree
    archive = fetch_sdist(release, cache)
    scratch = Path(tempfile.mkdtemp(prefix=f".{release.label}-", dir=cache))
    try:
        (_extract_zip if archive.name.endswith(".zip") else _extract_tar)(archive, scratch)
        tree.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(tree)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tree


def ensure_corpus(cache: Path = CACHE, corpus: ReleaseCorpus = REAL) -> dict[Release, Path]:
    """Every release's generation folder (its unpacked tree, or the package folder in it that
    ``corpus`` names), fetching only what the cache lacks."""
    cache.mkdir(parents=True, exist_ok=True)
    releases = corpus.all_releases()
    with ThreadPoolExecutor(_DOWNLOAD_JOBS) as pool:
        trees = list(pool.map(lambda release: extracted_tree(release, cache), releases))
    return {release: corpus.generation_folder(release, tree) for release, tree in zip(releases, trees, strict=True)}


def tree_size(tree: Path) -> TreeSize:
    files = list(_walk_files(tree))
    return TreeSize(len(files), sum(path.stat().st_size for path in files))


def _walk_files(tree: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(tree):
        for name in names:
            yield Path(folder, name)


def line_count(path: Path) -> int | None:
    """Lines of a text file, a last line without a newline included; None for a binary file
    (a NUL byte, git's test), whose "lines" say nothing about how long it is."""
    content = path.read_bytes()
    if b"\0" in content:
        return None
    return content.count(b"\n") + int(bool(content) and not content.endswith(b"\n"))


def line_lengths(trees: Mapping[str, Path]) -> LineLengths:
    """Median and longest text file over labelled trees (a release's label: its files, once each).

    Copies laid out by ``--scale`` repeat every file K times, which moves neither figure, so the
    cached trees stand for the whole installation.
    """
    counts: list[int] = []
    longest, longest_file = -1, ""
    for label, tree in trees.items():
        for path in _walk_files(tree):
            lines = line_count(path)
            if lines is None:
                continue
            counts.append(lines)
            if lines > longest:
                longest, longest_file = lines, f"{label} {path.relative_to(tree).as_posix()}".strip()
    if not counts:
        return LineLengths(0, 0, "no text file")
    return LineLengths(int(statistics.median_low(counts)), longest, longest_file)


# --------------------------------------------------------------------------- laying out


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(map(str, parts))))


def _copy_tree(source: Path, destination: Path, moment: datetime) -> None:
    """Copy one release as the application would have written it: every mtime at created_at."""
    shutil.copytree(source, destination, copy_function=shutil.copyfile)
    stamp = int(moment.timestamp()) * 1_000_000_000
    for folder, _, names in os.walk(destination, topdown=False):
        for name in names:
            os.utime(Path(folder, name), ns=(stamp, stamp))
        os.utime(folder, ns=(stamp, stamp))


def _legacy_tables(engine: sa.Engine, name: str) -> dict[str, sa.Table]:
    """The legacy tables, refusing a database at another revision or one that already has rows."""
    with engine.connect() as connection:
        revision = current_revision(connection)
        if revision != BASE_REVISION:
            raise ValueError(f"the {name} corpus is a LEGACY installation: the database must be at "
                             f"{BASE_REVISION}, found {revision!r}")
        metadata = sa.MetaData()
        metadata.reflect(bind=connection, only=["users", "projects", "generations"])
        for table in metadata.tables.values():
            if connection.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                raise ValueError(f"refusing to add the {name} corpus: table {table.name!r} already has rows")
    return dict(metadata.tables)


def _project_row(package: str, copy: int, user_id: str, created_at: datetime) -> dict[str, object]:
    return {
        "id": _uuid("project", package, copy),
        "created_at": created_at,
        "updated_at": created_at,
        "user_id": user_id,
        "name": package if copy == 0 else f"{package} (copy {copy + 1})",
        "description": f"Release history of {package}, one generation per sdist.",
        "domain": "developer_tools",
        "tech_stack": "python_library",
        "status": "active",
        "is_public": False,
    }


def output_files(tree: Path) -> dict[str, str]:
    """What the application stores in a completed generation's ``output_files``: relative path
    (POSIX spelling) -> the file's text, for every file that is UTF-8. The application's
    generator only ever produces text; where it reads a folder back into that shape it skips a
    file that does not decode (``UnicodeDecodeError``), and so does this."""
    files: dict[str, str] = {}
    for path in sorted(_walk_files(tree)):
        try:
            files[path.relative_to(tree).as_posix()] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def _generation_row(project: dict[str, object], release: Release, copy: int, created_at: datetime,
                    files: dict[str, str] | None) -> dict[str, object]:
    """A completed generation as the application leaves it; columns left out are NULL.
    ``files`` is its ``output_files`` (None: NULL, as a row the application wrote before it kept
    files in the row)."""
    return {
        "id": _uuid("generation", release.package, release.version, copy),
        "created_at": created_at,
        "updated_at": created_at + timedelta(minutes=3),
        "project_id": project["id"],
        "user_id": project["user_id"],
        "prompt": f"Release {release.package} {release.version}",
        "status": "completed",
        "total_time": 180.0,
        "output_files": files,
    }


@dataclass(frozen=True)
class _Target:
    """Where projects are laid out: the open transaction and its tables, the cached release trees
    the folders are copied from, and the root they are copied to."""

    connection: sa.Connection
    tables: dict[str, sa.Table]
    trees: Mapping[Release, Path]
    root: Path
    store_output_files: bool


def _lay_out_project(target: _Target, package: str, versions: tuple[str, ...], copy: int,
                     user_id: str, started: datetime) -> int:
    """One project's row, then one generation and one folder per release, a day apart from
    ``started``; returns how many generations it has. Rows go in one at a time: with
    ``output_files`` a row holds its whole release (tens of MiB in the long corpus)."""
    project = _project_row(package, copy, user_id, started)
    target.connection.execute(target.tables["projects"].insert(), [project])
    for position, version in enumerate(versions):
        release, moment = Release(package, version), started + timedelta(days=position + 1)
        files = output_files(target.trees[release]) if target.store_output_files else None
        row = _generation_row(project, release, copy, moment, files)
        _copy_tree(target.trees[release], target.root / str(row["id"]), moment)
        target.connection.execute(target.tables["generations"].insert(), [row])
    return len(versions)


def _check_shape(corpus: ReleaseCorpus, sizes: Mapping[Release, TreeSize]) -> None:
    """Refuse a corpus whose generations fall outside its ``files_per_generation``."""
    if corpus.files_per_generation is None:
        return
    fewest, most = corpus.files_per_generation
    outside = [f"{release.label}: {size.files}" for release, size in sizes.items() if not fewest <= size.files <= most]
    if outside:
        raise ValueError(f"the {corpus.name} corpus's generations must hold {fewest} to {most} files; "
                         f"outside that: {', '.join(outside)}")


def build_real_installation(engine: sa.Engine, root: Path, scale: int = 1,
                            corpus: ReleaseCorpus = REAL, store_output_files: bool = True) -> RealInstallation:
    """Insert users, projects and generations at revision e011ab9dd223 and write one folder
    ``<root>/<generation_id>/`` per release of ``corpus``; ``scale`` K lays out K copies of each
    project with fresh ids, to grow the corpus without downloading more. Each row holds its
    folder's text files in ``output_files``, as the application writes it, unless
    ``store_output_files`` is False (NULL: a row the application wrote before it kept them).

    Releases follow version order, one day apart, so created_at order is release order. Projects
    start an hour apart, in the corpus's order, copy after copy. The rows go in one transaction;
    ``root`` must be empty or absent.
    """
    if scale < 1:
        raise ValueError("scale must be at least 1")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"refusing to add the {corpus.name} corpus: {root} is not empty")
    tables = _legacy_tables(engine, corpus.name)
    trees = ensure_corpus(corpus=corpus)
    sizes = [tree_size(tree) for tree in trees.values()]
    _check_shape(corpus, dict(zip(trees, sizes, strict=True)))
    root.mkdir(parents=True, exist_ok=True)
    user = {"id": _uuid("user"), "email": "releases@example.com", "created_at": _EPOCH, "updated_at": _EPOCH}
    projects = generations = 0
    with engine.begin() as connection:
        connection.execute(tables["users"].insert(), [user])
        target = _Target(connection, tables, trees, root, store_output_files)
        for copy in range(scale):
            for index, (package, versions) in enumerate(corpus.releases.items()):
                started = _EPOCH + timedelta(hours=len(corpus.releases) * copy + index)
                generations += _lay_out_project(target, package, versions, copy, str(user["id"]), started)
                projects += 1
    lines = line_lengths({release.label: tree for release, tree in trees.items()})
    return RealInstallation(corpus, projects, generations, scale * sum(size.files for size in sizes),
                            scale * sum(size.bytes for size in sizes), lines)


def print_corpus(corpus: ReleaseCorpus, cache: Path) -> None:
    """Fetch one corpus and print each package's range and size, and its file lengths; then refuse
    it, as the benchmark would, if a generation falls outside its ``files_per_generation``."""
    trees = ensure_corpus(cache, corpus)
    for package, versions in corpus.releases.items():
        sizes = [tree_size(trees[Release(package, version)]) for version in versions]
        files = [size.files for size in sizes]
        print(f"{package}: {versions[0]} .. {versions[-1]} ({len(versions)} releases), "
              f"{sum(files):,} files ({min(files)} to {max(files)} per generation), "
              f"{sum(s.bytes for s in sizes) / 1024**2:.0f} MiB")
    print(f"{corpus.name}: {line_lengths({release.label: tree for release, tree in trees.items()}).describe()}")
    _check_shape(corpus, {release: tree_size(tree) for release, tree in trees.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--corpus", choices=(*CORPORA, "all"), default=REAL.name)
    arguments = parser.parse_args()
    for corpus in CORPORA.values() if arguments.corpus == "all" else (CORPORA[arguments.corpus],):
        print_corpus(corpus, arguments.cache)
    downloaded = sum(path.stat().st_size for path in (arguments.cache / "sdists").rglob("*") if path.is_file())
    print(f"sdists: {downloaded / 1024**2:.0f} MiB in {arguments.cache / 'sdists'}")


if __name__ == "__main__":
    main()
