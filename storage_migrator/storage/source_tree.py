"""A version's source tree as the diff and the checks see it: read now (``TreeSnapshot``) or
known from its manifest (``ManifestTree``, no file read), and the patch between two of them.
Shared by the executor and the read-only commands, which import no executor."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage_migrator.errors import GenerationError
from storage_migrator.patch import compare, writer
from storage_migrator.storage.handle import Storage
from storage_migrator.storage.manifest import Manifest, ManifestHead
from storage_migrator.storage.tree import FolderReader, TreeSnapshot, git_blob_id_file, read_regular_file


@dataclass
class ManifestTree:
    """A migrated source tree known from its manifest: checksums without reading any file.
    Built from a manifest's head, the whole manifest is read only when checksums are needed."""

    storage: Storage
    root: Path
    manifest: Manifest | ManifestHead

    @property
    def file_count(self) -> int:
        return self.manifest.file_count

    @property
    def total_size_bytes(self) -> int:
        return self.manifest.total_size_bytes

    def full(self) -> Manifest:
        loaded = self.manifest.load()
        if loaded is None:
            raise GenerationError(f"the manifest beside {self.root} changed while it was read; rerun")
        self.manifest = loaded
        return loaded

    def checksums(self) -> dict[str, str]:
        return self.full().checksums

    def sizes(self) -> dict[str, int]:
        return {path: fingerprint[0] for path, fingerprint in self.full().fingerprints.items()}

    def read(self, path: str) -> bytes:
        return read_regular_file(self.storage, self.root, path)


SourceTree = TreeSnapshot | ManifestTree


def write_tree_patch(stream: Any, old: SourceTree, new: SourceTree, comparison: compare.TreeComparison) -> None:
    """The patch between two trees; files above the size limit are named, never read whole.
    The changed files are read in path order, each tree's through one ``FolderReader``."""
    with FolderReader(old.storage, old.root, _kept(old)) as read_old, \
            FolderReader(new.storage, new.root, _kept(new)) as read_new:
        writer.write_patch(
            stream, comparison, read_old, read_new,
            old_sizes=old.sizes(), new_sizes=new.sizes(),
            blob_id_old=lambda path: git_blob_id_file(old.storage, old.root, path),
            blob_id_new=lambda path: git_blob_id_file(new.storage, new.root, path),
        )


def _kept(tree: SourceTree) -> dict[str, bytes]:
    """The bytes a scan kept (a manifest keeps none)."""
    return tree.contents if isinstance(tree, TreeSnapshot) else {}


