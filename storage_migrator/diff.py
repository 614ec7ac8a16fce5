"""Compare two versions of a generation's source tree and render the git-style patch between them.

Pure: callers hand in path → sha256 maps (from manifests) and a way to read bytes; nothing here
touches the disk. The patch is bytes, so non-UTF-8 content and CRLF line endings round-trip, and
``git apply`` in a copy of the old tree reproduces the new one byte for byte.
"""
from __future__ import annotations

import base64
import difflib
import hashlib
import io
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

CONTEXT_LINES = 3
BINARY_SNIFF_BYTES = 8000          # git's rule: a NUL byte in the first 8000 bytes means binary
MAX_EDIT_DISTANCE = 500            # past this many edits in one gap, the gap is replaced whole
MAX_DEPTH = 40                     # nested anchor searches before a gap goes to Myers directly
NULL_BLOB_ID = "0" * 40
FILE_MODE = b"100644"

Reader = Callable[[str], bytes]


@dataclass(frozen=True)
class TreeComparison:
    """Paths under ``source/`` that differ between two versions, each tuple sorted."""

    added: tuple[str, ...]
    modified: tuple[str, ...]
    deleted: tuple[str, ...]

    def is_empty(self) -> bool:
        return not (self.added or self.modified or self.deleted)

    def changed_paths(self) -> list[str]:
        """Every changed path in one sorted sequence: the order of the patch."""
        return sorted((*self.added, *self.modified, *self.deleted))


def compare_trees(old: Mapping[str, str], new: Mapping[str, str]) -> TreeComparison:
    """Classify paths from their checksums alone: unchanged files are never read."""
    return TreeComparison(
        added=tuple(sorted(new.keys() - old.keys())),
        modified=tuple(sorted(path for path in old.keys() & new.keys() if old[path] != new[path])),
        deleted=tuple(sorted(old.keys() - new.keys())),
    )


@dataclass(frozen=True)
class ChangeSummary:
    """The ``changes_summary`` column."""

    added: int
    modified: int
    deleted: int
    from_version: int | None

    @classmethod
    def first_version(cls, file_count: int) -> "ChangeSummary":
        return cls(added=file_count, modified=0, deleted=0, from_version=None)

    @classmethod
    def from_comparison(cls, comparison: TreeComparison, from_version: int) -> "ChangeSummary":
        return cls(len(comparison.added), len(comparison.modified), len(comparison.deleted), from_version)

    def to_json(self) -> dict:
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted,
                "from_version": self.from_version}


