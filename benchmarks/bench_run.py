"""Benchmark: `storage-migrate run` against the shell pipeline an operator would otherwise write
(`mv` per folder, `find | wc -l`, `du -sb`, `diff -ruN` per consecutive pair) and against the
`sha256sum` floor (every byte read once), on copies of one generated corpus, in one run.

    .venv/bin/python benchmarks/bench_run.py [--generations 1000 --files 60000] [--scale K]
                                              [--database sqlite,postgresql]

Every contender gets a fresh `cp -a` copy and a warm page cache (the corpus is read once before
each timing: dropping caches needs privileges a CI machine may lack). Wall time and peak RSS come
from GNU time. The tool's result is checked with `storage-migrate verify` (not timed).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION, HEAD_REVISION
from storage_migrator.sample_data import SampleSize, generate_installation
from storage_migrator.schema import upgrade_schema

TOOL = [sys.executable, "-m", "storage_migrator"]
SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
LEGACY_TABLES = ("users", "organizations", "projects", "generations")


@dataclass(frozen=True)
class Timing:
    contender: str
    database: str
    seconds: float
    peak_rss_mb: float
    files: int

    def row(self) -> str:
        rate = self.files / self.seconds if self.seconds else float("inf")
        return f"| {self.contender} | {self.database} | {self.seconds:.2f} | {self.peak_rss_mb:.0f} | {rate:,.0f} |"


def timed(command: list[str], environment: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, by GNU time; fails loudly if it fails."""
    report = Path(tempfile.mktemp(prefix="bench-time-"))
    result = subprocess.run(["/usr/bin/time", "-o", str(report), "-f", "%e %M", *command],
                            env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    seconds, kilobytes = report.read_text().split()[-2:]
    report.unlink()
    return float(seconds), int(kilobytes) / 1024


def build_corpus(folder: Path, size: SampleSize) -> tuple[str, int]:
    """The legacy corpus on SQLite (rows at base revision), returns its URL and file count."""
    url = f"sqlite:///{folder / 'codebegen.db'}"
    upgrade_schema(url, BASE_REVISION)
    engine = sa.create_engine(url)
    sample = generate_installation(engine, folder / "projects", size, store_output_files=False)
    engine.dispose()
    return url, sample.file_count


def copy_rows(source_url: str, target_url: str) -> None:
    """Copy the legacy rows into another database at the base revision (same ids, same files)."""
    upgrade_schema(target_url, BASE_REVISION)
    source, target = sa.create_engine(source_url), sa.create_engine(target_url)
    metadata = sa.MetaData()
    metadata.reflect(bind=source, only=LEGACY_TABLES)
    with source.connect() as reading, target.begin() as writing:
        for name in LEGACY_TABLES:
            table = metadata.tables[name]
            rows = [dict(row._mapping) for row in reading.execute(table.select())]
            for start in range(0, len(rows), 1000):
                writing.execute(sa.Table(name, sa.MetaData(), autoload_with=writing).insert(), rows[start:start + 1000])
    source.dispose()
    target.dispose()


def fresh_copy(corpus: Path, destination: Path, database_url: str) -> tuple[Path, str]:
    """A copy of the folders (mtimes kept) and, for SQLite, of the database file; warm cache."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(corpus / "projects"), str(destination / "projects")], check=True)
    if database_url.startswith("sqlite"):
        shutil.copy2(corpus / "codebegen.db", destination / "codebegen.db")
        database_url = f"sqlite:///{destination / 'codebegen.db'}"
    subprocess.run(f"sync; find {shlex.quote(str(destination))} -type f -print0 | xargs -0 cat > /dev/null",
                   shell=True, check=True)
    return destination / "projects", database_url


def shell_pipeline(database_url: str, root: Path) -> str:
    """What an operator would write: one mv, find|wc, du and diff -ruN per generation."""
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT project_id, id, version FROM generations WHERE status IN ('completed', 'failed') "
            "ORDER BY project_id, version")).all()
    engine.dispose()
    lines = ["set -e", f"cd {shlex.quote(str(root))}"]
    previous: dict[str, str] = {}
    for project_id, generation_id, version in rows:
        if not (root / generation_id).is_dir():
            continue
        target = f"{project_id}/generations/v{version}__{generation_id}"
        lines += [
            f"mkdir -p {target}/artifacts && mv {generation_id} {target}/source",
            f"find {target}/source -type f | wc -l > {target}/file_count",
            f"du -sb {target}/source > {target}/size",
        ]
        if project_id in previous:
            lines.append(f"diff -ruN {previous[project_id]}/source {target}/source > {target}/changes.patch || true")
        previous[project_id] = target
    return "\n".join(lines) + "\n"


def bench_database(label: str, database_url: str, corpus: Path, work: Path, files: int, workers: int) -> list[Timing]:
    timings = []
    tool_env = lambda root, url: {**os.environ, "DATABASE_URL": url, "STORAGE_ROOT": str(root)}  # noqa: E731
    for contender, arguments in (("storage-migrate --dry-run", ["-q", "--dry-run"]),
                                 ("storage-migrate run --workers 1", ["-q", "run", "--workers", "1"]),
                                 (f"storage-migrate run --workers {workers}", ["-q", "run", "--workers", str(workers)])):
        root, url = fresh_copy(corpus, work / label, database_url)
        if not url.startswith("sqlite"):
            reset_postgres(url, corpus)
        seconds, rss = timed([*TOOL, *arguments], tool_env(root, url))
        timings.append(Timing(contender, label, seconds, rss, files))
    seconds, rss = timed([*TOOL, "-q", "resync", "--workers", str(workers)], tool_env(root, url))
    timings.append(Timing(f"storage-migrate resync --workers {workers} (unchanged)", label, seconds, rss, files))
    check = subprocess.run([*TOOL, "-q", "verify"], env=tool_env(root, url), capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"verify failed after the run on {label}:\n{check.stdout[-3000:]}{check.stderr[-2000:]}")
    return timings


_postgres_template: dict[str, str] = {}


def reset_postgres(url: str, corpus: Path) -> None:
    """Give PostgreSQL the corpus rows afresh: the database is recreated from a template."""
    admin = sa.create_engine(sa.make_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    name = sa.make_url(url).database
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template["name"]}"'))
    admin.dispose()


def prepare_postgres(sqlite_url: str) -> str:
    admin = sa.create_engine(sa.make_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    template, working = f"bench_template_{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{template}"'))
    admin.dispose()
    template_url = sa.make_url(SERVER_URL).set(database=template).render_as_string(hide_password=False)
    copy_rows(sqlite_url, template_url)
    upgrade_schema(template_url, HEAD_REVISION)
    _postgres_template["name"] = template
    return sa.make_url(SERVER_URL).set(database=working).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    admin = sa.create_engine(sa.make_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in (sa.make_url(url).database, _postgres_template.get("name")):
            if name:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({model}), {int(memory) // 1024**2} GiB, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--files", type=int, default=60_000)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply generations and files")
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    arguments = parser.parse_args()
    work = arguments.workdir or Path(tempfile.mkdtemp(prefix="storage-migrate-bench-"))
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    size = SampleSize.scaled(int(arguments.generations * arguments.scale), int(arguments.files * arguments.scale))
    try:
        sqlite_url, files = build_corpus(corpus, size)
        databases = [name.strip() for name in arguments.database.split(",")]
        postgres_url = prepare_postgres(sqlite_url) if "postgresql" in databases else None
        upgrade_schema(sqlite_url, HEAD_REVISION)
        total_bytes = sum(path.stat().st_size for path in (corpus / "projects").rglob("*") if path.is_file())
        print(f"machine: {machine()}")
        print(f"corpus: {size.projects} projects, ~{size.projects * size.generations_per_project} generations, "
              f"{files:,} files, {total_bytes / 1024**2:.0f} MiB; warm page cache for every contender\n")
        timings: list[Timing] = []
        for label in databases:
            url = sqlite_url if label == "sqlite" else postgres_url
            timings += bench_database(label, url, corpus, work, files, arguments.workers)
        root, url = fresh_copy(corpus, work / "shell", sqlite_url)
        script = work / "pipeline.sh"
        script.write_text(shell_pipeline(url, root))
        seconds, rss = timed(["bash", str(script)])
        shell = Timing("shell pipeline (mv, find|wc, du -sb, diff -ruN)", "-", seconds, rss, files)
        root, _ = fresh_copy(corpus, work / "floor", sqlite_url)
        seconds, rss = timed(["bash", "-c", f"find {shlex.quote(str(root))} -type f -print0 | xargs -0 sha256sum > /dev/null"])
        floor = Timing("sha256sum of every file (floor)", "-", seconds, rss, files)
        print("| contender | database | wall s | peak RSS MB | files/s |\n|---|---|---|---|---|")
        for timing in [*timings, shell, floor]:
            print(timing.row())
        print()
        for label in databases:
            by_name = {t.contender: t for t in timings if t.database == label}
            run = by_name[f"storage-migrate run --workers {arguments.workers}"]
            resync = by_name[f"storage-migrate resync --workers {arguments.workers} (unchanged)"]
            print(f"{label}: run/shell = {run.seconds / shell.seconds:.2f}, run/floor = {run.seconds / floor.seconds:.2f}, "
                  f"resync/run = {resync.seconds / run.seconds:.2f}, peak RSS of run = {run.peak_rss_mb:.0f} MB")
    finally:
        if postgres_url_in_use := locals().get("postgres_url"):
            drop_postgres(postgres_url_in_use)
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
