"""``run --coordinate`` / ``resync --coordinate``: several real CLI processes (each standing in for a
host, named by STORAGE_MIGRATE_HOSTNAME) on one ROOT and one PostgreSQL database reach the end
state of a single-host run on a copy of the same installation; each generation is in exactly one
participant's report; a killed participant's projects are taken over; a participant whose lock
session is terminated makes no further disk change and exits 1; coordinated and exclusive
commands exclude each other (75); SQLite and a transaction-pooling proxy are refused (2)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.config import Settings
from storage_migrator.demo import SampleSize
from storage_migrator.engine.coordinate import BUCKETS
from storage_migrator.faults import PAUSE_AT_VARIABLE
from tests.support.sandbox import (
    Sandbox,
    build_installation,
    end_state,
    process_tree,
    query_rows,
    run_cli,
    tree_digest,
    wait_until_stopped,
)

pytestmark = pytest.mark.postgres
# a survivor stops here after finding every bucket left claimed by another participant
WAITING = "waiting-for-claims"
LEASE_VARIABLE = "STORAGE_MIGRATE_LEASE_SECONDS"
SIZE = SampleSize(projects=30, generations_per_project=3, files_per_generation=6)


def _admin(database_url: str) -> sa.Engine:
    return sa.create_engine(sa.make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT",
                            poolclass=sa.pool.NullPool)


@pytest.fixture
def copies(postgres_url: str) -> Iterator[list[str]]:
    """Databases made as copies during the test, dropped after it."""
    made: list[str] = []
    yield made
    admin = _admin(postgres_url)
    with admin.connect() as connection:
        for name in made:
            connection.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                               {"n": name})
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def copy_installation(installation: Sandbox, destination: Path, copies: list[str]) -> Sandbox:
    """The same installation byte for byte: ROOT copied with its mtimes and links, the database
    copied by PostgreSQL (CREATE DATABASE … TEMPLATE)."""
    name = f"coordinate_copy_{uuid.uuid4().hex[:10]}"
    source = sa.make_url(installation.database_url).database
    admin = _admin(installation.database_url)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    admin.dispose()
    copies.append(name)
    shutil.copytree(installation.root, destination, symlinks=True)
    url = sa.make_url(installation.database_url).set(database=name).render_as_string(hide_password=False)
    return replace(installation, settings=Settings(url, destination, installation.settings.path_prefix))


@pytest.fixture
def installation(postgres_url: str, tmp_path: Path) -> Sandbox:
    return build_installation(postgres_url, tmp_path / "projects", SIZE)


@pytest.fixture
def reference(installation: Sandbox, tmp_path: Path, copies: list[str]) -> tuple[tuple[dict, dict], dict]:
    """A single-host run on a copy: its end state and its JSON report."""
    single = copy_installation(installation, tmp_path / "single", copies)
    result = run_cli(single, "--json", "run", "--workers", "1")
    assert result.returncode == 0, result.stderr
    return end_state(single), json.loads(result.stdout)


def participant(installation: Sandbox, host: str, *arguments: str, command: str = "run",
                extra_environment: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {**installation.cli_environment(), "STORAGE_MIGRATE_HOSTNAME": host,
                   "STORAGE_MIGRATE_COORDINATE": "1", **(extra_environment or {})}
    arguments = arguments or ("--workers", "1")
    return subprocess.Popen([sys.executable, "-m", "storage_migrator", "--json", command, *arguments],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"a participant hung: {stderr}") from None
    assert "Traceback" not in stderr, stderr
    return process.returncode, stdout, stderr


def generation_ids(document: dict) -> list[str]:
    return [line["id"] for line in document["generations"]]


def wait_for_participants(installation: Sandbox, count: int, timeout: float = 60) -> None:
    """Until ``count`` sessions hold the run lock's key in shared mode (coordinated participants)."""
    engine = installation.engine()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                holders = connection.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted "
                    "AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )).scalar_one()
            if holders >= count:
                return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"fewer than {count} participants joined")


def all_ids(installation: Sandbox) -> set[str]:
    with installation.engine().connect() as connection:
        return {row[0] for row in connection.execute(sa.text("SELECT id FROM generations"))}


