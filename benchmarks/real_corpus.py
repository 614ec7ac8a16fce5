"""Real code history for the benchmark, fetched once as sdists (never built, only unpacked) and laid
out as a LEGACY installation with one project per package and one completed generation per release.

Two pinned corpora: ``real``, 24 consecutive releases of five popular Python packages (many short
files), and ``long``, 24 consecutive patch releases of SQLAlchemy (modules of thousands of lines,
small edits between versions).

    .venv/bin/python benchmarks/real_corpus.py [--corpus real|long|all]   # fetch into benchmarks/.cache/, print sizes
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION
from storage_migrator.db import current_revision

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
    # change by a few lines per release. Preparing its metadata needs Cython: the first pip
    # download builds Cython from source (two minutes), pip's wheel cache serves the rest.
    "sqlalchemy": ("2.0.35", "2.0.36", "2.0.37", "2.0.38", "2.0.39", "2.0.40", "2.0.41", "2.0.42",
                   "2.0.43", "2.0.44", "2.0.45", "2.0.46", "2.0.47", "2.0.48", "2.0.49", "2.0.50",
                   "2.0.51", "2.0.52", "2.0.53", "2.0.54", "2.0.55", "2.0.56", "2.0.57", "2.0.58"),
}

_ID_NAMESPACE = uuid.UUID("0c9e6a57-3f0b-4d43-9a41-7d2f1b5e8c60")
_EPOCH = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)
_DOWNLOAD_JOBS = 2
"""pip spends most of its time waiting on the index: two at a time halves a cold fetch."""


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

    def all_releases(self) -> list[Release]:
        return [Release(package, version) for package, versions in self.releases.items() for version in versions]

    def versions_per_project(self) -> int:
        return min(len(versions) for versions in self.releases.values())


REAL = ReleaseCorpus("real", "real code history", RELEASES)
LONG = ReleaseCorpus("long", "long files, small edits", LONG_RELEASES)
CORPORA: dict[str, ReleaseCorpus] = {corpus.name: corpus for corpus in (REAL, LONG)}


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
        return (f"{self.corpus.title}: {projects} x {self.corpus.versions_per_project()} releases "
                f"({', '.join(self.corpus.releases)}), {self.generations} generations, {self.files:,} files, "
                f"{self.bytes / 1024**2:.0f} MiB")


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


def fetch_sdist(release: Release, cache: Path = CACHE) -> Path:
    """Download one sdist with pip (the registry's own client), into its own cache folder.

    One pip call per release: pip refuses two versions of one package in a single call. pip
    prepares the sdist's metadata, but nothing is built or installed. The archive lands in a
    scratch folder first so that an interrupted download never looks cached.
    """
    cached = sdist_path(release, cache)
    if cached:
        return cached
    target = cache / "sdists" / release.label
    scratch = Path(tempfile.mkdtemp(prefix=f".{release.label}-", dir=cache))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-d", str(scratch), f"{release.package}=={release.version}"],
            capture_output=True, text=True, check=False)
        archives = [path for path in scratch.iterdir() if path.name.endswith((".tar.gz", ".zip"))]
        if result.returncode != 0 or len(archives) != 1:
            raise RuntimeError(f"pip download {release.label} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        target.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(archives[0]), target / archives[0].name))
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
    """Every release's unpacked tree, fetching only what the cache lacks.

    The first release is fetched alone: a build dependency pip must build from source to read
    an sdist's metadata (Cython, for SQLAlchemy) is then built once, not once per download job.
    """
    cache.mkdir(parents=True, exist_ok=True)
    first, *rest = corpus.all_releases()
    trees = [extracted_tree(first, cache)]
    with ThreadPoolExecutor(_DOWNLOAD_JOBS) as pool:
        trees += pool.map(lambda release: extracted_tree(release, cache), rest)
    return dict(zip([first, *rest], trees, strict=True))


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


def _generation_row(project: dict[str, object], release: Release, copy: int,
                    created_at: datetime) -> dict[str, object]:
    # Columns left out are NULL: output_files stays NULL, as for the synthetic benchmark corpus.
    return {
        "id": _uuid("generation", release.package, release.version, copy),
        "created_at": created_at,
        "updated_at": created_at + timedelta(minutes=3),
        "project_id": project["id"],
        "user_id": project["user_id"],
        "prompt": f"Release {release.package} {release.version}",
        "status": "completed",
        "total_time": 180.0,
    }


@dataclass(frozen=True)
class _Target:
    """Where projects are laid out: the open transaction and its tables, the cached release trees
    the folders are copied from, and the root they are copied to."""

    connection: sa.Connection
    tables: dict[str, sa.Table]
    trees: Mapping[Release, Path]
    root: Path


def _lay_out_project(target: _Target, package: str, versions: tuple[str, ...], copy: int,
                     user_id: str, started: datetime) -> int:
    """One project's row, then one generation and one folder per release, a day apart from
    ``started``; returns how many generations it has."""
    project = _project_row(package, copy, user_id, started)
    target.connection.execute(target.tables["projects"].insert(), [project])
    rows = []
    for position, version in enumerate(versions):
        release, moment = Release(package, version), started + timedelta(days=position + 1)
        row = _generation_row(project, release, copy, moment)
        _copy_tree(target.trees[release], target.root / str(row["id"]), moment)
        rows.append(row)
    target.connection.execute(target.tables["generations"].insert(), rows)
    return len(rows)


def build_real_installation(engine: sa.Engine, root: Path, scale: int = 1,
                            corpus: ReleaseCorpus = REAL) -> RealInstallation:
    """Insert users, projects and generations at revision e011ab9dd223 and write one folder
    ``<root>/<generation_id>/`` per release of ``corpus``; ``scale`` K lays out K copies of each
    project with fresh ids, to grow the corpus without downloading more.

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
    root.mkdir(parents=True, exist_ok=True)
    user = {"id": _uuid("user"), "email": "releases@example.com", "created_at": _EPOCH, "updated_at": _EPOCH}
    projects = generations = 0
    with engine.begin() as connection:
        connection.execute(tables["users"].insert(), [user])
        target = _Target(connection, tables, trees, root)
        for copy in range(scale):
            for index, (package, versions) in enumerate(corpus.releases.items()):
                started = _EPOCH + timedelta(hours=len(corpus.releases) * copy + index)
                generations += _lay_out_project(target, package, versions, copy, str(user["id"]), started)
                projects += 1
    lines = line_lengths({release.label: tree for release, tree in trees.items()})
    return RealInstallation(corpus, projects, generations, scale * sum(size.files for size in sizes),
                            scale * sum(size.bytes for size in sizes), lines)


def print_corpus(corpus: ReleaseCorpus, cache: Path) -> None:
    """Fetch one corpus and print each package's range and size, and its file lengths."""
    trees = ensure_corpus(cache, corpus)
    for package, versions in corpus.releases.items():
        sizes = [tree_size(trees[Release(package, version)]) for version in versions]
        print(f"{package}: {versions[0]} .. {versions[-1]} ({len(versions)} releases), "
              f"{sum(s.files for s in sizes):,} files, {sum(s.bytes for s in sizes) / 1024**2:.0f} MiB")
    print(f"{corpus.name}: {line_lengths({release.label: tree for release, tree in trees.items()}).describe()}")


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
