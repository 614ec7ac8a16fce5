"""One project's code as it evolves version by version: files added, deleted, renamed and edited,
binaries redrawn, with the demo project forced through every kind of change."""
from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

from storage_migrator.demo.edits import edited_bytes
from storage_migrator.demo.paths import (
    BINARY_PATHS,
    CRLF_PATH,
    LARGE_FILE_PATH,
    LATIN1_PATH,
    UNICODE_NAME_PATH,
)
from storage_migrator.demo.renderers import ENTITY_FILES, FILES_PER_ENTITY, plural, render_migration
from storage_migrator.demo.skeleton import SKELETON_PATHS, render_binary, render_skeleton


class Change(enum.Enum):
    MODIFY = "modify"
    ADD = "add"
    DELETE = "delete"
    RENAME = "rename"
    BINARY = "binary"
    ODD_TEXT = "odd_text"
    """Edit the CRLF, latin-1 and unicode-named files."""


DEMO_SCHEDULE = {
    1: frozenset({Change.MODIFY, Change.ADD}),
    2: frozenset({Change.DELETE, Change.RENAME}),
    3: frozenset({Change.BINARY, Change.ODD_TEXT}),
}
"""Demo versions 2-4 each show given kinds of change, so the README's diff has them all."""

_RENAMED_FOLDERS = {
    "app/models/": "app/db/models/",
    "app/routers/": "app/api/routes/",
    "app/services/": "app/domain/",
    "app/schemas/": "app/api/schemas/",
    "tests/": "tests/api/",
}


class CodeBase:
    """One project's code as it evolves: the last accepted tree plus files waiting to be added.

    Every version keeps the tree near ``target_files``: it adds more when short, deletes more when
    over. Skeleton files (main, config, the oddities) are edited but never deleted or renamed.
    """

    def __init__(self, project_name: str, entities: list[str], target_files: int, rng: random.Random) -> None:
        self.project_name = project_name
        self.entities = entities
        self.target_files = target_files
        self.rng = rng
        self.tree: dict[str, bytes] = {}
        self.has_history = False
        self._upcoming = iter(self._entity_files())
        self._migration_number = 0

    def start(self, *, with_large_file: bool, oddities: tuple[str, ...]) -> None:
        self.tree = render_skeleton(self.project_name, self.entities[:4], self.rng, with_large_file, oddities)
        skeleton_size = len(self.tree)
        while len(self.tree) < max(self.target_files, skeleton_size + FILES_PER_ENTITY):
            self._add_file(self.tree)

    def accept(self, tree: dict[str, bytes]) -> None:
        self.tree = tree
        self.has_history = True

    def evolved(self, forced: frozenset[Change]) -> tuple[dict[str, bytes], str]:
        """A new tree from the accepted one (which stays untouched) and the prompt that asked for it."""
        tree = dict(self.tree)
        rng = self.rng
        drift = len(tree) - self.target_files
        adds = rng.choice((0, 1, 1, 2)) + (1 if drift < -2 else 0) + (1 if Change.ADD in forced else 0)
        deletes = rng.choice((0, 0, 1, 1)) + (1 if drift > 2 else 0) + (1 if Change.DELETE in forced else 0)
        added = [self._add_file(tree) for _ in range(adds)]
        # Files added or renamed in this version are left alone by the other changes, so a
        # rename stays a pure move and an add stays an add.
        untouched = set(added)
        if Change.RENAME in forced or rng.random() < 0.1:
            untouched.update(self._rename_file(tree, untouched))
        for _ in range(deletes):
            self._delete_file(tree, untouched)
        if Change.BINARY in forced or rng.random() < 0.2:
            self._change_binary(tree, forced=Change.BINARY in forced)
        if Change.ODD_TEXT in forced or rng.random() < 0.2:
            for path in (CRLF_PATH, LATIN1_PATH, UNICODE_NAME_PATH):
                if path in tree:
                    tree[path] = edited_bytes(path, tree[path], rng)
        self._modify_files(tree, rng.randint(1, 4) + (1 if Change.MODIFY in forced else 0), untouched)
        subject = Path(added[0]).stem if added else rng.choice(self.entities[:4])
        return tree, rng.choice(_FOLLOW_UP_PROMPTS).format(subject=subject.replace("_", " "))

    def _entity_files(self) -> Iterator[tuple[str, bytes]]:
        """Files a growing project gains, entity by entity; names get a suffix once entities run out."""
        for round_number in itertools.count():
            for entity in self.entities:
                name = entity if round_number == 0 else f"{entity}_{round_number + 1}"
                for template, render in ENTITY_FILES:
                    yield template.format(entity=name, entities=plural(name)), render(name, self.rng).encode("utf-8")
                self._migration_number += 1
                revision = f"{self.rng.getrandbits(48):012x}"
                yield (f"alembic/versions/{self._migration_number:03d}_{revision}_create_{plural(name)}.py",
                       render_migration(name, revision, self.rng).encode("utf-8"))

    def _add_file(self, tree: dict[str, bytes]) -> str:
        path, content = next(self._upcoming)
        while path in tree:
            path, content = next(self._upcoming)
        tree[path] = content
        return path

    def _movable(self, tree: dict[str, bytes], untouched: set[str]) -> list[str]:
        return sorted(path for path in tree if path not in SKELETON_PATHS and path not in untouched
                      and not path.startswith("alembic/"))

    def _delete_file(self, tree: dict[str, bytes], untouched: set[str]) -> None:
        movable = self._movable(tree, untouched)
        if movable:
            del tree[self.rng.choice(movable)]

    def _rename_file(self, tree: dict[str, bytes], untouched: set[str]) -> list[str]:
        """Move one file to another folder, unchanged; returns the new path (none if nothing fits)."""
        movable = self._movable(tree, untouched)
        for path in self.rng.sample(movable, len(movable)):
            for old, new in _RENAMED_FOLDERS.items():
                renamed = new + path[len(old):]
                if path.startswith(old) and not path.startswith(new) and renamed not in tree:
                    tree[renamed] = tree.pop(path)
                    return [renamed]
        return []

    def _change_binary(self, tree: dict[str, bytes], *, forced: bool) -> None:
        """Redraw one binary file; the logo when the change is forced (the demo shows it)."""
        present = [path for path in BINARY_PATHS if path in tree]
        if present:
            path = BINARY_PATHS[0] if forced and BINARY_PATHS[0] in tree else self.rng.choice(present)
            tree[path] = render_binary(path, self.rng)

    def _modify_files(self, tree: dict[str, bytes], count: int, untouched: set[str]) -> None:
        editable = sorted(path for path, content in tree.items() if content and path not in untouched
                          and path not in BINARY_PATHS and path != LARGE_FILE_PATH)
        for path in self.rng.sample(editable, min(count, len(editable))):
            tree[path] = edited_bytes(path, tree[path], self.rng)
        if LARGE_FILE_PATH in tree and self.rng.random() < 0.3:
            tree[LARGE_FILE_PATH] = edited_bytes(LARGE_FILE_PATH, tree[LARGE_FILE_PATH], self.rng)


_FOLLOW_UP_PROMPTS = (
    "Add {subject} endpoints with pagination",
    "Fix validation errors in the {subject} schema",
    "Refactor the {subject} service and add tests",
    "Add filtering by status to {subject}",
    "Improve error handling around {subject}",
)
