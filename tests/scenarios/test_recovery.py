"""Recovery per project: what a killed run left in ``<ROOT>/.storage-migrate/moving/`` and
``trash/`` and a killed write's temp file in ROOT belong to one project, named so, and are
recovered by whoever handles that project — never while only another project is handled (two
hosts share ROOT). Real files, a real SQLite database, the library's own entry points."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.commands.rollback import rollback
from storage_migrator.commands.run import run
from storage_migrator.storage import steps
from storage_migrator.storage.handle import Storage, open_storage
from storage_migrator.storage.layout import (
    StateEntry,
    StorageLayout,
    parse_old_held_name,
    parse_state_entry_name,
    state_entry_id,
    state_entry_key,
    state_entry_name,
    temp_name_kept,
    temp_name_original,
)
from storage_migrator.storage.tree import scan_tree
from tests.support.sandbox import Sandbox, build_installation, scan

TEMP = ".storage-migrate-tmp"


@pytest.fixture
def installation(sqlite_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(sqlite_url, tmp_path / "projects")


def state(installation: Sandbox, folder: str) -> Path:
    path = installation.root / ".storage-migrate" / folder
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def entry_name(project_id: str, generation_id: str, role: str) -> str:
    """The documented spelling (ids of the sample are UUIDs: nothing to escape)."""
    return f"{project_id}__{generation_id}__{role}.4242.1700000000000000000"


def generation_rows(installation: Sandbox) -> list[tuple[str, str, int, str]]:
    engine = installation.engine()
    with engine.connect() as connection:
        found = connection.execute(sa.text("SELECT project_id, id, version, status FROM generations")).all()
    engine.dispose()
    return [tuple(row) for row in found]


def two_projects(installation: Sandbox) -> tuple[str, str, str, str]:
    """(project A, a completed generation of A with a folder, project B, one of B's)."""
    with_folder = set(installation.sample.folder_generation_ids)
    completed = [(p, g) for p, g, _, status in generation_rows(installation) if status == "completed" and g in with_folder]
    a, a_generation = completed[0]
    b, b_generation = next((p, g) for p, g in completed if p != a)
    return a, a_generation, b, b_generation


def target_source(installation: Sandbox, project_id: str, generation_id: str) -> Path:
    version = next(v for p, g, v, _ in generation_rows(installation) if g == generation_id)
    return installation.root / project_id / "generations" / f"v{version}__{generation_id}" / "source"


def migrated(installation: Sandbox, project_id: str, generation_id: str) -> bool:
    return (installation.root / generation_id).is_symlink() and \
        target_source(installation, project_id, generation_id).is_dir()


def a_trash_entry(installation: Sandbox, name: str) -> Path:
    entry = state(installation, "trash") / name
    (entry / "app").mkdir(parents=True)
    (entry / "app" / "main.py").write_text("print('verified copy exists')\n")
    return entry


# -- the names ------------------------------------------------------------------------------


@pytest.mark.parametrize("project_id", ["p1", "a_b", "a__b", "50%_off", "x" * 200, "é.d"])
def test_a_name_says_its_project_generation_and_origin(project_id: str) -> None:
    for version in (None, 7):
        entry = StateEntry.of(project_id, "gen__1", version)
        name = state_entry_name(entry, 12, 34)
        parsed = parse_state_entry_name(name)
        assert parsed == entry and parsed.belongs_to(project_id) and not parsed.belongs_to(project_id + "x")
        assert len(name.encode()) <= 255
        assert state_entry_id(parsed.generation_key) == "gen__1"
    assert state_entry_id(state_entry_key(project_id)) in (project_id, None)
    assert parse_state_entry_name("0f6e.held-1700") is None and parse_old_held_name("0f6e.held-1700") == "0f6e"


def test_temp_names_are_read_back_by_the_id_they_stand_for() -> None:
    assert temp_name_original(f".abc-1.4242.0123456789abcdef{TEMP}") == "abc-1"
    assert temp_name_original(f".abc-1.4242.0123456789abcdef{TEMP}") != temp_name_kept("abc")
    assert temp_name_original("abc-1") is None


def test_a_cross_filesystem_move_holds_its_source_aside_under_its_project(
        installation: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both directions: a legacy folder going to its target (run), a ``source/`` going back
    (rollback) — each held aside under its own project's name, never put back at ``<ROOT>/source``."""
    a, generation, _, _ = two_projects(installation)
    legacy = installation.root / generation
    source = installation.root / a / "generations" / f"v3__{generation}" / "source"
    source.parent.mkdir(parents=True)
    moving = state(installation, "moving")
    state(installation, "trash")
    seen: list[str] = []
    real_rename = steps.rename_entry
    direct = {"source": legacy, "destination": source}

    def other_filesystem(storage: Storage, origin: Path, destination: Path, *, replace: bool = True) -> None:
        if (origin, destination) == (direct["source"], direct["destination"]):
            raise OSError(errno.EXDEV, "cross-device link")       # the one rename a mount refuses
        real_rename(storage, origin, destination, replace=replace)

    def crash(step: str) -> None:
        if step != "copy-in-place":
            return                                                # killed once the copy is in place
        seen.extend(os.listdir(moving))
        raise KeyboardInterrupt                                   # killed with the source held aside

    monkeypatch.setattr(steps, "rename_entry", other_filesystem)
    monkeypatch.setattr(steps, "checkpoint", crash)
    storage = open_storage(StorageLayout(installation.root, "./storage/projects"))
    with pytest.raises(KeyboardInterrupt):
        steps.move_tree(storage, legacy, source, scan_tree(storage, legacy))
    assert [parse_state_entry_name(name) for name in seen] == [StateEntry.of(a, generation, None)]
    shutil.rmtree(moving / seen[0])                               # the copy is in place at source/
    seen.clear()
    direct.update(source=source, destination=legacy)
    with pytest.raises(KeyboardInterrupt):
        steps.move_tree(storage, source, legacy, scan_tree(storage, source))
    assert [parse_state_entry_name(name) for name in seen] == [StateEntry.of(a, generation, 3)]


# -- recovered by whoever handles the project, and only then --------------------------------


def test_held_aside_source_and_trash_of_a_wait_for_a(installation: Sandbox) -> None:
    a, generation, b, b_generation = two_projects(installation)
    checksums = scan(installation.root / generation).checksums()
    held = state(installation, "moving") / entry_name(a, generation, "legacy")
    os.rename(installation.root / generation, held)
    trash = a_trash_entry(installation, entry_name(a, "0000-deleted", "legacy"))

    report = run(installation.settings, only_projects=[b])
    assert report.failed == 0 and migrated(installation, b, b_generation)
    assert held.is_dir() and trash.is_dir(), "another project's entries are another host's business"
    assert not os.path.lexists(installation.root / generation)

    report = run(installation.settings, only_projects=[a])
    assert report.failed == 0, [o.error for o in report.outcomes if o.failed]
    assert not held.exists() and not trash.exists()
    assert migrated(installation, a, generation)
    assert scan(target_source(installation, a, generation)).checksums() == checksums


def test_temp_links_in_root_go_with_their_generations_project(installation: Sandbox) -> None:
    a, generation, b, b_generation = two_projects(installation)
    temp_a = installation.root / f".{generation}.4242.0123456789abcdef{TEMP}"
    temp_b = installation.root / f".{b_generation}.4242.0123456789abcdef{TEMP}"
    in_project_b = installation.root / b / f".notes.4242.0123456789abcdef{TEMP}"
    for temp in (temp_a, temp_b):
        temp.symlink_to("somewhere")
    in_project_b.parent.mkdir(exist_ok=True)
    in_project_b.write_text("half written")

    assert run(installation.settings, only_projects=[b]).failed == 0
    assert os.path.lexists(temp_a)
    assert not os.path.lexists(temp_b) and not os.path.lexists(in_project_b)
    assert run(installation.settings, only_projects=[a]).failed == 0
    assert not os.path.lexists(temp_a)


def test_a_deleted_projects_entries_are_swept_at_the_end_of_a_full_run(installation: Sandbox) -> None:
    _, _, b, _ = two_projects(installation)
    held = state(installation, "moving") / entry_name("gone-project", "gone-generation", "legacy")
    (held / "app").mkdir(parents=True)
    (held / "app" / "main.py").write_text("kept\n")
    trash = a_trash_entry(installation, entry_name("gone-project", "gone-generation", "v2-source"))

    assert run(installation.settings, only_projects=[b]).failed == 0
    assert held.is_dir() and trash.is_dir()
    assert run(installation.settings).failed == 0
    assert not held.exists() and not trash.exists()
    assert (installation.root / "gone-generation" / "app" / "main.py").read_text() == "kept\n"


def test_old_names_are_recovered_with_their_generations_project(installation: Sandbox) -> None:
    """What the previous version left: ``<id>.held-<ns>`` and ``<id>.<pid>.<ns>`` in the trash."""
    a, generation, b, _ = two_projects(installation)
    checksums = scan(installation.root / generation).checksums()
    held = state(installation, "moving") / f"{generation}.held-1700000000000000000"
    os.rename(installation.root / generation, held)
    trash = a_trash_entry(installation, f"{generation}.4242.1700000000000000000")

    assert run(installation.settings, only_projects=[b]).failed == 0
    assert held.is_dir() and trash.is_dir()
    assert run(installation.settings, only_projects=[a]).failed == 0
    assert not held.exists() and not trash.exists()
    assert scan(target_source(installation, a, generation)).checksums() == checksums


# -- rollback -------------------------------------------------------------------------------


def rollback_killed_while_source_was_held(installation: Sandbox, held_name: str) -> tuple[str, dict]:
    """The state a rollback killed mid cross-filesystem move leaves: the flat link removed,
    ``source/`` held aside in ``moving/``, the copy not yet in place."""
    assert run(installation.settings).failed == 0
    a, generation, _, _ = two_projects(installation)
    source = target_source(installation, a, generation)
    checksums = scan(source).checksums()
    os.unlink(installation.root / generation)
    version = source.parent.name.partition("__")[0]
    os.rename(source, state(installation, "moving") / held_name.format(project=a, generation=generation,
                                                                    version=version))
    return generation, checksums


def test_rollback_puts_a_held_source_back_into_its_target(installation: Sandbox) -> None:
    generation, checksums = rollback_killed_while_source_was_held(
        installation, "{project}__{generation}__{version}-source.4242.1700000000000000000")
    report = rollback(installation.settings)
    assert report.failed == 0, [o.error for o in report.outcomes if o.failed]
    assert not os.path.lexists(installation.root / "source")
    assert scan(installation.root / generation).checksums() == checksums
    assert os.listdir(installation.root / ".storage-migrate" / "moving") == []


def test_rollback_finds_the_target_of_an_old_style_held_source(installation: Sandbox) -> None:
    generation, checksums = rollback_killed_while_source_was_held(installation, "source.held-1700000000000000000")
    report = rollback(installation.settings)
    assert report.failed == 0, [o.error for o in report.outcomes if o.failed]
    assert not os.path.lexists(installation.root / "source"), "the old recovery put it at <ROOT>/source"
    assert scan(installation.root / generation).checksums() == checksums
    assert os.listdir(installation.root / ".storage-migrate" / "moving") == []