def test_three_participants_equal_a_single_host_run(installation: Sandbox, reference: tuple) -> None:
    (expected_state, single) = reference
    sampler = LockSampler(installation.database_url)
    processes = [participant(installation, f"host-{index}") for index in range(3)]
    with sampler:
        results = [finish(process) for process in processes]
    for returncode, _, stderr in results:
        assert returncode == 0, stderr
    documents = [json.loads(stdout) for _, stdout, _ in results]
    assert end_state(installation) == expected_state
    seen = Counter(generation_id for document in documents for generation_id in generation_ids(document))
    assert set(seen) == all_ids(installation) and set(seen.values()) == {1}, "each generation in exactly one report"
    for key in ("migrated", "skipped", "failed", "bytes"):
        assert sum(document[key] for document in documents) == single[key], key
    hosts = {document["coordination"]["host"] for document in documents}
    assert hosts == {"host-0", "host-1", "host-2"}
    assert sum(document["coordination"]["buckets_claimed"] for document in documents) == BUCKETS
    assert sum(document["coordination"]["projects"] for document in documents) == len(installation.sample.project_ids)
    # per participant: its share of the run lock, one claim, the two barrier phases
    assert sampler.most <= BUCKETS + 4 * 3, f"{sampler.most} advisory locks at once"
    assert sampler.most > 3, "the sampler saw the participants' locks"
    rerun = run_cli(installation, "--json", "run", "--coordinate")
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["migrated"] == 0, rerun.stderr


def test_workers_are_participants_and_text_names_the_share(installation: Sandbox, reference: tuple) -> None:
    (expected_state, _) = reference
    result = run_cli(installation, "run", "--coordinate", "--workers", "2",
                     extra_environment={"STORAGE_MIGRATE_HOSTNAME": "alpha"})
    assert result.returncode == 0, result.stderr
    assert "coordination: alpha pid " in result.stdout and f"{BUCKETS} buckets claimed" in result.stdout
    assert end_state(installation) == expected_state
    resync = run_cli(installation, "resync", "--workers", "2", extra_environment={"STORAGE_MIGRATE_COORDINATE": "1"})
    assert resync.returncode == 0, resync.stderr
    assert "coordination: " in resync.stdout and "migrated 0," in resync.stdout


def test_a_killed_participant_is_taken_over(installation: Sandbox, reference: tuple) -> None:
    (expected_state, _) = reference
    # The victim is stopped at a random step boundary (fixed seed) while it holds a bucket (and
    # the done markers of the buckets it finished); once the survivors have done every other
    # bucket, it is killed -9 there.
    step = random.Random(18).randint(5, 40)
    victim = participant(installation, "victim", extra_environment={PAUSE_AT_VARIABLE: str(step)})
    wait_until_stopped(victim)
    # each survivor stops once it has tried the victim's bucket and found it claimed
    survivors = [participant(installation, f"survivor-{index}", extra_environment={PAUSE_AT_VARIABLE: WAITING})
                 for index in range(2)]
    for survivor in survivors:
        wait_until_stopped(survivor)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    for survivor in survivors:
        survivor.send_signal(signal.SIGCONT)
    results = [finish(process) for process in survivors]
    for returncode, _, stderr in results:
        assert returncode == 0, stderr
    documents = [json.loads(stdout) for _, stdout, _ in results]
    assert end_state(installation) == expected_state, "no rerun needed"
    seen = Counter(generation_id for document in documents for generation_id in generation_ids(document))
    assert set(seen) == all_ids(installation) and set(seen.values()) == {1}
    assert sum(document["coordination"]["buckets_taken_over"] for document in documents) >= 1


# Every step boundary a coordinated run reaches on the sample data, two per case: the first victim
# runs alone until it stops at its step, the second (with the first's bucket held) at its own.
STEP_PAIRS = [("planned", "target-prepared"), ("rebuilt", "moved"), ("manifest-written", "patch-written"),
              ("legacy-link", "active-link"), ("before-database-write", "after-database-write")]


