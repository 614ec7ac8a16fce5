"""Manifests as the application reads them: strict UTF-8 JSON whatever the file names, the
application's keys passed through unchanged (lone-surrogate escapes included), and memory that does
not grow with the size of a manifest someone else wrote."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_migrator.demo import SampleSize
from storage_migrator.errors import FAILS_ONE_GENERATION, GenerationError, InvalidInput
from storage_migrator.storage import manifest as manifest_module
from storage_migrator.storage.manifest import (
    MANIFEST_FORMAT,
    OWNED_KEYS,
    Manifest,
)
from tests.support.sandbox import Sandbox, build_installation, run_cli, storage_around


def read_manifest(path: Path) -> Manifest | None:
    with storage_around(path) as storage:
        return manifest_module.read_manifest(storage, path)


def read_manifest_head(path: Path) -> manifest_module.ManifestHead | None:
    with storage_around(path) as storage:
        return manifest_module.read_manifest_head(storage, path)


def read_manifest_document(path: Path) -> dict | None:
    with storage_around(path) as storage:
        return manifest_module.read_manifest_document(storage, path)

TINY = SampleSize(projects=5, generations_per_project=2, files_per_generation=3)
PEAK_RSS_LIMIT_KIB = 200 * 1024


@pytest.fixture
def installation(sqlite_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(sqlite_url, tmp_path / "projects", TINY)


def migrated_target(installation: Sandbox) -> Path:
    """The folder of one completed, migrated generation (``run`` must have happened)."""
    folders = sorted((installation.root / installation.sample.demo_project_id / "generations").glob("v1__*"))
    assert folders, "the demo project has a migrated v1"
    return folders[0]


def read_strict(path: Path) -> dict:
    """The manifest exactly as the application reads it."""
    return json.loads(path.read_text("utf-8"))


# -- names that are not UTF-8 ------------------------------------------------------------------

COMPONENT = st.binary(min_size=1, max_size=12).filter(
    lambda name: b"/" not in name and b"\0" not in name and b"\\" not in name and name not in (b".", b".."))
NAMES = st.lists(COMPONENT, min_size=1, max_size=3).map(lambda parts: os.fsdecode(b"/".join(parts)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.sets(NAMES, min_size=1, max_size=8))
def test_any_bytes_names_round_trip_through_strict_utf8(tmp_path: Path, names: set[str]) -> None:
    checksums = {name: f"{index:064x}" for index, name in enumerate(sorted(names))}
    fingerprints = {name: (index, 10**18 + index, 10**18 + 2 * index, 7 + index) for index, name in enumerate(sorted(names))}
    manifest = Manifest("g", "p", 1, None, len(names), 0, checksums, fingerprints)
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest.to_bytes())
    document = read_strict(path)                                    # the application's reader
    assert len(document["files"]) == len(names)
    for entry in document["files"]:
        entry.encode("utf-8")                                       # every entry is real text
    assert document["files"] == sorted(document["files"])
    back = read_manifest(path)
    assert back is not None
    assert back.checksums == checksums and back.fingerprints == fingerprints   # the exact bytes again


def test_a_non_utf8_file_name_end_to_end(installation: Sandbox) -> None:
    generation_id = installation.sample.folder_generation_ids[0]
    legacy = os.fsencode(installation.root / generation_id)
    with open(legacy + b"/caf\xe9.txt", "wb") as stream:
        stream.write(b"bonjour\n")
    run = run_cli(installation, "--json", "run")
    assert run.returncode == 0, run.stderr
    manifests = [path for path in installation.root.glob("*/generations/v*__*/manifest.json")
                 if generation_id in str(path)]
    assert len(manifests) == 1
    document = read_strict(manifests[0])
    assert "caf\\xe9.txt" in document["files"]
    assert document["file_count"] == len(document["files"])
    manifest = read_manifest(manifests[0])
    assert manifest is not None and os.fsdecode(b"caf\xe9.txt") in manifest.checksums
    before = manifests[0].read_bytes()
    assert run_cli(installation, "verify").returncode == 0
    resync = run_cli(installation, "--json", "resync")
    assert resync.returncode == 0, resync.stderr
    entry = {g["id"]: g for g in json.loads(resync.stdout)["generations"]}[generation_id]
    assert entry["action"] == "unchanged"
    assert manifests[0].read_bytes() == before


def test_a_manifest_the_old_writer_left_with_raw_bytes_is_rewritten(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    target = migrated_target(installation)
    source = os.fsencode(target / "source")
    with open(source + b"/na\xefve.txt", "wb") as stream:
        stream.write(b"x\n")
    assert run_cli(installation, "resync").returncode == 0
    manifest = read_manifest(target / "manifest.json")
    assert manifest is not None
    # What the previous writer produced for the same tree: raw bytes, format 1.
    document = json.loads((target / "manifest.json").read_text("utf-8"))
    old = {**document, "format": 1,
           "files": manifest.files,
           "checksums": dict(sorted(manifest.checksums.items())),
           "fingerprints": {k: list(v[:2]) for k, v in sorted(manifest.fingerprints.items())}}   # size, mtime
    raw = (json.dumps(old, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
    (target / "manifest.json").write_bytes(raw)
    with pytest.raises(UnicodeDecodeError):
        (target / "manifest.json").read_text("utf-8")
    legacy_read = read_manifest(target / "manifest.json")          # still understood...
    assert legacy_read is not None and legacy_read.checksums == manifest.checksums
    assert run_cli(installation, "resync").returncode == 0           # ...and repaired
    repaired = read_strict(target / "manifest.json")
    assert "na\\xefve.txt" in repaired["files"]
    assert read_manifest(target / "manifest.json") == manifest


# -- malformed manifests: an expected error, never a bug's --------------------------------------------

def _good_document() -> dict:
    manifest = Manifest("g", "p", 1, None, 1, 5, {"a.txt": "0" * 64}, {"a.txt": (5, 1, 2, 3)})
    return json.loads(manifest.to_bytes())


MALFORMED = {
    "without checksums": lambda d: {k: v for k, v in d.items() if k != "checksums"},
    "without a version": lambda d: {k: v for k, v in d.items() if k != "version"},
    "checksums a list": lambda d: {**d, "checksums": ["a.txt"]},
    "a checksum not text": lambda d: {**d, "checksums": {"a.txt": 7}},
    "a fingerprint of three numbers": lambda d: {**d, "fingerprints": {"a.txt": [5, 1, 2]}},
    "a version in words": lambda d: {**d, "version": "one"},
    "a marker key for a UTF-8 name": lambda d: {**d, "checksums": {"\x00a.txt": "0" * 64}},
    "two keys for one file": lambda d: {**d, "checksums": {"caf\udce9.txt": "0" * 64, "\x00caf\\xe9.txt": "1" * 64}},
    "a lone surrogate no name holds": lambda d: {**d, "checksums": {"\ud800.txt": "0" * 64}},
    "a key that leaves the folder": lambda d: {**d, "checksums": {"../../etc/shadow": "0" * 64}},
}


@pytest.mark.parametrize("malformed", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_manifest_is_invalid_input_which_fails_one_generation_at_most(
        tmp_path: Path, malformed: Callable[[dict], dict]) -> None:
    """Whatever is wrong with a manifest is ``InvalidInput`` (one of ``FAILS_ONE_GENERATION``),
    never a ``TypeError`` or ``KeyError`` that would pass for a bug; read, it is "no manifest"."""
    document = malformed(_good_document())
    with pytest.raises(InvalidInput) as caught:
        Manifest.from_document(document)
    assert isinstance(caught.value, FAILS_ONE_GENERATION)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document), "utf-8")
    assert read_manifest(path) is None


def test_a_number_json_refuses_to_parse_is_no_manifest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """json.loads raises a plain ValueError (not a JSONDecodeError) for an integer of over 4,300
    digits: in the head, the whole file or the streaming scan it is still "no manifest"."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**_good_document(), "version": "HERE"}).replace('"HERE"', "9" * 5000), "utf-8")
    assert read_manifest(path) is None and read_manifest_head(path) is None
    assert read_manifest_document(path) is None
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 0)     # every manifest is "too large"
    path.write_text(json.dumps({**_good_document(), "metadata": "HERE"}).replace('"HERE"', "9" * 5000), "utf-8")
    assert read_manifest_document(path) is None


