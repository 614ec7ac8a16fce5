"""``run``, ``--dry-run`` and ``resync`` as library calls: stream the projects, plan each, and
either report the plan or hand it to the executor under the run lock.

``resync`` is ``run`` plus two checks: a stat fingerprint per file (so edited generations are
re-read and unchanged ones are not) and a report of folders on disk that no row owns.
"""
from __future__ import annotations

from collections.abc import Callable, Collection

import sqlalchemy as sa

from .config import Settings
from .db import first_line, check_at_head, create_database_engine, generations, iter_project_records
from .errors import UsageError
from .execute import Executor
from .fsops import empty_trash
from .layout import STATE_DIR, StorageLayout, parse_target_dir_name
from .lock import RunLock
from .plan import Action, GenerationPlan, ProjectPlan, plan_project
from .report import GenerationOutcome, RunReport

ProgressFactory = Callable[[int], Callable[[], None]]


def open_installation(settings: Settings, command: str) -> tuple[StorageLayout, sa.Engine]:
    """Check the preconditions every command shares: ROOT is a folder, the database answers and
    is at head. Raises UsageError (exit 2) with the fix otherwise."""
    root = settings.storage_root
    if not root.is_dir():
        raise UsageError(f"storage root {root} is not a folder; pass --storage-root or set STORAGE_ROOT")
    engine = create_database_engine(settings.database_url, command=f"storage-migrate {command}")
    check_at_head(engine)
    return StorageLayout(root, settings.path_prefix), engine


def count_generations(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(generations)).scalar_one()


def plan_outcome(plan: GenerationPlan) -> GenerationOutcome:
    """A planned action as a report line (the dry run's rendering of the plan)."""
    generation = plan.generation
    failed = plan.action == Action.FAIL
    return GenerationOutcome(
        id=generation.id,
        project_id=generation.project_id,
        version=generation.version,
        action=plan.action.value,
        storage_path=plan.storage_path,
        error=plan.reason if failed else None,
        reason=None if failed else plan.reason,
        from_path=str(plan.legacy_dir) if plan.action == Action.MOVE else None,
        from_version=plan.from_version if plan.action.ends_on_disk else None,
    )


def migrate(
    settings: Settings,
    *,
    dry_run: bool = False,
    resync: bool = False,
    progress: ProgressFactory | None = None,
    only_projects: Collection[str] | None = None,
) -> RunReport:
    """Plan every project (or those in ``only_projects``) and, unless ``dry_run``, carry the
    plans out under the run lock. Returns the report.

    Losing the database mid-run is not a crash: the generations already on disk stay
    consistent, the report says what happened, and the exit code is 1.
    """
    command = "resync" if resync else "run"
    layout, engine = open_installation(settings, command)
    report = RunReport(command=command, dry_run=dry_run)
    only = None if only_projects is None else sorted(only_projects)
    try:
        if dry_run:
            _plan_only(layout, engine, report, resync, only)
        else:
            with RunLock(layout.lock_file, engine, f"storage-migrate {command}"):
                _carry_out(layout, engine, report, resync, only, progress)
    except sa.exc.DBAPIError as error:
        report.error = (f"lost the database mid-run ({first_line(error)}); what is on disk is consistent — "
                        f"rerun `storage-migrate {command}` when the database is back")
    finally:
        engine.dispose()
    report.finished = report.started + report.seconds
    return report


def _plan_only(layout: StorageLayout, engine: sa.Engine, report: RunReport, resync: bool, only: list[str] | None) -> None:
    seen: set[str] = set()
    for record in iter_project_records(engine, only=only):
        plan = plan_project(record, layout, check_fingerprints=resync)
        report.outcomes.extend(plan_outcome(generation_plan) for generation_plan in plan.generations)
        seen.update(generation.id for generation in record.generations)
    if resync and only is None:
        report.orphans = find_orphans(layout, seen)


def _carry_out(layout: StorageLayout, engine: sa.Engine, report: RunReport, resync: bool, only: list[str] | None,
               progress: ProgressFactory | None) -> None:
    empty_trash(layout.trash_dir)
    tick = progress(count_generations(engine)) if progress else (lambda: None)
    executor = Executor(layout, engine, report, on_generation=tick)
    seen: set[str] = set()
    try:
        for record in iter_project_records(engine, only=only):
            executor.carry_out(plan_project(record, layout, check_fingerprints=resync))
            seen.update(generation.id for generation in record.generations)
    finally:
        executor.finish()
    if resync and only is None:
        report.orphans = find_orphans(layout, seen)


def find_orphans(layout: StorageLayout, generation_ids: set[str]) -> list[str]:
    """Folders on disk that no generation row owns; reported, never deleted."""
    orphans: list[str] = []
    for entry in sorted(layout.root.iterdir()):
        if entry.name == STATE_DIR or entry.name.startswith("."):
            continue
        generations_dir = entry / "generations"
        if entry.name in generation_ids:
            continue
        if generations_dir.is_dir() and not generations_dir.is_symlink():
            for child in sorted(generations_dir.iterdir()):
                parsed = parse_target_dir_name(child.name)
                if parsed is not None and parsed[1] not in generation_ids:
                    orphans.append(str(child))
        elif entry.is_dir():
            orphans.append(str(entry))
    return orphans
