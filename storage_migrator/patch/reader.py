"""Read a stored patch back — git's format, GNU ``diff -ru``, with or without blob ids — as the
files and blobs it names, so ``verify`` can check it against the two trees by meaning."""
from __future__ import annotations

import datetime
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from storage_migrator.patch.compare import TreeComparison
from storage_migrator.patch.writer import C_UNESCAPES

Change = Literal["added", "modified", "deleted", "one-sided"]


@dataclass(frozen=True)
class PatchEntry:
    """One file a patch changes, for checking a stored patch against the two trees by meaning.

    ``old_blob``/``new_blob`` are the ``index`` line's ids as written: full from this module and
    ``git diff --full-index``, a prefix from plain ``git diff``; ``None`` for the side where the
    file does not exist, and on both sides when the patch has no ids (GNU ``diff -ru``, or a git
    section without an ``index`` line) — ``has_blob_ids`` tells. ``change`` says which sides
    exist; ``one-sided`` is a GNU ``Only in`` line whose directory the patch does not place.
    A GNU ``Only in`` line may name a whole directory (``may_be_directory``): ``covers`` and
    ``expand_directories`` turn it into the files below it."""

    path: str
    change: Change
    old_blob: str | None = None
    new_blob: str | None = None
    may_be_directory: bool = False

    @property
    def has_blob_ids(self) -> bool:
        return self.old_blob is not None or self.new_blob is not None

    def covers(self, path: str) -> bool:
        """Whether this entry is about ``path`` (itself, or a file below a directory entry)."""
        return path == self.path or (self.may_be_directory and path.startswith(self.path + "/"))

    def agrees_with(self, old_blob: str | None, new_blob: str | None) -> bool:
        """Whether a file's real ids (full; ``None`` where it does not exist) fit this entry:
        the same sides exist, and each id the patch names is the real one or a prefix of it."""
        sides = {"added": (False, True), "modified": (True, True), "deleted": (True, False)}
        if self.change == "one-sided":
            if (old_blob is None) == (new_blob is None):
                return False
        elif sides[self.change] != (old_blob is not None, new_blob is not None):
            return False
        return _id_fits(self.old_blob, old_blob) and _id_fits(self.new_blob, new_blob)


def _id_fits(named: str | None, real: str | None) -> bool:
    return named is None or (real is not None and real.startswith(named))


def expand_directories(entries: Sequence[PatchEntry], old_paths: Collection[str],
                       new_paths: Collection[str]) -> list[PatchEntry]:
    """Each ``Only in`` entry naming a directory of the tree it is only in becomes one entry
    per file below it; a ``one-sided`` one (a file or a directory) is placed by the tree that
    has it, since the patch alone could not say which side it was on."""
    expanded: list[PatchEntry] = []
    for entry in entries:
        if entry.change == "one-sided" and (entry.path in old_paths) != (entry.path in new_paths):
            expanded.append(PatchEntry(entry.path, "deleted" if entry.path in old_paths else "added"))
            continue
        below = [] if not entry.may_be_directory or entry.path in old_paths or entry.path in new_paths \
            else _files_below(entry, old_paths, new_paths)
        expanded.extend(below or [entry])
    return expanded


def _files_below(entry: PatchEntry, old_paths: Collection[str], new_paths: Collection[str]) -> list[PatchEntry]:
    trees: list[tuple[Change, Collection[str]]] = [("deleted", old_paths), ("added", new_paths)]
    for change, paths in trees:
        if entry.change in (change, "one-sided"):
            below = sorted(path for path in paths if entry.covers(path))
            if below:
                return [PatchEntry(path, change) for path in below]
    return []


def comparison_of(entries: Sequence[PatchEntry]) -> TreeComparison:
    """The entries as a ``TreeComparison``, to compare with ``compare_trees`` of the two trees
    (``one-sided`` entries, which a comparison cannot hold, are left out; expand GNU
    directories first)."""
    def paths(change: Change) -> tuple[str, ...]:
        return tuple(sorted(entry.path for entry in entries if entry.change == change))
    return TreeComparison(added=paths("added"), modified=paths("modified"), deleted=paths("deleted"))


def parse_patch(patch: bytes) -> list[PatchEntry] | None:
    """The files a patch names, in its order: from this module, ``git diff`` (renames become a
    deletion and an addition, as ``compare_trees`` sees them) or GNU ``diff -ru``/``-ruN``
    (no ids; a path is what both names of a pair share at their end, so ``diff -ru v1/src v2/src``
    gives ``src/P``, less a shared leading ``source/``: the application's ``diff -ru <old>/source
    <new>/source`` gives ``P`` wherever its folders were). ``[]`` for an empty patch,
    ``None`` for bytes that are no patch at all. Hunk lines are counted, so a removed line
    ``-- x`` is never taken for a header; nothing in the input can make it raise.

    GNU ``diff`` limits: ``-N`` hides an added or deleted empty file, and writes an added or
    deleted binary file as ``Binary files ... differ`` exactly like a modified one (``modified``)."""
    reader = _PatchReader(patch.split(b"\n"))
    entries = reader.read()
    if not entries and patch.strip():
        return None
    return entries


