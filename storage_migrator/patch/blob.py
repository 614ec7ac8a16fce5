"""git's object id of a file: the one blob-id rule, for the patches' ``index`` lines, the
manifests' checks and ``verify``."""
from __future__ import annotations

import hashlib

NULL_BLOB_ID = "0" * 40
"""The id a patch names for the side where a file does not exist."""

def git_blob_digest(size: int) -> hashlib._Hash:
    """git's object id as a digest still to be fed the file's ``size`` bytes: sha1 over
    ``blob <size>\\0`` + bytes. hashlib's SHA-1, not the collision-detecting one libgit2 and git
    hash with: the id is the same, and the work is not a security check (the sha256 is)."""
    return hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)


def git_blob_id(content: bytes) -> str:
    """git's object id of bytes in memory: what a patch's ``index`` line names (no copy of
    ``content`` is made)."""
    digest = git_blob_digest(len(content))
    digest.update(content)
    return digest.hexdigest()
