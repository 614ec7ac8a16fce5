"""The application's own writes, as its newest commit makes them: a save (manifest first, then
the files, then its row), and the rows a test reads back."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.support.sandbox import Sandbox, execute_sql, query_rows

FILES = {"app/main.py": "print('written by the application')\n", "README.md": "# generated\n"}


def app_saves(installation: Sandbox, version: int, *, status: str, with_storage_path: bool,
              files: dict[str, str] = FILES, summary: dict | None = None,
              broke_after: int | None = None) -> tuple[str, Path]:
    """The application's save (`save_generation_files_hierarchical` then its row update): returns
    the generation id and its version folder. ``with_storage_path`` False: a route that drops the
    column; ``status`` failed: the auto-activation raised after the save; ``broke_after``: the
    save broke after writing that many files (its row keeps the generator's ``output_files``)."""
    generation_id = str(uuid.uuid4())
    project_id = installation.sample.demo_project_id
    target = installation.root / project_id / "generations" / f"v{version}__{generation_id}"
    (target / "source").mkdir(parents=True)
    (target / "artifacts").mkdir()
    total = sum(len(content.encode("utf-8")) for content in files.values())
    manifest = {"generation_id": generation_id, "project_id": project_id, "version": version,
                "created_at": "2026-11-25T10:00:00", "file_count": len(files), "total_size_bytes": total,
                "files": list(files), "metadata": {"model": "the application's own key"}}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for path, content in list(files.items())[:broke_after]:
        (target / "source" / path).parent.mkdir(parents=True, exist_ok=True)
        (target / "source" / path).write_text(content, encoding="utf-8")
    execute_sql(installation, "INSERT INTO generations (id, project_id, user_id, prompt, status, version, storage_path, "
            "file_count, total_size_bytes, output_files, changes_summary) SELECT :id, id, user_id, 'app', :status, :v, "
            ":path, :count, :size, :files, :summary FROM projects WHERE id = :p",
            id=generation_id, status=status, v=version, p=project_id, count=len(files), size=total,
            path=f"storage/projects/{project_id}/generations/{target.name}" if with_storage_path else None,
            files=json.dumps(files), summary=json.dumps(summary) if summary else None)
    execute_sql(installation, "UPDATE projects SET latest_version = :v WHERE id = :p AND latest_version < :v",
            v=version, p=project_id)
    return generation_id, target


def row_of(installation: Sandbox, generation_id: str) -> dict:
    found = query_rows(installation, "SELECT status, storage_path, version, changes_summary FROM generations WHERE id = :id",
                 id=generation_id)
    return dict(found[0]._mapping)


def next_version(installation: Sandbox) -> int:
    """The application's `latest_version + 1` for the demo project."""
    found = query_rows(installation, "SELECT latest_version FROM projects WHERE id = :p", p=installation.sample.demo_project_id)
    return int(found[0][0]) + 1
