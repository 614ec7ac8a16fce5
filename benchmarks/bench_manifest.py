"""How the application's keys are picked out of a manifest too large to parse: the hand-written
streaming scan (``storage/manifest.py``) against the same job done through ijson's public API
(``basic_parse`` events, owned values skipped, the application's values built with
``ObjectBuilder``), on each backend ijson offers here.

Two manifests in the tool's format: a large one (``--large`` entries, default 200,000) and a
typical one (``--typical``, default 70; below the size cap, so ``run`` itself parses it with
``json.loads``, listed for reference). Each (way, manifest) runs in a process of its own: the best
of ``--repeat`` wall times, the peak of Python allocations (tracemalloc, a separate call) and the
growth of the process's peak RSS over the call (C allocations included).

Then each way reads small manifests whose application key holds a value json.loads reads and
json.dumps writes: a lone surrogate (``\\ud800``, ``\\udc80``), an integer beyond 64 bits,
``Infinity``. A way that changes such a value, or calls the manifest unreadable (its rewrite then
drops the application's keys), does not keep them unchanged.

Run by hand (ijson is not a dependency: ``.venv/bin/pip install ijson`` for its rows):
    .venv/bin/python benchmarks/bench_manifest.py [--large N] [--typical N] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from storage_migrator.errors import GenerationError
from storage_migrator.storage import manifest as manifest_module
from storage_migrator.storage.manifest import MAX_APPLICATION_KEY_BYTES, OWNED_KEYS, Manifest

try:
    import ijson
except ImportError:           # the ijson rows are left out
    ijson = None

APPLICATION_KEYS = {"metadata": {"generator": "phased", "tags": ["a", "b"], "note": "plain"},
                    "created_at": "2024-05-01T10:00:00"}
# Values json.loads reads (and json.dumps writes) that an application's keys may hold.
HARD_VALUES = {"lone high surrogate": "\ud800", "lone low surrogate": "\udc80", "integer beyond 64 bits": 2**70,
               "Infinity": float("inf"), "float": 1.5e300}


def write_manifest(path: Path, entries: int, extra: dict[str, Any]) -> int:
    """A manifest of the tool's format listing ``entries`` files; its size in bytes."""
    paths = [f"src/pkg_{i // 1000:05d}/generated_module_{i:08d}.py" for i in range(entries)]
    manifest = Manifest(
        generation_id="0" * 32, project_id="1" * 32, version=7, created_at=None, file_count=entries,
        total_size_bytes=entries * 4096, checksums={name: f"{i:064x}" for i, name in enumerate(paths)},
        fingerprints={name: (4096, 1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i, 10_000_000 + i)
                      for i, name in enumerate(paths)},
        extra=extra)
    path.write_bytes(manifest.to_bytes())
    return path.stat().st_size


# -- the ways ---------------------------------------------------------------------------------------

def scanner(descriptor: int) -> dict[str, Any] | None:
    return manifest_module._application_keys(descriptor, Path("manifest.json"))


def json_loads(descriptor: int) -> dict[str, Any] | None:
    """What the size cap spares ``run``: the whole text parsed (memory follows the file)."""
    with os.fdopen(os.dup(descriptor), "rb") as stream:
        document = json.loads(stream.read().decode("utf-8", "surrogateescape"))
    return {key: value for key, value in document.items() if key not in OWNED_KEYS}


