"""``run``, ``--dry-run`` and ``resync`` as library calls: stream the projects, plan each, and
either report the plan or hand it to the executor under the run lock.

``resync`` is ``run`` plus two checks: a stat fingerprint per file (so edited generations are
re-read and unchanged ones are not) and a report of folders on disk that no row owns.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat

import sqlalchemy as sa

from .config import Settings
from .db import (
    check_at_head,
    create_database_engine,
    first_line,
    generations,
    iter_project_ids,
    existing_generation_ids,
    iter_project_records,
    load_output_files,
)
from .errors import GenerationError, UsageError
from .execute import Executor
from .fsops import empty_trash
from .layout import STATE_DIR, StorageLayout, parse_target_dir_name
from .lock import RunLock
from .plan import Action, GenerationPlan, plan_project
from .report import GenerationOutcome, RunReport
from .tree import fingerprint_tree

ProgressFactory = Callable[[int], Callable[[int], None]]
WORKER_CHUNK_PROJECTS = 16
ORPHAN_LOOKUP_BATCH = 500
PR_SET_PDEATHSIG = 1


def open_installation(settings: Settings, command: str) -> tuple[StorageLayout, sa.Engine]:
    """Check the preconditions every command shares: ROOT is a folder, the database answers and
    is at head. Raises UsageError (exit 2) with the fix otherwise."""
    root = settings.storage_root
    if not root.is_dir():
        raise UsageError(f"storage root {root} is not a folder; pass --storage-root or set STORAGE_ROOT")
    engine = create_database_engine(settings.database_url, command=f"storage-migrate {command}")
    check_at_head(engine)
    return StorageLayout(root, settings.path_prefix), engine


def output_files_checker(engine: sa.Engine) -> Callable[[str], bool]:
    return lambda generation_id: bool(load_output_files(engine, generation_id))


def count_generations(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(generations)).scalar_one()


def plan_outcome(plan: GenerationPlan) -> GenerationOutcome:
    """A planned action as a report line (the dry run's rendering of the plan). A folder to be
    moved is walked with one lstat per file — never read — for the counts the run will write,
    and so that a symlink inside it shows as a planned failure."""
    generation = plan.generation
    action, reason, error = plan.action, plan.reason, None
    file_count = total_size_bytes = None
    if action == Action.MOVE and plan.legacy_dir is not None:
        try:
            fingerprints = fingerprint_tree(plan.legacy_dir)
            file_count = len(fingerprints)
            total_size_bytes = sum(size for size, _ in fingerprints.values())
        except GenerationError as problem:
            action, error = Action.FAIL, str(problem)
    if action == Action.FAIL:
        error, reason = error or reason, None
    return GenerationOutcome(
        id=generation.id,
        project_id=generation.project_id,
        version=generation.version,
        action=action.value,
        storage_path=plan.storage_path if action != Action.FAIL else generation.storage_path,
        error=error,
        reason=reason,
        from_path=str(plan.legacy_dir) if action == Action.MOVE else None,
        from_version=plan.from_version if action.ends_on_disk else None,
        file_count=file_count,
        total_size_bytes=total_size_bytes,
    )


def migrate(
    settings: Settings,
    *,
    dry_run: bool = False,
    resync: bool = False,
    progress: ProgressFactory | None = None,
    only_projects: Collection[str] | None = None,
    workers: int = 1,
    keep_all: bool = True,
) -> RunReport:
    """Plan every project (or those in ``only_projects``) and, unless ``dry_run``, carry the
    plans out under the run lock. Returns the report.

    Losing the database mid-run is not a crash: the generations already on disk stay
    consistent, the report says what happened, and the exit code is 1.
    """
    command = "resync" if resync else "run"
    layout, engine = open_installation(settings, command)
    report = RunReport(command=command, dry_run=dry_run, keep_all=keep_all)
    only = None if only_projects is None else sorted(only_projects)
    try:
        if dry_run:
            _plan_only(layout, engine, report, resync, only)
        else:
            with RunLock(layout.lock_file, engine, f"storage-migrate {command}"):
                _carry_out(layout, engine, report, resync, only, progress, workers)
    except sa.exc.DBAPIError as error:
        report.error = (f"lost the database mid-run ({first_line(error)}); what is on disk is consistent — "
                        f"rerun `storage-migrate {command}` when the database is back")
    finally:
        engine.dispose()
    report.finished = report.started + report.seconds
    return report


def _plan_only(layout: StorageLayout, engine: sa.Engine, report: RunReport, resync: bool, only: list[str] | None) -> None:
    for record in iter_project_records(engine, only=only):
        plan = plan_project(record, layout, resync, output_files_checker(engine))
        for generation_plan in plan.generations:
            report.add(plan_outcome(generation_plan))
    if resync and only is None:
        report.orphans = find_orphans(layout, engine)


def _carry_out(layout: StorageLayout, engine: sa.Engine, report: RunReport, resync: bool, only: list[str] | None,
               progress: ProgressFactory | None, workers: int) -> None:
    empty_trash(layout.trash_dir)
    tick = progress(count_generations(engine)) if progress else (lambda count: None)
    if workers > 1 and only is None:
        _carry_out_in_workers(layout, engine, report, resync, tick, workers)
    else:
        _carry_out_projects(layout, engine, report, resync, only, tick)
    if resync and only is None and report.error is None:
        report.orphans = find_orphans(layout, engine)


def _carry_out_projects(layout: StorageLayout, engine: sa.Engine, report: RunReport, resync: bool,
                        only: list[str] | None, tick: Callable[[int], None]) -> None:
    """The executor over a stream of projects."""
    executor = Executor(layout, engine, report, on_generation=tick)
    try:
        for record in iter_project_records(engine, only=only):
            executor.carry_out(plan_project(record, layout, resync, output_files_checker(engine)))
    finally:
        executor.finish()


def _carry_out_in_workers(layout: StorageLayout, engine: sa.Engine, report: RunReport, resync: bool,
                          tick: Callable[[int], None], workers: int) -> None:
    """Projects in chunks over ``workers`` forked processes; each project is wholly one worker's,
    so the per-project ordering (v<P> written before the diff of v<N>) holds as in one process.

    The parent holds the run lock for all of them (the workers inherit the lock file), and each
    worker dies with the parent, so a killed run never leaves a worker writing behind a rerun.
    """
    with engine.connect() as connection:
        project_ids = iter_project_ids(connection)
    chunk_size = max(1, min(WORKER_CHUNK_PROJECTS, len(project_ids) // (workers * 4) or 1))
    chunks = [project_ids[start : start + chunk_size] for start in range(0, len(project_ids), chunk_size)]
    engine.dispose()
    context = multiprocessing.get_context("fork")
    database_url = engine.url.render_as_string(hide_password=False)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_die_with_parent) as pool:
            for chunk_report in pool.map(_migrate_chunk, repeat(layout), repeat(database_url), chunks,
                                         repeat(resync), repeat(report.keep_all)):
                report.merge(chunk_report)
                tick(chunk_report.migrated + chunk_report.skipped + chunk_report.failed)
    except BrokenProcessPool:
        report.error = ("a worker process died (killed, or out of memory); what is on disk is consistent — "
                        "rerun the command")


def _migrate_chunk(layout: StorageLayout, database_url: str, project_ids: list[str], resync: bool,
                   keep_all: bool) -> RunReport:
    """One worker's share: its own engine, its own batches."""
    engine = create_database_engine(database_url, command="storage-migrate worker")
    report = RunReport(command="worker", keep_all=keep_all)
    try:
        _carry_out_projects(layout, engine, report, resync, project_ids, lambda count: None)
    except sa.exc.DBAPIError as error:
        report.error = f"lost the database mid-run ({first_line(error)}); rerun when the database is back"
    finally:
        engine.dispose()
    return report


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() == 1:
        os._exit(1)


def find_orphans(layout: StorageLayout, engine: sa.Engine) -> list[str]:
    """Folders on disk that no generation row owns; reported, never deleted. Names are looked up
    in the database in batches, so memory does not grow with the number of generations."""
    candidates: list[tuple[str, str]] = []          # (generation id it would belong to, folder)
    for entry in sorted(layout.root.iterdir()):
        if entry.name == STATE_DIR or entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        generations_dir = entry / "generations"
        if generations_dir.is_dir() and not generations_dir.is_symlink():
            for child in sorted(generations_dir.iterdir()):
                parsed = parse_target_dir_name(child.name)
                if parsed is not None and not child.is_symlink():
                    candidates.append((parsed[1], str(child)))
        else:
            candidates.append((entry.name, str(entry)))
    orphans: list[str] = []
    for start in range(0, len(candidates), ORPHAN_LOOKUP_BATCH):
        batch = candidates[start : start + ORPHAN_LOOKUP_BATCH]
        known = existing_generation_ids(engine, [generation_id for generation_id, _ in batch])
        orphans.extend(folder for generation_id, folder in batch if generation_id not in known)
    return orphans
