"""The ``storage-migrate`` command line: parses options, calls one library function per
command, and renders the result object as text or as one JSON document. Nothing else."""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from storage_migrator.cloud import CloudStorage
from storage_migrator.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_STORAGE_ROOT,
    Settings,
    default_path_prefix,
    normalize_database_url,
)
from storage_migrator.errors import EXIT_INTERRUPTED, EXIT_USAGE, CommandError, LockHeld
from storage_migrator.report import ProgressFactory, RunReport, Workload, application_state_lines, cloud_key_lines


class ToolGroup(click.Group):
    """Click's group with the library's boundary: a ``CommandError`` becomes one line on stderr
    and its exit code; a database error that escapes a command does too. Nothing else is caught:
    a traceback means a bug."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's own handling, except that a usage error is one line (what is wrong and
        where to look), like every other error of the tool."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "storage-migrate"
            click.echo(f"error: {error.format_message()} (see '{command} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        import sqlalchemy as sa

        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except CommandError as error:
            if not (isinstance(error, LockHeld) and _is_quiet(ctx)):     # -q: exit 75 says it (cron)
                click.echo(f"error: {error.message}", err=True)
            ctx.exit(error.exit_code)
        except sa.exc.DBAPIError as error:
            from storage_migrator.db.rows import first_line
            click.echo(f"error: the database failed: {first_line(error)}; nothing is lost — rerun when it is back", err=True)
            ctx.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, kill) stops a command the way Ctrl-C does: after the step at hand,
    with what was done reported."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Output:
    """How to print: JSON or text, and how much."""

    as_json: bool
    quiet: bool
    verbose: bool

    def keeps_every_line(self) -> bool:
        """JSON and -v print every generation; text mode needs only failures and skips."""
        return self.as_json or self.verbose

    def show_progress(self) -> bool:
        return not (self.as_json or self.quiet) and sys.stderr.isatty()


@dataclass(frozen=True)
class Context:
    settings: Settings
    output: Output
    cloud: CloudStorage | None = None
    """The application's cloud storage, from its environment variables (``cloud``): a report
    lists the cloud copies a renumbering left under an old number."""


_GIVEN_AFTER_COMMAND = "storage_migrator.global_options_after_the_command"
_ANNOUNCED = "storage_migrator.announced"


def _remember_given(click_context: click.Context, parameter: click.Parameter, value: object) -> object:
    """A global option repeated after the command: kept (for the root's values to be overridden)
    only when it was given there, never for its absent default."""
    if parameter.name and click_context.get_parameter_source(parameter.name) is ParameterSource.COMMANDLINE:
        click_context.meta.setdefault(_GIVEN_AFTER_COMMAND, {})[parameter.name] = value
    return value


def _is_quiet(click_context: click.Context) -> bool:
    given_after = click_context.meta.get(_GIVEN_AFTER_COMMAND, {})
    return bool(given_after.get("quiet", click_context.find_root().params.get("quiet")))


def _tool_context(click_context: click.Context) -> Context:
    """The settings and output of this invocation: the group's options, overridden by those
    given after the command; checked and announced (once, on stderr, unless -q)."""
    values = {**click_context.find_root().params, **click_context.meta.get(_GIVEN_AFTER_COMMAND, {})}
    if values["quiet"] and values["verbose"]:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other; give one")
    if not values["storage_root"].strip():
        raise click.BadParameter("is empty; give the folder holding the generation folders",
                                 param_hint="--storage-root / STORAGE_ROOT")
    settings = Settings(normalize_database_url(values["database_url"]), Path(values["storage_root"]),
                        values["path_prefix"], values["legacy_links"])
    output = Output(values["as_json"], values["quiet"], values["verbose"])
    if not output.quiet and not click_context.meta.get(_ANNOUNCED):
        from storage_migrator.db.rows import display_url  # SQLAlchemy: not imported for --help and --version

        click_context.meta[_ANNOUNCED] = True
        click.echo(f"storage-migrate: database {display_url(settings.database_url)}, "
                   f"ROOT {os.path.abspath(settings.storage_root)}", err=True)
    return Context(settings, output, CloudStorage.from_environment(os.environ))


def pass_context(function: Callable) -> Callable:
    """Hands a command its ``Context`` as first argument (instead of Click's context)."""
    @functools.wraps(function)
    def with_context(*arguments: Any, **options: Any) -> Any:
        return function(_tool_context(click.get_current_context()), *arguments, **options)

    return with_context


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


class ProgressBar:
    """A tqdm bar on stderr, only when stderr is a terminal and output is not JSON or quiet: in
    bytes with an ETA when the run moves legacy folders (their total is known at the start),
    else in generations. A context manager: the bar is cleared on the way out, Ctrl-C included."""

    def __init__(self, output: Output, description: str) -> None:
        self.shown = output.show_progress()
        self.description = description
        self._bar: Any = None

    def factory(self) -> ProgressFactory | None:
        return self.start if self.shown else None

    def start(self, workload: Workload) -> Callable[[int], None]:
        from tqdm import tqdm

        if workload.legacy_bytes > 0:
            bar = tqdm(total=workload.legacy_bytes, desc=self.description, unit="B", unit_scale=True,
                       unit_divisor=1024, file=sys.stderr, leave=False, ncols=_bar_columns())
            shown = [0]

            def advance_bytes(count: int) -> None:
                done = min(workload.bytes_done(), workload.legacy_bytes)
                bar.update(done - shown[0])
                shown[0] = done

            self._bar = bar
            return advance_bytes
        bar = tqdm(total=workload.generations, desc=self.description, unit="gen", file=sys.stderr, leave=False,
                   ncols=_bar_columns())
        self._bar = bar
        return bar.update

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exception: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            sys.stderr.write("\r\x1b[K")         # the terminal's own ^C echo too
            sys.stderr.flush()


def _bar_columns() -> int:
    """The bar leaves room at the end of the line for the terminal's ``^C`` echo: a full-width
    bar would wrap there, and the bar could no longer be cleared."""
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        columns = 80
    return max(20, columns - 4)


def render_report(report: RunReport, output: Output, cloud: CloudStorage | None = None) -> None:
    """The report as JSON or text. The cloud copies to rename are printed even with -q: they
    are the operator's to do, and a renumbering mostly happens in a cron resync."""
    if output.as_json:
        click.echo(json.dumps(report.to_json(cloud), indent=2))
        return
    for outcome in report.outcomes:
        verb = f"would be {outcome.action.value}" if report.dry_run else outcome.action.value
        line = f"{outcome.project_id} v{outcome.version} {outcome.id}: {verb}"
        if outcome.failed:
            click.echo(f"{line}: {outcome.error}", err=True)
            continue
        if output.quiet:
            continue
        noteworthy = report.dry_run or output.verbose or outcome.skipped
        if not noteworthy:
            continue
        if outcome.from_path:
            line += f" {outcome.from_path} -> {outcome.storage_path}"
        elif outcome.storage_path and not outcome.skipped:
            line += f" -> {outcome.storage_path}"
        if outcome.file_count is not None:
            line += f" ({outcome.file_count} files, {_human_bytes(outcome.total_size_bytes or 0)})"
        if outcome.from_version:
            line += f" (diff from v{outcome.from_version})"
        if outcome.reason:
            line += f" ({outcome.reason})"
        click.echo(line)
    if report.error:
        click.echo(f"error: {report.error}", err=True)
    if report.interrupted:
        click.echo("interrupted: stopped after the generation at hand; rerun to finish", err=True)
    for line in cloud_key_lines(report.renumberings, cloud, report.dry_run):
        click.echo(line)
    if not output.quiet:
        for link in report.removed_links:
            click.echo(f"removed the tool's link to a deleted generation (it pointed nowhere): {link}")
        for orphan in report.orphans:
            click.echo(f"orphan folder (no row; left alone): {orphan}")
        for leftover in report.leftovers:
            click.echo(f"leftover folder (the application's scratch copy; left alone): {leftover}")
        for line in application_state_lines(report.application_states):
            click.echo(line)
        if report.coordination is not None:
            from storage_migrator.engine.coordinate import coordination_line

            click.echo(coordination_line(report.coordination))
        verb = "would migrate" if report.dry_run else "migrated"
        left = report.skipped - report.unchanged
        summary = (f"{report.command}: {verb} {report.migrated}, unchanged {report.unchanged}, skipped {left}, "
                   f"failed {report.failed}")
        if not report.dry_run:
            summary += f"; {_human_bytes(report.bytes_handled)} in {report.seconds:.1f} s"
        else:
            summary += "; nothing was changed (dry run)"
        click.echo(summary)


DISTRIBUTION = "storage-migrator"


EXIT_CODES_HELP = """\b
Exit codes: 0 all done; 1 some generations failed (the others are done) or watch can no
longer watch; 2 usage, configuration or precondition error; 3 verify found problems;
75 another run holds the lock; 130 interrupted (Ctrl-C or SIGTERM)."""


def _global_options(*, after_the_command: bool) -> Callable[[Callable], Callable]:
    """The options every command takes. Before the command (on the group) they carry their
    defaults and environment variables; repeated after it they only override what was given."""
    def option(*declarations: str, envvar: str | list[str] | None = None, default: object = None,
               show_default: bool | str = False, **attributes: Any) -> Callable[[Callable], Callable]:
        if after_the_command:
            return click.option(*declarations, expose_value=False, callback=_remember_given, **attributes)
        return click.option(*declarations, envvar=envvar, show_envvar=envvar is not None, default=default,
                            show_default=show_default, **attributes)

    options = [
        option("--database-url", envvar="DATABASE_URL", default=DEFAULT_DATABASE_URL, show_default=True,
               help="SQLAlchemy URL; postgresql:// (and +asyncpg, +psycopg2) means psycopg 3."),
        option("--storage-root", envvar=["STORAGE_ROOT", "FILE_STORAGE_PATH"], default=DEFAULT_STORAGE_ROOT,
               show_default=True, type=click.Path(path_type=str),
               help="ROOT: the folder holding the generation folders (the application's FILE_STORAGE_PATH "
               "when STORAGE_ROOT is not set)."),
        option("--path-prefix", envvar="STORAGE_PATH_PREFIX", default=default_path_prefix,
               show_default="FILE_STORAGE_PATH as the application spells it: storage/projects",
               help="How the application spells ROOT in generations.storage_path."),
        option("--legacy-links/--no-legacy-links", default=True, show_default=True,
               help="Leave <ROOT>/<generation_id> as a link to the moved source/ for the application's "
               "flat-layout code."),
        option("--json", "as_json", is_flag=True, default=False, help="Print JSON on stdout instead of text."),
        option("-q", "--quiet", is_flag=True, default=False,
               help="Print only errors (another run holding the lock, exit 75, is not one) and the "
               "cloud copies a renumbering left under an old number."),
        option("-v", "--verbose", is_flag=True, default=False, help="Print every generation."),
    ]

    def decorate(function: Callable) -> Callable:
        for add in reversed(options):
            function = add(function)
        return function

    return decorate


global_options = _global_options(after_the_command=False)
global_options_again = _global_options(after_the_command=True)


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


def finish(report: RunReport, context: Context, metrics_file: Path | None) -> None:
    """Render ``report``, write its metrics file if asked, and exit with its code."""
    render_report(report, context.output, context.cloud)
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
@pass_context
def run(context: Context, dry_run: bool, workers: int, coordinate: bool = False, lease_seconds: float = 60,
        metrics_file: Path | None = None) -> None:
    """Migrate every generation still in the legacy layout."""
    from storage_migrator.commands.run import run

    with ProgressBar(context.output, "migrating") as bar:
        report = run(context.settings, dry_run=dry_run, progress=bar.factory(), workers=workers,
                         keep_all=dry_run or context.output.keeps_every_line(), coordinate=coordinate and not dry_run,
                         lease_seconds=lease_seconds)
    finish(report, context, metrics_file)


@main.command("demo-data")
@global_options_again
@click.option("--projects", default=6, show_default=True, callback=_at_least_the_demo_minimum("projects"),
              help="Number of projects (at least one per edge case).")
@click.option("--generations", default=6, show_default=True,
              callback=_at_least_the_demo_minimum("generations_per_project"), help="Average generations per project.")
@click.option("--files", default=40, show_default=True, callback=_at_least_the_demo_minimum("files_per_generation"),
              help="Average files per generation.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same installation.")
@pass_context
def demo_data(context: Context, projects: int, generations: int, files: int, seed: int) -> None:
    """Create a sample legacy installation (database at e011ab9dd223 plus folders) to try the tool on."""
    from storage_migrator.demo import create_demo_installation

    installation = create_demo_installation(context.settings, projects, generations, files, seed)
    if context.output.as_json:
        click.echo(json.dumps({"demo_project_id": installation.demo_project_id,
                               "projects": len(installation.project_ids),
                               "generations": len(installation.generation_ids),
                               "files": installation.file_count}))
    elif not context.output.quiet:
        click.echo(f"created {len(installation.project_ids)} projects, {len(installation.generation_ids)} generations, "
                   f"{installation.file_count} files under {context.settings.storage_root}")
        click.echo(f"demo project: {installation.demo_project_id}")
        click.echo("next: storage-migrate db upgrade && storage-migrate --dry-run")


@main.command("diff")
@global_options_again
@click.argument("project_id")
@click.option("--patch", "with_patch", is_flag=True, help="Print the patch text too.")
@click.option("--from", "from_version", type=int, help="Compare this version …")
@click.option("--to", "to_version", type=int, help="… with this one, on the fly.")
@pass_context
def diff_command(context: Context, project_id: str, with_patch: bool, from_version: int | None,
                 to_version: int | None) -> None:
    """Per version: from-version, added / modified / deleted counts and the patch path."""
    from storage_migrator.commands.diff import project_diff

    if from_version is not None and to_version is not None and from_version > to_version:
        raise click.BadParameter(f"--from {from_version} is above --to {to_version}; give the older version "
                                 "first (the patch goes from --from to --to)", param_hint="--from/--to")

    report = project_diff(context.settings, project_id, from_version, to_version, with_patch)
    if context.output.as_json:
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
@pass_context
def resync(context: Context, workers: int, coordinate: bool, lease_seconds: float, metrics_file: Path | None,
           adopt_complete: bool) -> None:
    """The cron job: migrate stragglers, re-read changed generations, repair metadata, report orphans."""
    from storage_migrator.commands.run import run

    with ProgressBar(context.output, "resyncing") as bar:
        report = run(context.settings, resync=True, progress=bar.factory(), workers=workers,
                         keep_all=context.output.keeps_every_line(), coordinate=coordinate,
                         adopt_complete=adopt_complete, lease_seconds=lease_seconds)
    finish(report, context, metrics_file)


@main.command()
@global_options_again
@pass_context
def verify(context: Context) -> None:
    """Read-only check of the database against the disk; exit 3 on any problem."""
    from storage_migrator.commands.verify import verify as verify_installation

    report = verify_installation(context.settings)
    if context.output.as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"{problem.generation_id or '-'} {problem.kind}: {problem.detail}")
        if not context.output.quiet:
            for line in application_state_lines(report.application_states):
                click.echo(line)
        if not context.output.quiet or not report.ok:
            click.echo(f"verify: {report.generations_checked} generations checked, "
                       f"{len(report.problems)} problem(s)", err=not report.ok)
    sys.exit(report.exit_code)


@main.command()
@global_options_again
@click.option("--project", "project_id", metavar="ID",
              help="Only this project's generations (the undo at the application's later schema revisions).")
@pass_context
def rollback(context: Context, project_id: str | None) -> None:
    """Move every generation back to <ROOT>/<generation_id>/ and restore storage_path."""
    from storage_migrator.commands.rollback import rollback as rollback_installation

    report = rollback_installation(context.settings, keep_all=context.output.keeps_every_line(), project_id=project_id)
    render_report(report, context.output)
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
@pass_context
def watch(context: Context, debounce: float, metrics_port: int | None, metrics_address: str) -> None:
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
        if context.output.as_json:
            click.echo(json.dumps(report.to_json(context.cloud)))
        else:
            render_report(report, context.output, context.cloud)

    watch_storage(context.settings, debounce_seconds=debounce, on_report=on_report,
                  keep_all=context.output.keeps_every_line(), metrics=metrics)


@main.group("db")
def db_group() -> None:
    """The schema migration (Alembic), from wherever the tool is installed."""


@db_group.command("upgrade")
@global_options_again
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it (offline mode).")
@pass_context
def db_upgrade(context: Context, revision: str, sql: bool) -> None:
    """Upgrade the schema to REVISION (default: head). At a later revision of the application's,
    with every column the tool needs, there is nothing to do: says so, exit 0."""
    from storage_migrator.commands.db import upgrade

    nothing_to_do = upgrade(context.settings, revision, sql=sql)
    if nothing_to_do is not None and not context.output.quiet:
        click.echo(nothing_to_do, err=True)


@db_group.command("downgrade")
@global_options_again
@click.argument("revision")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it (offline mode).")
@pass_context
def db_downgrade(context: Context, revision: str, sql: bool) -> None:
    """Downgrade the schema to REVISION (e.g. e011ab9dd223, after `storage-migrate rollback`).
    Refused (exit 2) at a later revision of the application's: the schema stays there."""
    from storage_migrator.commands.db import downgrade

    downgrade(context.settings, revision, sql=sql)


@db_group.command("current")
@global_options_again
@pass_context
def db_current(context: Context) -> None:
    """Print the revision the database is at."""
    from storage_migrator.commands.db import current

    revision = current(context.settings.database_url)
    if context.output.as_json:
        click.echo(json.dumps({"revision": revision}))
    else:
        click.echo(revision or "(no revision: an empty database)")
