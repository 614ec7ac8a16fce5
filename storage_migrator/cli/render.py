"""Rendering for people: a run's report as text or one JSON document, and the progress bar."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from storage_migrator.cloud import CloudStorage
from storage_migrator.report import ProgressFactory, RunReport, Workload, application_state_lines, cloud_key_lines


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
