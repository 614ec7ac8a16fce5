"""The rule that holds "nothing outside ROOT is read, written or followed" by the structure: only
``storage_migrator/storage`` touches the disk by a path. ruff's banned-API rule (TID251, in
``make test``) refuses ``os``/``shutil`` path calls elsewhere; it cannot see ``open()`` or the
methods of a ``pathlib.Path``, so this test does, by reading the source.

A line outside the package that must touch a path which is not below ROOT (the SQLite file's
folder, the package's own files) says so with a ``# not below ROOT: <why>`` comment."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import storage_migrator

PACKAGE = Path(storage_migrator.__file__).parent
EXEMPT = (PACKAGE / "storage", PACKAGE / "demo")          # the storage package; sample data (tests' tool)
PATH_IO_METHODS = frozenset({
    "exists", "is_dir", "is_file", "is_symlink", "is_mount", "iterdir", "glob", "rglob", "walk",
    "mkdir", "rmdir", "unlink", "touch", "rename", "replace", "symlink_to", "hardlink_to", "readlink",
    "stat", "lstat", "chmod", "lchmod", "resolve", "samefile", "open",
    "read_text", "read_bytes", "write_text", "write_bytes",
})
MARKER = "# not below ROOT:"


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if not any(path.is_relative_to(room) for room in EXEMPT))


def plain_path_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) of every ``open(...)`` and Path-I/O-named method call without the marker.
    A ``replace`` or ``rename`` with other than one positional argument (``str.replace``,
    ``datetime.replace(tzinfo=...)``) is not a path's."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "open":
            name = "open"
        elif isinstance(node.func, ast.Attribute) and node.func.attr in PATH_IO_METHODS:
            name = node.func.attr
            if name in ("replace", "rename") and (len(node.args) != 1 or node.keywords):
                continue
        else:
            continue
        if not any(MARKER in line for line in lines[node.lineno - 1:node.end_lineno]):
            found.append((node.lineno, name))
    return found


def test_the_check_sees_what_it_must() -> None:
    source = ("from pathlib import Path\nopen('x')\nPath('x').exists()\np = Path('y')\np.iterdir()\n"
              "'a'.replace('a', 'b')\np.replace(q)\np.mkdir()  # not below ROOT: a test\nd.replace(tzinfo=None)\n")
    assert plain_path_calls(source) == [(2, "open"), (3, "exists"), (5, "iterdir"), (7, "replace")]


@pytest.mark.parametrize("module", _modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_plain_path_io_outside_the_storage_package(module: Path) -> None:
    calls = plain_path_calls(module.read_text(encoding="utf-8"))
    assert not calls, (f"{module.relative_to(PACKAGE)} touches the disk by a path at "
                       f"{', '.join(f'line {line} ({name})' for line, name in calls)}: go through the opened "
                       "ROOT (storage_migrator.storage), or mark a path outside ROOT with '# not below ROOT: <why>'")