_INDEX = re.compile(rb"index ([0-9a-f]{4,64})\.\.([0-9a-f]{4,64})(?: [0-7]{6})?\s*$")
_HUNK = re.compile(rb"@@ -\d{1,12}(?:,(\d{1,12}))? \+\d{1,12}(?:,(\d{1,12}))? @@")
_TIMESTAMP = re.compile(rb"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.\d{1,9})? ([+-])(\d\d)(\d\d)")
_GIT_EXTENDED = (b"old mode ", b"new mode ", b"deleted file mode ", b"new file mode ", b"copy from ",
                 b"copy to ", b"rename from ", b"rename to ", b"similarity index ",
                 b"dissimilarity index ", b"index ")
_CONVENTIONAL_ROOTS = [(b"a", b"b"), (b"old", b"new")]
SOURCE_COMPONENT = b"source"
_GENERATION_SOURCE = re.compile(rb"(?:^|/)v[1-9][0-9]*__[^/]+/source/")


@dataclass
class _GitSection:
    """What a ``diff --git`` section's header says, names still with their a/ b/ prefix."""

    old_name: bytes | None = None
    new_name: bytes | None = None
    names_certain: bool = False         # the ``diff --git`` line alone told both names
    created: bool = False
    removed: bool = False
    rename_from: bytes | None = None
    rename_to: bytes | None = None
    copied: bool = False
    old_blob: str | None = None
    new_blob: str | None = None


