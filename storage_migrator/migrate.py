"""``run``, ``--dry-run`` and ``resync`` as library calls: stream the projects, plan each, and
either report the plan or hand it to the executor under the run lock.

``resync`` is ``run`` plus two checks: a stat fingerprint per file (so edited generations are
re-read and unchanged ones are not) and a report of folders on disk that no row owns.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .config import Settings
from .db import (
    count_generations,
    create_database_engine,
    first_line,
    generations,
    iter_project_ids,
    iter_project_records,
    load_output_files,
    reserve_version,
)
from .errors import FAILS_ONE_GENERATION, failure_line
from .execute import Executor
from .installation import Installation, open_installation
from .lock import RunLock
from .orphans import find_orphans, remove_dangling_links
from .plan import Action, GenerationPlan, ProjectPlan, plan_project
from .records import ProjectRecord
from .report import ADOPTED, GenerationOutcome, ProgressFactory, RunReport, Workload, merge_states
from .scan_ahead import ScanAhead, SummaryOrError, summarize_trees
from .storage.layout import StorageLayout
from .storage.manifest import TreeSummary, summarize_tree
from .storage.opened import Storage, open_storage
from .storage.recovery import RootTempFiles, recover_project, sweep_state
from .storage.steps import handling_project, prepare_state_dir
from .triage import adopt_complete, project_states, root_files
from .workers import WorkerDied, chunked, run_in_workers

WORKER_CHUNK_PROJECTS = 16


def output_files_reader(engine: Engine) -> Callable[[str], Mapping[str, Any] | None]:
    """The planner's look at a folderless generation's ``output_files`` (handed on to the rebuild)."""
    return lambda generation_id: load_output_files(engine, generation_id)


def version_reserver(engine: Engine) -> Callable[[str, int], int | None]:
    """A real run takes a renumbered duplicate's number from the database at once."""
    return lambda project_id, at_least: reserve_version(engine, project_id, at_least)


def plan_outcome(plan: GenerationPlan, summaries: Mapping[Path, SummaryOrError]) -> GenerationOutcome:
    """A planned action as a report line (the dry run's rendering of the plan). A folder to be
    moved was walked with one lstat per file — never read — for the counts the run will write,
    and so that a symlink inside it shows as a planned failure (``summaries``, see
    ``move_summaries``)."""
    generation = plan.generation
    action, reason, error = plan.action, plan.reason, None
    file_count = total_size_bytes = None
    if action == Action.MOVE and plan.legacy_dir is not None:
        summary = summaries[plan.legacy_dir]
        if isinstance(summary, TreeSummary):
            file_count, total_size_bytes = summary.file_count, summary.total_size_bytes
        else:
            action, error = Action.FAIL, failure_line(summary)
    if action == Action.FAIL:
        error, reason = error or reason, None
    return GenerationOutcome.of_row(
        generation, action.done, plan.storage_path if action != Action.FAIL else generation.storage_path,
        error=error,
        reason=reason,
        from_path=str(plan.legacy_dir) if action == Action.MOVE else None,
        from_version=plan.from_version if action.ends_on_disk else None,
        file_count=file_count,
        total_size_bytes=total_size_bytes,
        renumbered_from=plan.renumbered_from,
    )


def move_summaries(storage: Storage, plan: ProjectPlan, ahead: ScanAhead | None) -> dict[Path, SummaryOrError]:
    """The stat walk of every legacy folder ``plan`` moves (half of them by ``ahead``'s reader)."""
    folders = [generation.legacy_dir for generation in plan.generations
               if generation.action == Action.MOVE and generation.legacy_dir is not None]
    return summarize_trees(storage, folders, ahead)


@dataclass(frozen=True)
class RunOptions:
    """How one run goes: what a worker process needs to carry out its share the same way."""

    resync: bool
    keep_all: bool
    legacy_links: bool
    adopt_complete: bool = False
    """``resync --adopt-complete``: failed-but-complete generations whose files are their
    ``output_files`` are marked completed (``triage.adopt_complete``) before they are planned."""
    read_ahead: bool = False
    """Each process carrying out projects has a second one reading ahead (``scan_ahead``): set
    when there are at least twice as many workers as processes the projects can keep busy."""
    lease_seconds: float = 60.0
    """``--coordinate``: how long a participant may go without renewing its claims before the
    others end it (``coordinate.py``)."""


