"""Where everything lives, as pure path arithmetic: legacy folders, the versioned layout, the
tool's own state folder, and the mapping between database paths and disk paths.

Nothing here touches the disk. Every id that becomes a path component goes through
``check_path_component`` first, so no row in the database can steer a path out of ROOT.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage_migrator.errors import UnsafePath, UnsafePathComponent

STATE_DIR = ".storage-migrate"
GENERATIONS_DIR = "generations"
SOURCE_DIR = "source"
ARTIFACTS_DIR = "artifacts"
MANIFEST_FILE = "manifest.json"
ACTIVE_LINK = "active"
ARCHIVE_DIR = "archive"
TRASH_DIR = "trash"
MOVING_DIR = "moving"
HELD_SEPARATOR = ".held-"             # the previous version's names in moving/: <name>.held-<ns>
LEGACY_ROLE = "legacy"
UNKNOWN_PROJECT_KEY = "%"              # a discard whose project the caller did not say
LOCK_FILE = "lock"
STAGING_SUFFIX = ".partial"            # a copy assembled beside its final name: .<name>.partial
TEMP_SUFFIX = ".storage-migrate-tmp"   # every temp file or temp link the tool writes ends so
MAX_COMPONENT_LENGTH = 255

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_TARGET_NAME = re.compile(r"^v(?P<version>[1-9][0-9]*)__(?P<generation_id>.+)$")
_PATCH_NAME = re.compile(r"^diff_from_v(?P<version>[1-9][0-9]*)\.patch$")
_STATE_ENTRY_NAME = re.compile(
    r"^(?P<project>[^_/]+)__(?P<generation>[^_/]+)__(?P<role>legacy|v(?P<version>[1-9][0-9]*)-source)"
    r"\.(?P<pid>[0-9]+)\.(?P<stamp>[0-9]+)$"
)
_OLD_HELD_NAME = re.compile(rf"^(?P<original>.+){re.escape(HELD_SEPARATOR)}[0-9]+$")
_MAX_KEY_BYTES = 100
_TEMP_NAME_BYTES = 120                 # of the original name a temp name keeps, so it fits NAME_MAX


def _component_problem(name: str) -> str | None:
    """Why ``name`` cannot be one component of a path below ROOT, or None if it can."""
    if name == "":
        return "has an empty component"
    if name == ".":
        return "has a '.' component"
    if name == "..":
        return "leaves ROOT"
    if "/" in name:
        return "has a component containing '/'"
    if "\0" in name:
        return "contains NUL"
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        return "is not encodable as a file name"
    return None


def relative_parts(path: str | bytes) -> tuple[str, ...]:
    """Split a relative '/'-separated path from a manifest or database column into components.

    Refused with ``UnsafePath``: the empty string, absolute paths, '' (doubled or trailing '/'),
    '.' and '..' components, NUL and strings that cannot be file names. Every other byte is a
    legal Linux name, a backslash included (``app\\models\\user.py`` from an archive made on
    Windows is one file name). Bytes are decoded with ``os.fsdecode`` (surrogateescape), so any
    real file name is accepted.
    """
    text = os.fsdecode(path) if isinstance(path, bytes) else path
    if not isinstance(text, str):
        raise TypeError(f"expected str or bytes, got {type(path).__name__}")
    if text == "":
        raise UnsafePath(text, "is empty")
    if text.startswith("/"):
        raise UnsafePath(text, "is absolute (leaves ROOT)")
    parts = tuple(text.split("/"))
    for name in parts:
        problem = _component_problem(name)
        if problem is not None:
            raise UnsafePath(text, problem)
    return parts


def check_path_component(value: object, what: str) -> str:
    """Return ``value`` if it is usable as exactly one folder name below ROOT, else raise.

    Rejected: non-strings, empty, ``.``/``..``, anything with ``/``, ``\\`` or NUL or another
    control character, a leading dot (names starting with a dot are the tool's own, e.g.
    ``.storage-migrate``), and names longer than a filesystem allows.
    """
    if not isinstance(value, str) or value == "":
        raise UnsafePathComponent(f"{what} is empty")
    if value in (".", ".."):
        raise UnsafePathComponent(f"{what} {value!r} is a relative path component")
    if "/" in value or "\\" in value:
        raise UnsafePathComponent(f"{what} {value!r} contains a path separator")
    if _CONTROL_CHARACTER.search(value):
        raise UnsafePathComponent(f"{what} {value!r} contains a NUL or control character")
    if value.startswith("."):
        raise UnsafePathComponent(f"{what} {value!r} starts with a dot")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_LENGTH - 8:
        raise UnsafePathComponent(f"{what} {value[:20]!r}… is too long for a folder name")
    return value


def target_dir_name(version: int, generation_id: str) -> str:
    return f"v{version}__{generation_id}"


def parse_target_dir_name(name: str) -> tuple[int, str] | None:
    """``v3__abc`` → ``(3, "abc")``; None for any other name."""
    match = _TARGET_NAME.match(name)
    if match is None:
        return None
    return int(match["version"]), match["generation_id"]


MAX_PATCH_BYTES = 512 << 20
"""A patch file larger than this is never read into memory (``diff --patch``, ``verify``)."""


def patch_file_name(from_version: int) -> str:
    return f"diff_from_v{from_version}.patch"


def parse_patch_file_name(name: str) -> int | None:
    match = _PATCH_NAME.match(name)
    return int(match["version"]) if match else None


def state_entry_key(identifier: str) -> str:
    """A project or generation id as one part of a ``moving/`` or ``trash/`` entry name.

    ``%`` and ``_`` are percent-escaped, so the ``__`` between parts never occurs inside one and
    the name parses back unambiguously; an id whose escaped form exceeds 100 bytes becomes
    ``%%`` + a sha256 prefix (the name must fit NAME_MAX). A caller matches entries by comparing
    keys (``state_entry_key(id) == entry.project_key``), never by parsing ids out of a key."""
    escaped = identifier.replace("%", "%25").replace("_", "%5F")
    if len(escaped.encode("utf-8", "surrogateescape")) <= _MAX_KEY_BYTES:
        return escaped
    return "%%" + hashlib.sha256(identifier.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def state_entry_id(key: str) -> str | None:
    """The id a key spells, or None for a hashed key or the unknown-project marker."""
    if key.startswith("%%") or key == UNKNOWN_PROJECT_KEY:
        return None
    return key.replace("%5F", "_").replace("%25", "%")


@dataclass(frozen=True)
class StateEntry:
    """What a ``moving/`` or ``trash/`` entry was, read from its name alone: whose project and
    generation (as keys, see ``state_entry_key``) and where it came from — ``version`` None for
    the legacy folder ``<ROOT>/<generation_id>``, N for ``<project>/generations/v<N>__<id>/source``."""

    project_key: str
    generation_key: str
    version: int | None

    @classmethod
    def of(cls, project_id: str | None, generation_id: str, version: int | None) -> StateEntry:
        """``project_id`` None when the caller cannot say (``%``: only an exclusive run's end
        sweep touches such an entry)."""
        project = UNKNOWN_PROJECT_KEY if project_id is None else state_entry_key(project_id)
        return cls(project, state_entry_key(generation_id), version)

    def belongs_to(self, project_id: str) -> bool:
        return self.project_key == state_entry_key(project_id)


def state_entry_name(entry: StateEntry, pid: int, stamp_ns: int) -> str:
    """``<project>__<generation>__<role>.<pid>.<ns>``, role ``legacy`` or ``v<N>-source``: the
    one spelling of entries in ``moving/`` and ``trash/``, so whoever handles a project finds its
    entries by name alone (several hosts may share ROOT). ``pid`` and ``stamp_ns`` keep two
    entries of one folder apart."""
    role = LEGACY_ROLE if entry.version is None else f"v{entry.version}-source"
    return f"{entry.project_key}__{entry.generation_key}__{role}.{pid}.{stamp_ns}"


def parse_state_entry_name(name: str) -> StateEntry | None:
    """The inverse of ``state_entry_name``; None for any other name (an old-style one included)."""
    match = _STATE_ENTRY_NAME.match(name)
    if match is None:
        return None
    version = match["version"]
    return StateEntry(match["project"], match["generation"], int(version) if version else None)


def parse_old_held_name(name: str) -> str | None:
    """``<name>.held-<ns>``, the previous version's ``moving/`` entry → the folder name it had
    (a generation id for a legacy folder, ``source`` for a new-layout ``source/``)."""
    if parse_state_entry_name(name) is not None:
        return None
    match = _OLD_HELD_NAME.match(name)
    return match["original"] if match else None


def join_storage_path(prefix: str, *parts: str) -> str:
    """The one join for database paths: ``prefix`` + ``/`` + parts, never doubling slashes."""
    return "/".join([prefix.rstrip("/") or "/", *parts]).replace("//", "/")


@dataclass(frozen=True)
class StorageLayout:
    """The layout of one installation: ROOT on disk and the prefix the application stores.

    ``root`` is where the folders are on this machine; ``path_prefix`` is how the application
    spells ROOT in ``generations.storage_path`` (``./storage/projects`` by default). The two may
    differ, e.g. when the tool runs from another working directory or host.
    """

    root: Path
    path_prefix: str

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def lock_file(self) -> Path:
        return self.state_dir / LOCK_FILE

    @property
    def trash_dir(self) -> Path:
        """Where a legacy folder goes, by one rename, once its copy is verified; emptied later."""
        return self.state_dir / TRASH_DIR

    def legacy_dir(self, generation_id: str) -> Path:
        return self.root / check_path_component(generation_id, "generation id")

    def project_dir(self, project_id: str) -> Path:
        return self.root / check_path_component(project_id, "project id")

    def generations_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / GENERATIONS_DIR

    def target_dir(self, project_id: str, version: int, generation_id: str) -> Path:
        check_path_component(generation_id, "generation id")
        return self.generations_dir(project_id) / target_dir_name(version, generation_id)

    def active_link(self, project_id: str) -> Path:
        return self.generations_dir(project_id) / ACTIVE_LINK

    def archive_dir(self, project_id: str, version: int, generation_id: str) -> Path:
        """Where the application's ``cleanup_old_generations`` puts an old version."""
        check_path_component(generation_id, "generation id")
        return self.project_dir(project_id) / ARCHIVE_DIR / target_dir_name(version, generation_id)

    def generation_target(self, generation: HasPlace) -> Path:
        """The target folder of a generation row (version 0 stands for "no version yet")."""
        return self.target_dir(generation.project_id, generation.version or 0, generation.id)

    def legacy_storage_path(self, generation_id: str) -> str:
        return join_storage_path(self.path_prefix, check_path_component(generation_id, "generation id"))

    def target_storage_path(self, project_id: str, version: int, generation_id: str) -> str:
        return join_storage_path(
            self.path_prefix,
            check_path_component(project_id, "project id"),
            GENERATIONS_DIR,
            target_dir_name(version, check_path_component(generation_id, "generation id")),
        )

    def patch_storage_path(self, project_id: str, version: int, generation_id: str, from_version: int) -> str:
        return join_storage_path(
            self.target_storage_path(project_id, version, generation_id), patch_file_name(from_version)
        )

    def relative_parts(self, storage_path: object) -> tuple[str, ...] | None:
        """The components below ROOT of a database path, however the prefix is spelled
        (``./storage/projects/…`` and ``storage/projects/…`` are the same place); None if it is
        not under the prefix, not a string, or would leave ROOT (``..``), so a hand-edited row
        can never point the tool elsewhere."""
        if not isinstance(storage_path, str) or "\x00" in storage_path:
            return None
        prefix = _normalized_parts(self.path_prefix)
        parts = _normalized_parts(storage_path)
        if parts is None or prefix is None or parts[: len(prefix)] != prefix:
            return None
        below = parts[len(prefix):]
        return below or None

    def disk_path(self, storage_path: object) -> Path | None:
        """The disk path of a database path under ``path_prefix`` (see ``relative_parts``)."""
        parts = self.relative_parts(storage_path)
        return None if parts is None else self.root.joinpath(*parts)

    def names_target(self, storage_path: object, project_id: str, version: int, generation_id: str) -> bool:
        """True if ``storage_path`` (in any spelling) is this generation's target folder."""
        return self.relative_parts(storage_path) == (project_id, GENERATIONS_DIR, target_dir_name(version, generation_id))

    def legacy_link_text(self, project_id: str, version: int, generation_id: str) -> str:
        """What the backward-compatibility link ``<ROOT>/<id>`` holds: a relative path to the
        generation's ``source/``, so the application's flat-layout code keeps working. Read back
        by ``parse_legacy_link_text``."""
        return "/".join((project_id, GENERATIONS_DIR, target_dir_name(version, generation_id), SOURCE_DIR))