def _value_events(events: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """The events of the next whole value."""
    depth = 0
    for event, value in events:
        yield event, value
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        if depth == 0:
            return
    raise ValueError("the manifest ends early")


def ijson_way(backend_name: str) -> Callable[[int], dict[str, Any] | None]:
    backend = ijson.get_backend(backend_name)

    def application_keys(descriptor: int) -> dict[str, Any] | None:
        with os.fdopen(os.dup(descriptor), "rb", buffering=0) as stream:
            # Not use_float=True: the C backend then refuses integers beyond 64 bits (json.loads
            # reads them); a Decimal is made the float json.loads would make instead.
            events = backend.basic_parse(stream, buf_size=manifest_module.CHUNK_SIZE)
            kept: dict[str, Any] = {}
            budget = MAX_APPLICATION_KEY_BYTES
            try:
                if next(events)[0] != "start_map":
                    return None
                for event, key in events:
                    if event == "end_map":
                        break
                    if key in OWNED_KEYS:
                        for _ in _value_events(events):
                            pass
                        continue
                    builder = ijson.ObjectBuilder()
                    for event, value in _value_events(events):
                        budget -= len(str(value)) + 2
                        if budget < 0:
                            raise GenerationError("the application's keys exceed what can be kept")
                        builder.event(event, float(value) if isinstance(value, Decimal) else value)
                    kept[key] = builder.value
                for _ in events:      # trailing text: the parser raises
                    pass
            except (ijson.JSONError, ValueError, RecursionError):
                return None
            return kept

    return application_keys


def ways() -> dict[str, Callable[[int], dict[str, Any] | None]]:
    found: dict[str, Callable[[int], dict[str, Any] | None]] = {"scanner": scanner, "json.loads": json_loads}
    if ijson is not None:
        for name in ("yajl2_c", "yajl2_cffi", "yajl2", "python"):
            try:
                ijson.get_backend(name)
            except Exception:     # noqa: BLE001 - a backend this install lacks (no C library, no cffi)
                continue
            found[f"ijson {name}"] = ijson_way(name)
    return found


# -- one measurement, in a process of its own --------------------------------------------------------

def peak_rss_kib() -> int:
    """This process's peak RSS since its exec (``VmHWM``; ``ru_maxrss`` would count the parent's
    image at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(way: str, path: Path, repeat: int) -> dict[str, Any]:
    function = ways()[way]

    def call() -> dict[str, Any] | None:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            return function(descriptor)
        finally:
            os.close(descriptor)

    rss_before = peak_rss_kib()
    call()                                                    # warm: imports, page cache
    rss_peak = peak_rss_kib()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    tracemalloc.start()
    call()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": min(seconds), "traced_peak_kib": traced_peak / 1024,
            "rss_growth_kib": rss_peak - rss_before, "keys": sorted(result) if result is not None else None}


def kept_exactly(way: str, path: Path, extra: dict[str, Any]) -> str:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        result = ways()[way](descriptor)
    except Exception as error:    # noqa: BLE001 - reported, not raised: this is the comparison
        return f"raises {type(error).__name__}"
    finally:
        os.close(descriptor)
    if result is not None and result.get("metadata") == extra["metadata"]:
        return "kept"
    return "unreadable" if result is None else f"changed to {result['metadata']!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--typical", type=int, default=70)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("WAY", "FILE"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:
        print(json.dumps(measure(arguments.measure[0], Path(arguments.measure[1]), arguments.repeat)))
        return
    print(f"ijson {ijson.__version__ if ijson else 'not installed'}, default backend "
          f"{ijson.backend if ijson else '-'}; Python {sys.version.split()[0]}; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        files = {"large": Path(folder, "large.json"), "typical": Path(folder, "typical.json")}
        sizes = {"large": write_manifest(files["large"], arguments.large, APPLICATION_KEYS),
                 "typical": write_manifest(files["typical"], arguments.typical, APPLICATION_KEYS)}
        hard = {}
        for number, (name, value) in enumerate(HARD_VALUES.items()):
            hard[name] = (Path(folder, f"hard{number}.json"), {"metadata": value})
            write_manifest(hard[name][0], 10, hard[name][1])
        print(f"large: {arguments.large} entries, {sizes['large'] / 2**20:.1f} MiB; "
              f"typical: {arguments.typical} entries, {sizes['typical'] / 1024:.1f} KiB")
        print("| way | manifest | best s | traced peak KiB | RSS growth KiB | application keys found |")
        print("|---|---|---|---|---|---|")
        for way in ways():
            for name, path in files.items():
                result = subprocess.run(
                    [sys.executable, __file__, "--repeat", str(arguments.repeat), "--measure", way, str(path)],
                    capture_output=True, text=True, check=True)
                row = json.loads(result.stdout)
                print(f"| {way} | {name} | {row['seconds']:.4f} | {row['traced_peak_kib']:.0f} | "
                      f"{row['rss_growth_kib']} | {row['keys']} |")
        print("\n| way | " + " | ".join(hard) + " |\n|---|" + "---|" * len(hard))
        for way in ways():
            print(f"| {way} | " + " | ".join(kept_exactly(way, *hard[name]) for name in hard) + " |")


if __name__ == "__main__":
    main()
