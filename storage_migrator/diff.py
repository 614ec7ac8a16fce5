# TEMPORARY STUB (lead engineer) — helper-1 replaces this file with the real diff engine.
from __future__ import annotations
import hashlib
from dataclasses import dataclass
from io import BytesIO

@dataclass(frozen=True)
class TreeComparison:
    added: tuple
    modified: tuple
    deleted: tuple
    def is_empty(self): return not (self.added or self.modified or self.deleted)

def compare_trees(old, new):
    return TreeComparison(tuple(sorted(set(new)-set(old))), tuple(sorted(p for p in set(old)&set(new) if old[p]!=new[p])), tuple(sorted(set(old)-set(new))))

@dataclass(frozen=True)
class ChangeSummary:
    added: int; modified: int; deleted: int; from_version: int | None
    @classmethod
    def first_version(cls, n): return cls(n,0,0,None)
    @classmethod
    def from_comparison(cls, c, v): return cls(len(c.added), len(c.modified), len(c.deleted), v)
    def to_json(self): return {"added": self.added, "modified": self.modified, "deleted": self.deleted, "from_version": self.from_version}

def write_patch(out, comparison, read_old, read_new):
    for p in sorted(comparison.added + comparison.modified + comparison.deleted):
        out.write(b"STUB " + p.encode() + b"\n")

def render_patch(c, ro, rn):
    b = BytesIO(); write_patch(b, c, ro, rn); return b.getvalue()

def git_blob_id(content): return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