def git_blob_id(content: bytes) -> str:
    """git's object id of a file: what the ``index`` line names and ``git apply`` checks."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def is_binary(content: bytes) -> bool:
    return b"\0" in content[:BINARY_SNIFF_BYTES]


def write_patch(out: BinaryIO, comparison: TreeComparison, read_old: Reader, read_new: Reader) -> None:
    """Stream the patch, file by file in path order; only changed paths are read."""
    added, deleted = set(comparison.added), set(comparison.deleted)
    for path in comparison.changed_paths():
        old = None if path in added else read_old(path)
        new = None if path in deleted else read_new(path)
        out.write(file_patch(path, old, new))


def render_patch(comparison: TreeComparison, read_old: Reader, read_new: Reader) -> bytes:
    buffer = io.BytesIO()
    write_patch(buffer, comparison, read_old, read_new)
    return buffer.getvalue()


# -- one file ------------------------------------------------------------------------------


def file_patch(path: str, old: bytes | None, new: bytes | None) -> bytes:
    """The patch of one file; ``None`` for the side where it does not exist."""
    name = path.encode("utf-8", "surrogateescape")
    a_name, b_name = quote_path(b"a/" + name), quote_path(b"b/" + name)
    old_id = git_blob_id(old) if old is not None else NULL_BLOB_ID
    new_id = git_blob_id(new) if new is not None else NULL_BLOB_ID
    header = [b"diff --git " + a_name + b" " + b_name + b"\n"]
    if old is None:
        header.append(b"new file mode " + FILE_MODE + b"\n")
        header.append(f"index {old_id}..{new_id}\n".encode())
    elif new is None:
        header.append(b"deleted file mode " + FILE_MODE + b"\n")
        header.append(f"index {old_id}..{new_id}\n".encode())
    else:
        header.append(f"index {old_id}..{new_id} ".encode() + FILE_MODE + b"\n")
    old_bytes, new_bytes = old or b"", new or b""
    if is_binary(old_bytes) or is_binary(new_bytes):
        return b"".join(header) + binary_hunks(old_bytes, new_bytes)
    if not old_bytes and not new_bytes:
        return b"".join(header)         # an empty file added or deleted: the header says it all
    tab_a = b"\t" if b" " in name else b""      # git ends a name with a space by a tab
    header.append(b"--- " + (a_name + tab_a if old is not None else b"/dev/null") + b"\n")
    header.append(b"+++ " + (b_name + tab_a if new is not None else b"/dev/null") + b"\n")
    return b"".join(header) + text_hunks(split_lines(old_bytes), split_lines(new_bytes))


_C_ESCAPES = {0x07: b"\\a", 0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0B: b"\\v", 0x0C: b"\\f",
              0x0D: b"\\r", 0x22: b'\\"', 0x5C: b"\\\\"}


def quote_path(name: bytes) -> bytes:
    """git's C-style quoting (core.quotePath): a name with a quote, backslash, control byte or
    any byte >= 0x80 is written in double quotes with escapes; others as they are."""
    if not any(byte < 0x20 or byte >= 0x7F or byte in (0x22, 0x5C) for byte in name):
        return name
    quoted = bytearray(b'"')
    for byte in name:
        if byte in _C_ESCAPES:
            quoted += _C_ESCAPES[byte]
        elif byte < 0x20 or byte >= 0x7F:
            quoted += b"\\%03o" % byte
        else:
            quoted.append(byte)
    quoted += b'"'
    return bytes(quoted)


# -- text ----------------------------------------------------------------------------------


def split_lines(content: bytes) -> list[bytes]:
    """Lines ending in ``\\n`` (a ``\\r`` stays part of its line); the last may lack one."""
    lines = content.split(b"\n")
    last = lines.pop()
    result = [line + b"\n" for line in lines]
    if last:
        result.append(last)
    return result


def text_hunks(old: Sequence[bytes], new: Sequence[bytes]) -> bytes:
    """Unified hunks with three lines of context, merged where their context overlaps."""
    grouper = difflib.SequenceMatcher(None, (), ())
    grouper.matching_blocks = matching_blocks(old, new)   # our blocks, difflib's grouping
    grouper.opcodes = None
    output = io.BytesIO()
    for group in grouper.get_grouped_opcodes(CONTEXT_LINES):
        first, last = group[0], group[-1]
        old_range = _unified_range(first[1], last[2])
        new_range = _unified_range(first[3], last[4])
        output.write(f"@@ -{old_range} +{new_range} @@\n".encode())
        for tag, old_start, old_end, new_start, new_end in group:
            if tag == "equal":
                _write_lines(output, b" ", old[old_start:old_end])
                continue
            _write_lines(output, b"-", old[old_start:old_end])
            _write_lines(output, b"+", new[new_start:new_end])
    return output.getvalue()


def _unified_range(start: int, stop: int) -> str:
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _write_lines(output: io.BytesIO, marker: bytes, lines: Sequence[bytes]) -> None:
    for line in lines:
        output.write(marker + line)
        if not line.endswith(b"\n"):
            output.write(b"\n\\ No newline at end of file\n")


# -- the line diff -------------------------------------------------------------------------
#
# Why this is fast: the cost must follow the size of the change, not the size of the file.
# 1. Common leading and trailing lines are cut off first (free for the usual small edit).
# 2. Lines that occur exactly once in both sides are anchors (patience diff); their longest
#    increasing subsequence splits the middle into small independent gaps, recursively.
# 3. Only a gap without anchors goes to Myers' O(ND) algorithm, which is linear when the edit
#    distance D is small; past MAX_EDIT_DISTANCE the gap is replaced whole (still a correct
#    patch, just not a minimal one), so no input can make it quadratic.
# difflib.SequenceMatcher alone is quadratic on files with many repeated lines.


def matching_blocks(old: Sequence[bytes], new: Sequence[bytes]) -> list[tuple[int, int, int]]:
    """Equal runs as (old index, new index, length), ascending, ending with difflib's sentinel."""
    pairs: list[tuple[int, int]] = []
    _match_range(old, new, 0, len(old), 0, len(new), pairs)
    blocks: list[tuple[int, int, int]] = []
    for old_index, new_index in pairs:
        if blocks and blocks[-1][0] + blocks[-1][2] == old_index and blocks[-1][1] + blocks[-1][2] == new_index:
            start_old, start_new, length = blocks[-1]
            blocks[-1] = (start_old, start_new, length + 1)
        else:
            blocks.append((old_index, new_index, 1))
    blocks.append((len(old), len(new), 0))
    return blocks


