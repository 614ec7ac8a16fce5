"""The diff engine against the real tools: `git apply` (and GNU `patch -p1` for text-only
changes) in a copy of the old tree must reproduce the new tree byte for byte."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_migrator import diff

Tree = dict[str, bytes]


def checksums(tree: Tree) -> dict[str, str]:
    return {path: hashlib.sha256(content).hexdigest() for path, content in tree.items()}


def make_patch(old: Tree, new: Tree) -> bytes:
    comparison = diff.compare_trees(checksums(old), checksums(new))
    return diff.render_patch(comparison, old.__getitem__, new.__getitem__)


def write_tree(root: Path, tree: Tree) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for path, content in tree.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)


def read_tree(root: Path) -> Tree:
    tree: Tree = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            tree[path.relative_to(root).as_posix()] = path.read_bytes()
    return tree


def apply(tool: str, old: Tree, patch: bytes, workdir: Path) -> Tree:
    tree_dir = workdir / f"tree-{tool}"
    write_tree(tree_dir, old)
    (workdir / "change.patch").write_bytes(patch)
    command = (["git", "apply", "--allow-empty", "--whitespace=nowarn", str(workdir / "change.patch")] if tool == "git"
               else ["patch", "-p1", "--binary", "--quiet", "--force", "-i", str(workdir / "change.patch")])
    result = subprocess.run(command, cwd=tree_dir, capture_output=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace") + patch.decode(errors="replace")
    return read_tree(tree_dir)


PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 3
CASES: dict[str, tuple[Tree, Tree]] = {
    "modified line": ({"app/main.py": b"a\nb\nc\n"}, {"app/main.py": b"a\nB\nc\n"}),
    "added and deleted": ({"gone.py": b"x = 1\n"}, {"new.py": b"y = 2\n"}),
    "rename is delete plus add": ({"a/old.py": b"same\n"}, {"b/new.py": b"same\n"}),
    "empty file added": ({}, {"app/__init__.py": b""}),
    "empty file deleted": ({"app/__init__.py": b""}, {}),
    "empty becomes text": ({"e.txt": b""}, {"e.txt": b"now\n"}),
    "text becomes empty": ({"e.txt": b"was\n"}, {"e.txt": b""}),
    "CRLF kept": ({"run.bat": b"@echo off\r\nrem a\r\n"}, {"run.bat": b"@echo off\r\nrem b\r\n"}),
    "mixed line endings": ({"m.txt": b"a\r\nb\nc\rd\n"}, {"m.txt": b"a\nb\r\nc\rD\n"}),
    "latin-1 bytes": ({"n.txt": "caf\u00e9\n".encode("latin-1")}, {"n.txt": "caf\u00e9s na\u00effs\n".encode("latin-1")}),
    "final newline lost": ({"f.txt": b"a\nb\n"}, {"f.txt": b"a\nb"}),
    "final newline gained": ({"f.txt": b"a\nb"}, {"f.txt": b"a\nb\n"}),
    "no newline either side": ({"f.txt": b"a\nb"}, {"f.txt": b"a\nc"}),
    "binary added": ({}, {"static/logo.png": PNG}),
    "binary modified": ({"static/logo.png": PNG}, {"static/logo.png": PNG[::-1]}),
    "binary deleted": ({"static/logo.png": PNG}, {}),
    "text becomes binary": ({"x.dat": b"text\n"}, {"x.dat": PNG}),
    "binary becomes text": ({"x.dat": PNG}, {"x.dat": b"text\n"}),
    "unicode name": ({"docs/\u00fcn\u00efcode-notes.md": b"a\n"}, {"docs/\u00fcn\u00efcode-notes.md": b"b\n"}),
    "name with a space": ({"docs/release notes.txt": b"a\n"}, {"docs/release notes.txt": b"b\n"}),
    "name with a quote": ({'say "hi".txt': b"a\n"}, {'say "hi".txt': b"b\n"}),
    "many edits in a big file": (
        {"big.py": b"".join(b"line %d\n" % i for i in range(5000))},
        {"big.py": b"".join(b"line %d\n" % i if i % 50 else b"changed %d\n" % i for i in range(5000))},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_git_apply_reproduces_the_new_tree(name: str, tmp_path: Path) -> None:
    old, new = CASES[name]
    assert apply("git", old, make_patch(old, new), tmp_path) == new


TEXT_ONLY = [name for name, (old, new) in CASES.items()
             if not any(b"\0" in content for content in [*old.values(), *new.values()])
             and "quote" not in name and "unicode" not in name and "empty file" not in name]


@pytest.mark.parametrize("name", sorted(TEXT_ONLY))
def test_gnu_patch_reproduces_text_changes(name: str, tmp_path: Path) -> None:
    old, new = CASES[name]
    assert apply("patch", old, make_patch(old, new), tmp_path) == new


def test_identical_trees_give_an_empty_patch() -> None:
    tree = {"a.py": b"x\n", "b.png": PNG}
    assert make_patch(tree, dict(tree)) == b""
    assert diff.compare_trees(checksums(tree), checksums(tree)).is_empty()


def test_patch_matches_git_for_a_simple_change(tmp_path: Path) -> None:
    old, new = {"app/main.py": b"one\ntwo\nthree\nfour\nfive\nsix\nseven\n"}, {"app/main.py": b"one\ntwo\nthree\n4\nfive\nsix\nseven\n"}
    write_tree(tmp_path / "a", old)
    write_tree(tmp_path / "b", new)
    git = subprocess.run(["git", "diff", "--no-index", "--full-index", "a", "b"], cwd=tmp_path, capture_output=True).stdout
    ours = make_patch(old, new)
    strip = lambda text: [line for line in text.splitlines() if not line.startswith((b"diff --git", b"---", b"+++"))]
    assert strip(ours) == strip(git)
    assert ours.startswith(b"diff --git a/app/main.py b/app/main.py\nindex ")


def test_paths_are_sorted_and_quoted_like_git() -> None:
    old = {"z.py": b"1\n", "a.py": b"1\n", "\u00e9.txt": b"1\n"}
    new = {"z.py": b"2\n", "m.py": b"1\n", "\u00e9.txt": b"2\n"}
    patch = make_patch(old, new)
    headers = [line for line in patch.splitlines() if line.startswith(b"diff --git")]
    assert headers == [b"diff --git a/a.py b/a.py", b"diff --git a/m.py b/m.py", b"diff --git a/z.py b/z.py",
                       b'diff --git "a/\\303\\251.txt" "b/\\303\\251.txt"']


def test_binary_patch_names_full_blob_ids() -> None:
    patch = make_patch({"b.png": PNG}, {"b.png": PNG + b"\0"})
    assert b"GIT binary patch\nliteral " in patch
    assert f"index {diff.git_blob_id(PNG)}..{diff.git_blob_id(PNG + bytes(1))}".encode() in patch


def test_git_blob_id_is_gits() -> None:
    assert diff.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert diff.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_compare_trees_and_change_summary() -> None:
    comparison = diff.compare_trees({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert (comparison.added, comparison.modified, comparison.deleted) == (("d",), ("b",), ("c",))
    assert diff.ChangeSummary.from_comparison(comparison, 2).to_json() == {"added": 1, "modified": 1, "deleted": 1, "from_version": 2}
    assert diff.ChangeSummary.first_version(7).to_json() == {"added": 7, "modified": 0, "deleted": 0, "from_version": None}


def test_a_changed_everything_file_is_still_a_correct_patch(tmp_path: Path) -> None:
    old = {"f.txt": b"".join(b"old %d\n" % i for i in range(3000))}
    new = {"f.txt": b"".join(b"new %d\n" % i for i in range(3000))}
    assert apply("git", old, make_patch(old, new), tmp_path) == new


def test_only_changed_files_are_read() -> None:
    old = {"same.py": b"s\n", "edit.py": b"1\n"}
    new = {"same.py": b"s\n", "edit.py": b"2\n"}
    read: list[str] = []

    def reader(tree: Tree):
        return lambda path: read.append(path) or tree[path]

    comparison = diff.compare_trees(checksums(old), checksums(new))
    diff.render_patch(comparison, reader(old), reader(new))
    assert read == ["edit.py", "edit.py"]


# -- property: random pairs of trees round-trip through git apply ----------------------------

LINES = st.sampled_from([b"", b"pass", b"x = 1", b"  return y", b"caf\xe9", b"}", b"\xff\xfe", b"a\rb", b"\0"])
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\n", b"\n"])


@st.composite
def file_contents(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(LINES, ENDINGS), max_size=25))
    content = b"".join(line + ending for line, ending in lines)
    if content and draw(st.booleans()):
        content = content.rstrip(b"\n")          # no final newline
    return content


NAMES = st.sampled_from(["app/main.py", "app/models/user.py", "README.md", "docs/notes latin.txt",
                         "docs/\u00fcn\u00efcode.md", "static/logo.png", "scripts/run.bat", "tests/test_x.py"])


@st.composite
def tree_pairs(draw: st.DrawFn) -> tuple[Tree, Tree]:
    old = draw(st.dictionaries(NAMES, file_contents(), max_size=6))
    new: Tree = {}
    for name in draw(st.sets(NAMES, max_size=7)):
        if name in old and draw(st.booleans()):
            lines = diff.split_lines(old[name])
            edits = draw(st.lists(st.tuples(st.integers(0, 30), file_contents()), max_size=3))
            for position, replacement in edits:
                lines[position % (len(lines) + 1):position % (len(lines) + 1) + 1] = [replacement]
            new[name] = b"".join(lines)
        else:
            new[name] = draw(file_contents())
    return old, new


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree_pairs())
def test_random_trees_round_trip_through_git_apply(tmp_path_factory: pytest.TempPathFactory, pair: tuple[Tree, Tree]) -> None:
    old, new = pair
    assert apply("git", old, make_patch(old, new), tmp_path_factory.mktemp("h")) == new
