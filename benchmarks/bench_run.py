"""Benchmark: `storage-migrate run` against the shell pipeline an operator would otherwise write
(`mv` per folder, `find | wc -l`, `du -sb`, `diff -ruN` per consecutive pair) and against the
`sha256sum` floor (every byte read once) and the `cat` floor (every byte read, nothing computed),
on copies of one corpus, in one run, per corpus.

    .venv/bin/python benchmarks/bench_run.py [--corpus app|real|long|synthetic|both|all] [--scale K]
                                              [--database sqlite,postgresql] [--no-output-files]
                                              [--generations 1000 --files 60000]

The corpora that count are real code history (benchmarks/real_corpus.py, fetched once into
benchmarks/.cache/): `app` is shaped like the application's data, dozens of projects each with
24 small generations (consecutive releases of small packages, tens of files each), and comes
first; `real` is consecutive releases of five popular packages (hundreds of short files a
generation); `long` is one project whose files run to thousands of lines with small edits
between releases (SQLAlchemy); `synthetic` is sample_data's generated one. `both` is real and
synthetic, `all` is app, real, long and synthetic. `--scale K` lays out K copies of each app,
real or long project, or K times the synthetic size. Every completed generation's row holds its
text files in `output_files` (path -> text, a JSON object), as the application writes it: on
SQLite a row that big is rewritten whole, overflow pages and journal, whenever a write changes
its size; `--no-output-files` leaves the column NULL, for comparison.
Every contender gets a fresh copy — `cp -al`: new folders, the files hard links to the corpus's,
since nothing the tool or the pipeline does writes into a legacy file (10x was 2.5 min per `cp -a`)
— and a warm page cache (the corpus is read once before each timing: dropping caches needs
privileges a CI machine may lack). No copy is removed while a corpus is timed, and the first
timing waits a minute after the last removal (`settle`): on ext4 without a journal, as on this
machine, removing a copy charged the next timed command up to 1.5 s of kernel time. Wall time
and peak RSS come from GNU time. The tool's result is checked with `storage-migrate verify`
(not timed), after one more timed resync: `chmod -R u+w` of the copy first moves every file's ctime
and no byte (what `chown -R` or a hard-link backup of ROOT does), so that resync reads every file
and writes no patch.

Besides the timings, two untimed counting runs per database, `run --workers 1` on a fresh copy
and an unchanged `resync --workers 1`, give the per-generation tolls: system calls and fsyncs
from `strace -f -c` (every process, start-up and database included; fsyncs are fsync,
fdatasync and syncfs calls, whole-machine sync() counted apart), and, on PostgreSQL, database round trips
counted on the wire by a relay between the tool and the server (benchmarks/round_trips.py: each
time a client speaks after the server has, on every connection, pre-pings and log-ins included;
SQLite has none, its commits show as fsyncs).

Two more floors say what no implementation of `run` or `resync` can skip: `write_floor.py`, the
database alone taking run's one write per row (the finished run's values into fresh rows, 8 per
transaction), per database; and `find -printf` of every file's size, mtime, ctime and inode (an
lstat each, nothing read), what an unchanged resync must look at before it may say "unchanged".
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION, HEAD_REVISION
from storage_migrator.db.revisions import upgrade_schema
from storage_migrator.demo import SampleSize, generate_installation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_corpus import CORPORA, build_real_installation, line_lengths
from round_trips import RoundTripCounter

TOOL = [sys.executable, "-m", "storage_migrator"]
SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
LEGACY_TABLES = ("users", "organizations", "projects", "generations")
DRY_RUN, RUN_ONE, RUN, RESYNC, RESYNC_STATS = "dry-run", "run --workers 1", "run", "resync", "resync after chmod"
WRITE_FLOOR = "write floor"
CORPUS_GROUPS = {"both": ("real", "synthetic"), "all": ("app", "real", "long", "synthetic")}
"""--corpus names that stand for several corpora, benchmarked in this order."""


@dataclass(frozen=True)
class Timing:
    contender: str
    database: str
    seconds: float
    peak_rss_mb: float | None     # None: timed inside a process that does more than this
    files: int


@dataclass(frozen=True)
class Corpus:
    """A legacy installation on disk (``folder/projects``) with its rows in ``folder/codebegen.db``."""

    name: str
    description: str
    file_lengths: str
    folder: Path
    sqlite_url: str
    files: int
    generations: int


@dataclass(frozen=True)
class PostgresCopy:
    """A template database holding the corpus rows, and the working database made from it."""

    template: str
    url: str


@dataclass(frozen=True)
class Tolls:
    """What one counting run cost, in total: system calls, fsyncs (fsync, fdatasync and syncfs:
    each makes something durable), whole-machine sync() calls, pwrite64 calls (SQLite writes
    its pages and its journal with them, the tool its files with write: on SQLite they are
    the database's writes), and database round trips (None: not counted, SQLite)."""

    command: str
    database: str
    syscalls: int
    fsyncs: int
    syncs: int
    pwrites: int
    round_trips: int | None


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    arguments: tuple[str, ...]


def timed(command: list[str], environment: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, by GNU time; fails loudly if it fails."""
    report = Path(tempfile.mktemp(prefix="bench-time-"))
    result = subprocess.run(["/usr/bin/time", "-o", str(report), "-f", "%e %M", *command],
                            env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    seconds, kilobytes = report.read_text().split()[-2:]
    report.unlink()
    return float(seconds), int(kilobytes) / 1024


# --------------------------------------------------------------------------- corpora


def _legacy_database(folder: Path) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{folder / 'codebegen.db'}"
    upgrade_schema(url, BASE_REVISION)
    return url, sa.create_engine(url)


def _rows_hold(store_output_files: bool) -> str:
    return "rows hold output_files" if store_output_files else "output_files NULL"


def build_synthetic(folder: Path, size: SampleSize, store_output_files: bool) -> Corpus:
    """sample_data's generated corpus, rows at the base revision; each completed row holds its
    text files in output_files, as the application writes it, unless ``store_output_files`` is
    False."""
    url, engine = _legacy_database(folder)
    sample = generate_installation(engine, folder / "projects", size, store_output_files=store_output_files)
    engine.dispose()
    description = (f"synthetic (sample_data): {size.projects} projects x ~{size.generations_per_project} "
                   f"generations, {sample.file_count:,} files, {sample.total_bytes / 1024**2:.0f} MiB, "
                   f"{_rows_hold(store_output_files)}")
    lengths = line_lengths({"": folder / "projects"}).describe()
    return Corpus("synthetic", description, lengths, folder, url, sample.file_count,
                  len(sample.folder_generation_ids))


def build_real(folder: Path, scale: int, name: str = "real", store_output_files: bool = True) -> Corpus:
    """Consecutive releases of real packages (benchmarks/real_corpus.py: ``app``, ``real`` or
    ``long``), K copies of each project for --scale K; rows hold output_files unless
    ``store_output_files`` is False."""
    url, engine = _legacy_database(folder)
    installation = build_real_installation(engine, folder / "projects", scale, CORPORA[name], store_output_files)
    engine.dispose()
    return Corpus(name, f"{installation.describe()}, {_rows_hold(store_output_files)}", installation.lines.describe(),
                  folder, url, installation.files, installation.generations)


# --------------------------------------------------------------------------- databases


def copy_rows(source_url: str, target_url: str) -> None:
    """Copy the legacy rows into another database at the base revision (same ids, same files)."""
    upgrade_schema(target_url, BASE_REVISION)
    source, target = sa.create_engine(source_url), sa.create_engine(target_url)
    metadata = sa.MetaData()
    metadata.reflect(bind=source, only=LEGACY_TABLES)
    with source.connect() as reading, target.begin() as writing:
        for name in LEGACY_TABLES:
            table, written = metadata.tables[name], sa.Table(name, sa.MetaData(), autoload_with=writing)
            # A few rows at a time: a generation's row may hold its whole folder (output_files).
            for rows in reading.execution_options(yield_per=50).execute(table.select()).partitions():
                writing.execute(written.insert(), [dict(row._mapping) for row in rows])
    source.dispose()
    target.dispose()


def _admin(statements: list[str]) -> None:
    admin = sa.create_engine(sa.make_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    admin.dispose()


def prepare_postgres(sqlite_url: str) -> PostgresCopy:
    """A template at the head revision with the corpus rows: each contender starts from a clone."""
    template, working = f"bench_template_{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:8]}"
    _admin([f'CREATE DATABASE "{template}"'])
    template_url = sa.make_url(SERVER_URL).set(database=template).render_as_string(hide_password=False)
    copy_rows(sqlite_url, template_url)
    upgrade_schema(template_url, HEAD_REVISION)
    return PostgresCopy(template, sa.make_url(SERVER_URL).set(database=working).render_as_string(hide_password=False))


def reset_postgres(copy: PostgresCopy) -> None:
    """Give PostgreSQL the corpus rows afresh: the working database is recreated from the
    template, then written out (``CHECKPOINT``, then ``sync``). Else the new database's files
    are still dirty when the timed command starts, and the tool's first ``syncfs`` writes them
    (the server's files are on the same filesystem here): the tool would be timed for the
    benchmark's own setup (docs/benchmarks.md)."""
    name = sa.make_url(copy.url).database
    _admin([f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}" TEMPLATE "{copy.template}"',
            "CHECKPOINT"])
    subprocess.run(["sync"], check=True)


def drop_postgres(copy: PostgresCopy) -> None:
    _admin([f'DROP DATABASE IF EXISTS "{sa.make_url(copy.url).database}"', f'DROP DATABASE IF EXISTS "{copy.template}"'])


# --------------------------------------------------------------------------- contenders


QUIET_SECONDS = 65
"""How long after removing files a timing waits. ext4 without a journal (this machine's disk)
skips, when it allocates an inode, every one freed less than 60 s ago (longer while its inode
table block is unwritten), reading each one's deletion time: whoever creates files next pays for
the last removal. Measured on the app corpus, PostgreSQL, `run`: kernel time 1.4 s on copies made
with nothing removed since, 2.0-2.9 s right after two copies were removed, and wall time up by
~15%."""


def settle() -> None:
    """Flush, then wait ``QUIET_SECONDS``: called after files were removed (a corpus built from
    scratch folders, an earlier corpus's copies) and before the first timing."""
    subprocess.run(["sync"], check=True)
    time.sleep(QUIET_SECONDS)


def fresh_copy(corpus: Corpus, copies: Path, database_url: str) -> tuple[Path, str]:
    """A new copy below ``copies`` — never one made before, and nothing removed (see
    ``QUIET_SECONDS``: the copies go with the corpus's work folder) — of the folders (new folders,
    each file a hard link: same bytes, same mtime) and, for SQLite, of the database file; warm
    cache."""
    copies.mkdir(parents=True, exist_ok=True)
    destination = copies / f"copy-{uuid.uuid4().hex[:8]}"
    destination.mkdir()
    subprocess.run(["cp", "-al", str(corpus.folder / "projects"), str(destination / "projects")], check=True)
    if database_url.startswith("sqlite"):
        shutil.copy2(corpus.folder / "codebegen.db", destination / "codebegen.db")
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


def contenders(workers: int | None) -> tuple[Contender, ...]:
    """The tool's commands in the order they are timed; ``workers`` None keeps the tool's default."""
    chosen = ("--workers", str(workers)) if workers else ()
    named = f"--workers {workers}" if workers else f"(default workers: {os.cpu_count()} cores)"
    return (Contender(DRY_RUN, "storage-migrate --dry-run", ("-q", "--dry-run")),
            Contender(RUN_ONE, "storage-migrate run --workers 1", ("-q", "run", "--workers", "1")),
            Contender(RUN, f"storage-migrate run {named}", ("-q", "run", *chosen)))


def strace_counts(command: list[str], environment: dict[str, str]) -> dict[str, int] | None:
    """Calls per system call of a command and its children (``strace -f -c``); None without strace."""
    if shutil.which("strace") is None:
        return None
    report = Path(tempfile.mktemp(prefix="bench-strace-"))
    result = subprocess.run(["strace", "-f", "-c", "-o", str(report), *command], env=environment,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"strace {shlex.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    calls: dict[str, int] = {}
    for line in report.read_text().splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"; the header and rules do not parse.
        if len(fields) >= 5 and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    report.unlink()
    return calls


def counted(command: str, database: str, arguments: tuple[str, ...], environment: dict[str, str],
            relay: RoundTripCounter | None) -> Tolls:
    """One untimed counting run of the tool: its system calls, fsyncs, syncs and round trips
    (``relay``: the PostgreSQL relay the environment's URL points at, or None)."""
    before = relay.round_trips if relay else 0
    calls = strace_counts([*TOOL, *arguments], environment) or {}
    fsyncs = sum(calls.get(name, 0) for name in ("fsync", "fdatasync", "syncfs"))
    return Tolls(command, database, calls.get("total", 0), fsyncs, calls.get("sync", 0), calls.get("pwrite64", 0),
                 relay.round_trips - before if relay else None)


def tool_env(root: Path, url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url, "STORAGE_ROOT": str(root)}


def bench_database(label: str, database_url: str, corpus: Corpus, work: Path, workers: int | None,
                   postgres: PostgresCopy | None) -> tuple[dict[str, Timing], list[Tolls]]:
    """Each contender on a fresh copy; an unchanged resync right after the last run; then verify;
    then the counting runs (``Tolls``), through the round-trip relay on PostgreSQL."""
    timings: dict[str, Timing] = {}
    for contender in contenders(workers):
        root, url = fresh_copy(corpus, work / label, database_url)
        if postgres:
            reset_postgres(postgres)
        seconds, rss = timed([*TOOL, *contender.arguments], tool_env(root, url))
        timings[contender.key] = Timing(contender.label, label, seconds, rss, corpus.files)
    resync = ("-q", "resync", *(("--workers", str(workers)) if workers else ()))
    seconds, rss = _median_of(RESYNC_TIMINGS, lambda: timed([*TOOL, *resync], tool_env(root, url)))
    timings[RESYNC] = Timing(f"storage-migrate resync right after run (unchanged, median of {RESYNC_TIMINGS})", label,
                             seconds, rss, corpus.files)
    subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)     # every ctime moves, no byte does
    subprocess.run(["sync"], check=True)
    seconds, rss = timed([*TOOL, *resync], tool_env(root, url))
    timings[RESYNC_STATS] = Timing("storage-migrate resync after chmod -R (every ctime moved, no byte)", label,
                                   seconds, rss, corpus.files)
    check = subprocess.run([*TOOL, "-q", "verify"], env=tool_env(root, url), capture_output=True, text=True, check=False)
    if check.returncode != 0:
        sys.exit(f"verify failed after the run on {label}:\n{check.stdout[-3000:]}{check.stderr[-2000:]}")
    timings[WRITE_FLOOR] = write_floor(label, url, corpus, work, postgres)
    server = sa.make_url(database_url)
    with contextlib.ExitStack() as stack:
        relay = stack.enter_context(RoundTripCounter(server.host or "127.0.0.1", server.port or 5432)) if postgres else None
        relayed = server.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False) if relay else url
        tolls = [counted("unchanged resync --workers 1", label, ("-q", "resync", "--workers", "1"),
                         tool_env(root, relayed), relay)]
        root, url = fresh_copy(corpus, work / label, database_url)
        if postgres:
            reset_postgres(postgres)
        relayed = server.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False) if relay else url
        tolls.insert(0, counted("run --workers 1", label, ("-q", "run", "--workers", "1"), tool_env(root, relayed), relay))
    return timings, tolls


