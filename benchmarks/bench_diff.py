"""How long the patch of one large changed file takes: a 100,000-line file with a few edited
lines (the cost must follow the change, not the file), and files where everything changed.

Times ``diff.render_patch`` (libgit2) and, next to it, the hand-written Python engine it replaced,
read from git history (``--baseline REV``; the column is left out when that is not available).

Run by hand: .venv/bin/python benchmarks/bench_diff.py
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

from storage_migrator import diff

# The last commit whose diff.py is the pure-Python Myers/patience engine.
OLD_ENGINE_COMMIT = "14ba721c0d87420d318d3f0eb6fcf13d6a8492ea"
PATH = "big.py"
REPEAT = 3

Tree = dict[str, bytes]
Render = Callable[[Tree, Tree], bytes]


def renderer(module: types.ModuleType) -> Render:
    """Two trees through a diff module's ``render_patch`` (both engines share this API); every
    file counts as changed, so no checksum is computed in the timing."""
    def render(old: Tree, new: Tree) -> bytes:
        comparison = module.compare_trees(dict.fromkeys(old, "old"), dict.fromkeys(new, "new"))
        return module.render_patch(comparison, old.__getitem__, new.__getitem__)
    return render


def old_engine(revision: str) -> Render | None:
    """The replaced engine, loaded from git history without touching the working tree."""
    result = subprocess.run(["git", "show", f"{revision}:storage_migrator/diff.py"], capture_output=True,
                            cwd=Path(__file__).resolve().parent.parent, check=False)
    if result.returncode != 0:
        return None
    module = types.ModuleType("old_diff")
    sys.modules[module.__name__] = module           # dataclasses look their module up there
    exec(compile(result.stdout, f"{revision}:storage_migrator/diff.py", "exec"), module.__dict__)  # noqa: S102 -- our own history
    return renderer(module) if hasattr(module, "text_hunks") else None


def best_of(render: Render, old: Tree, new: Tree, repeat: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = len(render(old, new))
        best = min(best, time.perf_counter() - started)
    return best, size


def timed(label: str, old: list[bytes], new: list[bytes], baseline: Render | None, files: int = 1) -> None:
    """``files`` copies of one file pair, each under its own name."""
    old_tree = {f"{number}/{PATH}": b"".join(old) for number in range(files)}
    new_tree = {f"{number}/{PATH}": b"".join(new) for number in range(files)}
    seconds, size = best_of(renderer(diff), old_tree, new_tree, REPEAT)
    row = f"| {label} | {len(old):,} → {len(new):,} | {seconds * 1000:,.0f} ms | {size:,} B |"
    if baseline is not None:
        old_seconds, old_size = best_of(baseline, old_tree, new_tree, REPEAT)
        row += f" {old_seconds * 1000:,.0f} ms | {old_size:,} B | {old_seconds / seconds:,.1f}× |"
    print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=OLD_ENGINE_COMMIT, help="git revision of the engine to compare with")
    baseline = old_engine(parser.parse_args().baseline)
    chooser = random.Random(0)
    code = [b"    value_%d = compute(%d)\n" % (i % 5000, i % 977) for i in range(100_000)]
    edited = list(code)
    for number in range(5):
        edited[chooser.randrange(len(edited))] = b"    edited_line_%d = True\n" % number
    header = "| case | lines | libgit2, best of 3 | patch size |"
    rule = "|---|---|---|---|"
    if baseline is not None:
        header += " Python engine, best of 3 | patch size | speed-up |"
        rule += "---|---|---|"
    print(f"{header}\n{rule}")
    timed("100k lines, 5 scattered edits", code, edited, baseline)
    timed("100k lines, 500 scattered edits", code, [line if chooser.random() > 0.005 else b"x\n" for line in code],
          baseline)
    timed("20k lines, all changed", [b"old %d\n" % i for i in range(20_000)], [b"new %d\n" % i for i in range(20_000)],
          baseline)
    timed("20k lines of three repeated values", [b"%d\n" % (i % 3) for i in range(20_000)],
          [b"%d\n" % (i % 4) for i in range(20_000)], baseline)
    small = [b"line %d\n" % i for i in range(40)]
    timed("1,000 files of 40 lines, 1 edit each", small, [*small[:20], b"edited\n", *small[21:]], baseline, files=1000)


if __name__ == "__main__":
    main()
