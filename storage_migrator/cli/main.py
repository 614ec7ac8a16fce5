"""The ``storage-migrate`` commands: each parses its options, calls one library function
(``storage_migrator.commands``) and renders the result object. Nothing else."""
from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from storage_migrator.cli.group import (
    DISTRIBUTION,
    EXIT_CODES_HELP,
    Invocation,
    ToolGroup,
    global_options,
    global_options_again,
    pass_invocation,
)
from storage_migrator.cli.render import ProgressBar, render_report
from storage_migrator.report import RunReport, application_state_lines


@click.group(cls=ToolGroup, invoke_without_command=True, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="storage-migrate",
                      message="%(prog)s %(version)s")
@global_options
@click.option("--dry-run", is_flag=True, help="Same as `run --dry-run`.")
@click.pass_context
def main(click_context: click.Context, database_url: str, storage_root: str, path_prefix: str, legacy_links: bool,
         as_json: bool, quiet: bool, verbose: bool, dry_run: bool) -> None:
    """Move generation folders into the versioned layout and keep database and disk in agreement.

    Every option before the command may also follow it."""
    if click_context.invoked_subcommand is None:
        if dry_run:
            click_context.invoke(run, dry_run=True, workers=DEFAULT_WORKERS)
        else:
            click.echo(click_context.get_help())


def _at_least_the_demo_minimum(field: str) -> Callable[[click.Context, click.Parameter, int], int]:
    """An option callback refusing a number the sample-data generator cannot honour (looked up
    when demo-data runs, so other commands never import the generator)."""
    def check(click_context: click.Context, parameter: click.Parameter, value: int) -> int:
        from storage_migrator.demo import SIZE_MINIMUMS

        minimum, reason = SIZE_MINIMUMS[field]
        if value < minimum:
            raise click.BadParameter(f"{value} is too few ({reason}); use {minimum} or more")
        return value

    return check


def coordinate_option(function: Callable) -> Callable:
    function = click.option("--lease-seconds", type=click.FloatRange(1, 86400), default=60, show_default=True,
                            envvar="STORAGE_MIGRATE_LEASE_SECONDS", show_envvar=True,
                            help="With --coordinate: a participant whose heartbeat is older than this is ended by "
                            "the others and its projects taken over.")(function)
    return click.option("--coordinate", is_flag=True, envvar="STORAGE_MIGRATE_COORDINATE",
                        help="Share the work with participants on other hosts (PostgreSQL advisory locks; "
                        "host name from STORAGE_MIGRATE_HOSTNAME, else the system's).")(function)


DEFAULT_WORKERS = os.cpu_count() or 1
"""``--workers`` when not given: the cores (the top-level ``--dry-run`` takes it too)."""


def workers_option(function: Callable) -> Callable:
    return click.option("--workers", type=click.IntRange(min=1), default=DEFAULT_WORKERS, show_default="cores",
                        help="Processes; each project is handled by one of them.")(function)


def metrics_file_option(function: Callable) -> Callable:
    return click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
                        envvar="STORAGE_MIGRATE_METRICS_FILE", show_envvar=True,
                        help="Also write this run's numbers in Prometheus text format to PATH, atomically "
                        "(for node_exporter's textfile collector).")(function)


def finish(report: RunReport, invocation: Invocation, metrics_file: Path | None) -> None:
    """Render ``report``, write its metrics file if asked, and exit with its code."""
    render_report(report, invocation.output, invocation.cloud)
    if metrics_file is not None and not report.dry_run:
        from storage_migrator.metrics import write_metrics_file

        write_metrics_file(metrics_file, report)
    sys.exit(report.exit_code)


@main.command()
@global_options_again
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing on disk or in the database.")
@workers_option
@coordinate_option
@metrics_file_option
@pass_invocation
def run(invocation: Invocation, dry_run: bool, workers: int, coordinate: bool = False, lease_seconds: float = 60,
        metrics_file: Path | None = None) -> None:
    """Migrate every generation still in the legacy layout."""
    from storage_migrator.commands.run import run

    with ProgressBar(invocation.output, "migrating") as bar:
        report = run(invocation.settings, dry_run=dry_run, progress=bar.factory(), workers=workers,
                         keep_all=dry_run or invocation.output.keeps_every_line(), coordinate=coordinate and not dry_run,
                         lease_seconds=lease_seconds)
    finish(report, invocation, metrics_file)


