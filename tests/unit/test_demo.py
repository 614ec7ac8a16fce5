"""The sample-data generator: deterministic, and every edge case the migration must survive is
really there — in the rows and on disk — because the other modules' tests rely on it."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.config import BASE_REVISION
from storage_migrator.db.revisions import upgrade_schema
from storage_migrator.demo import SampleInstallation, SampleSize, generate_installation
from storage_migrator.demo.paths import (
    BINARY_PATHS,
    CRLF_PATH,
    EMPTY_PATH,
    LARGE_FILE_PATH,
    LATIN1_PATH,
    NO_FINAL_NEWLINE_PATH,
    SPACE_NAME_PATH,
    UNICODE_NAME_PATH,
)

SMALL = SampleSize(projects=6, generations_per_project=5, files_per_generation=18)
LOGO = BINARY_PATHS[0]


def legacy_engine(folder: Path) -> sa.Engine:
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'codebegen.db'}"
    upgrade_schema(url, BASE_REVISION)
    return sa.create_engine(url)


@dataclass(frozen=True)
class Built:
    engine: sa.Engine
    root: Path
    installation: SampleInstallation


def build(folder: Path, size: SampleSize = SMALL, seed: int = 0, **options: bool) -> Built:
    engine = legacy_engine(folder)
    root = folder / "storage" / "projects"
    return Built(engine, root, generate_installation(engine, root, size, seed, **options))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    result = build(tmp_path_factory.mktemp("sample"))
    yield result
    result.engine.dispose()


def disk_snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and folder below ROOT: bytes (None for folders) and mtime in ns."""
    return {
        path.relative_to(root).as_posix(): (None if path.is_dir() else path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def folder_files(root: Path, generation_id: str) -> dict[str, bytes]:
    folder = root / generation_id
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def all_rows(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    metadata = sa.MetaData()
    metadata.reflect(bind=engine, only=["users", "organizations", "projects", "generations"])
    with engine.connect() as connection:
        return {name: [tuple(row) for row in connection.execute(sa.select(table).order_by(table.c.id))]
                for name, table in metadata.tables.items()}


def generations(engine: sa.Engine, **equal: object) -> list[sa.Row]:
    """Generation rows (typed: datetimes, JSON) whose columns equal ``equal``, in the migration's
    version order: project, created_at, then id."""
    table = sa.Table("generations", sa.MetaData(), autoload_with=engine)
    query = sa.select(table).where(*(table.c[name] == value for name, value in equal.items()))
    with engine.connect() as connection:
        return list(connection.execute(query.order_by(table.c.project_id, table.c.created_at, table.c.id)))


def generation(engine: sa.Engine, generation_id: str) -> sa.Row:
    (row,) = generations(engine, id=generation_id)
    return row


def output_files_is_null(engine: sa.Engine, generation_id: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT output_files IS NULL FROM generations WHERE id = :id"), {"id": generation_id}
        ).scalar_one() == 1


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_mtimes_rows_and_ids(tmp_path: Path) -> None:
    first = build(tmp_path / "first", seed=7)
    second = build(tmp_path / "second", seed=7)
    assert first.installation == second.installation
    assert disk_snapshot(first.root) == disk_snapshot(second.root)
    assert all_rows(first.engine) == all_rows(second.engine)


def test_a_different_seed_gives_different_ids_and_files(tmp_path: Path, built: Built) -> None:
    other = build(tmp_path, seed=1)
    assert not set(other.installation.generation_ids) & set(built.installation.generation_ids)
    contents = lambda root: sorted(content for content, _ in disk_snapshot(root).values() if content)
    assert contents(other.root) != contents(built.root)


def test_every_id_is_a_uuid_and_every_row_is_reported(built: Built) -> None:
    rows = all_rows(built.engine)
    assert len(rows["users"]) >= 1 and len(rows["organizations"]) >= 1
    for table in rows.values():
        for row in table:
            assert str(uuid.UUID(str(row[0]))) == row[0]
    assert sorted(built.installation.project_ids) == [row[0] for row in rows["projects"]]
    assert sorted(built.installation.generation_ids) == [row[0] for row in rows["generations"]]
    assert len(built.installation.project_ids) == SMALL.projects


def test_reported_counts_match_the_disk(built: Built) -> None:
    files = [path for path in built.root.rglob("*") if path.is_file()]
    assert built.installation.file_count == len(files)
    assert built.installation.total_bytes == sum(path.stat().st_size for path in files)
    assert sorted(path.name for path in built.root.iterdir()) == sorted(built.installation.folder_generation_ids)


def test_every_mtime_is_the_generations_created_at(built: Built) -> None:
    for generation_id in built.installation.folder_generation_ids:
        created_at = as_utc(generation(built.engine, generation_id).created_at)
        expected = int(created_at.timestamp()) * 1_000_000_000
        folder = built.root / generation_id
        assert {path.stat().st_mtime_ns for path in [folder, *folder.rglob("*")]} == {expected}


# --------------------------------------------------------------------------- statuses and folders


def test_missing_folder_generation_is_completed_with_its_text_files_in_output_files(built: Built) -> None:
    generation_id = built.installation.missing_folder_generation_id
    row = generation(built.engine, generation_id)
    assert row.status == "completed"
    assert not (built.root / generation_id).exists()
    files = row.output_files if isinstance(row.output_files, dict) else None
    assert files and "app/main.py" in files
    assert all(isinstance(content, str) for content in files.values())
    assert LOGO not in files and LATIN1_PATH not in files


def test_processing_generation_has_a_partial_folder_and_no_output_files(built: Built) -> None:
    generation_id = built.installation.processing_generation_id
    assert generation(built.engine, generation_id).status == "processing"
    assert folder_files(built.root, generation_id)
    assert output_files_is_null(built.engine, generation_id)


def test_pending_generation_has_no_folder(built: Built) -> None:
    generation_id = built.installation.pending_generation_id
    assert generation(built.engine, generation_id).status == "pending"
    assert not (built.root / generation_id).exists()
    assert output_files_is_null(built.engine, generation_id)
    assert [row.id for row in generations(built.engine, status="pending")] == [generation_id]
    assert [row.id for row in generations(built.engine, status="processing")] == [
        built.installation.processing_generation_id]


def test_failed_generations_without_folder_have_null_output_files_and_an_error(built: Built) -> None:
    failed = built.installation.failed_without_folder_generation_ids
    assert failed
    for generation_id in failed:
        row = generation(built.engine, generation_id)
        assert row.status == "failed" and row.error_message
        assert output_files_is_null(built.engine, generation_id)
        assert not (built.root / generation_id).exists()


def test_failed_generation_with_partial_folder(built: Built) -> None:
    failed = built.installation.failed_with_partial_folder_generation_ids
    assert failed
    for generation_id in failed:
        row = generation(built.engine, generation_id)
        assert row.status == "failed" and row.error_message
        assert output_files_is_null(built.engine, generation_id)
        assert folder_files(built.root, generation_id)
    # the partial folder of a project that also has completed ones lacks files they have
    generation_id = next(g for g in failed if generation(built.engine, g).project_id
                         != built.installation.project_without_completed_generation_id)
    completed = generations(built.engine, project_id=generation(built.engine, generation_id).project_id,
                            status="completed")
    assert len(folder_files(built.root, generation_id)) < len(folder_files(built.root, completed[0].id))


def test_two_generations_share_created_at_and_were_inserted_in_reverse_id_order(built: Built) -> None:
    first, second = built.installation.tied_generation_ids
    assert first < second
    rows = [generation(built.engine, first), generation(built.engine, second)]
    assert rows[0].created_at == rows[1].created_at and rows[0].project_id == rows[1].project_id
    assert {row.status for row in rows} == {"completed"}
    ids = built.installation.generation_ids
    assert ids.index(second) < ids.index(first)
    with built.engine.connect() as connection:
        by_rowid = connection.execute(sa.text(
            "SELECT id FROM generations WHERE id IN (:a, :b) ORDER BY rowid"), {"a": first, "b": second}).scalars()
        assert list(by_rowid) == [second, first]
    all_created = [(row.project_id, row.created_at) for row in generations(built.engine)]
    assert len(all_created) - len(set(all_created)) == 1


def test_created_at_increases_per_project_in_insertion_order_except_the_tie(built: Built) -> None:
    rows = {row.id: row for row in generations(built.engine)}
    tied = set(built.installation.tied_generation_ids)
    last: dict[str, datetime] = {}
    for generation_id in built.installation.generation_ids:
        if generation_id in tied:
            continue
        row = rows[generation_id]
        assert row.created_at > last.get(row.project_id, datetime.min)
        last[row.project_id] = row.created_at


def test_project_without_generations_and_project_without_completed_generation(built: Built) -> None:
    empty = built.installation.project_without_generations_id
    assert generations(built.engine, project_id=empty) == []
    unfinished = generations(built.engine, project_id=built.installation.project_without_completed_generation_id)
    assert unfinished and all(row.status in ("failed", "pending") for row in unfinished)
    assert {empty, built.installation.project_without_completed_generation_id} <= set(built.installation.project_ids)


# --------------------------------------------------------------------------- file content


def test_odd_files_are_present_in_the_demo_project(built: Built) -> None:
    demo = generations(built.engine, project_id=built.installation.demo_project_id)
    files = folder_files(built.root, demo[-1].id)
    assert b"\0" in files[LOGO] and files[LOGO].startswith(b"\x89PNG")
    assert b"\r\n" in files[CRLF_PATH] and b"\n" not in files[CRLF_PATH].replace(b"\r\n", b"")
    with pytest.raises(UnicodeDecodeError):
        files[LATIN1_PATH].decode("utf-8")
    assert any(ord(char) > 127 for char in files[LATIN1_PATH].decode("latin-1"))
    assert files[EMPTY_PATH] == b""
    assert files[NO_FINAL_NEWLINE_PATH] and not files[NO_FINAL_NEWLINE_PATH].endswith(b"\n")
    assert UNICODE_NAME_PATH in files and " " in SPACE_NAME_PATH and SPACE_NAME_PATH in files
    assert len(files[LARGE_FILE_PATH]) > 10_000


def test_file_sizes_look_like_source_code(built: Built) -> None:
    sizes = sorted(path.stat().st_size for path in built.root.rglob("*") if path.is_file())
    median = sizes[len(sizes) // 2]
    assert 200 <= median <= 4_000
    assert sum(size > 10_000 for size in sizes) < len(sizes) // 10


def test_demo_versions_modify_add_delete_rename_and_change_odd_files(built: Built) -> None:
    demo = generations(built.engine, project_id=built.installation.demo_project_id)
    assert len(demo) >= 5 and {row.status for row in demo} == {"completed"}
    trees = [folder_files(built.root, row.id) for row in demo]
    seen: set[str] = set()
    for before, after in pairwise(trees):
        added, deleted = set(after) - set(before), set(before) - set(after)
        modified = {path for path in set(before) & set(after) if before[path] != after[path]}
        assert added or deleted or modified
        seen |= {kind for kind, paths in (("add", added), ("delete", deleted), ("modify", modified)) if paths}
        if any(after[new] == before[old] for new in added for old in deleted):
            seen.add("rename")
        seen |= {path for path in (LOGO, CRLF_PATH, LATIN1_PATH) if path in modified}
    assert {"add", "delete", "modify", "rename", LOGO, CRLF_PATH, LATIN1_PATH} <= seen


def test_edits_keep_line_endings_encoding_and_missing_final_newline(built: Built) -> None:
    for generation_id in built.installation.folder_generation_ids:
        files = folder_files(built.root, generation_id)
        if CRLF_PATH in files:
            assert b"\n" not in files[CRLF_PATH].replace(b"\r\n", b"")
        if NO_FINAL_NEWLINE_PATH in files and generation_id not in built.installation.failed_with_partial_folder_generation_ids:
            assert not files[NO_FINAL_NEWLINE_PATH].endswith(b"\n")
        if EMPTY_PATH in files:
            assert files[EMPTY_PATH] == b""


def test_consecutive_completed_versions_always_differ(built: Built) -> None:
    completed = generations(built.engine, status="completed")
    on_disk = [row for row in completed if (built.root / row.id).is_dir()]
    for before, after in pairwise(on_disk):
        if before.project_id == after.project_id:
            assert folder_files(built.root, before.id) != folder_files(built.root, after.id)


def test_output_files_hold_exactly_the_utf8_text_files_of_completed_folders(built: Built) -> None:
    for row in generations(built.engine, status="completed"):
        if not (built.root / row.id).is_dir():
            continue
        expected = {}
        for path, content in folder_files(built.root, row.id).items():
            try:
                expected[path] = content.decode("utf-8")
            except UnicodeDecodeError:
                continue
        expected = {path: text for path, text in expected.items() if "\0" not in text}
        assert row.output_files == expected


def test_without_store_output_files_only_the_missing_folder_generation_keeps_them(tmp_path: Path) -> None:
    result = build(tmp_path, store_output_files=False)
    kept = [row.id for row in generations(result.engine) if not output_files_is_null(result.engine, row.id)]
    assert kept == [result.installation.missing_folder_generation_id]


# --------------------------------------------------------------------------- sizes and refusals


def test_scaled_size_for_the_benchmark() -> None:
    size = SampleSize.scaled(1000, 60_000)
    assert 6 <= size.generations_per_project <= 10
    assert 950 <= size.projects * size.generations_per_project <= 1050
    assert 60 <= size.files_per_generation <= 66


def test_scaled_installation_lands_near_the_asked_numbers(tmp_path: Path) -> None:
    result = build(tmp_path, SampleSize.scaled(60, 1_500), store_output_files=False)
    assert 55 <= len(result.installation.generation_ids) <= 66
    assert 1_300 <= result.installation.file_count <= 1_700


def test_too_few_projects_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        SampleSize(projects=4)


def test_refuses_a_storage_root_that_is_not_empty(tmp_path: Path) -> None:
    engine = legacy_engine(tmp_path)
    root = tmp_path / "projects"
    root.mkdir()
    (root / "real-generation").mkdir()
    with pytest.raises(ValueError, match="not empty"):
        generate_installation(engine, root, SMALL)
    assert generations(engine) == []
    assert [path.name for path in root.iterdir()] == ["real-generation"]


def test_refuses_a_storage_root_that_is_a_file(tmp_path: Path) -> None:
    engine = legacy_engine(tmp_path)
    (tmp_path / "projects").write_text("not a folder")
    with pytest.raises(ValueError, match="not a directory"):
        generate_installation(engine, tmp_path / "projects", SMALL)


def test_refuses_a_database_that_already_has_generations(tmp_path: Path, built: Built) -> None:
    before = all_rows(built.engine)
    with pytest.raises(ValueError, match="already has rows"):
        generate_installation(built.engine, tmp_path / "fresh-root", SMALL, seed=3)
    assert all_rows(built.engine) == before
    assert not (tmp_path / "fresh-root").exists()


def test_refuses_a_database_that_is_not_at_the_legacy_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'head.db'}"
    upgrade_schema(url, "head")
    with pytest.raises(ValueError, match=BASE_REVISION):
        generate_installation(sa.create_engine(url), tmp_path / "projects", SMALL)
