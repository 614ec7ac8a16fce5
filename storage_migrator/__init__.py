"""storage-migrator: move every generation folder into its project's versioned layout and keep the
database and the disk in agreement while the application runs.

Packages, from the top down (an arrow only points down):

* ``cli``      — the ``storage-migrate`` Click group: options, the one error boundary, rendering.
* ``commands`` — one module per command (run and resync, verify, rollback, diff, watch, db).
* ``engine``   — the per-project loop: recover, plan (pure), execute, batch writes, workers,
                 read-ahead, the run lock, several hosts.
* ``db``       — tables, connections, reads, claims and writes, Alembic revisions.
* ``patch``    — the patch between two versions: compare, write, read back.
* ``storage``  — everything below ROOT, through one opened descriptor.
* shared modules — ``errors``, ``records``, ``report``, ``config``, ``metrics``, ``cloud``,
  ``faults`` — import nothing above them.
* ``demo``     — the sample-data generator (``demo-data``, the tests' fixtures, benchmarks).
"""