@pytest.mark.parametrize(("first", "second"), STEP_PAIRS)
def test_two_participants_killed_at_step_boundaries_are_taken_over(installation: Sandbox, reference: tuple,
                                                                  first: str, second: str) -> None:
    (expected_state, _) = reference
    victims = []
    for index, step in enumerate((first, second)):
        victim = participant(installation, f"victim-{index}", extra_environment={PAUSE_AT_VARIABLE: step})
        wait_until_stopped(victim)
        victims.append(victim)
    # the survivor does every other bucket, then stops having found the victims' buckets claimed
    survivor = participant(installation, "survivor", extra_environment={PAUSE_AT_VARIABLE: WAITING})
    wait_until_stopped(survivor)
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    survivor.send_signal(signal.SIGCONT)
    returncode, stdout, stderr = finish(survivor)
    assert returncode == 0, stderr
    document = json.loads(stdout)
    assert end_state(installation) == expected_state, f"killed at {first} and {second}: a rerun was needed"
    assert document["coordination"]["buckets_taken_over"] >= 2
    assert document["coordination"]["buckets_claimed"] == BUCKETS, "the victims' finished buckets are redone"
    assert document["failed"] == 0


def test_a_participant_that_loses_its_lock_session_stops(installation: Sandbox, reference: tuple,
                                                        postgres_url: str) -> None:
    (expected_state, _) = reference
    victim = participant(installation, "cutoff", extra_environment={PAUSE_AT_VARIABLE: "planned"})
    wait_until_stopped(victim)
    admin = _admin(postgres_url)
    with admin.connect() as connection:
        terminated = connection.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%host=cutoff%' AND datname = :name"
        ), {"name": sa.make_url(postgres_url).database}).scalars().all()
    admin.dispose()
    assert terminated == [True]
    others = [participant(installation, f"other-{index}") for index in range(2)]
    for returncode, _, stderr in (finish(process) for process in others):
        assert returncode == 0, stderr
    after_others = tree_digest(installation.root)
    assert end_state(installation) == expected_state
    victim.send_signal(signal.SIGCONT)
    returncode, stdout, stderr = finish(victim)
    assert returncode == 1, stderr
    document = json.loads(stdout)
    assert "lost its database session" in document["error"] and "projects given up: " in document["error"]
    given_up = document["error"].split("projects given up: ")[1].split(" — ")[0].split(", ")
    assert set(given_up) <= set(installation.sample.project_ids) and given_up
    assert tree_digest(installation.root) == after_others, "the cut-off participant changed the disk"
    assert end_state(installation) == expected_state


@dataclass(frozen=True)
class SeparateHost:
    """A network namespace joined to this one by a veth pair, and a PostgreSQL cluster of its own
    listening only on this side's address: a participant started with ``prefix`` reaches the
    database over the veth link, which ``cut`` turns into a partition (every packet dropped both
    ways, no error to either end — as a dead switch)."""

    namespace: str
    database_url: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def cut(self) -> None:
        for command in (["ip", "link", "set", f"{self.namespace}a", "down"],
                        [*self.prefix, "ip", "link", "set", f"{self.namespace}b", "down"]):
            subprocess.run(command, check=True)


