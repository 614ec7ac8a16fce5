"""The heartbeat session on a real PostgreSQL server: a session the server ended loses the lease."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage_migrator.engine.lease import HEARTBEAT_NAME, Heartbeat, LockSessionLost

pytestmark = pytest.mark.postgres


def test_a_heartbeat_whose_session_the_server_ended_loses_the_lease(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as lock_session:
            lock_pid = lock_session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            heartbeat = Heartbeat(postgres_url, lock_pid, lease=600.0)
            heartbeat.start()
            try:
                heartbeat.check()                       # alive: the lock session exists
                with engine.connect() as admin:
                    ended = admin.execute(sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name"),
                        {"name": f"{HEARTBEAT_NAME}{lock_pid}"}).scalar_one()
                assert ended == 1
                with pytest.raises(LockSessionLost, match="its heartbeat session failed"):
                    heartbeat.confirm(1, 2)
                with pytest.raises(LockSessionLost, match="its heartbeat session failed"):
                    heartbeat.check()                   # lost for good
            finally:
                heartbeat.stop()
    finally:
        engine.dispose()
