"""The diff engine against the real tools: `git apply` (and GNU `patch -p1` for text-only
changes) in a copy of the old tree must reproduce the new tree byte for byte."""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_migrator.patch import blob, compare, reader, writer
from storage_migrator.storage import tree as tree_module
from storage_migrator.storage.source_tree import write_tree_patch
from storage_migrator.storage.tree import scan_tree
from tests.support.sandbox import storage_around

Tree = dict[str, bytes]


def checksums(tree: Tree) -> dict[str, str]:
    return {path: hashlib.sha256(content).hexdigest() for path, content in tree.items()}


def make_patch(old: Tree, new: Tree) -> bytes:
    comparison = compare.compare_trees(checksums(old), checksums(new))
    return writer.render_patch(comparison, old.__getitem__, new.__getitem__)


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
    result = subprocess.run(command, cwd=tree_dir, capture_output=True, check=False)
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
    assert compare.compare_trees(checksums(tree), checksums(tree)).is_empty()


def test_patch_matches_git_for_a_simple_change(tmp_path: Path) -> None:
    old, new = {"app/main.py": b"one\ntwo\nthree\nfour\nfive\nsix\nseven\n"}, {"app/main.py": b"one\ntwo\nthree\n4\nfive\nsix\nseven\n"}
    write_tree(tmp_path / "a", old)
    write_tree(tmp_path / "b", new)
    git = subprocess.run(["git", "diff", "--no-index", "--full-index", "a", "b"], cwd=tmp_path, capture_output=True, check=False).stdout
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


def test_binary_patch_names_full_blob_ids(tmp_path: Path) -> None:
    old, new = {"b.png": PNG}, {"b.png": PNG + b"\0"}
    patch = make_patch(old, new)
    assert re.search(rb"GIT binary patch\n(literal|delta) \d+\n", patch)     # libgit2 picks the smaller
    assert apply("git", old, patch, tmp_path) == new
    assert f"index {blob.git_blob_id(PNG)}..{blob.git_blob_id(PNG + bytes(1))}".encode() in patch