def _as_root(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def separate_host() -> Iterator[SeparateHost]:
    binaries = Path("/usr/lib/postgresql") / sorted(os.listdir("/usr/lib/postgresql"))[-1] / "bin"
    if os.geteuid() != 0 or not shutil.which("ip") or not (binaries / "initdb").exists():
        pytest.skip("needs root, iproute2 and PostgreSQL's server binaries (initdb, pg_ctl)")
    namespace = f"sm{uuid.uuid4().hex[:6]}"
    subnet = f"10.{200 + random.Random().randint(0, 50)}.{random.Random().randint(1, 250)}"
    data = Path(f"/tmp/storage-migrate-cluster-{namespace}")            # readable by the postgres user
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    port = 5600 + random.Random().randint(0, 300)
    try:
        _as_root("ip", "netns", "add", namespace)
        _as_root("ip", "link", "add", f"{namespace}a", "type", "veth", "peer", "name", f"{namespace}b")
        _as_root("ip", "link", "set", f"{namespace}b", "netns", namespace)
        _as_root("ip", "addr", "add", f"{subnet}.1/30", "dev", f"{namespace}a")
        _as_root("ip", "link", "set", f"{namespace}a", "up")
        for command in (["ip", "addr", "add", f"{subnet}.2/30", "dev", f"{namespace}b"],
                        ["ip", "link", "set", f"{namespace}b", "up"], ["ip", "link", "set", "lo", "up"]):
            _as_root("ip", "netns", "exec", namespace, *command)
        _as_root("runuser", "-u", "postgres", "--", str(binaries / "initdb"), "-D", str(data / "db"), "-A", "trust",
                 "-U", "postgres", "--no-sync")
        with (data / "db" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {subnet}.0/30 trust\n")
        _as_root("runuser", "-u", "postgres", "--", str(binaries / "pg_ctl"), "-D", str(data / "db"), "-w",
                 "-l", str(data / "log"), "-o", f"-c listen_addresses={subnet}.1 -p {port} -k {data} -c fsync=off",
                 "start")
        url = f"postgresql+psycopg://postgres@{subnet}.1:{port}/postgres"
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as connection:
            connection.execute(sa.text('CREATE DATABASE "installation"'))
        admin.dispose()
        yield SeparateHost(namespace, sa.make_url(url).set(database="installation").render_as_string(False))
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(binaries / "pg_ctl"), "-D", str(data / "db"),
                        "-m", "immediate", "stop"], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{namespace}a"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_a_participant_cut_off_from_the_network_stops_and_its_projects_are_finished(
        separate_host: SeparateHost, tmp_path: Path, copies: list[str]) -> None:
    # The victim runs in a network namespace of its own, as on another host, and stops after its
    # first plan; the link is cut (no reset, no error: packets vanish). Continued, it must find
    # out by itself — its next database step times out on the dead link — make no disk change,
    # and exit 1; the server, by the keepalives the tool asked for, drops its session and its
    # locks, and a participant on this side finishes its projects.
    installation = build_installation(separate_host.database_url, tmp_path / "projects", SIZE)
    single = copy_installation(installation, tmp_path / "single", copies)
    assert run_cli(single, "run", "--workers", "1").returncode == 0
    expected_state = end_state(single)
    environment = {**installation.cli_environment(), "STORAGE_MIGRATE_HOSTNAME": "islander",
                   "STORAGE_MIGRATE_COORDINATE": "1", PAUSE_AT_VARIABLE: "planned"}
    victim = subprocess.Popen([*separate_host.prefix, sys.executable, "-m", "storage_migrator", "--json", "run",
                               "--workers", "1"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    wait_until_stopped(victim)
    separate_host.cut()
    at_the_cut = tree_digest(installation.root)
    cut_at = time.monotonic()
    for pid in process_tree(victim.pid):
        os.kill(pid, signal.SIGCONT)
    returncode, stdout, stderr = finish(victim, timeout=120)
    noticed_after = time.monotonic() - cut_at
    assert returncode == 1, stderr
    document = json.loads(stdout)
    assert "lost its database session" in document["error"] and "projects given up: " in document["error"]
    assert noticed_after < 60, f"the partition took {noticed_after:.0f} s to notice"
    assert tree_digest(installation.root) == at_the_cut, "the cut-off participant changed the disk"
    dropped_after = _seconds_until_no_session_of(installation, "host=islander") + noticed_after
    print(f"partition noticed by the participant after {noticed_after:.1f} s, by the server after {dropped_after:.1f} s")
    assert dropped_after < 60, "the server kept the dead session"
    other = participant(installation, "mainland")
    returncode, stdout, stderr = finish(other, timeout=120)
    assert returncode == 0, stderr
    assert json.loads(stdout)["coordination"]["buckets_claimed"] == BUCKETS
    assert end_state(installation) == expected_state


def _seconds_until_no_session_of(installation: Sandbox, marker: str, timeout: float = 90) -> float:
    """How long until the server has dropped every session whose application_name has ``marker``
    (and with it their advisory locks): its own keepalives must notice the dead peer."""
    engine = sa.create_engine(installation.database_url, poolclass=sa.pool.NullPool)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            with engine.connect() as connection:
                left = connection.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                                  ":m"), {"m": f"%{marker}%"}).scalar_one()
            if not left:
                return time.monotonic() - started
            time.sleep(0.2)
    finally:
        engine.dispose()
    return timeout