def _match_range(old: Sequence[bytes], new: Sequence[bytes], old_lo: int, old_hi: int, new_lo: int, new_hi: int,
                 pairs: list[tuple[int, int]], depth: int = 0) -> None:
    """Append matching (old, new) line index pairs for the two ranges, in order."""
    while old_lo < old_hi and new_lo < new_hi and old[old_lo] == new[new_lo]:
        pairs.append((old_lo, new_lo))
        old_lo, new_lo = old_lo + 1, new_lo + 1
    tail: list[tuple[int, int]] = []
    while old_lo < old_hi and new_lo < new_hi and old[old_hi - 1] == new[new_hi - 1]:
        old_hi, new_hi = old_hi - 1, new_hi - 1
        tail.append((old_hi, new_hi))
    if old_lo < old_hi and new_lo < new_hi:
        anchors = _unique_anchors(old, new, old_lo, old_hi, new_lo, new_hi) if depth < MAX_DEPTH else []
        if anchors:
            previous_old, previous_new = old_lo, new_lo
            for anchor_old, anchor_new in anchors:
                _match_range(old, new, previous_old, anchor_old, previous_new, anchor_new, pairs, depth + 1)
                pairs.append((anchor_old, anchor_new))
                previous_old, previous_new = anchor_old + 1, anchor_new + 1
            _match_range(old, new, previous_old, old_hi, previous_new, new_hi, pairs, depth + 1)
        else:
            pairs.extend(_myers(old, new, old_lo, old_hi, new_lo, new_hi))
    pairs.extend(reversed(tail))


def _unique_anchors(old: Sequence[bytes], new: Sequence[bytes], old_lo: int, old_hi: int, new_lo: int,
                    new_hi: int) -> list[tuple[int, int]]:
    """Lines unique in both ranges, reduced to their longest run in the same order (patience)."""
    old_counts = Counter(old[old_lo:old_hi])
    new_counts = Counter(new[new_lo:new_hi])
    new_position = {new[index]: index for index in range(new_lo, new_hi) if new_counts[new[index]] == 1}
    candidates = [
        (index, new_position[old[index]])
        for index in range(old_lo, old_hi)
        if old_counts[old[index]] == 1 and old[index] in new_position
    ]
    return _longest_increasing(candidates)


