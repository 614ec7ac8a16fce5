"""One deterministic test per race with the running application: the real `run` process is stopped
at a step boundary after it planned (SIGSTOP through the tool's pause hook), the test plays one of
the application's actions the way its code does it, and the run goes on. Delete, archive,
activate, a new generation taking the next number, and an edit through the flat path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.processes import run_paused_at
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    execute_sql,
    first_project,
    query_rows,
    query_scalar,
    run_cli,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(database_url, tmp_path / "projects")


def completed_ids(installation: Sandbox, project_id: str) -> list[str]:
    """The project's completed generations in version order, the active one left out."""
    active = query_scalar(installation, "SELECT active_generation_id FROM projects WHERE id = :p", p=project_id)
    found = query_rows(installation, "SELECT id FROM generations WHERE project_id = :p AND status = 'completed' "
                       "ORDER BY version", p=project_id)
    return [row.id for row in found if row.id != active]


def legacy_generation(installation: Sandbox, project_id: str) -> str:
    """A completed generation of ``project_id`` still in the legacy layout, not the active one."""
    candidates = [gid for gid in completed_ids(installation, project_id) if (installation.root / gid).is_dir()]
    assert candidates, "the sample has a legacy completed generation in its first project"
    return candidates[0]


def lines_for(document: dict, generation_id: str) -> list[dict]:
    return [line for line in document["generations"] if line["id"] == generation_id]


def test_a_generation_deleted_after_the_plan_is_gone_not_moved_nor_failed(installation: Sandbox) -> None:
    project_id = first_project(installation)
    victim = legacy_generation(installation, project_id)

    def application_deletes() -> None:          # GenerationService.delete_generation: files, then the row
        shutil.rmtree(installation.root / victim)
        execute_sql(installation, "DELETE FROM generations WHERE id = :id", id=victim)

    code, document = run_paused_at(installation, "planned", application_deletes)
    assert code == 0, document
    assert [line["action"] for line in lines_for(document, victim)] == ["gone"]
    assert not list((installation.root / project_id / "generations").glob(f"v*__{victim}")), "nothing came back"
    assert not (installation.root / victim).exists() and not (installation.root / victim).is_symlink()


def test_a_generation_archived_after_the_plan_stays_archived(installation: Sandbox) -> None:
    project_id = first_project(installation)
    assert run_cli(installation, "run").returncode == 0
    victim = legacy_generation_in_new_layout(installation, project_id)
    version = query_scalar(installation, "SELECT version FROM generations WHERE id = :id", id=victim)
    folder = f"v{version}__{victim}"
    (installation.root / victim).unlink()               # the tool's link: the application wrote none
    scratch = installation.root / victim
    scratch.mkdir()
    (scratch / "phase.py").write_text("# the phased generator's scratch copy\n")
    (installation.root / project_id / "generations" / folder / "source" / "late.py").write_text("# edited\n")

    def application_archives() -> None:         # cleanup_old_generations: the folder moves, the row stays
        archive = installation.root / project_id / "archive"
        archive.mkdir(exist_ok=True)
        (installation.root / project_id / "generations" / folder).rename(archive / folder)

    code, document = run_paused_at(installation, "planned", application_archives, command="resync")
    assert code == 0, document
    assert not [line for line in document["generations"] if line["action"] == "failed"], document["generations"]
    assert (installation.root / project_id / "archive" / folder / "source" / "late.py").is_file()
    assert not (installation.root / project_id / "generations" / folder).exists(), "never rebuilt"
    assert (scratch / "phase.py").is_file() and not (scratch / "source").exists(), "scratch copy untouched"


def legacy_generation_in_new_layout(installation: Sandbox, project_id: str) -> str:
    return next(gid for gid in completed_ids(installation, project_id) if (installation.root / gid).is_symlink())


