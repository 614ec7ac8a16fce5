"""The coordination protocol's pure parts (the protocol itself runs against PostgreSQL in
tests/scenarios/test_several_hosts.py)."""
from __future__ import annotations

from storage_migrator.engine.coordinate import FIRST_POLL_SECONDS, POLL_SECONDS, poll_interval


def test_a_wait_polls_soon_at_first_and_every_poll_seconds_once_it_lasts() -> None:
    assert poll_interval(0.0) == FIRST_POLL_SECONDS < POLL_SECONDS
    assert poll_interval(0.2) == 0.05            # a quarter of the time waited so far
    assert poll_interval(0.8) == POLL_SECONDS
    assert poll_interval(3600.0) == POLL_SECONDS


def test_the_polls_of_a_wait_grow_with_it_so_a_long_wait_asks_the_server_rarely() -> None:
    waited, polls = 0.0, 0
    while waited < 10.0:
        waited += poll_interval(waited)
        polls += 1
    # 10 s at POLL_SECONDS alone would be 50 polls; the short first ones add 14
    assert 50 <= polls <= 65, polls
    waited, polls = 0.0, 0
    while waited < 0.3:                          # a barrier wait that ends after 0.3 s
        interval = poll_interval(waited)
        assert interval <= max(FIRST_POLL_SECONDS, waited / 4)    # seen within a quarter of the wait
        waited += interval
        polls += 1
    assert polls <= 15, polls
