"""Everything below ROOT: the path rules, the descriptor-based access that never follows a link,
the crash-safe steps, the walk and checksums, manifests, and the legacy and ``active`` links.

No other package of the tool opens, lists, renames or removes anything below ROOT: it is handed
an opened ROOT and asks it.

* ``layout``      — where things go: names and paths, pure (no disk access).
* ``root``        — ``Root``: one descriptor for ROOT; every access resolved component by
                    component with ``O_NOFOLLOW`` from it.
* ``handle``      — ``Storage``: the opened ROOT with its layout, what the rest of the tool holds.
* ``tree``        — the walk, one streaming hash, the snapshot of a source tree.
* ``manifest``    — ``manifest.json``: written atomically, read strictly and bounded.
* ``source_tree`` — a version's tree as the patch writer sees it, and the patch between two.
* ``steps``       — crash-safe steps: atomic writes, moves across filesystems, discard to trash,
                    the state folder.
* ``recovery``    — per-project recovery of what a killed run left in the state folder.
"""
