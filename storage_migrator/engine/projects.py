"""The per-project loop every run goes through: each project recovered (what a killed run left),
planned and carried out in turn, in this process or spread over worker processes, and the dry
run's rendering of a plan. ``commands.run`` chooses between them; ``engine.coordinate`` calls
``carry_out_claimed`` for a participant's share.

``resync`` is ``run`` plus two checks: a stat fingerprint per file (so edited generations are
re-read and unchanged ones are not) and a report of folders on disk that no row owns.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage_migrator.db.connect import create_database_engine, first_line
from storage_migrator.db.reads import iter_project_records, load_output_files
from storage_migrator.db.tables import generations
from storage_migrator.db.writes import reserve_version
from storage_migrator.engine.execute import Executor
from storage_migrator.engine.plan import Action, GenerationPlan, ProjectPlan
from storage_migrator.engine.scan_ahead import ScanAhead, SummaryOrError, summarize_trees
from storage_migrator.engine.survey import plan_project
from storage_migrator.engine.triage import adopt_complete, project_states
from storage_migrator.engine.workers import chunked, run_in_workers
from storage_migrator.errors import FAILS_ONE_GENERATION, failure_line
from storage_migrator.records import Outcome, ProjectRecord
from storage_migrator.report import ADOPTED, GenerationOutcome, RunReport, merge_states
from storage_migrator.storage.handle import Storage, open_storage
from storage_migrator.storage.layout import StorageLayout
from storage_migrator.storage.manifest import TreeSummary, summarize_tree
from storage_migrator.storage.recovery import RootTempFiles, recover_project
from storage_migrator.storage.steps import handling_project

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
    """Each process carrying out projects has a second one that takes half of the stat walks of
    each plan (``scan_ahead``): set when there are at least twice as many workers as processes
    the projects can keep busy."""
    lease_seconds: float = 60.0
    """``--coordinate``: how long a participant may go without renewing its claims before the
    others end it (``coordinate.py``)."""



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


def carry_out_projects(storage: Storage, engine: Engine, report: RunReport, options: RunOptions,
                        only: Sequence[str] | None, tick: Callable[[int], None], root_temps: RootTempFiles,
                        fence: Callable[[], None] = lambda: None, keep_claim_session: bool = True) -> None:
    """The executor over a stream of projects; the last batch is written even when interrupted.
    Each project is recovered right before it is planned, by whoever carries it out.
    ``keep_claim_session``: see ``Executor.keep_claim_session``."""
    with ExitStack() as stack:
        ahead = stack.enter_context(ScanAhead(storage)) if options.read_ahead else None
        executor = Executor(storage, engine, report, legacy_links=options.legacy_links, on_generation=tick,
                            fence=fence, keep_claim_session=keep_claim_session)
        try:
            for record in iter_project_records(engine, only=only):
                _carry_out_project(storage, engine, executor, options, record, root_temps, ahead)
        finally:
            executor.finish()


def carry_out_claimed(storage: Storage, engine: Engine, report: RunReport, options: RunOptions,
                      project_ids: Sequence[str], tick: Callable[[int], None], fence: Callable[[], None]) -> None:
    """A coordinated participant's claimed projects, through the same per-project loop; ``fence``
    raises once the participant may no longer write (see ``Executor.fence``). Its engine has one
    session, shared by every statement: no connection is kept aside for claims."""
    carry_out_projects(storage, engine, report, options, project_ids, tick, RootTempFiles.listed(storage), fence,
                       keep_claim_session=False)


def _carry_out_project(storage: Storage, engine: Engine, executor: Executor, options: RunOptions,
                       record: ProjectRecord, root_temps: RootTempFiles, ahead: ScanAhead | None) -> None:
    generation_ids = [generation.id for generation in record.generations]
    executor.fence()
    try:
        recover_project(storage, record.project_id, generation_ids, root_temps)
        states = executor.report.application_states
        if options.adopt_complete:
            record, adopted = adopt_complete(storage, engine, record, output_files_reader(engine))
            states[ADOPTED].extend(adopted)
        merge_states(states, project_states(storage, record, output_files_reader(engine)))
        with handling_project(record.project_id, generation_ids):
            plan = plan_project(record, storage, options.resync, output_files_reader(engine),
                                reserve=version_reserver(engine), ahead=ahead)
    except FAILS_ONE_GENERATION as error:
        executor.fail_unplanned(unplanned_outcomes(record, error))
        return
    with handling_project(record.project_id, generation_ids):
        executor.carry_out(plan)


def unplanned_outcomes(record: ProjectRecord, error: BaseException) -> list[GenerationOutcome]:
    """The lines of a project whose folders could not be looked at while it was recovered or
    planned (a ``generations`` folder that cannot be listed, say): each generation failed with
    that one line, nothing written for it; the other projects go on."""
    reason = f"cannot look at the project's folders: {failure_line(error)}; fix that and rerun"
    return [GenerationOutcome.of_row(generation, Outcome.FAILED, generation.storage_path, error=reason)
            for generation in record.generations]


def carry_out_in_workers(layout: StorageLayout, engine: Engine, report: RunReport, options: RunOptions,
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
            carry_out_projects(storage, engine, report, options, project_ids, lambda count: None, root_temps)
    except sa.exc.DBAPIError as error:
        report.error = f"lost the database mid-run ({first_line(error)}); rerun when the database is back"
    finally:
        engine.dispose()
    return report
