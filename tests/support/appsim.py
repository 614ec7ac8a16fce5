"""A simulator of the code-generation application (github SamuelOshin/codebegen_be) for the
concurrent-load test: one process loops over the application's storage behaviours with plain SQL
through SQLAlchemy (sync) and plain file operations, the way its code does them, and writes a JSON
line for everything it did.

It imports nothing of the tool: it is the application. What it imitates (the SPEC's
account of the running application):

* ``generations`` router: INSERT without a version (the column default, 1), status pending, then
  processing.
* ``GenerationService.create_generation``: reads ``projects.latest_version``, inserts the row with
  ``latest_version + 1`` and writes that number back, in one transaction (its ORM takes no row
  lock, and on SQLite the read happens before the write transaction begins).
* The phased generator: after each phase ``FileManager.create_project_structure`` rmtree's and
  rewrites the flat scratch copy ``<ROOT>/<id>/`` with every file so far; it stays there.
* ``save_generation_output``: ``source/`` + ``artifacts/`` + ``manifest.json`` (its keys, with
  ``metadata``), ``diff_from_v<N-1>.patch`` by ``diff -ru`` between the first ``v<N-1>__*`` and
  ``v<N>__*`` folders it globs, ``storage_path`` = ``str(Path(FILE_STORAGE_PATH) / …)``, its
  ``changes_summary``, status completed; then ``set_active_generation``: the ORM loads the
  project's generations, writes ``is_active`` only where it changes, sets
  ``active_generation_id``, repoints the relative ``active`` link to the first ``v<N>__*`` it
  globs, and commits.
* Flat-layout endpoints: ``update_file_content`` (mkdir parents, write through ``<ROOT>/<id>/``),
  ``get_project_files`` (rglob of ``<ROOT>/<id>/``), ``create_zip_archive`` (``<ROOT>/<id>.zip``).
* ``delete_generation``: refuses an ``is_active`` one, ``rmtree(storage_path)`` if it exists (the
  path is relative to the application's working directory; here resolved against ROOT), then
  DELETE; the flat folder or link is left alone.
* ``cleanup_old_generations``: moves all but the latest ``keep_latest`` ``v<N>__<id>`` folders
  into ``<ROOT>/<p>/archive/``; the row is not touched.

The simulator's processes serialise their own requests per project with a file lock (outside
ROOT), like one application server handling one request per project at a time, so any anomaly
found involves the tool. Usage: ``python tests/support/appsim.py CONFIG.json INDEX`` (see ``main``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
import time
import traceback
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

FILE_STORAGE_PATH = "./storage/projects"   # the application's setting; ROOT on this machine is elsewhere
KEEP_LATEST = 4                            # cleanup_old_generations(keep_latest=…), small so it archives

# The behaviours and how often the simulator picks each.
WEIGHTS = {
    "create_service": 5,
    "create_router": 2,
    "edit_flat": 4,
    "read": 8,
    "activate": 3,
    "delete": 2,
    "archive": 1,
}


def utcnow_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


class Application:
    def __init__(self, config: dict, index: int) -> None:
        self.index = index
        self.root = Path(config["root"])
        self.lock_dir = Path(config["lock_dir"])
        self.deadline = float(config["deadline"])
        self.rng = random.Random(int(config["seed"]) + index)
        self.log_file = open(config["log_dir"] + f"/app-{index}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        # Files of every generation as they were before the load (legacy folders), by id.
        self.baseline: dict[str, list[str]] = config.get("baseline", {})
        # Files this process wrote, by generation id (the scratch copy and source/ hold the same).
        self.written: dict[str, list[str]] = {}
        url = config["database_url"]
        if url.startswith("sqlite"):
            connect_args: dict = {"timeout": 60}
        else:
            connect_args = {"application_name": f"appsim-{index}"}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        self.is_sqlite = url.startswith("sqlite")

    # ---------------------------------------------------------------- logging and helpers

    def log(self, event: str, **fields: object) -> None:
        record = {"t": time.time(), "proc": self.index, "event": event, **fields}
        self.log_file.write(json.dumps(record, default=str) + "\n")
        self.log_file.flush()

    @contextlib.contextmanager
    def project_lock(self, project_id: str) -> Iterator[None]:
        with open(self.lock_dir / f"{project_id}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def db_path(self, below_root: str) -> str:
        """How the application spells a path in the database: str(Path(FILE_STORAGE_PATH) / …)."""
        return str(Path(FILE_STORAGE_PATH) / below_root)

    def disk_path(self, storage_path: str) -> Path | None:
        """The application opens ``storage_path`` relative to its working directory, where
        FILE_STORAGE_PATH is ROOT: map the prefix onto this test's ROOT."""
        parts = PurePosixPath(storage_path).parts
        prefix = PurePosixPath(FILE_STORAGE_PATH).parts
        prefix = tuple(part for part in prefix if part != ".")
        parts = tuple(part for part in parts if part != ".")
        if parts[: len(prefix)] != prefix:
            return None
        return self.root.joinpath(*parts[len(prefix):])

    def projects(self) -> list[str]:
        with self.engine.connect() as connection:
            return [row[0] for row in connection.execute(sa.text("SELECT id FROM projects ORDER BY id"))]

    def generations(self, project_id: str, statuses: tuple[str, ...] = ("completed",)) -> list[sa.Row]:
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.text("SELECT id, version, status, storage_path, is_active FROM generations "
                        "WHERE project_id = :p ORDER BY version, id"), {"p": project_id}).all()
        return [row for row in found if row.status in statuses]

    def files_for(self, version: int, previous: dict[str, str] | None) -> dict[str, str]:
        """A generated project: the previous version with a few edits, or a fresh one."""
        rng = self.rng
        if not previous:
            files = {
                "README.md": f"# Generated project\n\nversion {version}\n",
                "requirements.txt": "fastapi==0.110.0\nsqlalchemy==2.0.29\n",
                "app/__init__.py": "",
                "app/main.py": "from fastapi import FastAPI\n\napp = FastAPI()\n",
                "app/core/config.py": "DATABASE_URL = 'postgresql://localhost/app'\n",
            }
            for number in range(rng.randint(2, 5)):
                files[f"app/models/entity_{number}.py"] = "".join(
                    f"field_{line} = {rng.randint(0, 10**6)}\n" for line in range(rng.randint(5, 60)))
            return files
        files = dict(previous)
        for path in rng.sample(sorted(files), k=min(len(files), rng.randint(1, 3))):
            files[path] = files[path] + f"# edited in v{version}: {rng.random()}\n"
        if rng.random() < 0.4:
            files[f"app/routers/route_{version}_{rng.randint(0, 99)}.py"] = f"ROUTE = {version}\n"
        models = sorted(path for path in files if path.startswith("app/models/"))
        if rng.random() < 0.2 and len(files) > 6 and models:
            del files[rng.choice(models)]
        return files

    # ---------------------------------------------------------------- the behaviours

    def create(self, via_service: bool) -> None:
        project_id = self.rng.choice(self.projects())
        generation_id = str(uuid.uuid4())
        with self.project_lock(project_id):
            started = time.time()
            with self.engine.begin() as connection:
                project = connection.execute(sa.text("SELECT user_id, latest_version FROM projects WHERE id = :p"),
                                             {"p": project_id}).first()
                if project is None:
                    self.log("app_error", op="create", project_id=project_id, error="project gone")
                    return
                if via_service:
                    # GenerationService.create_generation: latest_version + 1, written back.
                    number = project.latest_version + 1
                    connection.execute(sa.text(
                        "INSERT INTO generations (id, project_id, user_id, prompt, context, version, status, "
                        "is_iteration, is_active, file_count) VALUES (:id, :p, :u, :prompt, :context, :v, "
                        "'processing', :false, :false, 0)"),
                        {"id": generation_id, "p": project_id, "u": project.user_id, "prompt": "load: service",
                         "context": json.dumps({"sim": self.index}), "v": number, "false": False})
                    connection.execute(sa.text("UPDATE projects SET latest_version = :v, updated_at = CURRENT_TIMESTAMP "
                                               "WHERE id = :p"), {"v": number, "p": project_id})
                else:
                    # The router: no version (the column default, 1 applies), status pending.
                    number = 1
                    connection.execute(sa.text(
                        "INSERT INTO generations (id, project_id, user_id, prompt, context, status, is_iteration, "
                        "is_active, file_count) VALUES (:id, :p, :u, :prompt, :context, 'pending', :false, :false, 0)"),
                        {"id": generation_id, "p": project_id, "u": project.user_id, "prompt": "load: router",
                         "context": json.dumps({"sim": self.index}), "false": False})
            if via_service:
                self.log("number", project_id=project_id, generation_id=generation_id, version=number,
                         read_latest=project.latest_version, started=started, committed=time.time())
            else:
                self.log("router_insert", project_id=project_id, generation_id=generation_id)
                with self.engine.begin() as connection:
                    connection.execute(sa.text("UPDATE generations SET status = 'processing' WHERE id = :id"),
                                       {"id": generation_id})
            previous = self.previous_files(project_id, number)
        files = self.files_for(number, previous)
        self.phased_scratch(generation_id, files)
        with self.project_lock(project_id):
            self.save_output(project_id, generation_id, files)

    def previous_files(self, project_id: str, version: int) -> dict[str, str] | None:
        """What the generator iterates on: the files of the project's first ``v<N-1>__*``."""
        generations_dir = self.root / project_id / "generations"
        matches = sorted(generations_dir.glob(f"v{version - 1}__*")) if generations_dir.is_dir() else []
        if not matches:
            return None
        source = matches[0] / "source"
        files: dict[str, str] = {}
        try:
            for path in source.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    with contextlib.suppress(UnicodeDecodeError):
                        files[str(path.relative_to(source))] = path.read_text("utf-8")
        except OSError:
            return None
        return files if files and len(files) < 200 else None

    def phased_scratch(self, generation_id: str, files: dict[str, str]) -> None:
        """The phased generator saves every file so far after each phase, through
        ``create_project_structure``: rmtree the flat folder if it exists, then rewrite it."""
        paths = sorted(files)
        phases = self.rng.randint(2, 3)
        project_dir = self.root / generation_id
        for phase in range(1, phases + 1):
            so_far = paths[: max(1, len(paths) * phase // phases)]
            if project_dir.exists():
                shutil.rmtree(project_dir)
            project_dir.mkdir(parents=True)
            for path in so_far:
                full = project_dir / path
                full.parent.mkdir(parents=True, exist_ok=True)
                full.write_text(files[path], encoding="utf-8")
            time.sleep(self.rng.uniform(0.02, 0.15))

    def save_output(self, project_id: str, generation_id: str, files: dict[str, str]) -> None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.text("SELECT version, created_at, prompt FROM generations WHERE id = :id"),
                                     {"id": generation_id}).first()
        if row is None:
            self.log("app_error", op="save_output", generation_id=generation_id, error="generation gone before save")
            return
        version = row.version
        below = f"{project_id}/generations/v{version}__{generation_id}"
        generation_dir = self.root / below
        (generation_dir / "source").mkdir(parents=True, exist_ok=True)
        (generation_dir / "artifacts").mkdir(parents=True, exist_ok=True)
        total = sum(len(content.encode("utf-8")) for content in files.values())
        created_at = row.created_at.isoformat() if hasattr(row.created_at, "isoformat") else row.created_at
        manifest = {"generation_id": generation_id, "project_id": project_id, "version": version,
                    "created_at": utcnow_iso(), "file_count": len(files), "total_size_bytes": total,
                    "files": list(files.keys()), "metadata": {"prompt": row.prompt, "created_at": created_at}}
        (generation_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for path, content in files.items():
            full = generation_dir / "source" / path
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(content, encoding="utf-8")
        self.written[generation_id] = sorted(files)
        diff_path, summary = None, None
        if version > 1:
            diff_path = self.create_generation_diff(project_id, version - 1, version)
            if diff_path:
                summary = {"diff_created_at": utcnow_iso(), "from_version": version - 1, "to_version": version}
        with self.engine.begin() as connection:
            updated = connection.execute(sa.text(
                "UPDATE generations SET storage_path = :path, file_count = :count, total_size_bytes = :size, "
                "output_files = :files, status = 'completed', diff_from_previous = COALESCE(:diff, diff_from_previous), "
                "changes_summary = COALESCE(:summary, changes_summary), updated_at = CURRENT_TIMESTAMP WHERE id = :id"),
                {"path": self.db_path(below), "count": len(files), "size": total, "files": json.dumps(files),
                 "diff": diff_path, "summary": json.dumps(summary) if summary else None, "id": generation_id})
        if updated.rowcount != 1:
            self.log("app_error", op="save_output", generation_id=generation_id, error="row gone at commit")
            return
        self.log("saved", project_id=project_id, generation_id=generation_id, version=version,
                 files=sorted(files), scratch=True)
        if self.rng.random() < 0.3:
            self.create_zip_archive(generation_id)
        self.set_active(project_id, generation_id)

    def create_generation_diff(self, project_id: str, from_version: int, to_version: int) -> str | None:
        generations_dir = self.root / project_id / "generations"
        from_dirs = list(generations_dir.glob(f"v{from_version}__*"))
        to_dirs = list(generations_dir.glob(f"v{to_version}__*"))
        if not from_dirs or not to_dirs:
            return None
        result = subprocess.run(["diff", "-ru", str(from_dirs[0] / "source"), str(to_dirs[0] / "source")],
                                capture_output=True, text=True)
        patch = to_dirs[0] / f"diff_from_v{from_version}.patch"
        patch.write_text(result.stdout, encoding="utf-8")
        return self.db_path(str(patch.relative_to(self.root)))

    def create_zip_archive(self, generation_id: str) -> None:
        project_dir = self.root / generation_id
        if not project_dir.exists():
            return
        with zipfile.ZipFile(self.root / f"{generation_id}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for path in project_dir.rglob("*"):
                if path.is_file():
                    archive.write(path, path.relative_to(project_dir))

    def set_active(self, project_id: str, generation_id: str) -> None:
        """GenerationService.set_active_generation with its ORM's unit of work."""
        with self.engine.begin() as connection:
            loaded = connection.execute(sa.text("SELECT id, is_active, version FROM generations WHERE project_id = :p"),
                                        {"p": project_id}).all()
            chosen = next((row for row in loaded if row.id == generation_id), None)
            if chosen is None:
                self.log("app_error", op="activate", generation_id=generation_id, error="generation gone")
                return
            for row in loaded:
                wanted = row.id == generation_id
                if bool(row.is_active) != wanted:     # the ORM writes only what changed
                    connection.execute(sa.text("UPDATE generations SET is_active = :a, updated_at = CURRENT_TIMESTAMP "
                                               "WHERE id = :id"), {"a": wanted, "id": row.id})
            connection.execute(sa.text("UPDATE projects SET active_generation_id = :g, updated_at = CURRENT_TIMESTAMP "
                                       "WHERE id = :p"), {"g": generation_id, "p": project_id})
            self.repoint_active_link(project_id, chosen.version)
        self.log("activated", project_id=project_id, generation_id=generation_id, version=chosen.version)

    def repoint_active_link(self, project_id: str, version: int) -> None:
        generations_dir = self.root / project_id / "generations"
        if not generations_dir.exists():
            return
        targets = list(generations_dir.glob(f"v{version}__*"))
        if not targets:
            return
        link = generations_dir / "active"
        if link.exists() or link.is_symlink():
            with contextlib.suppress(OSError):
                link.unlink()
        with contextlib.suppress(OSError):       # "symlink creation is optional"
            link.symlink_to(targets[0].name)

    def archived_ids(self, project_id: str) -> set[str]:
        archive = self.root / project_id / "archive"
        if not archive.is_dir():
            return set()
        return {entry.name.split("__", 1)[1] for entry in archive.iterdir() if "__" in entry.name}

    def pick_completed(self, project_id: str) -> sa.Row | None:
        archived = self.archived_ids(project_id)
        candidates = [row for row in self.generations(project_id) if row.id not in archived]
        return self.rng.choice(candidates) if candidates else None

    def edit_flat(self) -> None:
        project_id = self.rng.choice(self.projects())
        with self.project_lock(project_id):
            row = self.pick_completed(project_id)
            if row is None:
                return
            flat = self.root / row.id
            if not flat.exists():           # the endpoint 404s before writing
                return
            try:
                listed = [path for path in flat.rglob("*") if path.is_file()]
            except OSError:
                listed = []
            if not listed:
                return
            target = self.rng.choice(sorted(listed))
            relative = str(target.relative_to(flat))
            was_link = flat.is_symlink()
            marker = f"# edited through the flat path by app {self.index} at {time.time()!r}\n"
            try:
                content = target.read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                return
            # update_file_content: mkdir parents, write_text.
            try:
                full = self.root / row.id / relative
                full.parent.mkdir(parents=True, exist_ok=True)
                full.write_text(content + marker, encoding="utf-8")
            except OSError as error:
                self.log("app_error", op="edit_flat", generation_id=row.id, path=relative, error=repr(error))
                return
            self.log("edited", project_id=project_id, generation_id=row.id, path=relative, marker=marker,
                     through_link=was_link)

    def expected_files(self, generation_id: str, storage_dir: Path | None) -> list[str] | None:
        if generation_id in self.written:
            return self.written[generation_id]
        if generation_id in self.baseline:
            return self.baseline[generation_id]
        if storage_dir is not None:
            try:
                manifest = json.loads((storage_dir / "manifest.json").read_text("utf-8"))
                files = manifest.get("files")
                if isinstance(files, list):
                    return [str(path) for path in files]
            except (OSError, ValueError):
                return None
        return None

    def read_tree(self, directory: Path) -> set[str] | None:
        """get_project_files: every file below, read (binary ones are skipped by the app, but
        here read as bytes so a file the app listed counts)."""
        if not directory.exists():
            return None
        found = set()
        for path in directory.rglob("*"):
            if path.is_file():
                path.read_bytes()
                found.add(str(path.relative_to(directory)))
        return found

    def read(self) -> None:
        project_id = self.rng.choice(self.projects())
        with self.project_lock(project_id):
            row = self.pick_completed(project_id)
            if row is None or not row.storage_path:
                return
            for way in ("flat", "storage_path"):
                first = self.read_once(row, way)
                if first is None:
                    continue
                missing, detail = first
                if not missing:
                    self.log("read_ok", generation_id=row.id, way=way)
                    continue
                # Would a request a moment later, which re-reads the row, see the files?
                time.sleep(0.2)
                fresh = self.fresh_row(row.id)
                retry = self.read_once(fresh, way) if fresh is not None else None
                self.log("read_incomplete", project_id=project_id, generation_id=row.id, way=way,
                         storage_path=row.storage_path, missing=sorted(missing)[:10], missing_count=len(missing),
                         detail=detail, storage_path_changed=fresh is not None and fresh.storage_path != row.storage_path,
                         retry_missing_count=None if retry is None else len(retry[0]))

    def fresh_row(self, generation_id: str) -> sa.Row | None:
        with self.engine.connect() as connection:
            return connection.execute(sa.text("SELECT id, version, status, storage_path, is_active FROM generations "
                                              "WHERE id = :id"), {"id": generation_id}).first()

    def read_once(self, row: sa.Row, way: str) -> tuple[set[str], str] | None:
        storage_dir = self.disk_path(row.storage_path) if row.storage_path else None
        expected = self.expected_files(row.id, storage_dir)
        if not expected:
            return None
        if way == "flat":
            directory = self.root / row.id
            if not directory.exists() and not directory.is_symlink() and row.id not in self.baseline:
                return None       # a generation the application wrote itself without a flat folder
        else:
            if storage_dir is None:
                return set(expected), f"unresolvable storage_path {row.storage_path!r}"
            directory = storage_dir / "source" if (storage_dir / "source").is_dir() else storage_dir
        try:
            found = self.read_tree(directory)
        except OSError as error:
            return set(expected), f"error: {error!r}"
        if found is None:
            return set(expected), f"{directory} does not exist"
        return set(expected) - found, "" if set(expected) <= found else f"{directory} lacks files"

    def activate(self) -> None:
        project_id = self.rng.choice(self.projects())
        with self.project_lock(project_id):
            row = self.pick_completed(project_id)
            if row is not None:
                self.set_active(project_id, row.id)

    def delete(self) -> None:
        project_id = self.rng.choice(self.projects())
        with self.project_lock(project_id):
            candidates = self.generations(project_id, ("completed", "failed"))
            if len(candidates) <= 2:
                return
            row = self.rng.choice(candidates)
            if row.is_active:
                self.log("delete_refused", project_id=project_id, generation_id=row.id, reason="active")
                return
            flat = self.root / row.id
            flat_state: object
            if flat.is_symlink():
                flat_state = {"link": os.readlink(flat)}
            elif flat.is_dir():
                try:        # the test's own record of what it leaves; the tool may be moving it right now
                    flat_state = {"dir": sorted(str(path.relative_to(flat)) for path in flat.rglob("*"))}
                except OSError:
                    flat_state = {"dir": []}
            else:
                flat_state = None
            for attempt in (1, 2):          # a 500 is retried once by the user, like the real client would
                row = self.fresh_row(row.id)        # delete_generation starts with db.get(Generation, id)
                if row is None or row.is_active:
                    self.log("delete_refused", project_id=project_id, generation_id=row.id if row else None,
                             reason="gone" if row is None else "active")
                    return
                try:
                    with self.engine.begin() as connection:
                        if row.storage_path:
                            storage_dir = self.disk_path(row.storage_path)
                            if storage_dir is None:
                                raise RuntimeError(f"storage_path {row.storage_path!r} is not below FILE_STORAGE_PATH")
                            if storage_dir.exists():
                                shutil.rmtree(storage_dir)
                        deleted = connection.execute(sa.text("DELETE FROM generations WHERE id = :id"), {"id": row.id})
                        if deleted.rowcount != 1:
                            raise RuntimeError("row already gone")
                    break
                except Exception as error:  # noqa: BLE001 — the application logs and answers 500
                    kind = "app_error_transient" if attempt == 1 else "app_error"
                    self.log(kind, op="delete", project_id=project_id, generation_id=row.id,
                             storage_path=row.storage_path, error=repr(error))
                    if attempt == 2:
                        return
                    time.sleep(0.2)
            self.log("deleted", project_id=project_id, generation_id=row.id, version=row.version,
                     storage_path=row.storage_path, flat=flat_state)

    def archive(self) -> None:
        """cleanup_old_generations(project_id, keep_latest=KEEP_LATEST) with every folder old
        enough (the age test is the only thing left out)."""
        project_id = self.rng.choice(self.projects())
        with self.project_lock(project_id):
            generations_dir = self.root / project_id / "generations"
            archive_dir = self.root / project_id / "archive"
            if not generations_dir.exists():
                return
            try:
                folders = sorted(
                    [entry for entry in generations_dir.iterdir()
                     if entry.is_dir() and entry.name.startswith("v") and "__" in entry.name],
                    key=lambda path: int(path.name.split("__")[0][1:]))
            except (OSError, ValueError) as error:
                self.log("archive_skipped", project_id=project_id, error=repr(error))
                return
            old = folders[:-KEEP_LATEST] if len(folders) > KEEP_LATEST else []
            for folder in old[:2]:
                archive_dir.mkdir(exist_ok=True)
                target = archive_dir / folder.name
                try:
                    shutil.move(str(folder), str(target))
                except OSError as error:
                    self.log("app_error", op="archive", project_id=project_id, folder=folder.name, error=repr(error))
                    continue
                self.log("archived", project_id=project_id, folder=folder.name,
                         generation_id=folder.name.split("__", 1)[1])

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        names = list(WEIGHTS)
        weights = [WEIGHTS[name] for name in names]
        while time.time() < self.deadline:
            name = self.rng.choices(names, weights)[0]
            try:
                if name == "create_service":
                    self.create(via_service=True)
                elif name == "create_router":
                    self.create(via_service=False)
                else:
                    getattr(self, name)()
            except Exception as error:  # noqa: BLE001 — every failure is recorded, the loop goes on
                self.log("app_error", op=name, error=repr(error), traceback=traceback.format_exc()[-2000:])
            time.sleep(self.rng.uniform(0.01, 0.08))
        self.log("done")
        self.engine.dispose()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    Application(config, int(sys.argv[2])).run()


if __name__ == "__main__":
    main()