# -- the application's keys ----------------------------------------------------------------------

def test_application_metadata_with_lone_surrogate_escapes_passes_through(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    target = migrated_target(installation)
    document = read_strict(target / "manifest.json")
    metadata = {"note": "half a pair: \ud800", "low": "\udce9", "nested": [{"k\udfff": "v"}], "emoji": "\U0001f600"}
    application = {key: document[key] for key in ("generation_id", "project_id", "version", "file_count",
                                                   "total_size_bytes", "files")}
    application |= {"created_at": "2024-05-01T10:00:00", "metadata": metadata}
    (target / "manifest.json").write_text(json.dumps(application, indent=2), "utf-8")   # as the application writes
    for _ in range(2):
        result = run_cli(installation, "--json", "resync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["failed"] == 0
        text = (target / "manifest.json").read_text("utf-8")
        assert "\\ud800" in text and "\\udce9" in text and "\\udfff" in text
        merged = json.loads(text)
        assert merged["metadata"] == metadata and merged["created_at"] == "2024-05-01T10:00:00"
        assert read_manifest(target / "manifest.json") is not None
    assert run_cli(installation, "verify").returncode == 0


# -- memory ----------------------------------------------------------------------------------------

def write_application_manifest(path: Path, head: dict, entries: int, metadata: dict) -> None:
    """An application-style manifest (``indent=2``) listing ``entries`` files, streamed to disk."""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("{\n")
        for key, value in head.items():
            stream.write(f"  {json.dumps(key)}: {json.dumps(value)},\n")
        stream.write('  "files": [\n')
        for start in range(0, entries, 50_000):
            lines = (f'    "src/pkg_{i // 1000:05d}/generated_module_{i:08d}.py"'
                     for i in range(start, min(start + 50_000, entries)))
            stream.write(",\n".join(lines) + (",\n" if start + 50_000 < entries else "\n"))
        stream.write("  ],\n")
        stream.write(f'  "metadata": {json.dumps(metadata, indent=2)}\n}}\n')


# A small parent forks and execs the command, so the child's peak RSS is its own and not that of
# a forked pytest (a child's ru_maxrss counts the image it was forked from).
MEASURE = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "storage_migrator", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\npeak-rss-kib {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(installation: Sandbox, *arguments: str) -> tuple[int, str, int]:
    """Exit code, stdout and peak RSS (KiB) of the real command, from the kernel's rusage."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *arguments], env=installation.cli_environment(),
                            capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    peak = int(result.stderr.rsplit("peak-rss-kib ", 1)[1])
    return result.returncode, result.stdout, peak


def test_a_huge_application_manifest_keeps_memory_flat(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    target = migrated_target(installation)
    ours = read_strict(target / "manifest.json")
    head = {key: ours[key] for key in ("generation_id", "project_id", "version")}
    head |= {"created_at": "2024-05-01T10:00:00", "file_count": 2_500_000, "total_size_bytes": 10**10}
    metadata = {"generator": "phased", "note": "\ud800", "tags": ["a", "b"]}
    write_application_manifest(target / "manifest.json", head, 2_500_000, metadata)
    assert (target / "manifest.json").stat().st_size > 100 << 20
    peaks, codes = {}, {}
    for arguments in (("--json", "--dry-run"), ("--json", "verify"), ("--json", "resync")):
        codes[arguments[-1]], stdout, peaks[arguments[-1]] = run_measured(installation, *arguments)
    print("peak RSS KiB:", peaks, "exit codes:", codes)
    assert set(codes.values()) == {0}, codes
    assert max(peaks.values()) < PEAK_RSS_LIMIT_KIB, peaks
    merged = read_strict(target / "manifest.json")
    assert merged["metadata"] == metadata and merged["created_at"] == "2024-05-01T10:00:00"
    assert merged["files"] == ours["files"] and merged["file_count"] == ours["file_count"]
    assert run_cli(installation, "verify").returncode == 0


def test_a_huge_manifest_is_not_parsed_but_its_small_application_keys_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    metadata = {"k": "v", "escaped \\\"quote": ["]", "}", "\\"], "lone": "\udc80"}
    write_application_manifest(path, {"generation_id": "g", "created_at": "then"}, 1_500_000, metadata)
    assert read_manifest(path) is None
    assert read_manifest_head(path) is None
    document = read_manifest_document(path)
    assert document is not None
    assert document.get("metadata") == metadata and document.get("created_at") == "then"
    assert "files" not in document


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.dictionaries(st.text(max_size=8).filter(lambda key: key not in OWNED_KEYS), JSON_VALUES, max_size=4),
       files=st.lists(st.text(max_size=6), max_size=6), chunk=st.integers(1, 9), indent=st.sampled_from([None, 2]))
def test_the_streaming_scan_finds_the_application_keys_across_any_chunk_boundary(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extras: dict, files: list, chunk: int, indent: int | None) -> None:
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 0)     # every manifest is "too large"
    monkeypatch.setattr(manifest_module, "CHUNK_SIZE", chunk)
    document = {"generation_id": "g", "files": files, **extras, "checksums": {name: "0" * 64 for name in files}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document, indent=indent), "utf-8")
    assert read_manifest_document(path) == extras


def test_application_keys_too_large_to_keep_fail_the_generation_rather_than_vanish(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 1 << 10)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": ["a"] * 1000, "metadata": "x" * (2 << 20)}), "utf-8")
    with pytest.raises(GenerationError, match="not rewritten"):
        read_manifest_document(path)
    path.write_text(json.dumps({"files": ["a"] * 1000, "metadata": "x" * 1000}) + "\n", "utf-8")
    assert read_manifest_document(path) == {"metadata": "x" * 1000}
    path.write_text(json.dumps({"files": ["a"] * 1000, "metadata": "x" * 1000}) + " garbage", "utf-8")
    assert read_manifest_document(path) is None                            # as json.loads would say
    path.write_text(json.dumps({"files": ["a"] * 1000, "metadata": [1, 2]})[:-1], "utf-8")   # truncated
    assert read_manifest_document(path) is None


# The text the fingerprint digest hashes, as plainly as it can be said.
def digest_by_repr(fingerprints: dict[str, tuple[int, int, int, int]]) -> str:
    canonical = repr(sorted((path, tuple(fingerprint)) for path, fingerprint in fingerprints.items()))
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


@given(st.dictionaries(
    st.one_of(st.text(min_size=1, max_size=12),
              st.sampled_from(["it's.py", 'say "hi".txt', "back\\slash", "new\nline", "caf\u00e9", "bad\udcff.py"])),
    st.tuples(st.integers(0, 2**40), st.integers(0, 2**63), st.integers(0, 2**63), st.integers(1, 2**64 - 1)),
    max_size=8))
def test_the_fingerprint_digest_is_the_repr_of_the_sorted_fingerprints(
        fingerprints: dict[str, tuple[int, int, int, int]]) -> None:
    """Quotes, backslashes, newlines, non-ASCII and undecodable names: the digest spelled out per
    entry is the digest of ``repr`` of the sorted list, whatever the name holds."""
    assert manifest_module.fingerprint_digest(fingerprints) == digest_by_repr(fingerprints)


def test_a_manifest_with_the_older_fingerprints_is_read_again_once(installation: Sandbox) -> None:
    """A manifest of format 2 (size and mtime per file, and their digest) is never taken for
    unchanged: the next resync reads the generation again — finding the same-size rewrite whose
    mtime was set back — and writes the current format; the resync after it reads nothing."""
    assert run_cli(installation, "run").returncode == 0
    target = migrated_target(installation)
    document = json.loads((target / "manifest.json").read_text("utf-8"))
    pairs = {path: fingerprint[:2] for path, fingerprint in document["fingerprints"].items()}
    older = {**document, "format": 2, "fingerprints": pairs,
             "fingerprint_digest": hashlib.sha256(repr(sorted(
                 (path, tuple(pair)) for path, pair in pairs.items())).encode("utf-8", "surrogateescape")).hexdigest()}
    (target / "manifest.json").write_text(json.dumps(older, ensure_ascii=False) + "\n", "utf-8")
    edited = next(path for path in sorted((target / "source").rglob("*")) if path.is_file() and path.stat().st_size)
    status = edited.stat()
    edited.write_bytes(bytes(byte ^ 1 for byte in edited.read_bytes()))       # same size, other bytes
    os.utime(edited, ns=(status.st_atime_ns, status.st_mtime_ns))           # what cp -p does
    upgrade = run_cli(installation, "--json", "resync")
    assert upgrade.returncode == 0, upgrade.stderr
    line = {g["id"]: g for g in json.loads(upgrade.stdout)["generations"]}[target.name.split("__", 1)[1]]
    assert line["action"] != "unchanged", line
    rewritten = read_strict(target / "manifest.json")
    assert rewritten["format"] == MANIFEST_FORMAT and all(len(fingerprint) == 4 for fingerprint in rewritten["fingerprints"].values())
    relative = edited.relative_to(target / "source").as_posix()
    assert rewritten["checksums"][relative] == hashlib.sha256(edited.read_bytes()).hexdigest()
    assert run_cli(installation, "verify").returncode == 0
    again = run_cli(installation, "--json", "resync")
    assert {g["action"] for g in json.loads(again.stdout)["generations"] if g["id"] == line["id"]} == {"unchanged"}


def test_a_format_3_manifest_of_unchanged_files_is_sealed_once_from_its_own_checksums(installation: Sandbox) -> None:
    """The manifests format 3 wrote have no seal, so each would cost resync a whole parse: the
    first resync that finds the files unchanged rewrites the manifest in the current format
    (refreshed, "older format") from its checksums — the bytes a run writes, the next version's
    diff left alone — and the resync after it finds everything unchanged."""
    assert run_cli(installation, "run").returncode == 0
    clean = run_cli(installation, "--json", "resync")
    unchanged = {g["id"] for g in json.loads(clean.stdout)["generations"] if g["action"] == "unchanged"}
    target = migrated_target(installation)
    generation_id = target.name.split("__", 1)[1]
    assert generation_id in unchanged and len(unchanged) > 1
    assert list(target.parent.glob("v2__*/diff_from_v1.patch")), "the next version's diff is taken from this one"
    sealed = (target / "manifest.json").read_bytes()
    document = json.loads(sealed)
    del document["manifest_sha256"]
    (target / "manifest.json").write_text(json.dumps({**document, "format": 3}, ensure_ascii=False) + "\n", "utf-8")

    upgrade = run_cli(installation, "--json", "resync")
    assert upgrade.returncode == 0, upgrade.stderr
    actions = {g["id"]: g for g in json.loads(upgrade.stdout)["generations"]}
    assert actions[generation_id]["action"] == "refreshed" and "older format" in actions[generation_id]["reason"]
    assert {gid for gid, g in actions.items() if g["action"] == "unchanged"} == unchanged - {generation_id}
    assert (target / "manifest.json").read_bytes() == sealed
    again = run_cli(installation, "--json", "resync")
    assert {g["id"] for g in json.loads(again.stdout)["generations"] if g["action"] == "unchanged"} == unchanged


# -- a damaged body behind an intact head -------------------------------------------------------------

def large_manifest(written_as: int = MANIFEST_FORMAT) -> bytes:
    """60 files' manifest (some 14 KiB: most of it beyond ``HEAD_BYTES``) as the tool writes it, or
    as format ``written_as`` (3: the same keys, no ``manifest_sha256``) wrote it."""
    names = [f"src/package/module_{index:03d}.py" for index in range(60)]
    manifest = Manifest("g", "p", 2, "2024-05-01T10:00:00+00:00", len(names), 100 * len(names),
                        {name: hashlib.sha256(name.encode()).hexdigest() for name in names},
                        {name: (100, 10**18 + i, 10**18 + 2 * i, 5000 + i) for i, name in enumerate(names)})
    data = manifest.to_bytes()
    assert len(data) > 3 * manifest_module.HEAD_BYTES
    if written_as == MANIFEST_FORMAT:
        return data
    document = json.loads(data)
    del document["manifest_sha256"]
    return (json.dumps({**document, "format": written_as}, ensure_ascii=False) + "\n").encode("utf-8")


def beyond_head(data: bytes, pattern: bytes) -> re.Match[bytes]:
    """The first match of ``pattern`` past the first 4 KiB: damage there is never in the head."""
    match = re.compile(pattern).search(data, manifest_module.HEAD_BYTES)
    assert match is not None, pattern
    return match


def change_at(data: bytes, offset: int, replacement: bytes) -> bytes:
    """``data`` with the bytes at ``offset`` replaced by as many others: the length stays."""
    return data[:offset] + replacement + data[offset + len(replacement):]


def other_digit(byte: int) -> bytes:
    return b"1" if byte != ord("1") else b"2"


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated after 4 KiB": lambda data: data[:manifest_module.HEAD_BYTES + 700],
    "cut just after the head": lambda data: data[:data.index(b', "files": ') + len(b', "files": ')],
    "a checksum digit changed": lambda data: change_at(
        data, (m := beyond_head(data, rb'": "([0-9a-f]{64})"')).start(1) + 7, other_digit(m.group(1)[7])),
    "a fingerprint number changed": lambda data: change_at(
        data, (m := beyond_head(data, rb"\[100, (\d+),")).start(1) + 5, other_digit(m.group(1)[5])),
    "a name in files changed": lambda data: data.replace(b'"src/package/module_007.py", ', b'"src/package/module_070.py", ', 1),
    "the checksums key renamed": lambda data: data.replace(b'"checksums": ', b'"checksumz": ', 1),
    "the fingerprints key renamed": lambda data: data.replace(b'"fingerprints": ', b'"fingerprintz": ', 1),
    "not UTF-8 after 4 KiB": lambda data: change_at(data, beyond_head(data, rb"[0-9a-f]{64}").start() + 3, b"\xff"),
    "invalid JSON after 4 KiB": lambda data: change_at(data, beyond_head(data, rb'", "').start() + 1, b";"),
    "bytes appended": lambda data: data + b'{"more": 1}\n',
    "whitespace appended": lambda data: data + b" \n",
}
STILL_LOADS = {"a checksum digit changed", "a fingerprint number changed", "a name in files changed",
               "whitespace appended"}
"""Damage ``json.loads`` and the tool's checks of shape accept: only the seal finds it."""


@pytest.mark.parametrize("chunk", [None, 1], ids=["one read", "read a head at a time"])
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_sealed_manifest_with_an_intact_head_and_a_damaged_body_is_not_taken(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, chunk: int | None) -> None:
    """Every kind of damage behind the head (the first 4 KiB the same) makes the manifest
    unreadable to the head reader resync plans from, as to the whole-file reader: the generation
    is read again and its manifest rewritten, never called unchanged."""
    if chunk is not None:
        monkeypatch.setattr(manifest_module, "CHUNK_SIZE", chunk)
    intact = large_manifest()
    path = tmp_path / "manifest.json"
    path.write_bytes(intact)
    head = read_manifest_head(path)
    assert isinstance(head, manifest_module.ManifestHead) and head.format == MANIFEST_FORMAT
    loaded = read_manifest(path)
    assert loaded is not None and head.fingerprint_digest == loaded.fingerprint_digest

    damaged = DAMAGE[kind](intact)
    head_end = intact.index(b', "files": ')
    assert damaged != intact and damaged[:head_end] == intact[:head_end], "the head itself is intact"
    path.write_bytes(damaged)
    assert read_manifest_head(path) is None
    assert read_manifest(path) is None
    if kind in STILL_LOADS:      # what the seal adds: the shape alone passes it
        assert Manifest.from_document(json.loads(damaged)) is not None


UNSEALED_BLIND_SPOTS = {"a checksum digit changed", "a name in files changed", "whitespace appended"}
"""Damage to a format-3 manifest that parses, and agrees with its head's fingerprint digest."""


@pytest.mark.parametrize("kind", DAMAGE)
def test_an_unsealed_manifest_with_an_intact_head_is_taken_only_if_it_loads_whole(tmp_path: Path, kind: str) -> None:
    """Format 3 had no seal: its head is believed only once the whole file parses and its
    fingerprints make the head's digest (it is then taken whole, a ``Manifest``). What still
    passes cannot be told without reading the files (``verify`` does); the seal closes that."""
    intact = large_manifest(written_as=3)
    path = tmp_path / "manifest.json"
    path.write_bytes(intact)
    whole = read_manifest_head(path)
    assert isinstance(whole, Manifest) and whole.format == 3
    assert whole == read_manifest(path)
    path.write_bytes(DAMAGE[kind](intact))
    assert (read_manifest_head(path) is None) == (kind not in UNSEALED_BLIND_SPOTS)


def test_the_seal_is_the_sha256_of_every_other_byte_and_a_rewrite_is_byte_identical() -> None:
    """What another reader needs to check a manifest: ``manifest_sha256`` is in the head, before
    ``files``, and hashes the file without its own 64 digits."""
    data = large_manifest()
    seal = json.loads(data)["manifest_sha256"]
    before, after = data.split(seal.encode("ascii"))
    assert hashlib.sha256(before + after).hexdigest() == seal
    assert before.endswith(b'"manifest_sha256": "') and len(before) < data.index(b', "files": ')
    assert large_manifest() == data


# Every byte a Linux name may hold but '/' and NUL, in names the application may meet: a path
# from a Windows archive, quotes, control characters, spaces at either end, undecodable bytes,
# text that looks like the manifest's own escapes.
ODD_NAMES = [b"app\\models\\user.py", b"dir\\with\\backslash/inner.txt", b"trailing\\", b"\\\\double",
             b"\\x41 not an escape", b"\\u0000 nor this", b"tab\there", b"new\nline", b"ctrl\x01\x1b\x1f\x7f",
             b"quote\"'`", b" both ends ", b"-dash", b"..dots..", b"...", b"#*?[]{}$!", b"caf\xc3\xa9",
             b"bad\xff\xfe", b"\xed\xa0\x80 surrogate bytes", b"bad\\\xe9 mixed", bytes(range(1, 47)) + b"end",
             bytes(range(48, 256)).replace(b"/", b"")]


def byte_tree(folder: bytes) -> dict[bytes, bytes]:
    """Every regular file below ``folder`` by its exact byte path → its bytes."""
    found: dict[bytes, bytes] = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(directory, name), "rb") as stream:
                found[os.path.relpath(os.path.join(directory, name), folder)] = stream.read()
    return found


def test_names_with_any_byte_round_trip_through_run_resync_verify_and_rollback(installation: Sandbox,
                                                                             tmp_path: Path) -> None:
    """Two consecutive versions hold every odd name: most unchanged, some modified, one deleted,
    one added. run, verify, resync (twice: an unchanged backslash name must not make the next one
    fail), verify, rollback — each exits 0 and every byte comes back where it was."""
    engine = installation.engine()
    with engine.connect() as connection:
        ids = connection.execute(sa.text(
            "SELECT id FROM generations WHERE project_id = :p AND status = 'completed' ORDER BY version"),
            {"p": installation.sample.demo_project_id}).scalars().all()
    engine.dispose()
    first, second = [os.fsencode(installation.root / generation_id) for generation_id in ids[:2]]
    assert os.path.isdir(first) and os.path.isdir(second)
    for index, name in enumerate(ODD_NAMES):
        for folder, content in ((first, b"same %d\n" % index), (second, b"same %d\n" % index)):
            os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
            with open(os.path.join(folder, name), "wb") as stream:
                stream.write(content + (b"changed\n" if folder == second and index % 3 == 1 else b""))
    os.unlink(os.path.join(second, ODD_NAMES[2]))
    with open(os.path.join(second, b"added\\" + ODD_NAMES[16]), "wb") as stream:
        stream.write(b"added\n")
    before = {folder: byte_tree(folder) for folder in (first, second)}

    for command in ("run", "verify", "resync", "resync", "verify"):
        result = run_cli(installation, "--json", command)
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
    last = json.loads(result.stdout)
    assert last["problems"] == []
    patch = next(installation.root.glob(f"*/generations/v*__{ids[1]}/diff_from_v*.patch"))
    assert b"user.py" not in patch.read_bytes(), "an unchanged name is not in the patch"
    copy = os.fsencode(tmp_path / "applied")
    shutil.copytree(os.path.join(first, b""), copy)        # through the tool's link: the migrated v1
    subprocess.run(["git", "apply", "--binary", str(patch)], cwd=copy, check=True, capture_output=True)
    assert byte_tree(copy) == before[second], "git apply in a copy of v1 gives v2, every name included"
    rollback = run_cli(installation, "--json", "rollback")
    assert rollback.returncode == 0, rollback.stdout[-2000:] + rollback.stderr[-2000:]
    assert {folder: byte_tree(folder) for folder in (first, second)} == before
