"""Patches between two versions of a generation: which files differ, the unified diff in git's
format that GNU ``patch`` and ``git apply`` accept, and reading one back for ``verify``."""