def migrate(
    settings: Settings,
    *,
    dry_run: bool = False,
    resync: bool = False,
    progress: ProgressFactory | None = None,
    only_projects: Collection[str] | None = None,
    workers: int = 1,
    keep_all: bool = True,
    coordinate: bool = False,
    adopt_complete: bool = False,
    lease_seconds: float = 60.0,
) -> RunReport:
    """Plan every project (or those in ``only_projects``) and, unless ``dry_run``, carry the
    plans out under the run lock. Returns the report.

    Losing the database mid-run is not a crash: the generations already on disk stay
    consistent, the report says what happened, and the exit code is 1. Ctrl-C or SIGTERM
    (as KeyboardInterrupt) stops after the generation at hand; the report says what was done
    and its exit code is 130.

    With ``coordinate`` this is one host's part of a coordinated run (``coordinate.py``): the
    projects of the buckets it claims, not all projects, under its share of the run lock.

    Every report says what of the application's own inconsistent states it found
    (``triage``); only ``adopt_complete`` changes one of them.
    """
    command = "resync" if resync else "run"
    options = RunOptions(resync, keep_all, settings.legacy_links, adopt_complete=adopt_complete and not dry_run,
                         lease_seconds=lease_seconds)
    report = RunReport(command=command, dry_run=dry_run, keep_all=keep_all)
    only = None if only_projects is None else sorted(only_projects)
    if coordinate:
        from .coordinate import require_postgresql

        require_postgresql(settings.database_url)
    with open_installation(settings, command) as installation:
        try:
            if dry_run:
                _plan_only(installation, report, resync, only, workers)
            elif coordinate:
                from .coordinate import carry_out_coordinated

                carry_out_coordinated(installation, report, options, progress, workers)
            else:
                with RunLock(installation.storage, installation.engine, f"storage-migrate {command}"):
                    _carry_out(installation, report, options, only, progress, workers)
        except sa.exc.DBAPIError as error:
            report.error = (f"lost the database mid-run ({first_line(error)}); what is on disk is consistent — "
                            f"rerun `storage-migrate {command}` when the database is back")
        except WorkerDied as error:
            report.error = str(error)
        except KeyboardInterrupt:
            report.interrupted = True
        if only is None and report.error is None and not report.interrupted:
            report.application_states.update(root_files(installation.storage))
    return report.finish()


def _plan_only(installation: Installation, report: RunReport, resync: bool, only: list[str] | None,
               workers: int) -> None:
    """Every project planned and reported, nothing written; with two workers or more a reader
    process takes half of the stat walks."""
    storage, engine = installation.storage, installation.engine
    with ExitStack() as stack:
        ahead = stack.enter_context(ScanAhead(storage)) if workers >= 2 else None
        for record in iter_project_records(engine, only=only):
            merge_states(report.application_states, project_states(storage, record, output_files_reader(engine)))
            plan = plan_project(record, storage, resync, output_files_reader(engine), ahead=ahead)
            summaries = move_summaries(storage, plan, ahead)
            for generation_plan in plan.generations:
                report.add(plan_outcome(generation_plan, summaries))
                if generation_plan.leftover is not None:
                    report.leftovers.append(str(generation_plan.leftover))
    if resync and only is None:
        report.orphans = find_orphans(storage, engine)


def _carry_out(installation: Installation, report: RunReport, options: RunOptions, only: list[str] | None,
               progress: ProgressFactory | None, workers: int) -> None:
    """Every project recovered, planned and carried out in turn (what a killed run left of a
    project is recovered just before it is planned, see ``recover_project``), then, after a
    complete run over every project, the end sweep of what no project claimed."""
    storage, engine = installation.storage, installation.engine
    prepare_state_dir(storage)
    root_temps = RootTempFiles.listed(storage)
    tick = (progress(Workload(count_generations(engine), legacy_bytes(storage, engine), lambda: report.bytes_handled))
            if progress else (lambda count: None))
    project_ids: list[str] = []
    if workers > 1 and only is None:
        with engine.connect() as connection:
            project_ids = iter_project_ids(connection)
        busy = min(workers, len(project_ids))          # processes the projects can keep busy
        options = replace(options, read_ahead=0 < busy and workers >= 2 * busy)
    if len(project_ids) > 1 and workers > 1:
        _carry_out_in_workers(storage.layout, engine, report, options, tick, workers, root_temps, project_ids)
    else:
        _carry_out_projects(storage, engine, report, options, only, tick, root_temps)
    complete = only is None and report.error is None and not report.interrupted
    if complete:
        sweep_state(storage)
    if options.resync and complete:
        report.removed_links = remove_dangling_links(storage, engine)
        report.orphans = find_orphans(storage, engine)


