"""Realistic installations for tests, built with the project's own sample-data generator, and the
means to compare two of them: a digest of the disk tree and a dump of the tables."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION, HEAD_REVISION, Settings
from storage_migrator.db.revisions import upgrade_schema
from storage_migrator.demo import SampleInstallation, SampleSize, generate_installation
from storage_migrator.errors import GenerationError
from storage_migrator.storage.handle import Storage, open_storage
from storage_migrator.storage.layout import StorageLayout
from storage_migrator.storage.manifest import Manifest, read_manifest, summarize_tree
from storage_migrator.storage.tree import TreeSnapshot, scan_tree

SMALL = SampleSize(projects=5, generations_per_project=4, files_per_generation=12)
PATH_PREFIX = "./storage/projects"


@dataclass(frozen=True)
class Sandbox:
    settings: Settings
    sample: SampleInstallation

    @property
    def root(self) -> Path:
        return self.settings.storage_root

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url, poolclass=sa.pool.NullPool)

    def cli_environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "STORAGE_ROOT": str(self.root),
            "STORAGE_PATH_PREFIX": PATH_PREFIX,
        }


def build_installation(database_url: str, root: Path, size: SampleSize = SMALL, seed: int = 0,
                       to_head: bool = True) -> Sandbox:
    """A legacy installation, upgraded to head (as an operator would before running the tool)."""
    upgrade_schema(database_url, BASE_REVISION)
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    sample = generate_installation(engine, root, size, seed=seed)
    engine.dispose()
    if to_head:
        upgrade_schema(database_url, HEAD_REVISION)
    return Sandbox(Settings(database_url, root, PATH_PREFIX), sample)


def snapshot(path: Path) -> dict[str, tuple[Any, ...]]:
    """Everything observable about a folder without following links: names, types, modes,
    inodes, mtimes, file contents and link targets."""
    found: dict[str, tuple[Any, ...]] = {}
    top = os.lstat(path)
    found["."] = (top.st_mode, top.st_ino, top.st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            if stat.S_ISLNK(st_.st_mode):
                content: Any = os.readlink(full)
            elif stat.S_ISREG(st_.st_mode):
                content = Path(full).read_bytes()
            else:
                content = None
            found[os.path.relpath(full, path)] = (st_.st_mode, st_.st_ino, st_.st_mtime_ns, st_.st_size, content)
    return found


def open_fds() -> int:
    """Descriptors this process holds now (a walk or a refused call must leave none behind)."""
    return len(os.listdir("/proc/self/fd"))


def storage_around(path: Path) -> Storage:
    """An opened ROOT at ``path``'s parent, for a test that reads one folder or file through the
    production functions (which take the opened ROOT explicitly); the caller closes it."""
    return open_storage(StorageLayout(Path(path).parent, "./storage/projects"))


def scan(folder: Path) -> TreeSnapshot:
    """``scan_tree`` of one folder (its bytes kept), as the executor reads it."""
    with storage_around(folder) as storage:
        snapshot = scan_tree(storage, Path(folder))
        snapshot.contents = {path: snapshot.read(path) for path in snapshot.files}
        return snapshot


def manifest_at(path: Path) -> Manifest | None:
    """``read_manifest`` of one manifest file, as the planner reads it."""
    with storage_around(path) as storage:
        return read_manifest(storage, Path(path))


def execute_sql(installation: Sandbox, sql: str, **parameters: object) -> None:
    """One statement in its own transaction, the way the application commits its changes."""
    engine = installation.engine()
    with engine.begin() as connection:
        connection.execute(sa.text(sql), parameters)
    engine.dispose()


def query_rows(installation: Sandbox, sql: str, **parameters: object) -> list[sa.Row]:
    engine = installation.engine()
    with engine.connect() as connection:
        found = connection.execute(sa.text(sql), parameters).all()
    engine.dispose()
    return found


def query_scalar(installation: Sandbox, sql: str, **parameters: object) -> object:
    found = query_rows(installation, sql, **parameters)
    return found[0][0] if found else None


def empty_public_schema(database_url: str) -> None:
    """Empty a PostgreSQL test database (faster than dropping and creating it)."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry below ``root`` (the tool's lock and trash aside) → its kind and content hash,
    link target or mode, so two trees compare byte for byte."""
    digest: dict[str, str] = {}
    for directory, folders, files in os.walk(root):
        relative_dir = Path(directory).relative_to(root)
        if relative_dir.parts[:1] == (".storage-migrate",):
            continue
        for name in folders + files:
            path = Path(directory) / name
            relative = str(relative_dir / name)
            status = path.lstat()
            if stat.S_ISLNK(status.st_mode):
                digest[relative] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(status.st_mode):
                digest[relative] = "dir"
            elif name == "manifest.json":
                digest[relative] = _manifest_digest(path)
            else:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
                # The tool's patches are compared by content; the generated files also by mtime,
                # which a move or a verified copy must keep.
                digest[relative] = f"file:{content}" + ("" if name.endswith(".patch") else f":{status.st_mtime_ns}")
    digest.pop(".storage-migrate", None)
    return digest


def _manifest_digest(path: Path) -> str:
    """A manifest by content, but for its fingerprints (ctime and inode differ between two
    installations whatever happened), which must instead be those of ``source/`` beside it now,
    and its ``manifest_sha256`` (which hashes them too), which must hold."""
    content = path.read_bytes()
    try:
        document = json.loads(content)
    except ValueError:
        return f"file:{hashlib.sha256(content).hexdigest()}"
    if not isinstance(document, dict) or "fingerprints" not in document:
        return f"file:{hashlib.sha256(content).hexdigest()}"
    recorded = document.pop("fingerprint_digest", None)
    document.pop("fingerprints")
    sealed = document.pop("manifest_sha256", None) is None or manifest_at(path) is not None
    with storage_around(path.parent) as storage:
        try:
            current = summarize_tree(storage, path.parent / "source").fingerprint_digest == recorded
        except GenerationError:
            current = False
    rest = hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()
    return f"manifest:{rest}:fingerprints {'current' if current else 'stale'}{'' if sealed else ':seal broken'}"


def dump_tables(database_url: str) -> dict[str, list[dict]]:
    """Both tables' rows, every column, sorted by id, JSON-normalised."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    tables: dict[str, list[dict]] = {}
    with engine.connect() as connection:
        for table in ("projects", "generations"):
            result = connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
            rows = []
            for row in result.mappings():
                normalised = {}
                for key, value in row.items():
                    if isinstance(value, str) and key in ("changes_summary", "output_files", "constraints", "context"):
                        value = json.loads(value)
                    normalised[key] = value if isinstance(value, (int, float, str, type(None), dict, list, bool)) else str(value)
                rows.append(normalised)
            tables[table] = rows
    engine.dispose()
    return tables


