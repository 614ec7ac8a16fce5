"""How long the diff engine takes on large files: a 100,000-line file with a few edited lines
(the cost must follow the change, not the file), and files where everything changed.

Run by hand: .venv/bin/python benchmarks/bench_diff.py
"""
from __future__ import annotations

import random
import time

from storage_migrator import diff


def timed(label: str, old: list[bytes], new: list[bytes], repeat: int = 3) -> None:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        hunks = diff.text_hunks(old, new)
        best = min(best, time.perf_counter() - started)
    print(f"| {label} | {len(old):,} → {len(new):,} | {best * 1000:,.0f} ms | {len(hunks):,} B |")


def main() -> None:
    chooser = random.Random(0)
    code = [b"    value_%d = compute(%d)\n" % (i % 5000, i % 977) for i in range(100_000)]
    edited = list(code)
    for number in range(5):
        edited[chooser.randrange(len(edited))] = b"    edited_line_%d = True\n" % number
    print("| case | lines | best of 3 | patch size |\n|---|---|---|---|")
    timed("100k lines, 5 scattered edits", code, edited)
    timed("100k lines, 500 scattered edits", code, [line if chooser.random() > 0.005 else b"x\n" for line in code])
    timed("20k lines, all changed", [b"old %d\n" % i for i in range(20_000)], [b"new %d\n" % i for i in range(20_000)])
    timed("20k lines of three repeated values", [b"%d\n" % (i % 3) for i in range(20_000)],
          [b"%d\n" % (i % 4) for i in range(20_000)])


if __name__ == "__main__":
    main()