RESYNC_TIMINGS = 3
"""An unchanged resync changes nothing, so it is timed several times on the same copy and the
median is shown: on the app corpus ten timings on one copy ranged from 1.30 to 1.72 s."""


def _median_of(count: int, timing: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """The median wall seconds and the median peak RSS (MB) of ``count`` timings."""
    results = [timing() for _ in range(count)]
    return statistics.median(seconds for seconds, _ in results), statistics.median(rss for _, rss in results)


def write_floor(label: str, done_url: str, corpus: Corpus, work: Path, postgres: PostgresCopy | None) -> Timing:
    """``write_floor.py``: the finished run's column values written into a fresh copy of the
    legacy rows, one UPDATE per row, 8 rows per transaction; the writes alone are timed."""
    if postgres:
        fresh = f"{sa.make_url(postgres.url).database}_floor"
        _admin([f'DROP DATABASE IF EXISTS "{fresh}"', f'CREATE DATABASE "{fresh}" TEMPLATE "{postgres.template}"'])
        fresh_url = sa.make_url(postgres.url).set(database=fresh).render_as_string(hide_password=False)
    else:
        copy = work / f"{label}-floor.db"
        shutil.copy2(corpus.folder / "codebegen.db", copy)
        fresh_url = f"sqlite:///{copy}"
    try:
        result = subprocess.run([sys.executable, str(Path(__file__).with_name("write_floor.py")), done_url, fresh_url],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"write_floor.py failed on {label}:\n{result.stderr[-3000:]}")
        seconds = float(result.stdout.split()[-1])
    finally:
        if postgres:
            _admin([f'DROP DATABASE IF EXISTS "{fresh}"'])
        else:
            copy.unlink(missing_ok=True)
    return Timing("the database alone: run's one write per row, 8 rows per transaction (floor)", label, seconds, None,
                  corpus.files)


@dataclass(frozen=True)
class Baselines:
    """What the tool is measured against: the shell pipeline, and four floors that read every byte
    once (sha256sum: and hash it; cat: nothing more; python: the least a Python program does per
    file for what `run` records, ``hash_floor.py``; compute: that and libgit2's diff of every
    changed file, the least `run` computes, ``hash_floor.py --versions``)."""

    shell: Timing
    sha256sum: Timing
    cat: Timing
    python: Timing
    compute: Timing
    stat: Timing
    """An lstat of every file and nothing read (find -printf): the least an unchanged resync does."""


def bench_baselines(corpus: Corpus, work: Path) -> Baselines:
    """The shell pipeline and the floors, each on its own fresh copy."""
    root, url = fresh_copy(corpus, work / "shell", corpus.sqlite_url)
    script = work / "pipeline.sh"
    script.write_text(shell_pipeline(url, root))
    seconds, rss = timed(["bash", str(script)])
    shell = Timing("shell pipeline (mv, find \\| wc, du -sb, diff -ruN)", "-", seconds, rss, corpus.files)
    root, _ = fresh_copy(corpus, work / "floor", corpus.sqlite_url)
    seconds, rss = timed(["bash", "-c", f"find {shlex.quote(str(root))} -type f -print0 | xargs -0 sha256sum > /dev/null"])
    floor = Timing("sha256sum of every file (floor)", "-", seconds, rss, corpus.files)
    root, _ = fresh_copy(corpus, work / "cat", corpus.sqlite_url)
    seconds, rss = timed(["bash", "-c", f"find {shlex.quote(str(root))} -type f -print0 | xargs -0 cat > /dev/null"])
    cat = Timing("cat of every file (floor)", "-", seconds, rss, corpus.files)
    root, _ = fresh_copy(corpus, work / "python", corpus.sqlite_url)
    seconds, rss = timed([sys.executable, str(Path(__file__).with_name("hash_floor.py")), str(root)])
    python = Timing("Python: open, read, sha256 + git sha1 of every file (floor, default workers)", "-", seconds, rss,
                    corpus.files)
    root, _ = fresh_copy(corpus, work / "compute", corpus.sqlite_url)
    seconds, rss = timed([sys.executable, str(Path(__file__).with_name("hash_floor.py")), str(root),
                          "--versions", str(corpus.folder / "codebegen.db")])
    compute = Timing("Python: the same, and libgit2's diff of every changed file against the version before "
                     "(floor of run's computing, default workers)", "-", seconds, rss, corpus.files)
    root, _ = fresh_copy(corpus, work / "stat", corpus.sqlite_url)
    seconds, rss = timed(["bash", "-c", f"find {shlex.quote(str(root))} -type f -printf '%s %T@ %C@ %i\\n' > /dev/null"])
    stat_floor = Timing("lstat of every file, nothing read: find -printf size, mtime, ctime, inode (floor of resync)",
                        "-", seconds, rss, corpus.files)
    return Baselines(shell, floor, cat, python, compute, stat_floor)


# --------------------------------------------------------------------------- report


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return f"nproc {os.cpu_count()} ({model}), {int(memory) / 1024**2:.0f} GiB RAM, Python {platform.python_version()}"


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def _megabytes(peak_rss_mb: float | None) -> str:
    return "-" if peak_rss_mb is None else f"{peak_rss_mb:.0f}"


def timings_table(by_database: dict[str, dict[str, Timing]], baselines: Baselines) -> list[str]:
    shell, floor, cat = baselines.shell, baselines.sha256sum, baselines.cat
    lines = ["| contender | database | wall s | peak RSS MB | files/s | / shell | / sha256sum | / cat |",
             "|---|---|---|---|---|---|---|---|"]
    every = [timing for timings in by_database.values() for timing in timings.values()] + [
        shell, floor, cat, baselines.python, baselines.compute, baselines.stat]
    for timing in every:
        rate = timing.files / timing.seconds if timing.seconds else float("inf")
        lines.append(f"| {timing.contender} | {timing.database} | {timing.seconds:.2f} | {_megabytes(timing.peak_rss_mb)} "
                     f"| {rate:,.0f} | {_ratio(timing.seconds, shell.seconds)} | {_ratio(timing.seconds, floor.seconds)} "
                     f"| {_ratio(timing.seconds, cat.seconds)} |")
    return lines


def tolls_table(tolls: list[Tolls], corpus: Corpus) -> list[str]:
    """The counting runs' tolls per generation and per file: system calls (every process, start-up
    and database included), fsyncs (fsync, fdatasync, syncfs), whole-machine sync() calls, pwrite64
    calls, and database round trips on the wire (PostgreSQL only)."""
    lines = ["| command | database | system calls | per file | per generation | fsyncs per generation "
             "| sync() calls | pwrite64 per generation | round trips | per generation |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    generations = max(corpus.generations, 1)
    for toll in tolls:
        trips = "n/a" if toll.round_trips is None else f"{toll.round_trips:,}"
        per_generation = "n/a" if toll.round_trips is None else f"{toll.round_trips / generations:.2f}"
        lines.append(f"| {toll.command} | {toll.database} | {toll.syscalls:,} | {toll.syscalls / max(corpus.files, 1):.1f} "
                     f"| {toll.syscalls / generations:.0f} | {toll.fsyncs / generations:.2f} | {toll.syncs} "
                     f"| {toll.pwrites / generations:.1f} | {trips} | {per_generation} |")
    return lines


def ratios_table(by_database: dict[str, dict[str, Timing]], baselines: Baselines) -> list[str]:
    shell, floor, cat = baselines.shell, baselines.sha256sum, baselines.cat
    lines = ["| database | run/shell | run/sha256sum | run/cat | run --workers 1/shell | resync/run "
             "| resync after chmod -R/run | compute floor/sha256sum | write floor/sha256sum | stat floor/sha256sum "
             "| resync/stat floor | peak RSS of run MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, timings in by_database.items():
        run, single, resync, writes = timings[RUN], timings[RUN_ONE], timings[RESYNC], timings[WRITE_FLOOR]
        lines.append(f"| {label} | {_ratio(run.seconds, shell.seconds)} | {_ratio(run.seconds, floor.seconds)} "
                     f"| {_ratio(run.seconds, cat.seconds)} | {_ratio(single.seconds, shell.seconds)} "
                     f"| {_ratio(resync.seconds, run.seconds)} | {_ratio(timings[RESYNC_STATS].seconds, run.seconds)} "
                     f"| {_ratio(baselines.compute.seconds, floor.seconds)} | {_ratio(writes.seconds, floor.seconds)} "
                     f"| {_ratio(baselines.stat.seconds, floor.seconds)} | {_ratio(resync.seconds, baselines.stat.seconds)} "
                     f"| {_megabytes(run.peak_rss_mb)} |")
    return lines


# --------------------------------------------------------------------------- main


def bench_corpus(name: str, arguments: argparse.Namespace, work: Path) -> None:
    """Build one corpus, time every contender on every database, print its header and tables."""
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "corpus"
    folder.mkdir()
    store_output_files = not arguments.no_output_files
    if name in CORPORA:
        corpus = build_real(folder, arguments.scale, name, store_output_files)
    else:
        corpus = build_synthetic(folder, SampleSize.scaled(arguments.generations * arguments.scale,
                                                           arguments.files * arguments.scale), store_output_files)
    databases = [label.strip() for label in arguments.database.split(",") if label.strip()]
    postgres = prepare_postgres(corpus.sqlite_url) if "postgresql" in databases else None
    try:
        upgrade_schema(corpus.sqlite_url, HEAD_REVISION)
        settle()                    # the corpus's scratch folders, an earlier corpus's copies
        by_database, tolls = {}, []
        for label in databases:
            url = corpus.sqlite_url if label == "sqlite" else postgres.url  # type: ignore[union-attr]
            by_database[label], counted_tolls = bench_database(label, url, corpus, work, arguments.workers,
                                                               postgres if label == "postgresql" else None)
            tolls += counted_tolls
        baselines = bench_baselines(corpus, work)
    finally:
        if postgres:
            drop_postgres(postgres)
    print(f"## {name} corpus\n\nmachine: {machine()}\ncorpus: {corpus.description}; "
          f"warm page cache for every contender\n{corpus.file_lengths}\n")
    print("\n".join(timings_table(by_database, baselines)) + "\n")
    print("\n".join(ratios_table(by_database, baselines)) + "\n")
    print("\n".join(tolls_table(tolls, corpus)) + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=(*CORPORA, "synthetic", *CORPUS_GROUPS), default="all")
    parser.add_argument("--scale", type=int, default=1,
                        help="K copies of each app, real or long project, K times the synthetic size")
    parser.add_argument("--generations", type=int, default=1000, help="synthetic corpus only")
    parser.add_argument("--files", type=int, default=60_000, help="synthetic corpus only")
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=None, help="for run and resync; default: the tool's own")
    parser.add_argument("--no-output-files", action="store_true",
                        help="leave output_files NULL in every row (rows the application wrote before it kept "
                             "files there); by default each row holds its text files, as the application writes them")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    arguments = parser.parse_args()
    if arguments.scale < 1:
        parser.error("--scale must be at least 1")
    work = arguments.workdir or Path(tempfile.mkdtemp(prefix="storage-migrate-bench-"))
    names = CORPUS_GROUPS.get(arguments.corpus, (arguments.corpus,))
    try:
        for name in names:
            bench_corpus(name, arguments, work / name)
            if not arguments.keep:
                shutil.rmtree(work / name, ignore_errors=True)
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
