"""``chunked``: how a run's projects are handed to its worker processes."""
from __future__ import annotations

import pytest

from storage_migrator.engine.workers import chunked


@pytest.mark.parametrize("count, workers, most", [(40, 2, 16), (1, 2, 16), (7, 4, 16), (1000, 2, 16), (300, 8, 3)])
def test_chunks_hold_every_item_once_in_order(count: int, workers: int, most: int) -> None:
    items = list(range(count))
    chunks = chunked(items, workers, most)
    assert [item for chunk in chunks for item in chunk] == items
    assert all(1 <= len(chunk) <= most for chunk in chunks)


def test_chunks_shrink_to_single_items_at_the_end() -> None:
    """40 projects on 2 workers (the application-shaped corpus): large chunks first, then one
    project at a time, so the run does not end with one worker holding several projects."""
    sizes = [len(chunk) for chunk in chunked(list(range(40)), 2, 16)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 10
    assert sizes[-2:] == [1, 1]
    assert sizes.count(1) >= 2 * 2          # the last few chunks: one item each, at least two per worker
    assert len(sizes) <= 16                 # not one chunk per project: each chunk costs a worker a start


def test_a_chunk_is_never_larger_than_most() -> None:
    sizes = [len(chunk) for chunk in chunked(list(range(1000)), 2, 16)]
    assert sizes[0] == 16
    assert sizes[-1] == 1
