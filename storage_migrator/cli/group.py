"""The ``storage-migrate`` group: the options every command takes (before or after the
command), the invocation they make, and the one error boundary — an expected error becomes one
line and its exit code, Ctrl-C and SIGTERM exit 130."""
from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from storage_migrator.cli.render import Output
from storage_migrator.cloud import CloudStorage
from storage_migrator.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_STORAGE_ROOT,
    Settings,
    default_path_prefix,
    normalize_database_url,
)
from storage_migrator.errors import (
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    LockHeld,
    printable,
)


class ToolGroup(click.Group):
    """Click's group with the library's boundary: a ``CommandError`` becomes one line on stderr
    and its exit code; a database error that escapes a command does too. Any other exception is
    a bug: one line asking for a report (the traceback with -v) and exit ``EXIT_INTERNAL_ERROR``."""

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
            from storage_migrator.db.connect import first_line
            click.echo(f"error: the database failed: {first_line(error)}; nothing is lost — rerun when it is back", err=True)
            ctx.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise                       # Click's own ways out (ctx.exit raises Exit, a RuntimeError)
        except Exception as error:      # noqa: BLE001 - the one place a bug is caught: to say so
            _report_bug(error, verbose=_is_verbose(ctx))
            ctx.exit(EXIT_INTERNAL_ERROR)


def _report_bug(error: Exception, verbose: bool) -> None:
    """An exception the tool does not expect, on stderr: with -v its traceback, then one line
    naming it. What the command had done stays consistent (every step is resumable, the lock
    is released on the way out), so rerunning after a fix is safe."""
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    lines = str(error).splitlines()
    what = f"{type(error).__name__}: {printable(lines[0])}" if lines else type(error).__name__
    hint = "please report this" + ("" if verbose else ", with the output of the same command run with -v")
    click.echo(f"storage-migrate: internal error: {what} — {hint}", err=True)


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
class Invocation:
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
    return _global_flag(click_context, "quiet")


def _is_verbose(click_context: click.Context) -> bool:
    return _global_flag(click_context, "verbose")


def _global_flag(click_context: click.Context, name: str) -> bool:
    """A global option's value: given after the command, else on the group."""
    given_after = click_context.meta.get(_GIVEN_AFTER_COMMAND, {})
    return bool(given_after.get(name, click_context.find_root().params.get(name)))


def _invocation(click_context: click.Context) -> Invocation:
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
        from storage_migrator.db.connect import display_url  # SQLAlchemy: not imported for --help and --version

        click_context.meta[_ANNOUNCED] = True
        click.echo(f"storage-migrate: database {display_url(settings.database_url)}, "
                   f"ROOT {os.path.abspath(settings.storage_root)}", err=True)
    return Invocation(settings, output, CloudStorage.from_environment(os.environ))


def pass_invocation(function: Callable) -> Callable:
    """Hands a command its ``Invocation`` as first argument (instead of Click's invocation)."""
    @functools.wraps(function)
    def with_context(*arguments: Any, **options: Any) -> Any:
        return function(_invocation(click.get_current_context()), *arguments, **options)

    return with_context



DISTRIBUTION = "storage-migrator"


EXIT_CODES_HELP = """\b
Exit codes: 0 all done; 1 some generations failed (the others are done) or watch can no
longer watch; 2 usage, configuration or precondition error; 3 verify found problems;
70 internal error (a bug: please report it, with the output of -v); 75 another run holds
the lock; 130 interrupted (Ctrl-C or SIGTERM)."""


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