def test_an_activation_after_the_plan_is_kept(installation: Sandbox) -> None:
    project_id = first_project(installation)
    execute_sql(installation, "UPDATE projects SET active_generation_id = NULL")
    execute_sql(installation, "UPDATE generations SET is_active = :f", f=False)
    chosen = legacy_generation(installation, project_id)      # not the newest: the tool would pick another

    def application_activates() -> None:        # Project.set_active_generation: flags and the id together
        engine = installation.engine()
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE generations SET is_active = (id = :g) WHERE project_id = :p"),
                               {"g": chosen, "p": project_id})
            connection.execute(sa.text("UPDATE projects SET active_generation_id = :g WHERE id = :p"),
                               {"g": chosen, "p": project_id})
        engine.dispose()

    code, _ = run_paused_at(installation, "before-database-write", application_activates)
    assert code == 0
    assert query_scalar(installation, "SELECT active_generation_id FROM projects WHERE id = :p", p=project_id) == chosen
    flagged = query_scalar(installation, "SELECT COUNT(*) FROM generations WHERE project_id = :p AND is_active = :t",
                     p=project_id, t=True)
    assert flagged == 1 and query_scalar(installation, "SELECT is_active FROM generations WHERE id = :g", g=chosen) in (1, True)


def test_a_number_the_application_takes_after_the_plan_is_never_lowered(installation: Sandbox) -> None:
    project_id = first_project(installation)
    highest = int(query_scalar(installation, "SELECT MAX(version) FROM generations WHERE project_id = :p", p=project_id))
    execute_sql(installation, "UPDATE projects SET latest_version = :v WHERE id = :p", v=highest - 1, p=project_id)

    def application_creates() -> None:          # GenerationService.create_generation: latest_version + 1
        execute_sql(installation, "INSERT INTO generations (id, project_id, user_id, prompt, status, version) "
                "SELECT 'app-new-0000-0000-0000-000000000001', id, user_id, 'next', 'processing', :v "
                "FROM projects WHERE id = :p", v=highest + 1, p=project_id)
        execute_sql(installation, "UPDATE projects SET latest_version = :v WHERE id = :p", v=highest + 1, p=project_id)

    code, _ = run_paused_at(installation, "before-database-write", application_creates)
    assert code == 0
    latest = query_scalar(installation, "SELECT latest_version FROM projects WHERE id = :p", p=project_id)
    assert latest == highest + 1, f"latest_version went from {highest + 1} to {latest}"


def first_moved(installation: Sandbox, project_id: str) -> str:
    """The generation whose move the run begins with: the lowest version with a legacy folder."""
    found = query_rows(installation, "SELECT id FROM generations WHERE project_id = :p AND status IN "
                       "('completed', 'failed') ORDER BY version, created_at, id", p=project_id)
    return next(row.id for row in found
                if (installation.root / row.id).is_dir() and not (installation.root / row.id).is_symlink())


def test_an_edit_through_the_flat_path_after_the_plan_is_picked_up(installation: Sandbox) -> None:
    """Stopped with the folder read and its move about to happen: the edit lands in the folder
    being moved, so the run's counts miss it and the next resync must see it."""
    project_id = first_project(installation)
    victim = first_moved(installation, project_id)

    def application_edits() -> None:            # update_file_content on <ROOT>/<id>/
        (installation.root / victim / "EDITED.md").write_text("edited while the tool worked\n")

    code, _ = run_paused_at(installation, "target-prepared", application_edits)
    assert code == 0
    resync = run_cli(installation, "--json", "resync")
    assert resync.returncode == 0, resync.stderr
    assert run_cli(installation, "verify").returncode == 0
    source = next((installation.root / project_id / "generations").glob(f"v*__{victim}")) / "source"
    assert (source / "EDITED.md").is_file()
    file_count = query_scalar(installation, "SELECT file_count FROM generations WHERE id = :id", id=victim)
    assert file_count == sum(1 for path in source.rglob("*") if path.is_file())


