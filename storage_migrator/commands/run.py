"""``run``, ``--dry-run`` and ``resync`` as library calls: open the installation, then either
plan every project and report the plans, or carry them out under the run lock (alone, or as
one participant of a coordinated run), and say what of the application's states was found."""
from __future__ import annotations

from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import replace

import sqlalchemy as sa

from storage_migrator.config import Settings
from storage_migrator.db.connect import first_line
from storage_migrator.db.reads import count_generations, iter_project_ids, iter_project_records
from storage_migrator.engine.coordinate import carry_out_coordinated, require_postgresql
from storage_migrator.engine.installation import Installation, open_installation
from storage_migrator.engine.lock import RunLock
from storage_migrator.engine.orphans import find_orphans, remove_dangling_links
from storage_migrator.engine.projects import (
    RunOptions,
    carry_out_in_workers,
    carry_out_projects,
    legacy_bytes,
    move_summaries,
    output_files_reader,
    plan_outcome,
    unplanned_outcomes,
)
from storage_migrator.engine.scan_ahead import ScanAhead
from storage_migrator.engine.survey import plan_project
from storage_migrator.engine.triage import project_states, root_files
from storage_migrator.engine.workers import WorkerDied
from storage_migrator.errors import FAILS_ONE_GENERATION
from storage_migrator.report import ProgressFactory, RunReport, Workload, merge_states
from storage_migrator.storage.recovery import RootTempFiles, sweep_state
from storage_migrator.storage.steps import prepare_state_dir


def run(
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
        require_postgresql(settings.database_url)
    with open_installation(settings, command) as installation:
        try:
            if dry_run:
                _plan_only(installation, report, resync, only, workers)
            elif coordinate:
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
            try:
                merge_states(report.application_states, project_states(storage, record, output_files_reader(engine)))
                plan = plan_project(record, storage, resync, output_files_reader(engine), ahead=ahead)
                summaries = move_summaries(storage, plan, ahead)
            except FAILS_ONE_GENERATION as error:
                for outcome in unplanned_outcomes(record, error):
                    report.add(outcome)
                continue
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
        carry_out_in_workers(storage.layout, engine, report, options, tick, workers, root_temps, project_ids)
    else:
        carry_out_projects(storage, engine, report, options, only, tick, root_temps)
    complete = only is None and report.error is None and not report.interrupted
    if complete:
        sweep_state(storage)
    if options.resync and complete:
        report.removed_links = remove_dangling_links(storage, engine)
        report.orphans = find_orphans(storage, engine)

