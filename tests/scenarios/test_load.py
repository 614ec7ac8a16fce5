"""The tool beside the application under load: three application processes (tests/support/appsim.py)
create, save, activate, edit, read, delete and archive generations the way the application's code
does, while `run --workers 12`, then `watch --debounce 0.5` and a cron-like `resync` every 10-20 s
(every other one with `--workers 12`) work on the same database and storage. Twelve workers for
six projects: each project is one worker's, with a second process reading its next folder ahead
(`scan_ahead`) while the application writes there. A trigger logs every change of `latest_version` and
`active_generation_id` (with the writer's application_name on PostgreSQL) into a side table.

Afterwards nothing the application deleted or archived may have come back, `latest_version` must
never have gone down, the application's last activation per project must still hold, every read
the application made must have seen complete files (a flat-path read never finds `<ROOT>/<id>`
missing during a move, counted apart), no deleted generation keeps a dangling `<ROOT>/<id>` link,
`verify` is clean and a second resync is a no-op. All counts are collected and printed before anything is asserted.

Duration: STORAGE_MIGRATOR_LOAD_SECONDS (default 30: with seed 1 that has every kind of
application operation, at least one cron resync and watch reports, which the test asserts, so a
shorter load can never silently test less), seed: STORAGE_MIGRATOR_LOAD_SEED (default 1).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage_migrator.demo import SampleSize
from tests.support.sandbox import Sandbox, build_installation, run_cli

pytestmark = pytest.mark.slow

LOAD_SECONDS = float(os.environ.get("STORAGE_MIGRATOR_LOAD_SECONDS", "30"))
LOAD_SEED = int(os.environ.get("STORAGE_MIGRATOR_LOAD_SEED", "1"))
APPLICATIONS = 3
SIZE = SampleSize(projects=6, generations_per_project=4, files_per_generation=8)
APPSIM = Path(__file__).parents[1] / "support" / "appsim.py"
LOG_TABLE = "load_test_change_log"
APPLICATION_OPERATIONS = ("number", "saved", "activated", "edited", "read_ok", "deleted", "archived")
"""Every kind of operation the application simulator does (create = number, save, activate, edit,
read, delete, archive): the load must have done each at least once."""

POSTGRES_TRIGGER = [
    f"CREATE TABLE {LOG_TABLE} (seq BIGSERIAL PRIMARY KEY, project_id VARCHAR(36), column_name TEXT, "
    "old_value TEXT, new_value TEXT, writer TEXT, at DOUBLE PRECISION)",
    f"""CREATE FUNCTION {LOG_TABLE}_fn() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.latest_version IS DISTINCT FROM OLD.latest_version THEN
            INSERT INTO {LOG_TABLE} (project_id, column_name, old_value, new_value, writer, at)
            VALUES (NEW.id, 'latest_version', OLD.latest_version::text, NEW.latest_version::text,
                    current_setting('application_name'), extract(epoch from clock_timestamp()));
        END IF;
        IF NEW.active_generation_id IS DISTINCT FROM OLD.active_generation_id THEN
            INSERT INTO {LOG_TABLE} (project_id, column_name, old_value, new_value, writer, at)
            VALUES (NEW.id, 'active_generation_id', OLD.active_generation_id, NEW.active_generation_id,
                    current_setting('application_name'), extract(epoch from clock_timestamp()));
        END IF;
        RETURN NEW;
    END $$""",
    f"CREATE TRIGGER {LOG_TABLE}_trigger AFTER UPDATE ON projects FOR EACH ROW EXECUTE FUNCTION {LOG_TABLE}_fn()",
]
SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
SQLITE_TRIGGER = [
    f"CREATE TABLE {LOG_TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT, column_name TEXT, "
    "old_value TEXT, new_value TEXT, writer TEXT, at REAL)",
    f"""CREATE TRIGGER {LOG_TABLE}_latest AFTER UPDATE OF latest_version ON projects
    WHEN NEW.latest_version IS NOT OLD.latest_version BEGIN
        INSERT INTO {LOG_TABLE} (project_id, column_name, old_value, new_value, writer, at)
        VALUES (NEW.id, 'latest_version', OLD.latest_version, NEW.latest_version, NULL, {SQLITE_NOW});
    END""",
    f"""CREATE TRIGGER {LOG_TABLE}_active AFTER UPDATE OF active_generation_id ON projects
    WHEN NEW.active_generation_id IS NOT OLD.active_generation_id BEGIN
        INSERT INTO {LOG_TABLE} (project_id, column_name, old_value, new_value, writer, at)
        VALUES (NEW.id, 'active_generation_id', OLD.active_generation_id, NEW.active_generation_id, NULL, {SQLITE_NOW});
    END""",
]


def json_documents(text: str) -> list[dict]:
    """The JSON documents a command printed one after another (watch prints one per report)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return documents
        try:
            document, position = decoder.raw_decode(text, position)
        except ValueError:
            next_line = text.find("\n", position)
            if next_line < 0:
                return documents
            position = next_line + 1
            continue
        if isinstance(document, dict):
            documents.append(document)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Tool:
    """The tool's processes during the load, and everything they printed."""

    def __init__(self, installation: Sandbox, rng: random.Random, deadline: float) -> None:
        self.installation = installation
        self.rng = rng
        self.deadline = deadline
        self.environment = installation.cli_environment()
        self.reports: list[tuple[str, int, dict, float]] = []     # (which, exit code, document, when it ended)
        self.outputs: list[tuple[str, int, str, str]] = []  # (which, exit code, stdout, stderr)
        self.cron_exit_codes: list[int] = []
        self.cron_busy = 0
        self.watch: subprocess.Popen[str] | None = None
        self.watch_rss: list[int] = []
        self.stop = threading.Event()

    def command(self, which: str, *arguments: str, timeout: float = 600) -> int:
        result = run_cli(self.installation, "--json", *arguments, timeout=timeout)
        self.outputs.append((which, result.returncode, result.stdout, result.stderr))
        for document in json_documents(result.stdout):
            self.reports.append((which, result.returncode, document, time.time()))
        return result.returncode

    def start_watch(self) -> None:
        self.watch = subprocess.Popen(
            [sys.executable, "-m", "storage_migrator", "--json", "watch", "--debounce", "0.5"],
            env=self.environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop_watch(self) -> None:
        assert self.watch is not None
        self.watch.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = self.watch.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.watch.kill()
            stdout, stderr = self.watch.communicate()
        self.outputs.append(("watch", self.watch.returncode, stdout, stderr))
        for document in json_documents(stdout):
            self.reports.append(("watch", self.watch.returncode, document, time.time()))

    def cron(self) -> None:
        """A resync every 10-20 s; a busy lock (watch is resyncing) is retried like the next tick."""
        while not self.stop.wait(self.rng.uniform(10, 20)):
            if time.time() > self.deadline:
                return
            workers = ("--workers", "12") if len(self.cron_exit_codes) % 2 else ()
            for _ in range(40):
                code = self.command("cron-resync", "resync", *workers)
                if code != 75:
                    break
                self.cron_busy += 1
                time.sleep(0.5)
            self.cron_exit_codes.append(code)

    def sample_memory(self) -> None:
        while not self.stop.wait(2):
            if self.watch is not None and self.watch.poll() is None:
                value = rss_kib(self.watch.pid)
                if value:
                    self.watch_rss.append(value)


class LatestVersionSampler:
    """projects.latest_version read every ~100 ms from the test process."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.last: dict[str, int] = {}
        self.decreases: list[tuple[str, int, int]] = []
        self.samples = 0

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                with self.engine.connect() as connection:
                    values = connection.execute(sa.text("SELECT id, latest_version FROM projects")).all()
            except sa.exc.OperationalError:
                continue
            self.samples += 1
            for project_id, value in values:
                before = self.last.get(project_id)
                if before is not None and value < before:
                    self.decreases.append((project_id, before, value))
                self.last[project_id] = value


def read_app_logs(log_dir: Path) -> list[dict]:
    events = []
    for path in sorted(log_dir.glob("app-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return sorted(events, key=lambda event: event["t"])


def legacy_baseline(root: Path) -> dict[str, list[str]]:
    baseline = {}
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            baseline[entry.name] = sorted(str(path.relative_to(entry)) for path in entry.rglob("*") if path.is_file())
    return baseline


def test_the_tool_beside_the_application_under_load(database_url: str, tmp_path: Path) -> None:
    installation = build_installation(database_url, tmp_path / "projects", SIZE, seed=LOAD_SEED)
    root = installation.root
    engine = installation.engine()
    is_postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        for statement in POSTGRES_TRIGGER if is_postgres else SQLITE_TRIGGER:
            connection.execute(sa.text(statement))

    (tmp_path / "applocks").mkdir()
    (tmp_path / "logs").mkdir()
    start = time.time()
    deadline = start + LOAD_SECONDS
    config = {"database_url": database_url, "root": str(root), "lock_dir": str(tmp_path / "applocks"),
              "log_dir": str(tmp_path / "logs"), "deadline": deadline, "seed": LOAD_SEED,
              "baseline": legacy_baseline(root)}
    config_path = tmp_path / "appsim.json"
    config_path.write_text(json.dumps(config))

    rng = random.Random(LOAD_SEED)
    tool = Tool(installation, rng, deadline)
    sampler = LatestVersionSampler(engine)
    threads = [threading.Thread(target=sampler.run, daemon=True), threading.Thread(target=tool.sample_memory, daemon=True)]
    for thread in threads:
        thread.start()
    applications = [
        subprocess.Popen([sys.executable, str(APPSIM), str(config_path), str(index)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for index in range(APPLICATIONS)
    ]
    run_code = tool.command("run", "run", "--workers", "12")
    tool.start_watch()
    cron = threading.Thread(target=tool.cron, daemon=True)
    cron.start()

    application_outputs = [process.communicate(timeout=LOAD_SECONDS + 300) for process in applications]
    tool.stop.set()
    cron.join(timeout=600)
    tool.stop_watch()
    sampler.stop.set()
    for thread in threads:
        thread.join(timeout=10)

    final_resync_code = tool.command("final-resync", "resync")
    verify = run_cli(installation, "--json", "verify")
    second = run_cli(installation, "--json", "resync")
    second_documents = json_documents(second.stdout)
    second_document = second_documents[0] if second_documents else {}

    # ------------------------------------------------------------------ what happened
    events = read_app_logs(tmp_path / "logs")
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_kind[event["event"]].append(event)
    deleted = {event["generation_id"]: event for event in by_kind["deleted"]}
    archived = {event["generation_id"]: event for event in by_kind["archived"]}
    with engine.connect() as connection:
        generation_rows = {row.id: row for row in connection.execute(sa.text(
            "SELECT id, project_id, version, status, storage_path, is_active FROM generations"))}
        project_rows = {row.id: row for row in connection.execute(sa.text(
            "SELECT id, latest_version, active_generation_id FROM projects"))}
        change_log = connection.execute(sa.text(
            f"SELECT project_id, column_name, old_value, new_value, writer, at FROM {LOG_TABLE} ORDER BY seq")).all()
    engine.dispose()

    # Nothing deleted came back.
    deleted_row_back = [gid for gid in deleted if gid in generation_rows]
    deleted_folder_back, deleted_flat_rebuilt, dangling_links = [], [], []
    for gid, event in deleted.items():
        generations_dir = root / event["project_id"] / "generations"
        archived_after = gid in archived and archived[gid]["t"] > event["t"]   # a folder came back, then was archived
        if archived_after or (generations_dir.is_dir()
                              and any(entry.name.endswith(f"__{gid}") for entry in generations_dir.iterdir())):
            deleted_folder_back.append(gid)
        flat, left = root / gid, event["flat"]
        if flat.is_symlink():
            if flat.exists():
                deleted_flat_rebuilt.append(gid)      # a link to a folder that should be gone
            else:
                dangling_links.append(gid)            # SQLite race: deleted while the tool moved it
        elif flat.is_dir():
            now = sorted(str(path.relative_to(flat)) for path in flat.rglob("*"))
            if not (left and "dir" in left and set(now) <= set(left["dir"])):
                deleted_flat_rebuilt.append(gid)      # not the scratch copy the application left
    # Nothing archived was rebuilt (and the archive is still there).
    archived_rebuilt, archive_lost = [], []
    for gid, event in archived.items():
        generations_dir = root / event["project_id"] / "generations"
        if generations_dir.is_dir() and any(entry.name.endswith(f"__{gid}") for entry in generations_dir.iterdir()):
            archived_rebuilt.append(gid)
        if gid not in deleted and not (root / event["project_id"] / "archive" / event["folder"] / "source").is_dir():
            archive_lost.append(gid)

    # latest_version never went down; the application's active choice never reverted by the tool.
    numbers = by_kind["number"]
    activations = by_kind["activated"]

    def written_by_application(change: sa.Row) -> bool:
        if is_postgres:
            return (change.writer or "").startswith("appsim-")
        at = float(change.at)
        if change.column_name == "latest_version":
            return any(event["project_id"] == change.project_id and str(event["version"]) == str(change.new_value)
                       and event["started"] - 1 <= at <= event["committed"] + 1 for event in numbers)
        return any(event["project_id"] == change.project_id and event["generation_id"] == change.new_value
                   and event["t"] - 5 <= at <= event["t"] + 1 for event in activations)

    tool_decreases, app_decreases = [], []
    chosen_by_app: dict[str, set[str]] = defaultdict(set)
    for event in activations:
        chosen_by_app[event["project_id"]].add(event["generation_id"])
    tool_active_changes = []
    for change in change_log:
        if change.column_name == "latest_version":
            if change.old_value is not None and change.new_value is not None and int(change.new_value) < int(change.old_value):
                (app_decreases if written_by_application(change) else tool_decreases).append(tuple(change))
        elif change.old_value in chosen_by_app[change.project_id] and not written_by_application(change):
            tool_active_changes.append(tuple(change))

    # The application's last activation per project still holds, is_active consistent.
    last_activation = {}
    for event in activations:
        last_activation[event["project_id"]] = event["generation_id"]
    activation_lost = [(p, gid, project_rows[p].active_generation_id) for p, gid in last_activation.items()
                       if p in project_rows and project_rows[p].active_generation_id != gid]
    is_active_inconsistent = []
    for project_id, project in project_rows.items():
        flagged = {gid for gid, row in generation_rows.items() if row.project_id == project_id and row.is_active}
        wanted = {project.active_generation_id} if project.active_generation_id else set()
        if flagged != wanted:
            is_active_inconsistent.append((project_id, sorted(flagged), project.active_generation_id))

    # Numbers the application handed out are kept; no duplicate versions remain among live folders.
    numbers_changed = [(event["generation_id"], event["version"], generation_rows[event["generation_id"]].version)
                       for event in numbers if event["generation_id"] in generation_rows
                       and generation_rows[event["generation_id"]].version != event["version"]]
    # A duplicate the application archived (its folder is in archive/, which is the application's)
    # keeps its number: renumbering renames folders in generations/ only (documented; verify
    # accepts it). One with nothing on disk has its row renumbered; only live folders count here.
    versions = Counter((row.project_id, row.version) for gid, row in generation_rows.items()
                       if row.status in ("completed", "failed")
                       and (root / row.project_id / "generations" / f"v{row.version}__{gid}").is_dir())
    duplicate_versions = [key for key, count in versions.items() if count > 1]

    # Reads saw complete files; edits through the tool's link were not lost; no application error.
    incomplete_reads = [event for event in by_kind["read_incomplete"]
                        if not (event["storage_path_changed"] and event["retry_missing_count"] == 0)]
    flat_path_missing = [event for event in by_kind["read_incomplete"]       # SQLite race: read during a move
                         if event["way"] == "flat" and "does not exist" in event["detail"]]
    edits_lost = []
    for event in by_kind["edited"]:
        row = generation_rows.get(event["generation_id"])
        if not event["through_link"] or row is None or event["generation_id"] in archived:
            continue
        target = root / event["generation_id"] / event["path"]
        try:
            if event["marker"] not in target.read_text("utf-8"):
                edits_lost.append(event["generation_id"])
        except (OSError, UnicodeDecodeError):
            edits_lost.append(event["generation_id"])
    application_errors = by_kind["app_error"]

    # The tool's reports: no routine delete or archive reported as a failure. A failure reported
    # before the application deleted or archived the generation had another cause (an edit of its
    # diff base while its patch was made, say: "the next resync redoes it"): it is not one.
    gone_at: dict[str, float] = {}          # generation id -> when the application first deleted or archived it
    for event in [*by_kind["deleted"], *by_kind["archived"]]:
        gone_at[event["generation_id"]] = min(event["t"], gone_at.get(event["generation_id"], event["t"]))
    failed_gone, failed_any = [], []
    for which, _, document, ended in tool.reports:
        for generation in document.get("generations", []):
            if generation.get("action") == "failed":
                failed_any.append((which, generation["id"], generation.get("error")))
                if generation["id"] in gone_at and gone_at[generation["id"]] <= ended:
                    failed_gone.append((which, generation["id"], generation.get("error")))
    backup_advice = [item for item in failed_any if "backup" in (item[2] or "")]
    cron_failed = [code for code in tool.cron_exit_codes if code != 0]
    verify_documents = json_documents(verify.stdout)
    problems = verify_documents[0].get("problems", []) if verify_documents else [{"detail": verify.stderr[-500:]}]
    second_not_noop = (second_document.get("migrated", -1), second_document.get("failed", -1))

    counts = {
        "deleted rows that came back": len(deleted_row_back),
        "deleted v*__<id> folders that came back": len(deleted_folder_back),
        "deleted flat folders rebuilt": len(deleted_flat_rebuilt),
        "archived generations rebuilt in generations/": len(archived_rebuilt),
        "archived folders lost": len(archive_lost),
        "latest_version decreases by the tool (trigger)": len(tool_decreases),
        "active choices of the application changed by the tool (trigger)": len(tool_active_changes),
        "last activations not in place": len(activation_lost),
        "projects with inconsistent is_active": len(is_active_inconsistent),
        "application numbers renumbered (collisions)": len(numbers_changed),
        "duplicate versions left": len(duplicate_versions),
        "incomplete reads": len(incomplete_reads),
        "flat-path reads that found <ROOT>/<id> missing": len(flat_path_missing),
        "dangling <ROOT>/<id> links of deleted generations": len(dangling_links),
        "edits through the link lost": len(edits_lost),
        "application errors": len(application_errors),
        "verify exit code": verify.returncode,
        "verify problems": len(problems),
        "second resync (migrated, failed), want (0, 0)": second_not_noop,
        "failed report lines for deleted/archived ids": len(failed_gone),
        "cron resyncs exiting non-zero": len(cron_failed),
    }
    information = {
        "seconds": LOAD_SECONDS, "seed": LOAD_SEED, "database": engine.dialect.name,
        "application events": dict(Counter(event["event"] for event in events)),
        "application errors by op": dict(Counter(event.get("op") for event in application_errors)),
        "application errors that a retry cleared (a delete that read its row just before a move "
        "was published)": len(by_kind["app_error_transient"]),
        "all incomplete reads (incl. after a rename)": len(by_kind["read_incomplete"]),
        "incomplete reads by way": dict(Counter(event["way"] for event in incomplete_reads)),
        "latest_version decreases by the application's own stale write": len(app_decreases),
        "latest_version decreases seen by the 100 ms sampler": len(sampler.decreases),
        "sampler rounds": sampler.samples,
        "run exit code": run_code, "final resync exit code": final_resync_code,
        "cron resync exit codes": tool.cron_exit_codes, "cron resyncs retried on a busy lock": tool.cron_busy,
        "failed report lines (any)": len(failed_any), "failures advising a backup": len(backup_advice),
        "watch exit code": tool.watch.returncode if tool.watch else None,
        "watch RSS KiB first/max/last": (tool.watch_rss[:1], max(tool.watch_rss, default=None), tool.watch_rss[-1:]),
    }
    print("\nconcurrent load — violations:\n" + "\n".join(f"  {key}: {value}" for key, value in counts.items()))
    print("concurrent load — information:\n" + "\n".join(f"  {key}: {value}" for key, value in information.items()))
    details = {
        "deleted_row_back": deleted_row_back, "deleted_folder_back": deleted_folder_back,
        "deleted_flat_rebuilt": deleted_flat_rebuilt, "archived_rebuilt": archived_rebuilt,
        "archive_lost": archive_lost, "tool_decreases": tool_decreases[:10], "app_decreases": app_decreases[:10],
        "tool_active_changes": tool_active_changes[:10], "activation_lost": activation_lost,
        "is_active_inconsistent": is_active_inconsistent, "numbers_changed": numbers_changed[:10],
        "duplicate_versions": duplicate_versions[:10], "incomplete_reads": incomplete_reads[:10],
        "flat_path_missing": flat_path_missing[:10], "dangling_links": dangling_links[:10],
        "edits_lost": edits_lost[:10], "application_errors": [
            {key: value for key, value in event.items() if key != "traceback"} for event in application_errors[:10]],
        "verify_problems": problems[:15], "failed_gone": failed_gone[:10], "failed_any": failed_any[:10],
        "second_resync": {key: second_document.get(key) for key in ("migrated", "failed", "generations")},
        "cron_failed_stderr": [output[3][-800:] for output in tool.outputs if output[0] == "cron-resync" and output[1] not in (0, 75)][:3],
        "application_stderr": [stderr[-1500:] for _, stderr in application_outputs if stderr.strip()],
    }
    (tmp_path / "load-details.json").write_text(json.dumps(details, indent=2, default=str))
    print(f"details: {tmp_path / 'load-details.json'}")
    print(json.dumps(details, indent=2, default=str)[:12000])

    assert [process.returncode for process in applications] == [0] * APPLICATIONS, details["application_stderr"]
    too_little = [kind for kind in APPLICATION_OPERATIONS if not by_kind[kind]]
    assert not too_little, f"the load did too little to test {too_little}: {information['application events']}"
    assert tool.cron_exit_codes, "no cron resync ran during the load (raise STORAGE_MIGRATOR_LOAD_SECONDS)"
    assert any(which == "watch" for which, _, _, _ in tool.reports), "watch reported nothing during the load"
    expected = {key: 0 for key in counts}
    expected["second resync (migrated, failed), want (0, 0)"] = (0, 0)
    assert counts == expected, "violations: " + ", ".join(
        f"{key}={value}" for key, value in counts.items() if value != expected[key])
