"""Benchmark: `storage-migrate run --coordinate` with 1 and with N participants (separate processes,
each `--workers 1`, named as hosts by STORAGE_MIGRATE_HOSTNAME) on copies of a real-code corpus
and one PostgreSQL database, against the uncoordinated `run --workers 1`; then `verify`.

    .venv/bin/python benchmarks/bench_coordinate.py [--corpus app|real|long] [--scale K] [--participants 1,2]
        [--rounds R]

The `app` corpus (the application's shape: many small generations) is the default.

Wall time is from the first participant's start to the last one's end; each participant's
`coordination` document gives its buckets, takeovers and time spent waiting. On one machine the
participants share its cores and its disk: this measures the protocol's overhead and how it
splits the work, not the speed-up of real separate hosts.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from storage_migrator.config import HEAD_REVISION
from storage_migrator.db.revisions import upgrade_schema

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import (
    CORPORA,
    TOOL,
    build_real,
    drop_postgres,
    fresh_copy,
    machine,
    prepare_postgres,
    reset_postgres,
    settle,
    tool_env,
)


def run_participants(root: Path, url: str, participants: int) -> tuple[float, list[dict]]:
    """``participants`` coordinated runs at once (0: one uncoordinated run); wall seconds and each
    one's JSON document, with its peak RSS (MB, GNU time) added as ``peak_rss_mb``."""
    started = time.monotonic()
    if participants == 0:
        commands = [([*TOOL, "--json", "run", "--workers", "1"], tool_env(root, url))]
    else:
        commands = [([*TOOL, "--json", "run", "--coordinate", "--workers", "1"],
                     {**tool_env(root, url), "STORAGE_MIGRATE_HOSTNAME": f"bench-{index}"})
                    for index in range(participants)]
    reports = [Path(tempfile.mktemp(prefix="bench-rss-")) for _ in commands]
    processes = [subprocess.Popen(["/usr/bin/time", "-o", str(report), "-f", "%M", *command], env=environment,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for (command, environment), report in zip(commands, reports, strict=True)]
    outputs = [process.communicate() for process in processes]
    seconds = time.monotonic() - started
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            sys.exit(f"a participant failed ({process.returncode}):\n{stderr[-3000:]}")
    documents = [json.loads(stdout) for stdout, _ in outputs]
    for document, report in zip(documents, reports, strict=True):
        document["peak_rss_mb"] = int(report.read_text().split()[-1]) / 1024
        report.unlink()
    return seconds, documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="app")
    parser.add_argument("--scale", type=int, default=1, help="K copies of each project of the corpus")
    parser.add_argument("--participants", default="1,2")
    parser.add_argument("--rounds", type=int, default=2, help="timings per contender; the best is shown")
    arguments = parser.parse_args()
    counts = [0, *(int(count) for count in arguments.participants.split(","))]
    work = Path(tempfile.mkdtemp(prefix="storage-migrate-bench-coordinate-"))
    try:
        folder = work / "corpus"
        folder.mkdir()
        corpus = build_real(folder, arguments.scale, arguments.corpus)
        postgres = prepare_postgres(corpus.sqlite_url)
        upgrade_schema(corpus.sqlite_url, HEAD_REVISION)
        settle()                    # the corpus's scratch folders removed: see bench_run.QUIET_SECONDS
        rows = []
        try:
            for count in counts:
                best: tuple[float, list[dict]] | None = None
                for _ in range(arguments.rounds):
                    root, url = fresh_copy(corpus, work / "copy", postgres.url)
                    reset_postgres(postgres)
                    result = run_participants(root, url, count)
                    check = subprocess.run([*TOOL, "-q", "verify"], env=tool_env(root, url), capture_output=True,
                                           text=True, check=False)
                    if check.returncode != 0:
                        sys.exit(f"verify failed after {count} participants:\n{check.stdout[-3000:]}")
                    if best is None or result[0] < best[0]:
                        best = result
                assert best is not None
                rows.append((count, *best))
        finally:
            drop_postgres(postgres)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"## run --coordinate, {arguments.corpus} corpus\n\nmachine: {machine()}\ncorpus: {corpus.description}; "
          f"PostgreSQL; best of {arguments.rounds}\n")
    print("| contender | wall s | speed-up over 1 participant | generations/s | buckets per participant "
          "| taken over | waited s (sum) | peak RSS per participant MB |")
    print("|---|---:|---:|---:|---|---:|---:|---|")
    baseline = rows[0][1]
    single = next((seconds for count, seconds, _ in rows if count == 1), None)
    for count, seconds, documents in rows:
        generations = sum(document["migrated"] + document["skipped"] + document["failed"] for document in documents)
        shares = [document.get("coordination") for document in documents]
        label = "run --workers 1 (uncoordinated)" if count == 0 else f"{count} participant(s), --workers 1 each"
        buckets = "/".join(str(share["buckets_claimed"]) for share in shares if share) or "-"
        taken = sum(share["buckets_taken_over"] for share in shares if share)
        waited = sum(share["waited_seconds"] for share in shares if share)
        speedup = f"{single / seconds:.2f}x" if single and count else "-"
        rss = "/".join(f"{document['peak_rss_mb']:.0f}" for document in documents)
        print(f"| {label} | {seconds:.2f} ({seconds / baseline:.2f}x) | {speedup} | {generations / seconds:,.0f} "
              f"| {buckets} | {taken} | {waited:.1f} | {rss} |")


if __name__ == "__main__":
    main()
