"""Edits a text file between versions: a few lines inserted, replaced or deleted, keeping its
encoding, its line endings and its final newline (or the lack of one)."""
from __future__ import annotations

import random
from collections.abc import Callable

from storage_migrator.demo.paths import (
    CRLF_PATH,
    LATIN1_PATH,
    NO_FINAL_NEWLINE_PATH,
    UNICODE_NAME_PATH,
    encoding_of,
)
from storage_migrator.demo.vocabulary import LATIN1_WORDS, PACKAGES, UNICODE_WORDS, WORDS, phrase


def edited_bytes(path: str, content: bytes, rng: random.Random) -> bytes:
    """Edit one to three lines below the first, keeping the file's encoding, line endings and
    presence or absence of a final newline. The bytes always change."""
    edited = _edited_once(path, content, rng)
    while edited == content:
        edited = _edited_once(path, content, rng)
    return edited


def _edited_once(path: str, content: bytes, rng: random.Random) -> bytes:
    encoding = encoding_of(path)
    text = content.decode(encoding)
    newline = "\r\n" if "\r\n" in text else "\n"
    ends_with_newline = text.endswith(newline)
    lines = text.split(newline)
    if ends_with_newline:
        lines.pop()
    new_line = _line_maker(path)
    extra_operations = rng.choices(("insert", "replace", "delete"), weights=(5, 3, 2), k=rng.randint(0, 1))
    operations = [*extra_operations, "insert"]
    for operation in operations:
        at = rng.randint(1, len(lines))
        if operation == "insert" or at >= len(lines):
            lines.insert(at, new_line(_indent_near(lines, at), rng))
        elif operation == "replace":
            lines[at] = new_line(_indent_near(lines, at), rng)
        elif len(lines) > 2:
            del lines[at]
    return (newline.join(lines) + (newline if ends_with_newline else "")).encode(encoding)


def _indent_near(lines: list[str], at: int) -> str:
    for candidate in (lines[at] if at < len(lines) else "", lines[at - 1]):
        if candidate.strip():
            return candidate[: len(candidate) - len(candidate.lstrip())]
    return ""


def _line_maker(path: str) -> Callable[[str, random.Random], str]:
    if path.endswith(".py"):
        return _python_line
    if path == "requirements.txt":
        return lambda indent, rng: f"{rng.choice(PACKAGES)}=={rng.randint(0, 3)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    if path == CRLF_PATH:
        return lambda indent, rng: rng.choice((f"REM {phrase(rng)}", f"set {rng.choice(WORDS).upper()}_LIMIT={rng.randint(1, 500)}"))
    if path == NO_FINAL_NEWLINE_PATH or path.endswith(".ini"):
        return lambda indent, rng: f"{rng.choice(WORDS).upper()}_TIMEOUT={rng.randint(1, 120)}"
    if path == LATIN1_PATH:
        return lambda indent, rng: f"{indent}- {phrase(rng)} ({rng.choice(LATIN1_WORDS)})"
    if path == UNICODE_NAME_PATH:
        return lambda indent, rng: f"{indent}- {phrase(rng)} {rng.choice(UNICODE_WORDS)}"
    return lambda indent, rng: f"{indent}- {phrase(rng).capitalize()}."


def _python_line(indent: str, rng: random.Random) -> str:
    word, other = rng.choice(WORDS), rng.choice(WORDS)
    return indent + rng.choice((
        f"# TODO: {phrase(rng)}",
        f"logger.debug(\"{word} {other} checked\")",
        f"{word.upper()}_LIMIT = {rng.randint(1, 1000)}",
        f"# {word.capitalize()} {other} handling reviewed",
        f"{word}_{other} = settings.{word}_{other}",
    ))