def test_a_row_changed_in_a_claim_batch_skips_that_generation_alone(installation: Sandbox) -> None:
    """Moves are claimed a batch at a time (one lock for several rows): the application changes
    the row of the second move after the plan; that generation alone is left where it is, for
    the next resync, and the moves before and after it in the same batch are moved and published."""
    project_id = first_project(installation)
    found = query_rows(installation, "SELECT id FROM generations WHERE project_id = :p AND status IN "
                       "('completed', 'failed') ORDER BY version, created_at, id", p=project_id)
    moves = [row.id for row in found if (installation.root / row.id).is_dir() and not (installation.root / row.id).is_symlink()]
    assert len(moves) >= 3, "the sample's first project has three moves in a row"
    victim = moves[1]
    victim_path = query_scalar(installation, "SELECT storage_path FROM generations WHERE id = :id", id=victim)

    def application_changes_the_row() -> None:      # a regeneration's outcome written to the row
        execute_sql(installation, "UPDATE generations SET status = CASE WHEN status = 'failed' THEN 'completed' "
                "ELSE 'failed' END WHERE id = :id", id=victim)

    code, document = run_paused_at(installation, "planned", application_changes_the_row)
    assert code == 0, document
    assert [line["action"] for line in lines_for(document, victim)] == ["changed"]
    assert (installation.root / victim).is_dir() and not (installation.root / victim).is_symlink(), "not moved"
    assert query_scalar(installation, "SELECT storage_path FROM generations WHERE id = :id", id=victim) == victim_path
    for neighbour in (moves[0], moves[2]):
        assert [line["action"] for line in lines_for(document, neighbour)] == ["moved"], neighbour
        path = query_scalar(installation, "SELECT storage_path FROM generations WHERE id = :id", id=neighbour)
        assert "/generations/v" in str(path) and (installation.root / neighbour).is_symlink(), (neighbour, path)


def legacy_files(root: Path) -> dict[str, str]:
    """One file (relative path) of every legacy folder ``<ROOT>/<id>/`` there is now."""
    found = {}
    for folder in root.iterdir():
        if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith("."):
            first = next((path for path in sorted(folder.rglob("*")) if path.is_file()), None)
            if first is not None and not (folder / "generations").is_dir():
                found[folder.name] = str(first.relative_to(folder))
    return found


@pytest.mark.parametrize("step", ["target-prepared", "link-prepared", "folder-moved", "moved"])
def test_the_flat_path_resolves_at_every_pause_point_of_a_move(installation: Sandbox, step: str) -> None:
    """A reader of ``<ROOT>/<id>/<file>`` never misses it while its folder moves: the link is
    swapped in with the move itself, before any fsync or database write."""
    files = legacy_files(installation.root)
    assert files, "the sample has legacy folders"
    unreadable: list[str] = []

    def read_every_flat_path() -> None:
        for generation_id, relative in files.items():
            try:
                (installation.root / generation_id / relative).read_bytes()
            except OSError as error:
                unreadable.append(f"{generation_id}/{relative}: {error}")

    code, document = run_paused_at(installation, step, read_every_flat_path)
    assert code == 0, document
    assert unreadable == []
    assert any(line["action"] == "moved" for line in document["generations"])


def test_resync_removes_the_tools_dangling_link_of_a_deleted_generation(installation: Sandbox) -> None:
    """The application deleted a generation while the tool renumbered it: its row is gone, the
    renumbered folder stayed beside, the flat link points at the old number. resync removes
    the link (it resolves nowhere) and reports the folder as an orphan, every file kept; a
    link of a deleted generation whose target is still there stays."""
    assert run_cli(installation, "run").returncode == 0
    project_id = first_project(installation)
    victim, kept = [gid for gid in completed_ids(installation, project_id) if (installation.root / gid).is_symlink()][:2]
    generations_dir = installation.root / project_id / "generations"
    version = query_scalar(installation, "SELECT version FROM generations WHERE id = :id", id=victim)
    left = generations_dir / f"v{version + 10}__{victim}"
    (generations_dir / f"v{version}__{victim}").rename(left)
    files_before = sorted(str(path.relative_to(left)) for path in left.rglob("*"))
    execute_sql(installation, "DELETE FROM generations WHERE id IN (:a, :b)", a=victim, b=kept)
    assert (installation.root / victim).is_symlink() and not (installation.root / victim).exists()

    result = run_cli(installation, "--json", "resync")
    document = json.loads(result.stdout)
    assert not (installation.root / victim).is_symlink(), "the dangling link is removed"
    assert document["removed_links"] == [str(installation.root / victim)]
    assert str(left) in document["orphans"]
    assert sorted(str(path.relative_to(left)) for path in left.rglob("*")) == files_before, "no file deleted"
    assert (installation.root / kept).is_symlink() and (installation.root / kept).exists(), "a resolving link stays"