def run_cli(installation: Sandbox, *arguments: str, extra_environment: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, configured through the environment like cron would."""
    environment = {**installation.cli_environment(), **(extra_environment or {})}
    return subprocess.run(
        [sys.executable, "-m", "storage_migrator", *arguments],
        env=environment, capture_output=True, text=True, timeout=timeout,
    )


def wait_until_stopped(process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until ``process`` or one of its descendants (``ip netns exec`` in front of it, a worker)
    has stopped itself (SIGSTOP at a step, ``faults.checkpoint``); fails if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before pausing ({process.returncode}): {process.communicate()}")
        for pid in process_tree(process.pid):
            try:
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "T":
                    return
            except FileNotFoundError:
                continue
        time.sleep(0.05)
    raise AssertionError("the run never paused")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found = [pid]
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for line in child.read_text().split():
            found.extend(process_tree(int(line)))
    return found


ANNOUNCEMENT = "storage-migrate: database "


def error_lines(stderr: str) -> list[str]:
    """stderr without the line every command starts with (which database, which ROOT)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith(ANNOUNCEMENT)]


SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "output.schema.json"


def check_json_output(kind: str, text: str) -> dict[str, Any]:
    """``text`` parsed, after checking it against the ``kind`` definition of the JSON output schema."""
    schema = json.loads(SCHEMA_FILE.read_text())
    document = json.loads(text)
    jsonschema.validate(document, {**schema, "oneOf": [{"$ref": f"#/$defs/{kind}"}]})
    return document


def end_state(installation: Sandbox) -> tuple[dict, dict]:
    tables = dump_tables(installation.database_url)
    for rows in tables.values():
        for row in rows:
            row.pop("updated_at", None)
    return tree_digest(installation.root), tables


def edit_a_diff_base_in_place(installation: Sandbox) -> tuple[str, str]:
    """One byte of one file changed, its size kept, in a completed version that a later one of
    its project is diffed from: only the fingerprint (mtime, ctime) says the file was written.
    The new mtime is the old one plus a second, so two copies edited apart end alike."""
    rows = query_rows(installation, "SELECT project_id, id, version FROM generations WHERE status = 'completed' "
                                    "ORDER BY project_id, version")
    by_project: dict[str, list[sa.Row]] = {}
    for row in rows:
        by_project.setdefault(row.project_id, []).append(row)
    base = next(versions[0] for versions in by_project.values() if len(versions) >= 2)
    (source,) = installation.root.glob(f"{base.project_id}/generations/v{base.version}__{base.id}/source")
    edited = next(path for path in sorted(source.rglob("*")) if path.is_file() and path.stat().st_size > 0)
    content = bytearray(edited.read_bytes())
    content[len(content) // 2] = ord("Q") if content[len(content) // 2] != ord("Q") else ord("R")
    status = edited.stat()
    edited.write_bytes(bytes(content))
    os.utime(edited, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    return base.project_id, base.id


def sqlite_copy(installation: Sandbox, destination: Path) -> Sandbox:
    """The same SQLite installation byte for byte in ``destination`` (ROOT with mtimes and links)."""
    database = Path(installation.database_url.removeprefix("sqlite:///"))
    destination.mkdir()
    shutil.copy2(database, destination / database.name)
    shutil.copytree(installation.root, destination / "projects", symlinks=True)
    settings = replace(installation.settings, database_url=f"sqlite:///{destination / database.name}",
                       storage_root=destination / "projects")
    return replace(installation, settings=settings)


def demo_versions(installation: Sandbox) -> list[sa.Row]:
    return query_rows(installation, "SELECT id, version, file_count, total_size_bytes, changes_summary, diff_from_previous "
                "FROM generations WHERE project_id = :p AND status = 'completed' ORDER BY version",
                p=installation.sample.demo_project_id)


def source_of(installation: Sandbox, generation_id: str, version: int) -> Path:
    return installation.root / installation.sample.demo_project_id / "generations" / f"v{version}__{generation_id}" / "source"


def verify_json(installation: Sandbox) -> tuple[int, dict]:
    result = run_cli(installation, "--json", "verify")
    return result.returncode, json.loads(result.stdout)


def first_project(installation: Sandbox) -> str:
    """The project the run handles first (projects stream in id order)."""
    return str(query_scalar(installation, "SELECT MIN(project_id) FROM generations"))