class _PatchReader:
    """One pass over the lines; GNU ``Only in`` lines are placed once every pair of directory
    names in the patch has been seen (GNU diff may write them first)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        self.position = 0
        self.entries: list[PatchEntry | bytes] = []     # bytes: an ``Only in`` path not yet placed
        self.roots: list[tuple[bytes, bytes]] = []

    def read(self) -> list[PatchEntry]:
        while self.position < len(self.lines):
            line = self.lines[self.position]
            self.position += 1
            if line.startswith(b"diff --git "):
                self._git_section(line[len(b"diff --git "):])
            elif line.startswith(b"--- ") and self._peek().startswith(b"+++ "):
                self._unified_pair(line[4:], self._next()[4:])
            elif line.startswith(b"Binary files ") and line.endswith(b" differ"):
                self._gnu_binary(line[len(b"Binary files "):-len(b" differ")])
            elif line.startswith(b"Only in ") and b": " in line:
                directory, _, name = line[len(b"Only in "):].partition(b": ")
                self.entries.append(directory.rstrip(b"/") + b"/" + name)
        return [entry if isinstance(entry, PatchEntry) else self._place(entry) for entry in self.entries]

    def _peek(self) -> bytes:
        return self.lines[self.position] if self.position < len(self.lines) else b""

    def _next(self) -> bytes:
        line = self._peek()
        self.position += 1
        return line

    # git

    def _git_section(self, names: bytes) -> None:
        section = _GitSection()
        section.old_name, section.new_name, section.names_certain = _split_git_names(names)
        while self._peek().startswith(_GIT_EXTENDED):
            self._git_extended(section, self._next())
        following = self._peek()
        if following.startswith(b"--- ") and self.position + 1 < len(self.lines) \
                and self.lines[self.position + 1].startswith(b"+++ "):
            old_label, new_label = _label_name(self._next()[4:]), _label_name(self._next()[4:])
            section.created = section.created or old_label == b"/dev/null"
            section.removed = section.removed or new_label == b"/dev/null"
            if not section.names_certain:   # labels only settle what the ``diff --git`` line left open
                section.old_name = old_label if old_label not in (None, b"/dev/null") else section.old_name
                section.new_name = new_label if new_label not in (None, b"/dev/null") else section.new_name
            self._skip_hunks()
        elif following == b"GIT binary patch":
            self._skip_binary()
        elif following.startswith(b"Binary files "):
            self.position += 1
        self.entries.extend(_git_entries(section))

    def _git_extended(self, section: _GitSection, line: bytes) -> None:
        if line.startswith(b"new file mode "):
            section.created = True
        elif line.startswith(b"deleted file mode "):
            section.removed = True
        elif line.startswith((b"rename from ", b"copy from ")):
            section.rename_from = _unquote_name(line.split(b" ", 2)[2])
            section.copied = line.startswith(b"copy")
        elif line.startswith((b"rename to ", b"copy to ")):
            section.rename_to = _unquote_name(line.split(b" ", 2)[2])
        elif match := _INDEX.match(line):
            section.old_blob, section.new_blob = (_blob_or_none(group) for group in match.groups())

    def _skip_hunks(self) -> None:
        """Consume ``@@`` hunks by their line counts, so their lines are never read as headers."""
        while match := _HUNK.match(self._peek()):
            self.position += 1
            old_left, new_left = (int(count) if count is not None else 1 for count in match.groups())
            while (old_left > 0 or new_left > 0) and self.position < len(self.lines):
                line = self._peek()
                marker = line[:1]
                if marker == b"\\":
                    self.position += 1
                    continue
                if marker not in (b" ", b"", b"-", b"+"):
                    break                   # a short hunk: the patch is damaged, carry on reading
                old_left -= marker in (b" ", b"", b"-")
                new_left -= marker in (b" ", b"", b"+")
                self.position += 1
            while self._peek().startswith(b"\\"):
                self.position += 1

    def _skip_binary(self) -> None:
        """``GIT binary patch``, then ``literal``/``delta`` blocks of base85 lines, each ended by
        an empty line."""
        self.position += 1
        while self._peek().startswith((b"literal ", b"delta ")):
            while self.position < len(self.lines) and self._next():
                pass

    # GNU diff

    def _unified_pair(self, old_label: bytes, new_label: bytes) -> None:
        """A ``---``/``+++`` pair outside a git section: GNU ``diff -ru``/``-ruN`` or bare ``diff -u``."""
        old_name, new_name = _label_name(old_label), _label_name(new_label)
        if old_name is None or new_name is None:
            return
        self._skip_hunks()
        change: Change = "modified"
        if old_name == b"/dev/null" or _is_epoch(old_label):
            change = "added"
        elif new_name == b"/dev/null" or _is_epoch(new_label):
            change = "deleted"
        if b"/dev/null" in (old_name, new_name):
            path = _strip_prefix(new_name if old_name == b"/dev/null" else old_name) or b""
        else:
            old_root, new_root, path = _split_roots(old_name, new_name)
            self.roots.append((old_root, new_root))
        self.entries.append(PatchEntry(_path_str(path), change))

    def _gnu_binary(self, names: bytes) -> None:
        pair = _split_binary_names(names)
        if pair is None:
            return
        old_root, new_root, path = _split_roots(*pair)
        self.roots.append((old_root, new_root))
        self.entries.append(PatchEntry(_path_str(path), "modified"))

    def _place(self, full_path: bytes) -> PatchEntry:
        """An ``Only in`` path: deleted below the old directory, added below the new one. With no
        pair of directory names in the patch, git's ``a``/``b`` or ``old``/``new`` are tried, then
        a generation's ``v<N>__<id>/source/`` (the side is left to the trees: ``one-sided``)."""
        for old_root, new_root in self.roots or _CONVENTIONAL_ROOTS:
            if old_root and full_path.startswith(old_root + b"/"):
                return PatchEntry(_path_str(full_path[len(old_root) + 1:]), "deleted", may_be_directory=True)
            if new_root and full_path.startswith(new_root + b"/"):
                return PatchEntry(_path_str(full_path[len(new_root) + 1:]), "added", may_be_directory=True)
        below_source = _below_generation_source(full_path)
        path = below_source if below_source is not None else _strip_prefix(full_path) or full_path
        return PatchEntry(_path_str(path), "one-sided", may_be_directory=True)


def _git_entries(section: _GitSection) -> Iterator[PatchEntry]:
    """A rename is a deletion plus an addition (and a copy an addition), as compare_trees has it."""
    old_path, new_path = _strip_prefix(section.old_name), _strip_prefix(section.new_name)
    if section.rename_to is not None:
        if section.rename_from is not None and not section.copied:
            yield PatchEntry(_path_str(section.rename_from), "deleted", section.old_blob, None)
        yield PatchEntry(_path_str(section.rename_to), "added", None, section.new_blob)
        return
    path = old_path if section.removed else new_path
    if path is None:
        path = old_path if new_path is None else new_path
    if path is None:
        return
    change: Change = "added" if section.created else "deleted" if section.removed else "modified"
    yield PatchEntry(_path_str(path), change, section.old_blob, section.new_blob)


def _blob_or_none(hex_id: bytes) -> str | None:
    """An all-zero id is git's way of saying the file does not exist on that side."""
    return None if not hex_id.strip(b"0") else hex_id.decode()