def test_git_blob_id_is_gits() -> None:
    assert blob.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert blob.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_compare_trees_and_change_summary() -> None:
    comparison = compare.compare_trees({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert (comparison.added, comparison.modified, comparison.deleted) == (("d",), ("b",), ("c",))
    assert compare.ChangeSummary.from_comparison(comparison, 2).to_json() == {"added": 1, "modified": 1, "deleted": 1, "from_version": 2}
    assert compare.ChangeSummary.first_version(7).to_json() == {"added": 7, "modified": 0, "deleted": 0, "from_version": None}


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

    comparison = compare.compare_trees(checksums(old), checksums(new))
    writer.render_patch(comparison, reader(old), reader(new))
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


def split_lines(content: bytes) -> list[bytes]:
    """Lines ending in ``\\n`` (a ``\\r`` stays part of its line); the last may lack one."""
    *lines, last = content.split(b"\n")
    return [line + b"\n" for line in lines] + ([last] if last else [])


@st.composite
def tree_pairs(draw: st.DrawFn) -> tuple[Tree, Tree]:
    old = draw(st.dictionaries(NAMES, file_contents(), max_size=6))
    new: Tree = {}
    for name in draw(st.sets(NAMES, max_size=7)):
        if name in old and draw(st.booleans()):
            lines = split_lines(old[name])
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


# -- the header is git's own ------------------------------------------------------------------


def git_no_index(old: Tree, new: Tree, workdir: Path, *options: str) -> bytes:
    """`git diff --no-index` of two directories named a and b: with --no-prefix its names are
    a/P and b/P, like ours (git names an added file b/P b/P and a deleted one a/P a/P)."""
    write_tree(workdir / "a", old)
    write_tree(workdir / "b", new)
    result = subprocess.run(["git", "diff", "--no-index", "--no-prefix", "--no-renames", *options, "a", "b"],
                            cwd=workdir, capture_output=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


TEXT_CASES = [name for name, (old, new) in CASES.items()
              if not any(b"\0" in content for content in [*old.values(), *new.values()])]


@pytest.mark.parametrize("name", sorted(TEXT_CASES))
def test_text_patch_is_what_git_diff_full_index_writes(name: str, tmp_path: Path) -> None:
    old, new = CASES[name]
    git = git_no_index(old, new, tmp_path, "--full-index")
    ours = make_patch(old, new)
    if old.keys() == new.keys():
        assert ours == git
    else:
        without_names = lambda text: [line for line in text.splitlines() if not line.startswith(b"diff --git ")]
        assert without_names(ours) == without_names(git)


def test_names_are_quoted_like_libgit2_quotes_them() -> None:
    """libgit2's own header (which we do not use, for its 7-digit ids) names files as we do."""
    import pygit2

    for name in ["\u00e9 t\u00e9.txt", 'q"uote', "back\\slash", "tab\there", "del\x7f", "ctl\x01", "plain.py"]:
        theirs = pygit2.Patch.create_from(b"a\n", b"b\n", old_as_path=name, new_as_path=name).data
        ours = make_patch({name: b"a\n"}, {name: b"b\n"})
        assert ours.split(b"\n")[0] == theirs.split(b"\n")[0]


def test_a_non_utf8_name_is_quoted_and_applies(tmp_path: Path) -> None:
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")     # as os.walk gives it
    old, new = {name: b"a\n"}, {name: b"b\n"}
    patch = make_patch(old, new)
    assert patch.startswith(b'diff --git "a/caf\\351.txt" "b/caf\\351.txt"\n')
    tree_dir = tmp_path / "tree"
    tree_dir.mkdir()
    (tree_dir / os.fsencode(name).decode("utf-8", "surrogateescape")).write_bytes(b"a\n")
    (tmp_path / "p").write_bytes(patch)
    subprocess.run(["git", "apply", str(tmp_path / "p")], cwd=tree_dir, check=True)
    assert (tree_dir / name).read_bytes() == b"b\n"


# -- large files: named, not read -------------------------------------------------------------


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(writer, "LARGE_FILE_LIMIT", 10)
    return 10


def never_read_large(tree: Tree, large: set[str], read: list[str]) -> writer.Reader:
    def read_file(path: str) -> bytes:
        assert path not in large, f"{path} is over the limit and must not be read"
        read.append(path)
        return tree[path]
    return read_file


def large_patch(old: Tree, new: Tree, read: list[str]) -> bytes:
    large = {path for tree in (old, new) for path, content in tree.items() if len(content) > writer.LARGE_FILE_LIMIT}
    comparison = compare.compare_trees(checksums(old), checksums(new))
    return writer.render_patch(
        comparison, never_read_large(old, large, read), never_read_large(new, large, read),
        old_sizes={path: len(content) for path, content in old.items()},
        new_sizes={path: len(content) for path, content in new.items()},
        blob_id_old=lambda path: blob.git_blob_id(old[path]),      # the caller would stream this
        blob_id_new=lambda path: blob.git_blob_id(new[path]),
    )


def test_a_large_file_is_named_with_its_blob_ids_and_never_read(small_limit: int, tmp_path: Path) -> None:
    big_old, big_new = b"x" * 11, b"y" * 12
    old = {"big.bin": big_old, "gone.bin": b"z" * 20, "small.txt": b"a\n"}
    new = {"big.bin": big_new, "added.bin": b"w" * 30, "small.txt": b"b\n"}
    read: list[str] = []
    patch = large_patch(old, new, read)
    assert read == ["small.txt", "small.txt"]
    sections = {section.split(b"\n", 1)[0]: section for section in re.split(rb"(?m)^(?=diff --git )", patch) if section}
    null = "0" * 40
    assert sections[b"diff --git a/big.bin b/big.bin"] == (
        f"diff --git a/big.bin b/big.bin\nindex {blob.git_blob_id(big_old)}..{blob.git_blob_id(big_new)} 100644\n"
        "Binary files a/big.bin and b/big.bin differ\n").encode()
    assert sections[b"diff --git a/added.bin b/added.bin"] == (
        f"diff --git a/added.bin b/added.bin\nnew file mode 100644\nindex {null}..{blob.git_blob_id(new['added.bin'])}\n"
        "Binary files /dev/null and b/added.bin differ\n").encode()
    assert sections[b"diff --git a/gone.bin b/gone.bin"] == (
        f"diff --git a/gone.bin b/gone.bin\ndeleted file mode 100644\nindex {blob.git_blob_id(old['gone.bin'])}..{null}\n"
        "Binary files a/gone.bin and /dev/null differ\n").encode()
    # As documented: git apply refuses such sections, and applies the rest once told to skip them.
    (tmp_path / "p").write_bytes(patch)
    write_tree(tmp_path / "t", old)
    assert subprocess.run(["git", "apply", str(tmp_path / "p")], cwd=tmp_path / "t", capture_output=True, check=False).returncode != 0
    subprocess.run(["git", "apply", "--exclude=big.bin", "--exclude=gone.bin", "--exclude=added.bin", str(tmp_path / "p")],
                   cwd=tmp_path / "t", check=True)
    assert (tmp_path / "t" / "small.txt").read_bytes() == b"b\n"


def test_a_large_quoted_name_is_quoted_in_the_binary_line(small_limit: int) -> None:
    patch = large_patch({"\u00e9 x": b"1" * 11}, {"\u00e9 x": b"2" * 11}, [])
    assert patch.endswith(b'Binary files "a/\\303\\251 x" and "b/\\303\\251 x" differ\n')


def test_without_sizes_a_large_file_is_read_but_still_not_diffed(small_limit: int) -> None:
    old, new = {"big.txt": b"line\n" * 5}, {"big.txt": b"line\n" * 6}
    patch = make_patch(old, new)
    assert patch == (f"diff --git a/big.txt b/big.txt\nindex {blob.git_blob_id(old['big.txt'])}..{blob.git_blob_id(new['big.txt'])} 100644\n"
                     "Binary files a/big.txt and b/big.txt differ\n").encode()


def test_sizes_come_with_blob_ids() -> None:
    comparison = compare.compare_trees({"a": "1"}, {"a": "2"})
    with pytest.raises(TypeError):
        writer.render_patch(comparison, lambda path: b"1", lambda path: b"2", old_sizes={"a": 1})


def test_the_limit_is_64_mib() -> None:
    assert writer.LARGE_FILE_LIMIT == 64 << 20


# -- reading patches back -----------------------------------------------------------------------


def expected_entries(old: Tree, new: Tree) -> list[reader.PatchEntry]:
    comparison = compare.compare_trees(checksums(old), checksums(new))
    change = {**dict.fromkeys(comparison.added, "added"), **dict.fromkeys(comparison.modified, "modified"),
              **dict.fromkeys(comparison.deleted, "deleted")}
    return [reader.PatchEntry(path, change[path],  # type: ignore[arg-type]
                            blob.git_blob_id(old[path]) if path in old else None,
                            blob.git_blob_id(new[path]) if path in new else None)
            for path in comparison.changed_paths()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_parse_patch_reads_our_patches(name: str) -> None:
    old, new = CASES[name]
    entries = reader.parse_patch(make_patch(old, new))
    assert entries == expected_entries(old, new)
    assert reader.comparison_of(entries) == compare.compare_trees(checksums(old), checksums(new))
    for entry in entries:
        real_old = blob.git_blob_id(old[entry.path]) if entry.path in old else None
        real_new = blob.git_blob_id(new[entry.path]) if entry.path in new else None
        assert entry.has_blob_ids and entry.agrees_with(real_old, real_new)
        assert not entry.agrees_with(real_old and "f" * 40, real_new and "e" * 40)
        assert not entry.agrees_with(real_new, real_old) or real_old == real_new


TRICKY_OLD: Tree = {"db/schema.sql": b"-- drop this\nselect 1;\n++ and this\n", "same.txt": b"s\n",
                    "gone dir/old file.txt": b"bye\n", "static/logo.png": PNG, "caf\u00e9.md": b"a\r\n"}
TRICKY_NEW: Tree = {"db/schema.sql": b"--- added\nselect 1;\n+++ too\n", "same.txt": b"s\n",
                    "new dir/new file.txt": b"hi\n", "static/logo.png": PNG[::-1], "caf\u00e9.md": b"b\r\n",
                    "sub/deep/x.py": b"pass\n"}


def test_parse_patch_reads_git_diff(tmp_path: Path) -> None:
    full = git_no_index(TRICKY_OLD, TRICKY_NEW, tmp_path, "--full-index", "--binary")
    assert reader.parse_patch(full) == expected_entries(TRICKY_OLD, TRICKY_NEW)
    short = reader.parse_patch(git_no_index(TRICKY_OLD, TRICKY_NEW, tmp_path / "short"))
    assert short is not None and [(entry.path, entry.change) for entry in short] == \
        [(entry.path, entry.change) for entry in expected_entries(TRICKY_OLD, TRICKY_NEW)]
    for entry in short:                  # 7-digit ids: prefixes of the real ones
        assert entry.agrees_with(blob.git_blob_id(TRICKY_OLD[entry.path]) if entry.path in TRICKY_OLD else None,
                                 blob.git_blob_id(TRICKY_NEW[entry.path]) if entry.path in TRICKY_NEW else None)


def test_parse_patch_reads_a_git_rename_as_delete_plus_add(tmp_path: Path) -> None:
    write_tree(tmp_path, {"old name.py": b"same\n" * 20})
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], cwd=tmp_path, check=True)
    (tmp_path / "old name.py").rename(tmp_path / "new name.py")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    patch = subprocess.run([*git, "diff", "--cached", "-M", "--full-index"], cwd=tmp_path, capture_output=True, check=True).stdout
    assert b"rename from old name.py" in patch
    # An exact rename has no index line: the entries say which paths, not which ids.
    assert reader.parse_patch(patch) == [reader.PatchEntry("old name.py", "deleted"), reader.PatchEntry("new name.py", "added")]
    (tmp_path / "new name.py").write_bytes(b"same\n" * 19 + b"other\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    patch = subprocess.run([*git, "diff", "--cached", "-M", "--full-index"], cwd=tmp_path, capture_output=True, check=True).stdout
    assert b"\nsimilarity index " in patch and b"\nindex " in patch
    assert reader.parse_patch(patch) == [
        reader.PatchEntry("old name.py", "deleted", blob.git_blob_id(b"same\n" * 20), None),
        reader.PatchEntry("new name.py", "added", None, blob.git_blob_id(b"same\n" * 19 + b"other\n"))]


def gnu_diff(old: Tree, new: Tree, workdir: Path, option: str) -> bytes:
    write_tree(workdir / "v1" / "source", old)
    write_tree(workdir / "v2" / "source", new)
    result = subprocess.run(["diff", option, "v1/source", "v2/source"], cwd=workdir, capture_output=True, check=False)
    assert result.returncode == 1, result.stderr
    return result.stdout


@pytest.mark.parametrize("option", ["-ru", "-ruN"])
def test_parse_patch_reads_gnu_diff(option: str, tmp_path: Path) -> None:
    patch = gnu_diff(TRICKY_OLD, TRICKY_NEW, tmp_path, option)
    entries = reader.parse_patch(patch)
    assert entries is not None and not any(entry.has_blob_ids for entry in entries)
    # GNU diff compared v1/source with v2/source: a generation's paths are those below source/.
    entries = reader.expand_directories(entries, set(TRICKY_OLD), set(TRICKY_NEW))
    assert reader.comparison_of(entries) == compare.compare_trees(checksums(TRICKY_OLD), checksums(TRICKY_NEW))
    for entry in entries:
        assert entry.agrees_with(blob.git_blob_id(TRICKY_OLD[entry.path]) if entry.path in TRICKY_OLD else None,
                                 blob.git_blob_id(TRICKY_NEW[entry.path]) if entry.path in TRICKY_NEW else None)


def test_parse_patch_places_only_in_lines_by_the_directories_compared(tmp_path: Path) -> None:
    patch = gnu_diff({"a.txt": b"1\n", "gone.txt": b"x\n"}, {"a.txt": b"2\n", "new.txt": b"y\n"}, tmp_path, "-ru")
    assert patch.startswith(b"diff -ru v1/source/a.txt v2/source/a.txt\n")
    assert reader.parse_patch(patch) == [reader.PatchEntry("a.txt", "modified"),
                                       reader.PatchEntry("gone.txt", "deleted", may_be_directory=True),
                                       reader.PatchEntry("new.txt", "added", may_be_directory=True)]
    assert reader.parse_patch(b"Only in b/app: new.py\nOnly in a: old.py\n") == [
        reader.PatchEntry("app/new.py", "added", may_be_directory=True),
        reader.PatchEntry("old.py", "deleted", may_be_directory=True)]
    unplaced = reader.parse_patch(b"Only in left: x\n")
    assert unplaced == [reader.PatchEntry("x", "one-sided", may_be_directory=True)]
    assert unplaced[0].agrees_with(None, "1" * 40) and not unplaced[0].agrees_with("1" * 40, "2" * 40)
    assert unplaced[0].covers("x/y.py") and not unplaced[0].covers("xy.py")
    assert reader.expand_directories(unplaced, {"a.py"}, {"x/y.py", "x/z/w.py", "xy.py"}) == [
        reader.PatchEntry("x/y.py", "added"), reader.PatchEntry("x/z/w.py", "added")]


def test_parse_patch_reads_the_applications_diff_ru_below_source(tmp_path: Path) -> None:
    """`diff -ru <old>/source <new>/source` with absolute folder names that need not be the
    folders' names now (a renumbered version): paths are those below source/, a nested folder
    called source included; with only `Only in` lines, a generation folder's source/ is found."""
    old = {"README.md": b"1\n", "lib/source/x.py": b"a\n", "gone.py": b"g\n"}
    new = {"README.md": b"2\n", "lib/source/x.py": b"b\n", "pkg/new.py": b"n\n"}
    for folder, tree in (("v3__base", old), ("v1__renumbered", new)):
        write_tree(tmp_path / "storage" / "projects" / "p" / "generations" / folder / "source", tree)
    generations = tmp_path / "storage" / "projects" / "p" / "generations"
    patch = subprocess.run(["diff", "-ru", str(generations / "v3__base" / "source"),
                            str(generations / "v1__renumbered" / "source")], capture_output=True).stdout
    assert f"--- {generations}/v3__base/source/README.md\t".encode() in patch
    entries = reader.expand_directories(reader.parse_patch(patch) or [], set(old), set(new))
    assert reader.comparison_of(entries) == compare.compare_trees(checksums(old), checksums(new))
    assert reader.parse_patch(b"diff -ru a/x/source/README.md b/y/source/README.md\n"
                            b"--- a/x/source/README.md\t2026-01-01 00:00:00 +0000\n"
                            b"+++ b/y/source/README.md\t2026-01-01 00:00:00 +0000\n@@ -1 +1 @@\n-1\n+2\n") == [
        reader.PatchEntry("README.md", "modified")]
    only = reader.parse_patch(f"Only in {generations}/v1__renumbered/source/pkg: new.py\n"
                            f"Only in {generations}/v3__base/source: gone.py\n".encode())
    assert only is not None and [entry.path for entry in only] == ["pkg/new.py", "gone.py"]
    assert reader.comparison_of(reader.expand_directories(only, set(old), set(new))) == \
        compare.TreeComparison(added=("pkg/new.py",), modified=(), deleted=("gone.py",))


def test_parse_patch_keeps_trailing_spaces_and_backslashes(tmp_path: Path) -> None:
    """git ends a name holding a space with a tab, GNU diff quotes it: only what a tab
    separates is dropped, so `notes ` stays `notes ` (git apply creates exactly that name)."""
    old = {"notes ": b"1\n", "dir\\name.txt": b"a\n", "gone ": b"g\n"}
    new = {"notes ": b"2\n", "dir\\name.txt": b"b\n", "new ": b"n\n"}
    for patch in (make_patch(old, new), git_no_index(old, new, tmp_path / "git", "--full-index")):
        entries = reader.parse_patch(patch)
        assert entries is not None and reader.comparison_of(entries) == compare.compare_trees(checksums(old), checksums(new))
    gnu = reader.parse_patch(gnu_diff(old, new, tmp_path / "gnu", "-ru"))
    assert gnu is not None
    assert reader.comparison_of(reader.expand_directories(gnu, set(old), set(new))) == \
        compare.compare_trees(checksums(old), checksums(new))


def test_parse_patch_empty_and_not_a_patch() -> None:
    assert reader.parse_patch(b"") == []
    assert reader.parse_patch(b"\n") == []
    assert reader.parse_patch(b"hello\nworld\n") is None
    assert reader.parse_patch(PNG) is None
    assert reader.parse_patch(b"diff -ru a b\n") is None


PATCH_LINES = st.sampled_from([
    b"diff --git a/x b/x", b'diff --git "a/\\303" "b/\\3', b"diff --git a/x y", b"diff --git ", b"index 0000..1111",
    b"index abcd..0000 100644", b"new file mode 100644", b"deleted file mode 100644", b"rename from x",
    b"rename to", b"copy from y", b"copy to z", b"--- a/x", b"+++ b/x", b"--- /dev/null", b"+++ /dev/null",
    b"--- x\t1970-01-01 00:00:00.000000000 +0000", b"+++ y\t9999-99-99 99:99:99.0 +9999", b"@@ -1 +1 @@",
    b"@@ -1,99999999999999999999 +0,0 @@", b"@@ -0,0 +1,3 @@", b"-a", b"+b", b" c", b"", b"\\ No newline at end of file",
    b"GIT binary patch", b"literal 3", b"delta 1", b"zcmV?d", b"Binary files a and b differ",
    b'Binary files "a/\\" and  and b differ', b"Binary files  and  differ", b"Only in a: x", b"Only in : ",
    b'--- "a/\\q"', b'+++ "b/\\377"', b"diff -ru a/x b/x", b"\r", b"\xff\xfe"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.binary(max_size=400), st.lists(PATCH_LINES, max_size=30).map(b"\n".join)))
def test_parse_patch_never_raises(data: bytes) -> None:
    entries = reader.parse_patch(data)
    assert entries is None or all(isinstance(entry, reader.PatchEntry) for entry in entries)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(tree_pairs())
def test_parse_patch_reads_every_random_patch(pair: tuple[Tree, Tree]) -> None:
    old, new = pair
    assert reader.parse_patch(make_patch(old, new)) == expected_entries(old, new)


# -- whole-file adds and deletes: written without libgit2, applied like its own -----------------

NON_UTF8 = b"caf\xe9 \xff.txt".decode("utf-8", "surrogateescape")      # as os.walk gives it
WHOLE_FILE_CASES: dict[str, tuple[Tree, Tree]] = {
    "text without final newline added": ({"keep.txt": b"k\n"}, {"keep.txt": b"k\n", "new.txt": b"a\nb"}),
    "text without final newline deleted": ({"keep.txt": b"k\n", "gone.txt": b"a\nb"}, {"keep.txt": b"k\n"}),
    "one line without newline added and deleted": ({"gone": b"x"}, {"new": b"y"}),
    "empty file added and deleted": ({"dir/gone": b""}, {"dir/new": b""}),
    "only a newline": ({"gone": b"\n"}, {"new": b"\n\n"}),
    "CRLF added and deleted": ({"gone.bat": b"@echo off\r\nrem a\r\n"}, {"new.bat": b"a\r\nb\r\nc"}),
    "lone CR and form feed": ({}, {"cr.txt": b"a\rb\r\x0c\n\r"}),
    "non-UTF-8 name added": ({}, {NON_UTF8: b"caf\xe9\n"}),
    "non-UTF-8 name deleted": ({NON_UTF8: b"caf\xe9\n"}, {}),
    "name needing quotes": ({'tab\there "q"\\.txt': b"1\n"}, {"\x01ctl \u00e9.txt": b"2\n"}),
    "binary added": ({}, {"static/logo.png": PNG}),
    "binary deleted": ({"static/logo.png": PNG}, {}),
    "NUL after the first 8000 bytes is text": ({}, {"late.txt": b"a" * 8000 + b"\0\n"}),
    "NUL within the first 8000 bytes is binary": ({}, {"early.bin": b"a" * 7999 + b"\0\n"}),
    "diff markers as content": ({"gone": b"--- a\n+++ b\n@@ -1 +1 @@\n\\ No newline\n"},
                                {"new": b"diff --git a/x b/x\n-\n+\n"}),
}


def sections_by_name(patch: bytes) -> dict[bytes, bytes]:
    return {section.split(b"\n", 1)[0]: section for section in re.split(rb"(?m)^(?=diff --git )", patch) if section}


def libgit2_whole_file_patch(old: Tree, new: Tree) -> bytes:
    """The same patch with every section made by libgit2 (the way every file was written before
    adds and deletes were written directly)."""
    import io

    buffer = io.BytesIO()
    for path in sorted(old.keys() | new.keys()):
        if old.get(path) != new.get(path):
            old_side, new_side = old.get(path), new.get(path)
            writer._write_diffed(buffer.write, path,
                               (blob.git_blob_id(old_side) if old_side is not None else blob.NULL_BLOB_ID, old_side),
                               (blob.git_blob_id(new_side) if new_side is not None else blob.NULL_BLOB_ID, new_side))
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(WHOLE_FILE_CASES))
def test_whole_file_adds_and_deletes_round_trip(name: str, tmp_path: Path) -> None:
    old, new = WHOLE_FILE_CASES[name]
    patch = make_patch(old, new)
    assert apply("git", old, patch, tmp_path) == new
    assert patch == libgit2_whole_file_patch(old, new)


def test_whole_file_sections_are_what_git_writes(tmp_path: Path) -> None:
    for name, (old, new) in WHOLE_FILE_CASES.items():
        if any(b"\0" in content[:8000] for content in [*old.values(), *new.values()]):
            continue                 # git's own binary literal need not be libgit2's byte for byte
        ours = sections_by_name(make_patch(old, new))
        git = sections_by_name(git_no_index(old, new, tmp_path / name.replace(" ", "-"), "--full-index"))
        without_first_line = lambda sections: sorted(section.split(b"\n", 1)[1] for section in sections.values())
        assert without_first_line(ours) == without_first_line(git), name


def test_commands_that_make_no_patch_never_load_libgit2() -> None:
    """A dry run, an unchanged resync and the read-only commands import everything they use at
    start-up; libgit2 (pygit2) is loaded only when a patch is made."""
    import subprocess
    import sys

    probe = ("import sys, storage_migrator.cli.main, storage_migrator.engine.projects, storage_migrator.commands.verify, "
             "storage_migrator.commands.diff, storage_migrator.commands.watch; print('pygit2' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"
    assert writer._libgit2().Patch.create_from(b"a\n", b"b\n").delta.new_file.id is not None


def test_an_added_text_file_is_not_given_to_libgit2(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls: list[object] = []
    original = writer._libgit2().Patch.create_from
    counting = types.SimpleNamespace(create_from=lambda *a, **k: calls.append(a) or original(*a, **k))
    monkeypatch.setattr(writer, "_libgit2", lambda: types.SimpleNamespace(Patch=counting))
    make_patch({"gone.py": b"x\n", "same.py": b"1\n"}, {"new.py": b"y\n", "same.py": b"2\n", "b.png": PNG})
    assert len(calls) == 2                  # the modified file and the binary add, nothing else


def test_quote_path_matches_the_per_byte_rule() -> None:
    for byte in range(256):
        name = b"x" + bytes([byte]) + b"y"
        expected = name if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C) else (
            b'"x' + writer._C_ESCAPES.get(byte, b"\\%03o" % byte) + b'y"')
        assert writer.quote_path(name) == expected
    assert writer.quote_path(b"a/\xc3\xa9\xc3\xa9 \"q\"\\") == b'"a/\\303\\251\\303\\251 \\"q\\"\\\\"'


WHOLE_CONTENTS = st.one_of(file_contents(), st.binary(max_size=60),
                           st.builds(lambda size, tail: b"a" * size + tail, st.integers(7990, 8010), st.binary(max_size=3)))
WHOLE_NAMES = st.sampled_from(["a.py", "a/b.py", "a/b/c.txt", "a.txt", "name with space.md", NON_UTF8,
                               'say "hi".txt', "\u00fcn\u00efcode/x", "z/crlf.bat", "dir/empty"])


@st.composite
def add_delete_pairs(draw: st.DrawFn) -> tuple[Tree, Tree]:
    """Trees that differ only by whole files added and deleted (and a few kept as they are)."""
    names = draw(st.lists(WHOLE_NAMES, unique=True, max_size=8))
    old: Tree = {}
    new: Tree = {}
    for name in names:
        fate = draw(st.sampled_from(["added", "deleted", "kept"]))
        content = draw(WHOLE_CONTENTS)
        if fate != "added":
            old[name] = content
        if fate != "deleted":
            new[name] = content
    # a file and a folder of the same name cannot both exist in one tree
    for tree in (old, new):
        for name in list(tree):
            if any(other.startswith(name + "/") for other in tree):
                del tree[name]
    return old, new


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(add_delete_pairs())
def test_random_adds_and_deletes_apply_like_libgit2s_patch(tmp_path_factory: pytest.TempPathFactory,
                                                           pair: tuple[Tree, Tree]) -> None:
    old, new = pair
    patch, reference = make_patch(old, new), libgit2_whole_file_patch(old, new)
    workdir = tmp_path_factory.mktemp("w")
    assert apply("git", old, patch, workdir / "ours") == new
    assert apply("git", old, reference, workdir / "libgit2") == new
    assert patch == reference


def test_no_git_config_file_is_read(tmp_path: Path) -> None:
    # libgit2 diffs blobs of a repository, and a repository would load the system, XDG and global
    # git config: a file it cannot parse there would fail every patch (and any setting in it
    # could change one). The tool empties those search paths; the patch is the same as here.
    import subprocess
    import sys

    for folder in (tmp_path, tmp_path / "xdg" / "git"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (".gitconfig" if folder == tmp_path else "config")).write_text("[[[ not a git config\n")
    probe = ("import sys; from storage_migrator.patch import blob, compare, reader, writer; "
             "sys.stdout.buffer.write(writer.render_patch(compare.compare_trees({'a.py': '1'}, {'a.py': '2'}), "
             "lambda p: b'one\\ntwo\\n', lambda p: b'one\\n2\\n'))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False,
                            env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert result.returncode == 0, result.stderr
    expected = writer.render_patch(compare.compare_trees({"a.py": "1"}, {"a.py": "2"}), lambda p: b"one\ntwo\n",
                                 lambda p: b"one\n2\n")
    assert result.stdout == expected and b"@@ -1,2 +1,2 @@" in expected


def test_the_patch_from_a_base_scanned_with_spare_bytes_reads_no_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diff base scanned with ``spare`` keeps its other small files aside; the next version's
    scan hands it the old side of their patch (the edited and deleted files) and the rest is
    dropped. The patch then opens no file of either tree, and is the one a re-read makes."""
    old_files = {"a.py": b"one\n", "same.py": b"same\n", "gone.py": b"bye\n", "big.txt": b"x" * 300}
    new_files = {"a.py": b"two\n", "same.py": b"same\n", "added.py": b"hi\n", "big.txt": b"y" * 300}
    write_tree(tmp_path / "old", old_files)
    write_tree(tmp_path / "new", new_files)
    monkeypatch.setattr(tree_module, "SPARE_LIMIT", 20)        # room for the small files, not big.txt
    with storage_around(tmp_path / "old") as storage:
        old = scan_tree(storage, tmp_path / "old", spare=True)
        assert old.contents == {} and set(old.spare) == {"a.py", "same.py", "gone.py"}
        new = scan_tree(storage, tmp_path / "new", old.checksums())
        assert new.spare == {}                                 # not asked for: nothing kept aside
        assert old.keep_for_next(new.checksums()) == len(b"one\n") + len(b"bye\n")
        assert old.contents == {"a.py": b"one\n", "gone.py": b"bye\n"} and old.spare == {}
        comparison = compare.compare_trees(old.checksums(), new.checksums())
        opened: list[object] = []
        real_open = os.open
        monkeypatch.setattr(os, "open", lambda path, *a, **k: (opened.append(path), real_open(path, *a, **k))[1])
        kept_patch = io.BytesIO()
        write_tree_patch(kept_patch, old, new, comparison)
        assert opened == ["old", "big.txt"]       # only the old side of the file past the bound
        monkeypatch.setattr(os, "open", real_open)
        reread = io.BytesIO()
        write_tree_patch(reread, scan_tree(storage, tmp_path / "old"), scan_tree(storage, tmp_path / "new"), comparison)
    assert kept_patch.getvalue() == reread.getvalue() == make_patch(old_files, new_files)