def _longest_increasing(candidates: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence increasing in the new index (patience sorting, O(n log n))."""
    import bisect

    tops: list[int] = []
    top_index: list[int] = []
    previous: list[int] = []
    for position, (_, new_index) in enumerate(candidates):
        pile = bisect.bisect_left(tops, new_index)
        if pile == len(tops):
            tops.append(new_index)
            top_index.append(position)
        else:
            tops[pile] = new_index
            top_index[pile] = position
        previous.append(top_index[pile - 1] if pile else -1)
    result: list[tuple[int, int]] = []
    position = top_index[-1] if top_index else -1
    while position >= 0:
        result.append(candidates[position])
        position = previous[position]
    result.reverse()
    return result


def _myers(old: Sequence[bytes], new: Sequence[bytes], old_lo: int, old_hi: int, new_lo: int,
           new_hi: int) -> list[tuple[int, int]]:
    """Matching pairs of a shortest edit script (Myers 1986, greedy forward with a trace);
    an empty list (replace everything) if the edit distance passes MAX_EDIT_DISTANCE."""
    a, b = old[old_lo:old_hi], new[new_lo:new_hi]
    n, m = len(a), len(b)
    offset = n + m + 1
    furthest = [0] * (2 * offset + 1)
    trace: list[list[int]] = []
    for distance in range(min(n + m, MAX_EDIT_DISTANCE) + 1):
        trace.append(furthest[offset - distance - 1 : offset + distance + 2])
        for diagonal in range(-distance, distance + 1, 2):
            if diagonal == -distance or (diagonal != distance and furthest[offset + diagonal - 1] < furthest[offset + diagonal + 1]):
                x = furthest[offset + diagonal + 1]
            else:
                x = furthest[offset + diagonal - 1] + 1
            y = x - diagonal
            while x < n and y < m and a[x] == b[y]:
                x, y = x + 1, y + 1
            furthest[offset + diagonal] = x
            if x >= n and y >= m:
                return [(old_lo + i, new_lo + j) for i, j in _backtrack(trace, a, b, distance)]
    return []


def _backtrack(trace: list[list[int]], a: Sequence[bytes], b: Sequence[bytes], distance: int) -> list[tuple[int, int]]:
    """Walk the saved frontiers back from (n, m) and collect the diagonal (matching) steps."""
    x, y = len(a), len(b)
    pairs: list[tuple[int, int]] = []
    for step in range(distance, 0, -1):
        frontier = trace[step]          # furthest x per diagonal before this step, around 0
        base = step + 1                 # index of diagonal 0 in this slice

        def reach(diagonal: int) -> int:
            return frontier[base + diagonal]

        diagonal = x - y
        if diagonal == -step or (diagonal != step and reach(diagonal - 1) < reach(diagonal + 1)):
            previous_diagonal = diagonal + 1
            previous_x = reach(previous_diagonal)
            start_x = previous_x
        else:
            previous_diagonal = diagonal - 1
            previous_x = reach(previous_diagonal)
            start_x = previous_x + 1
        start_y = start_x - diagonal
        while x > start_x and y > start_y:
            x, y = x - 1, y - 1
            pairs.append((x, y))
        x, y = previous_x, previous_x - previous_diagonal
    while x > 0 and y > 0:
        x, y = x - 1, y - 1
        pairs.append((x, y))
    pairs.reverse()
    return pairs


# -- binary --------------------------------------------------------------------------------


def binary_hunks(old: bytes, new: bytes) -> bytes:
    """``GIT binary patch`` with the new content as a forward literal and the old as reverse."""
    return b"GIT binary patch\n" + _literal(new) + _literal(old)


def _literal(content: bytes) -> bytes:
    compressed = zlib.compress(content, 9)
    lines = [b"literal %d\n" % len(content)]
    for start in range(0, len(compressed), 52):
        chunk = compressed[start : start + 52]
        length = len(chunk)
        marker = bytes([ord("A") + length - 1]) if length <= 26 else bytes([ord("a") + length - 27])
        lines.append(marker + base64.b85encode(chunk, pad=True) + b"\n")
    lines.append(b"\n")
    return b"".join(lines)