def parse_legacy_link_text(text: str) -> tuple[str, int, str] | None:
    """(project id, version, generation id) of a text ``StorageLayout.legacy_link_text`` wrote
    (at any version: a renumbered generation's old link too); None for any other text."""
    parts = text.split("/")
    if len(parts) != 4 or parts[1] != GENERATIONS_DIR or parts[3] != SOURCE_DIR:
        return None
    parsed = parse_target_dir_name(parts[2])
    return None if parsed is None else (parts[0], parsed[0], parsed[1])


def _normalized_parts(path: str) -> tuple[str, ...] | None:
    """``./a//b/`` → ``("a", "b")``; None if a part is ``..``. Absolute stays distinguishable."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        return None
    return (("/",) if path.startswith("/") else ()) + tuple(parts)


class HasPlace(Protocol):
    """Anything that says where a generation lives (a row, a plan's generation)."""

    @property
    def id(self) -> str: ...

    @property
    def project_id(self) -> str: ...

    @property
    def version(self) -> int | None: ...


def source_dir(target_dir: Path) -> Path:
    return target_dir / SOURCE_DIR


def artifacts_dir(target_dir: Path) -> Path:
    return target_dir / ARTIFACTS_DIR


def manifest_path(target_dir: Path) -> Path:
    return target_dir / MANIFEST_FILE


def staging_name(name: str) -> str:
    """The one staging-name rule: where a copy of ``name`` is assembled, in the same folder, before
    one rename gives it its name; only the tool writes such names, so a leftover is safe to discard."""
    return f".{name}{STAGING_SUFFIX}"


def is_staging_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(STAGING_SUFFIX)


PARTIAL_SOURCE_DIR = staging_name(SOURCE_DIR)


def partial_source_dir(target_dir: Path) -> Path:
    """Where a cross-filesystem copy or a rebuild is assembled before one rename makes it
    ``source/``; only the tool writes here, so a leftover is always safe to discard."""
    return target_dir / PARTIAL_SOURCE_DIR


def is_utf8_name(name: str) -> bool:
    """A name read from disk that valid UTF-8 spells (else it holds surrogate escapes and can
    be no row's id)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_temp_name(name: str) -> bool:
    """A temp file or link the tool writes before a rename; a leftover is a killed write."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def temp_name(original: str, pid: int, token: str) -> str:
    """The one temp-name rule: ``.<original, first 120 bytes>.<pid>.<token>.storage-migrate-tmp``,
    a name no real file has, in the same folder as ``original`` (so a rename is atomic)."""
    return f".{temp_name_kept(original)}.{pid}.{token}{TEMP_SUFFIX}"


def temp_name_original(name: str) -> str | None:
    """The name a temp file or link ``.<original>.<pid>.<random>.storage-migrate-tmp`` was
    written for, as rootfs keeps it (its first 120 bytes); None for any other name. Compare it
    with ``temp_name_kept(original)``."""
    if not is_temp_name(name):
        return None
    parts = name[1 : -len(TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0]


def temp_name_kept(original: str) -> str:
    """What of ``original`` a temp name keeps (two names sharing those bytes look the same)."""
    return original.encode("utf-8", "surrogateescape")[:_TEMP_NAME_BYTES].decode("utf-8", "surrogateescape")


def is_tool_written(name: str) -> bool:
    """True for a name the tool itself writes beside ``source/`` in a target folder (manifest,
    patches, temp files, a staging copy): safe to rewrite or remove; anything else is not ours."""
    return (
        name in (MANIFEST_FILE, PARTIAL_SOURCE_DIR)
        or parse_patch_file_name(name) is not None
        or is_temp_name(name)
    )


def check_relative_file_path(value: object) -> str:
    """A file path from the ``output_files`` column, usable below ``source/`` (the rule of
    ``relative_parts``); ``UnsafePathComponent`` names the column's value otherwise. Unlike a
    name found on disk, a backslash here is refused: in a column the application filled, it may
    be meant as a Windows separator, and the tool does not guess which."""
    if not isinstance(value, str):
        raise UnsafePathComponent("file path is not a string")
    if "\\" in value:
        raise UnsafePathComponent(f"file path {value!r} contains a backslash")
    try:
        relative_parts(value)
    except UnsafePath as error:
        raise UnsafePathComponent(f"file path {value!r} {error.reason}") from None
    return value


# The rule of ``relative_parts`` as one regex over many paths joined by NUL (the one character no
# path holds; a newline is legal in a file name): an empty, "." or ".." component, or a leading
# "/". ``check_relative_paths`` checks a manifest's keys in one pass with it.
_UNSAFE_JOINED_PATHS = re.compile(r'(?:\A|[/\x00])\.{0,2}(?:[/\x00]|\Z)')


def check_relative_paths(paths: list[str]) -> None:
    """Every one of ``paths`` is a plain relative path (``relative_parts``' rule, in one regex
    pass over all); ``UnsafePathComponent`` otherwise."""
    if not paths:
        return                      # an empty tree (the regex would take "" for an empty path)
    joined = "\x00".join(paths)
    if joined.count("\x00") != len(paths) - 1 or _UNSAFE_JOINED_PATHS.search(joined):
        raise UnsafePathComponent("a manifest path is not a plain relative path")