@main.command("demo-data")
@global_options_again
@click.option("--projects", default=6, show_default=True, callback=_at_least_the_demo_minimum("projects"),
              help="Number of projects (at least one per edge case).")
@click.option("--generations", default=6, show_default=True,
              callback=_at_least_the_demo_minimum("generations_per_project"), help="Average generations per project.")
@click.option("--files", default=40, show_default=True, callback=_at_least_the_demo_minimum("files_per_generation"),
              help="Average files per generation.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same installation.")
@pass_invocation
def demo_data(invocation: Invocation, projects: int, generations: int, files: int, seed: int) -> None:
    """Create a sample legacy installation (database at e011ab9dd223 plus folders) to try the tool on."""
    from storage_migrator.demo import create_demo_installation

    installation = create_demo_installation(invocation.settings, projects, generations, files, seed)
    if invocation.output.as_json:
        click.echo(json.dumps({"demo_project_id": installation.demo_project_id,
                               "projects": len(installation.project_ids),
                               "generations": len(installation.generation_ids),
                               "files": installation.file_count}))
    elif not invocation.output.quiet:
        click.echo(f"created {len(installation.project_ids)} projects, {len(installation.generation_ids)} generations, "
                   f"{installation.file_count} files under {invocation.settings.storage_root}")
        click.echo(f"demo project: {installation.demo_project_id}")
        click.echo("next: storage-migrate db upgrade && storage-migrate --dry-run")


@main.command("diff")
@global_options_again
@click.argument("project_id")
@click.option("--patch", "with_patch", is_flag=True, help="Print the patch text too.")
@click.option("--from", "from_version", type=int, help="Compare this version …")
@click.option("--to", "to_version", type=int, help="… with this one, on the fly.")
@pass_invocation
def diff_command(invocation: Invocation, project_id: str, with_patch: bool, from_version: int | None,
                 to_version: int | None) -> None:
    """Per version: from-version, added / modified / deleted counts and the patch path."""
    from storage_migrator.commands.diff import project_diff

    if from_version is not None and to_version is not None and from_version > to_version:
        raise click.BadParameter(f"--from {from_version} is above --to {to_version}; give the older version "
                                 "first (the patch goes from --from to --to)", param_hint="--from/--to")

    report = project_diff(invocation.settings, project_id, from_version, to_version, with_patch)
    if invocation.output.as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    for version in report.versions:
        origin = f"v{version.from_version}" if version.from_version else "—"
        click.echo(f"v{version.version} {version.generation_id} from {origin}: +{version.added} "
                   f"~{version.modified} -{version.deleted}  {version.patch or ''}".rstrip())
        if version.patch_text:
            sys.stdout.flush()
            sys.stdout.buffer.write(version.patch_text)
            sys.stdout.buffer.flush()


@main.command()
@global_options_again
@workers_option
@coordinate_option
@metrics_file_option
@click.option("--adopt-complete", is_flag=True,
              help="Mark completed each `failed` generation whose folder holds exactly its output_files "
                   "(the application's save finished, its activation raised); only if the row is unchanged.")
@pass_invocation
def resync(invocation: Invocation, workers: int, coordinate: bool, lease_seconds: float, metrics_file: Path | None,
           adopt_complete: bool) -> None:
    """The cron job: migrate stragglers, re-read changed generations, repair metadata, report orphans."""
    from storage_migrator.commands.run import run

    with ProgressBar(invocation.output, "resyncing") as bar:
        report = run(invocation.settings, resync=True, progress=bar.factory(), workers=workers,
                         keep_all=invocation.output.keeps_every_line(), coordinate=coordinate,
                         adopt_complete=adopt_complete, lease_seconds=lease_seconds)
    finish(report, invocation, metrics_file)


@main.command()
@global_options_again
@pass_invocation
def verify(invocation: Invocation) -> None:
    """Read-only check of the database against the disk; exit 3 on any problem."""
    from storage_migrator.commands.verify import verify as verify_installation

    report = verify_installation(invocation.settings)
    if invocation.output.as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"{problem.generation_id or '-'} {problem.kind}: {problem.detail}")
        if not invocation.output.quiet:
            for line in application_state_lines(report.application_states):
                click.echo(line)
        if not invocation.output.quiet or not report.ok:
            click.echo(f"verify: {report.generations_checked} generations checked, "
                       f"{len(report.problems)} problem(s)", err=not report.ok)
    sys.exit(report.exit_code)