def _split_git_names(names: bytes) -> tuple[bytes | None, bytes | None, bool]:
    """The two names of ``diff --git A B`` and whether the line alone settles them. Unquoted
    names may hold spaces (even a trailing one); git itself then relies on both names being
    equal, so the line is cut in the middle. Only a cut that stays a guess (one space among
    several, names that differ) lets the ``---``/``+++`` labels decide instead."""
    if names.startswith(b'"'):
        first, rest = _unquote_prefix(names)
        if first is None or not rest.startswith(b" "):
            return None, None, False
        second = _unquote_name(rest[1:])
        return first, second, second is not None
    if names.endswith(b'"') and b' "' in names:
        first, _, second = names.partition(b' "')
        unquoted = _unquote_name(b'"' + second)
        return first, unquoted, unquoted is not None
    middle = len(names) // 2
    if len(names) % 2 and names[middle:middle + 1] == b" " \
            and _strip_prefix(names[:middle]) == _strip_prefix(names[middle + 1:]):
        return names[:middle], names[middle + 1:], True
    first, _, second = names.partition(b" ")
    return first, second or None, names.count(b" ") == 1 and bool(first) and bool(second)


def _split_binary_names(names: bytes) -> tuple[bytes, bytes] | None:
    """``X and Y`` of GNU's ``Binary files X and Y differ``. GNU leaves spaces unquoted here, so
    of several `` and `` the cut after which both names end alike wins."""
    if names.startswith(b'"'):
        first, rest = _unquote_prefix(names)
        second = _unquote_name(rest[len(b" and "):]) if rest.startswith(b" and ") else None
        return (first, second) if first is not None and second is not None else None
    pairs = [(names[:cut.start()], _unquote_name(names[cut.end():])) for cut in re.finditer(rb" and ", names)]
    named = [(first, second) for first, second in pairs if second is not None]
    alike = [pair for pair in named if _split_roots(*pair)[0]]
    return next(iter(alike or named), None)


def _split_roots(old_name: bytes, new_name: bytes) -> tuple[bytes, bytes, bytes]:
    """(old directory, new directory, path) of a GNU pair of names: the path is the longest run
    of trailing components both share (at least the first component is a directory), less a
    leading ``source``: a generation's files are those below its ``source/`` folder."""
    old_parts, new_parts = old_name.split(b"/"), new_name.split(b"/")
    shared = 0
    while shared < min(len(old_parts), len(new_parts)) - 1 and old_parts[-1 - shared] == new_parts[-1 - shared]:
        shared += 1
    if shared == 0:
        return b"", b"", new_name
    if shared > 1 and new_parts[-shared] == SOURCE_COMPONENT:
        shared -= 1
    return b"/".join(old_parts[:-shared]), b"/".join(new_parts[:-shared]), b"/".join(new_parts[-shared:])


def _below_generation_source(full_path: bytes) -> bytes | None:
    """What lies below the last ``v<N>__<id>/source/`` of a path, if it has one."""
    matches = list(_GENERATION_SOURCE.finditer(full_path))
    if not matches:
        return None
    return full_path[matches[-1].end():] or None


def _strip_prefix(name: bytes | None) -> bytes | None:
    """``git apply -p1``: drop the ``a/``/``b/`` (or any first) component."""
    if name is None:
        return None
    return name.partition(b"/")[2] or name


def _label_name(label: bytes) -> bytes | None:
    """The name of a ``---``/``+++`` line: quoted, or up to the tab before a timestamp (git
    ends a name holding a space with a tab too). Spaces are part of the name, trailing ones
    included: only the tab separates."""
    if label.startswith(b'"'):
        return _unquote_prefix(label)[0]
    return label.partition(b"\t")[0] or None


def _is_epoch(label: bytes) -> bool:
    """GNU ``diff -N`` dates a missing file at the epoch (in the local time zone)."""
    match = _TIMESTAMP.search(label.rpartition(b"\t")[2])
    if match is None:
        return False
    year, month, day, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    try:
        offset = datetime.timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        zone = datetime.timezone(offset if sign == b"+" else -offset)
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                                   tzinfo=zone)
    except ValueError:
        return False
    return moment.timestamp() == 0


def _unquote_name(name: bytes) -> bytes | None:
    """A whole name, quoted or not."""
    if not name.startswith(b'"'):
        return name or None
    unquoted, rest = _unquote_prefix(name)
    return unquoted if unquoted is not None and not rest.strip() else None


def _unquote_prefix(text: bytes) -> tuple[bytes | None, bytes]:
    """Undo git's (and GNU diff's) C-style quoting of the quoted name ``text`` starts with;
    (None, text) when it is not well formed."""
    result = bytearray()
    index = 1
    while index < len(text):
        byte = text[index]
        if byte == 0x22:
            return bytes(result), text[index + 1:]
        if byte != 0x5C:
            result.append(byte)
            index += 1
            continue
        escape = text[index + 1:index + 2]
        digits = text[index + 1:index + 4]
        if len(digits) == 3 and all(0x30 <= digit <= 0x37 for digit in digits):
            result.append(int(digits, 8) & 0xFF)
            index += 4
        elif escape and escape[0] in C_UNESCAPES:
            result.append(C_UNESCAPES[escape[0]])
            index += 2
        else:
            return None, text
    return None, text


def _path_str(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")
