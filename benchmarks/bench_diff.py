"""How long patches take: one large changed file with a few edited lines (the cost must follow the
change, not the file), files where everything changed, and whole files added and deleted (what
most of a real history's sections are: 31,240 of 42,640 in the issue-19 profile).

Times ``writer.render_patch`` as it is now against two engines read from git history:
``--before REV`` (default: the writer that gave every section, adds and deletes included, to
libgit2) and ``--baseline REV`` (the hand-written Python engine libgit2 replaced; it is slow,
``--baseline ''`` leaves it out). A column is left out when its revision is not available.

``--real`` times instead the patches between consecutive releases of the real corpus
(benchmarks/real_corpus.py, fetched once into benchmarks/.cache/), as ``run`` writes them.

Run by hand: .venv/bin/python benchmarks/bench_diff.py [--repeat N] [--quick] [--real]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

from storage_migrator.patch import compare, writer

# The last commit whose diff.py is the pure-Python Myers/patience engine.
OLD_ENGINE_COMMIT = "14ba721c0d87420d318d3f0eb6fcf13d6a8492ea"
# The last commit whose writer passed whole-file adds and deletes through libgit2 too.
BEFORE_WRITER_COMMIT = "7150eb8c2b54396abc3473814e4ceac44883b93c"
PATH = "big.py"

Tree = dict[str, bytes]
Render = Callable[[Tree, Tree], bytes]


def renderer(module: types.ModuleType) -> Render:
    """Two trees through a diff module's ``render_patch`` (every engine shares this API); every
    file counts as changed, so no checksum is computed in the timing."""
    def render(old: Tree, new: Tree) -> bytes:
        comparison = module.compare_trees(dict.fromkeys(old, "old"), dict.fromkeys(new, "new"))
        return module.render_patch(comparison, old.__getitem__, new.__getitem__)
    return render


def engine_at(revision: str, required: str) -> Render | None:
    """diff.py at ``revision``, loaded from git history without touching the working tree (its
    relative imports resolve in the installed package); None without ``required`` in it."""
    if not revision:
        return None
    result = subprocess.run(["git", "show", f"{revision}:storage_migrator/diff.py"], capture_output=True,
                            cwd=Path(__file__).resolve().parent.parent, check=False)
    if result.returncode != 0:
        return None
    module = types.ModuleType(f"diff_at_{revision[:12]}")
    module.__package__ = "storage_migrator"
    sys.modules[module.__name__] = module           # dataclasses look their module up there
    exec(compile(result.stdout, f"{revision}:storage_migrator/diff.py", "exec"), module.__dict__)  # noqa: S102 -- our own history
    return renderer(module) if hasattr(module, required) else None


def best_of(renders: list[Render], old: Tree, new: Tree, repeat: int) -> list[tuple[float, bytes]]:
    """Each engine's best time and its patch; the engines take turns, so a load that comes and
    goes on the machine hits them alike. CPU time of this process: the work is single-threaded,
    and other processes on a busy machine then count less than in wall time."""
    best, patches = [float("inf")] * len(renders), [b""] * len(renders)
    for _ in range(repeat):
        for number, render in enumerate(renders):
            started = time.process_time()
            patches[number] = render(old, new)
            best[number] = min(best[number], time.process_time() - started)
    return list(zip(best, patches, strict=True))


def timed(label: str, old_tree: Tree, new_tree: Tree, others: list[Render], repeat: int) -> None:
    lines = sum(content.count(b"\n") for content in old_tree.values())
    new_lines = sum(content.count(b"\n") for content in new_tree.values())
    (seconds, patch), *rest = best_of([renderer(types.SimpleNamespace(compare_trees=compare.compare_trees, render_patch=writer.render_patch)), *others], old_tree, new_tree, repeat)
    row = f"| {label} | {lines:,} → {new_lines:,} | {seconds * 1000:,.1f} ms | {len(patch):,} B |"
    for other_seconds, other_patch in rest:
        same = "same bytes" if other_patch == patch else f"{len(other_patch):,} B"
        row += f" {other_seconds * 1000:,.1f} ms | {same} | {other_seconds / seconds:,.2f}× |"
    print(row, flush=True)


def copies(files: int, content: bytes, prefix: str = "") -> Tree:
    return {f"{prefix}{number}/{PATH}": content for number in range(files)}


def read_tree(root: Path) -> Tree:
    tree: Tree = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            tree[path.relative_to(root).as_posix()] = path.read_bytes()
    return tree


def real_history(engines: list[tuple[str, Render]], repeat: int) -> None:
    """Every consecutive pair of releases of every real project, only changed files rendered
    (as ``run`` does), the total per engine; each pair's patch must be the same bytes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_corpus import ensure_corpus

    trees = ensure_corpus()
    totals = dict.fromkeys((name for name, _ in engines), 0.0)
    counts = {"added": 0, "deleted": 0, "modified": 0}
    size, differing = 0, 0
    by_package: dict[str, list[Path]] = {}
    for release, tree in trees.items():
        by_package.setdefault(release.package, []).append(tree)
    for versions in by_package.values():
        previous = read_tree(versions[0])
        for version in versions[1:]:
            current = read_tree(version)
            changed = {path for path in previous.keys() & current.keys() if previous[path] != current[path]}
            old = {path: content for path, content in previous.items() if path not in current or path in changed}
            new = {path: content for path, content in current.items() if path not in previous or path in changed}
            counts["added"] += len(new.keys() - old.keys())
            counts["deleted"] += len(old.keys() - new.keys())
            counts["modified"] += len(changed)
            results = best_of([render for _, render in engines], old, new, repeat)
            for (name, _), (seconds, _) in zip(engines, results, strict=True):
                totals[name] += seconds
            size += len(results[0][1])
            differing += len({patch for _, patch in results}) > 1
            previous = current
    print(f"real history: {sum(len(v) - 1 for v in by_package.values())} consecutive pairs of {len(by_package)} "
          f"projects; sections: {counts['added']:,} added, {counts['deleted']:,} deleted, "
          f"{counts['modified']:,} modified; {size / 1024**2:,.1f} MiB of patches; "
          f"pairs whose patch differs between engines: {differing}")
    now = totals[engines[0][0]]
    for name, seconds in totals.items():
        print(f"| {name} | {seconds * 1000:,.0f} ms CPU (best of {repeat} per pair, summed) | {seconds / now:,.2f}× now |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE_WRITER_COMMIT, help="git revision of the writer to compare with")
    parser.add_argument("--baseline", default=OLD_ENGINE_COMMIT, help="git revision of the Python engine ('' for none)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    parser.add_argument("--quick", action="store_true", help="leave out the 100k-line cases")
    parser.add_argument("--real", action="store_true", help="consecutive releases of the real corpus instead")
    arguments = parser.parse_args()
    before = engine_at(arguments.before, "render_patch")
    baseline = engine_at(arguments.baseline, "text_hunks")
    if arguments.real:
        engines = [("now", renderer(types.SimpleNamespace(compare_trees=compare.compare_trees, render_patch=writer.render_patch)))] + [(name, engine) for name, engine in (("before", before),
                                                ("Python engine", baseline)) if engine is not None]
        real_history(engines, arguments.repeat)
        return
    others = [engine for engine in (before, baseline) if engine is not None]
    header = f"| case | lines | now, best of {arguments.repeat} (CPU) | patch size |"
    rule = "|---|---|---|---|"
    for name, engine in (("before", before), ("Python engine", baseline)):
        if engine is not None:
            header += f" {name} | its patch | speed-up |"
            rule += "---|---|---|"
    print(f"{header}\n{rule}", flush=True)
    chooser = random.Random(0)
    module_text = b"".join(b"    value_%d = compute(%d)  # %s\n" % (i, i % 977, b"x" * (i % 40)) for i in range(120))
    lock_text = b"".join(b'name = "package-%d"\nversion = "1.%d.0"\n' % (i, i) for i in range(20_000))
    timed("2,000 files of 120 lines added", {}, copies(2000, module_text), others, arguments.repeat)
    timed("2,000 files of 120 lines deleted", copies(2000, module_text), {}, others, arguments.repeat)
    timed("1 lock file of 40k lines added, 1 deleted", {"old/uv.lock": lock_text}, {"new/uv.lock": lock_text},
          others, arguments.repeat)
    timed("500 names with é added", {}, {f"d\u00e9j\u00e0/{n}.py": b"x = %d\n" % n for n in range(500)}, others,
          arguments.repeat)
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(chooser.randrange(256) for _ in range(20_000))
    timed("200 binary files added", {}, copies(200, png), others, arguments.repeat)
    small = [b"line %d\n" % i for i in range(40)]
    timed("1,000 files of 40 lines, 1 edit each", copies(1000, b"".join(small)),
          copies(1000, b"".join([*small[:20], b"edited\n", *small[21:]])), others, arguments.repeat)
    if arguments.quick:
        return
    code = [b"    value_%d = compute(%d)\n" % (i % 5000, i % 977) for i in range(100_000)]
    edited = list(code)
    for number in range(5):
        edited[chooser.randrange(len(edited))] = b"    edited_line_%d = True\n" % number
    timed("100k lines, 5 scattered edits", {PATH: b"".join(code)}, {PATH: b"".join(edited)}, others, arguments.repeat)
    timed("20k lines, all changed", {PATH: b"".join(b"old %d\n" % i for i in range(20_000))},
          {PATH: b"".join(b"new %d\n" % i for i in range(20_000))}, others, arguments.repeat)


if __name__ == "__main__":
    main()