def legacy_bytes(storage: Storage, engine: Engine) -> int:
    """The bytes below every generation's legacy folder ``<ROOT>/<id>/`` (one lstat per file):
    what a run moves, as a progress bar's total. Only asked for when a bar is shown."""
    with engine.connect() as connection:
        generation_ids = connection.execute(sa.select(generations.c.id)).scalars().all()
    total = 0
    for generation_id in generation_ids:
        try:
            folder = storage.layout.legacy_dir(generation_id)
            if storage.is_folder(folder):
                total += summarize_tree(storage, folder).total_size_bytes
        except FAILS_ONE_GENERATION:
            continue                    # the run reports it; the bar only misses its bytes
    return total


def _carry_out_projects(storage: Storage, engine: Engine, report: RunReport, options: RunOptions,
                        only: Sequence[str] | None, tick: Callable[[int], None], root_temps: RootTempFiles,
                        fence: Callable[[], None] = lambda: None) -> None:
    """The executor over a stream of projects; the last batch is written even when interrupted.
    Each project is recovered right before it is planned, by whoever carries it out."""
    with ExitStack() as stack:
        scan_ahead = stack.enter_context(ScanAhead(storage)) if options.read_ahead else None
        executor = Executor(storage, engine, report, legacy_links=options.legacy_links, on_generation=tick,
                            scan_ahead=scan_ahead, fence=fence)
        try:
            for record in iter_project_records(engine, only=only):
                _carry_out_project(storage, engine, executor, options, record, root_temps)
        finally:
            executor.finish()


def carry_out_claimed(storage: Storage, engine: Engine, report: RunReport, options: RunOptions,
                      project_ids: Sequence[str], tick: Callable[[int], None], fence: Callable[[], None]) -> None:
    """A coordinated participant's claimed projects, through the same per-project loop; ``fence``
    raises once the participant may no longer write (see ``Executor.fence``)."""
    _carry_out_projects(storage, engine, report, options, project_ids, tick, RootTempFiles.listed(storage), fence)


def _carry_out_project(storage: Storage, engine: Engine, executor: Executor, options: RunOptions,
                       record: ProjectRecord, root_temps: RootTempFiles) -> None:
    generation_ids = [generation.id for generation in record.generations]
    executor.fence()
    recover_project(storage, record.project_id, generation_ids, root_temps)
    states = executor.report.application_states
    if options.adopt_complete:
        record, adopted = adopt_complete(storage, engine, record, output_files_reader(engine))
        states[ADOPTED].extend(adopted)
    merge_states(states, project_states(storage, record, output_files_reader(engine)))
    with handling_project(record.project_id, generation_ids):
        executor.carry_out(plan_project(record, storage, options.resync, output_files_reader(engine),
                                        reserve=version_reserver(engine), ahead=executor.scan_ahead))


def _carry_out_in_workers(layout: StorageLayout, engine: Engine, report: RunReport, options: RunOptions,
                          tick: Callable[[int], None], workers: int, root_temps: RootTempFiles,
                          project_ids: Sequence[str]) -> None:
    """Projects in chunks over ``workers`` processes; each project is wholly one worker's, so
    the per-project ordering (v<P> written before the diff of v<N>) holds as in one process."""
    database_url = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    chunks = [(layout, database_url, list(chunk), options, root_temps)
              for chunk in chunked(project_ids, workers, WORKER_CHUNK_PROJECTS)]
    for chunk_report in run_in_workers(_migrate_chunk, chunks, workers):
        report.merge(chunk_report)
        tick(chunk_report.migrated + chunk_report.skipped + chunk_report.failed)


def _migrate_chunk(chunk: tuple[StorageLayout, str, list[str], RunOptions, RootTempFiles]) -> RunReport:
    """One worker's share: its own engine, its own batches, its own descriptor of ROOT."""
    layout, database_url, project_ids, options, root_temps = chunk
    engine = create_database_engine(database_url, command="storage-migrate worker")
    report = RunReport(command="worker", keep_all=options.keep_all)
    try:
        with open_storage(layout) as storage:
            _carry_out_projects(storage, engine, report, options, project_ids, lambda count: None, root_temps)
    except sa.exc.DBAPIError as error:
        report.error = f"lost the database mid-run ({first_line(error)}); rerun when the database is back"
    finally:
        engine.dispose()
    return report