@pytest.mark.parametrize("other", ["rollback", "run"])
def test_coordinated_and_exclusive_exclude_each_other(installation: Sandbox, other: str) -> None:
    # A coordinated participant holds its share: the exclusive command exits 75 naming it.
    paused = participant(installation, "sharer", extra_environment={PAUSE_AT_VARIABLE: "planned"})
    wait_until_stopped(paused)
    try:
        blocked = run_cli(installation, other)
        assert blocked.returncode == 75, blocked.stderr
        assert "coordinated" in blocked.stderr and "host=sharer" in blocked.stderr
    finally:
        paused.send_signal(signal.SIGCONT)
    assert finish(paused)[0] == 0
    # The exclusive command holds the lock: a coordinated participant exits 75 naming it.
    if other == "rollback":
        holder = subprocess.Popen([sys.executable, "-m", "storage_migrator", "rollback"],
                                  env={**installation.cli_environment(), PAUSE_AT_VARIABLE: "legacy-link-removed"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    else:
        run_cli(installation, "rollback")
        holder = subprocess.Popen([sys.executable, "-m", "storage_migrator", "run", "--workers", "1"],
                                  env={**installation.cli_environment(), PAUSE_AT_VARIABLE: "planned"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_stopped(holder)
    try:
        blocked = run_cli(installation, "run", "--coordinate", extra_environment={"STORAGE_MIGRATE_HOSTNAME": "late"})
        assert blocked.returncode == 75, blocked.stderr
        assert f"storage-migrate {other}" in blocked.stderr and "Traceback" not in blocked.stderr
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.communicate(timeout=300)
    assert holder.returncode == 0


def test_sqlite_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "codebegen.db"
    installation = build_installation(f"sqlite:///{database}", tmp_path / "projects",
                                      SampleSize(projects=5, generations_per_project=2, files_per_generation=4))
    before = tree_digest(installation.root)
    for command in ("run", "resync"):
        result = run_cli(installation, command, "--coordinate")
        assert result.returncode == 2, result.stderr
        assert "needs PostgreSQL" in result.stderr and "Traceback" not in result.stderr
    assert tree_digest(installation.root) == before
    missing = run_cli(replace(installation, settings=replace(installation.settings,
                                                             database_url=f"sqlite:///{tmp_path / 'none.db'}")),
                      "run", "--coordinate")
    assert missing.returncode == 2 and not (tmp_path / "none.db").exists()


def test_a_transaction_pooling_proxy_is_refused(installation: Sandbox, tmp_path: Path) -> None:
    pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(pgbouncer):
        if os.environ.get("CI") or os.environ.get("STORAGE_MIGRATOR_REQUIRE_PG") == "1":
            pytest.fail("pgbouncer is not installed: .ci/run installs Debian's pgbouncer")
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    url = sa.make_url(installation.database_url)
    port = 6400 + random.Random().randint(0, 500)
    folder = Path(f"/tmp/storage-migrate-pgbouncer-{uuid.uuid4().hex[:8]}")     # readable by the proxy's user
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    config = folder / "pgbouncer.ini"
    (folder / "users.txt").write_text('"postgres" ""\n')
    config.write_text(
        f"[databases]\n{url.database} = host={url.host} port={url.port or 5432} dbname={url.database}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\npool_mode = transaction\ndefault_pool_size = 3\n"
        f"min_pool_size = 3\nserver_round_robin = 1\nunix_socket_dir =\nlogfile = {folder / 'pgb.log'}\n"
        f"pidfile = {folder / 'pgb.pid'}\nignore_startup_parameters = options,application_name\n")
    proxy = subprocess.Popen([pgbouncer, "-u", "postgres", str(config)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        proxied = url.set(port=port).render_as_string(hide_password=False)
        deadline = time.monotonic() + 20
        while True:
            try:
                probe = sa.create_engine(proxied, poolclass=sa.pool.NullPool)
                with probe.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
                probe.dispose()
                break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        held = [sa.create_engine(proxied, poolclass=sa.pool.NullPool) for _ in range(3)]
        busy = [engine.connect() for engine in held]      # three transactions at once: three server sessions
        for connection in busy:
            connection.execute(sa.text("SELECT 1"))
        for connection, engine in zip(busy, held, strict=True):
            connection.close()
            engine.dispose()
        before = tree_digest(installation.root)
        result = run_cli(replace(installation, settings=replace(installation.settings, database_url=proxied)),
                         "run", "--coordinate")
        assert result.returncode == 2, result.stderr
        assert "pg_backend_pid() changed" in result.stderr and "pooling proxy" in result.stderr
        assert tree_digest(installation.root) == before
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


class LockSampler:
    """Counts the database's advisory locks every few milliseconds in a thread; ``most`` is the peak."""

    def __init__(self, database_url: str) -> None:
        self.engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        self.most = 0
        self._stop = False

    def __enter__(self) -> LockSampler:
        import threading

        def sample() -> None:
            with self.engine.connect() as connection:
                while not self._stop:
                    count = connection.execute(sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar_one()
                    connection.commit()
                    self.most = max(self.most, count)
                    time.sleep(0.01)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self.engine.dispose()



def test_the_orphan_scan_runs_once_and_the_host_name_is_the_systems(installation: Sandbox) -> None:
    assert run_cli(installation, "run").returncode == 0
    orphan = installation.root / "00000000-0000-4000-8000-00000000dead"
    orphan.mkdir()
    (orphan / "main.py").write_text("print('nobody owns me')\n")
    environment = {key: value for key, value in installation.cli_environment().items()
                   if key != "STORAGE_MIGRATE_HOSTNAME"}
    # A holder, paused with a bucket (a lease far longer than the test), keeps the run open until
    # every participant has joined it: one that started after the others had finished and left
    # would be a run of its own, with an orphan scan of its own.
    holder = participant(installation, "holder", command="resync",
                         extra_environment={PAUSE_AT_VARIABLE: "planned", LEASE_VARIABLE: "600"})
    try:
        wait_until_stopped(holder)
        # One participant is a "host" of its own: a UTS namespace with its own host name.
        uts = subprocess.Popen(["unshare", "--uts", "sh", "-c",
                                f'hostname uts-host && exec "{sys.executable}" -m storage_migrator --json resync '
                                "--coordinate --workers 1"], env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        others = [participant(installation, f"scan-{index}", command="resync") for index in range(2)]
        wait_for_participants(installation, 4)
        holder.send_signal(signal.SIGCONT)
        results = [finish(process) for process in (uts, *others, holder)]
    finally:
        _stop(holder)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr
    documents = [json.loads(stdout) for _, stdout, _ in results]
    assert documents[0]["coordination"]["host"] == "uts-host"
    assert sorted(len(document["orphans"]) for document in documents) == [0, 0, 0, 1]
    assert any(str(orphan) in document["orphans"] for document in documents)
    assert orphan.is_dir(), "reported, never deleted"


def test_the_database_lock_for_db_commands_excludes_coordinated_runs(installation: Sandbox) -> None:
    from storage_migrator.db.connect import create_database_engine
    from storage_migrator.engine.lock import DatabaseLock
    from storage_migrator.errors import LockHeld

    engine = create_database_engine(installation.database_url, command="storage-migrate db")
    with DatabaseLock(engine, "storage-migrate db upgrade"):
        blocked = run_cli(installation, "run", "--coordinate")
    assert blocked.returncode == 75 and "storage-migrate db" in blocked.stderr, blocked.stderr
    paused = participant(installation, "sharer", extra_environment={PAUSE_AT_VARIABLE: "planned"})
    wait_until_stopped(paused)
    try:
        with pytest.raises(LockHeld, match="coordinated run"), DatabaseLock(engine, "storage-migrate db upgrade"):
            pass
    finally:
        paused.send_signal(signal.SIGCONT)
        engine.dispose()
    assert finish(paused)[0] == 0



def _stop(process: subprocess.Popen[str]) -> None:
    """A paused participant a failed test leaves behind is killed, never left stopped."""
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_a_participant_that_lost_its_claim_after_a_move_writes_nothing(installation: Sandbox,
                                                                        postgres_url: str) -> None:
    # A stops right after its first claim batch of moves is published (the rows and the flat links
    # name the new places) and its lock session is terminated; the application edits a file of that generation
    # through its flat path; B finishes everything (its manifest holds the edit). Continued, A
    # holds a scan from before the edit: it must write nothing — no stale manifest — and exit 1.
    stale = participant(installation, "stale", extra_environment={PAUSE_AT_VARIABLE: "published"})
    try:
        wait_until_stopped(stale)
        moved = [row[0] for row in query_rows(
            installation, "SELECT id FROM generations WHERE storage_path LIKE '%/generations/%'")]
        assert moved, "the first claim batch is published"
        admin = _admin(postgres_url)
        with admin.connect() as connection:
            terminated = connection.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%host=stale%' AND datname = :name"
            ), {"name": sa.make_url(postgres_url).database}).scalars().all()
        admin.dispose()
        assert terminated == [True]
        flat = installation.root / moved[0]
        edited = sorted(path for path in flat.resolve().rglob("*") if path.is_file())[0]
        (flat / edited.relative_to(flat.resolve())).write_bytes(edited.read_bytes() + b"# edited by the application\n")
        returncode, _, stderr = finish(participant(installation, "finisher"))
        assert returncode == 0, stderr
        before = tree_digest(installation.root)
        stale.send_signal(signal.SIGCONT)
        returncode, stdout, stderr = finish(stale)
    finally:
        _stop(stale)
    assert returncode == 1, stderr
    assert "lost its database session" in json.loads(stdout)["error"]
    assert tree_digest(installation.root) == before, "the fenced-off participant changed the disk"


@pytest.mark.parametrize("step", ["moved", "target-prepared"])
def test_a_paused_participant_is_ended_after_its_lease_and_its_projects_taken_over(
        installation: Sandbox, reference: tuple, step: str) -> None:
    # A stops (SIGSTOP, as `docker pause`) with its session alive — after a move, or inside the
    # row claim just before one: the kernel still answers the keepalives, only its heartbeat
    # stops. B ends it once its heartbeat is older than the lease and takes its bucket over; A,
    # continued, writes nothing (not even the move it was about to make) and exits 1.
    (expected_state, _) = reference
    lease = 8               # headroom: a healthy participant starved for a whole lease stops itself
    frozen = participant(installation, "frozen", extra_environment={PAUSE_AT_VARIABLE: step,
                                                                    LEASE_VARIABLE: str(lease)})
    try:
        wait_until_stopped(frozen)
        started = time.monotonic()
        returncode, stdout, stderr = finish(participant(installation, "thawed",
                                                        extra_environment={LEASE_VARIABLE: str(lease)}),
                                            timeout=lease + 30)
        took = time.monotonic() - started
        assert returncode == 0, stderr
        print(f"the paused participant's work finished by the other after {took:.1f} s (lease {lease} s)")
        assert "host=frozen" in stderr and "heartbeat" in stderr, stderr
        assert json.loads(stdout)["coordination"]["buckets_taken_over"] >= 1
        assert end_state(installation) == expected_state
        after = tree_digest(installation.root)
        frozen.send_signal(signal.SIGCONT)
        returncode, stdout, stderr = finish(frozen, timeout=60)
    finally:
        _stop(frozen)
    assert returncode == 1, stderr
    assert "lost its database session" in json.loads(stdout)["error"]
    assert tree_digest(installation.root) == after, "the ended participant changed the disk"
    assert end_state(installation) == expected_state


def test_a_waiting_participant_says_what_it_waits_for(installation: Sandbox) -> None:
    # A holds a bucket, paused, with a lease far longer than the test: B waits for it and says so
    # on stderr — which bucket, held by whom — until A is killed; then B takes it over.
    held = participant(installation, "holder", extra_environment={PAUSE_AT_VARIABLE: "planned",
                                                                  LEASE_VARIABLE: "600"})
    wait_until_stopped(held)
    waiter = participant(installation, "waiter", extra_environment={LEASE_VARIABLE: "600"})
    try:
        assert waiter.stderr is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(waiter.stderr.readline, "")), daemon=True)
        reader.start()          # stderr read as it comes; ``finish`` then finds it drained
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("--coordinate: waiting" in line for line in lines):
            time.sleep(0.2)
        notice = next((line for line in lines if "--coordinate: waiting" in line), None)
        assert notice is not None, lines
        assert "bucket" in notice and "host=holder" in notice, notice
        held.kill()
        held.communicate()
        returncode, _, _ = finish(waiter)
        reader.join(timeout=10)
        assert returncode == 0, "".join(lines)
    finally:
        _stop(held)
        _stop(waiter)
