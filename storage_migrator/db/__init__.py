"""The database: the tables the tool reads and writes, connections, reads, claims and
conditional writes, and the Alembic revisions the ``db`` command runs."""