@main.command()
@global_options_again
@click.option("--project", "project_id", metavar="ID",
              help="Only this project's generations (the undo at the application's later schema revisions).")
@pass_invocation
def rollback(invocation: Invocation, project_id: str | None) -> None:
    """Move every generation back to <ROOT>/<generation_id>/ and restore storage_path."""
    from storage_migrator.commands.rollback import rollback as rollback_installation

    report = rollback_installation(invocation.settings, keep_all=invocation.output.keeps_every_line(), project_id=project_id)
    render_report(report, invocation.output)
    sys.exit(report.exit_code)


@main.command()
@global_options_again
@click.option("--debounce", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of quiet before a folder is resynced.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), envvar="STORAGE_MIGRATE_METRICS_PORT",
              show_envvar=True, help="Serve Prometheus metrics (the last resync's numbers, lag, overflows) on "
              "this port at /metrics.")
@click.option("--metrics-address", default="127.0.0.1", show_default=True,
              help="Address --metrics-port listens on.")
@pass_invocation
def watch(invocation: Invocation, debounce: float, metrics_port: int | None, metrics_address: str) -> None:
    """Resync a generation within seconds of a change inside its folder; with --json, one JSON
    line per resync. Ctrl-C or SIGTERM stop it (exit 130); exit 1 if it can no longer watch."""
    from storage_migrator.commands.watch import watch as watch_storage
    from storage_migrator.metrics import WatchMetrics

    metrics = WatchMetrics() if metrics_port is not None else None
    if metrics is not None and metrics_port is not None:
        metrics.serve(metrics_port, metrics_address)

    def on_report(report: RunReport) -> None:
        if metrics is not None:
            metrics.record(report)
        if not (report.migrated or report.failed):
            return
        if invocation.output.as_json:
            click.echo(json.dumps(report.to_json(invocation.cloud)))
        else:
            render_report(report, invocation.output, invocation.cloud)

    watch_storage(invocation.settings, debounce_seconds=debounce, on_report=on_report,
                  keep_all=invocation.output.keeps_every_line(), metrics=metrics)


@main.group("db")
def db_group() -> None:
    """The schema migration (Alembic), from wherever the tool is installed."""


@db_group.command("upgrade")
@global_options_again
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it (offline mode).")
@pass_invocation
def db_upgrade(invocation: Invocation, revision: str, sql: bool) -> None:
    """Upgrade the schema to REVISION (default: head). At a later revision of the application's,
    with every column the tool needs, there is nothing to do: says so, exit 0."""
    from storage_migrator.commands.db import upgrade

    nothing_to_do = upgrade(invocation.settings, revision, sql=sql)
    if nothing_to_do is not None and not invocation.output.quiet:
        click.echo(nothing_to_do, err=True)


@db_group.command("downgrade")
@global_options_again
@click.argument("revision")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it (offline mode).")
@pass_invocation
def db_downgrade(invocation: Invocation, revision: str, sql: bool) -> None:
    """Downgrade the schema to REVISION (e.g. e011ab9dd223, after `storage-migrate rollback`).
    Refused (exit 2) at a later revision of the application's: the schema stays there."""
    from storage_migrator.commands.db import downgrade

    downgrade(invocation.settings, revision, sql=sql)


@db_group.command("current")
@global_options_again
@pass_invocation
def db_current(invocation: Invocation) -> None:
    """Print the revision the database is at."""
    from storage_migrator.commands.db import current

    revision = current(invocation.settings.database_url)
    if invocation.output.as_json:
        click.echo(json.dumps({"revision": revision}))
    else:
        click.echo(revision or "(no revision: an empty database)")


YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations between two young collections of Python's cyclic collector (its default: 700)."""


def console_script() -> None:
    """The ``storage-migrate`` process (and ``python -m storage_migrator``): ``main``, with
    Python's cyclic collector set for a command that allocates a few short-lived objects per
    file and per generation and holds few cycles: young collections run ~30 times less often.
    What is alive before ``main`` (click's and the command line's modules) is frozen, so a full
    collection no longer walks it; SQLAlchemy, psycopg and pygit2 load later, with the command
    that needs them (``--help`` and ``--version`` never do), and are not frozen. Only the process
    that runs a command is set, never a caller's (tests invoke ``main``)."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    main()
