"""Where the edge-case files sit in every generated code base (binary, CRLF, latin-1, empty, no
final newline, unicode and space in the name, one large file) and the encoding each is written in."""
from __future__ import annotations

BINARY_PATHS = ("static/logo.png", "static/favicon.ico")
CRLF_PATH = "scripts/run.bat"
LATIN1_PATH = "docs/notes-latin1.txt"
EMPTY_PATH = "app/__init__.py"
NO_FINAL_NEWLINE_PATH = ".env.example"
UNICODE_NAME_PATH = "docs/ünïcode-notes.md"
SPACE_NAME_PATH = "docs/release notes.txt"
LARGE_FILE_PATH = "docs/api_reference.md"
ODDITY_PATHS = (*BINARY_PATHS, CRLF_PATH, LATIN1_PATH, UNICODE_NAME_PATH, SPACE_NAME_PATH)
"""Files that regular projects carry only sometimes; the demo and edge-case projects always do."""


def encoding_of(path: str) -> str:
    return "latin-1" if path == LATIN1_PATH else "utf-8"
