"""The database URL as the application spells it: every PostgreSQL spelling it uses means psycopg 3
with every other part kept (a quoted password, query parameters); anything else is left as given,
so opening it names the problem."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage_migrator.config import normalize_database_url

APPLICATION_SPELLINGS = ["postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2", "postgresql+psycopg"]
RESTS = ["postgres@127.0.0.1:5432/postgres",
         "u:p%40ss%3Aw%2Frd%25@db.example:6432/app?sslmode=require&application_name=x%20y",
         "/app?host=/var/run/postgresql",
         "u@[::1]/db?options=-c%20lock_timeout%3D5s"]


@pytest.mark.parametrize("rest", RESTS)
@pytest.mark.parametrize("drivername", APPLICATION_SPELLINGS)
def test_every_postgresql_spelling_means_psycopg_3_and_keeps_the_rest(drivername: str, rest: str) -> None:
    given = sa.make_url(f"{drivername}://{rest}")
    normalized = sa.make_url(normalize_database_url(f"{drivername}://{rest}"))
    assert normalized.drivername == "postgresql+psycopg"
    assert normalized == given.set(drivername="postgresql+psycopg")
    assert normalized.password == given.password


@pytest.mark.parametrize("url", ["sqlite:///storage/codebegen.db", "sqlite://", "postgresql+pg8000://u:pw@127.0.0.1/x",
                                 "mysql+nodriver://x/y", "::::", "postgresql://u@127.0.0.1:notaport/db", ""])
def test_any_other_url_is_left_as_given(url: str) -> None:
    assert normalize_database_url(url) == url
