"""A command's numbers in Prometheus' text format: written to a file for node_exporter's textfile
collector (``run``/``resync --metrics-file``), or served by ``watch --metrics-port``.

The file is replaced atomically (prometheus_client writes a temporary file and renames it), so
the collector never reads half of it. The last success time survives a failed run: it is read
back from the file being replaced."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from storage_migrator.errors import EXIT_OK, UsageError
from storage_migrator.records import Outcome
from storage_migrator.report import RunReport

PREFIX = "storage_migrate"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"
COUNTED_OUTCOMES = (Outcome.FAILED, Outcome.CHANGED, Outcome.GONE)


@dataclass
class ReportGauges:
    """The gauges of one command's last report, in ``registry``."""

    registry: CollectorRegistry
    generations: Gauge = field(init=False)
    outcomes: Gauge = field(init=False)
    orphans: Gauge = field(init=False)
    bytes_handled: Gauge = field(init=False)
    duration: Gauge = field(init=False)
    finished: Gauge = field(init=False)
    last_success: Gauge = field(init=False)
    exit_code: Gauge = field(init=False)

    def __post_init__(self) -> None:
        def gauge(name: str, documentation: str, labels: tuple[str, ...] = ("command",)) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

        self.generations = gauge("generations", "Generations of the last run by tally "
                                 "(migrated, skipped, unchanged, failed).", ("command", "tally"))
        self.outcomes = gauge("outcomes", "Generations of the last run the application changed or deleted "
                              "meanwhile, or that failed.", ("command", "outcome"))
        self.orphans = gauge("orphans", "Folders under ROOT without a row (resync).")
        self.bytes_handled = gauge("bytes", "Bytes moved or read by the last run.")
        self.duration = gauge("duration_seconds", "Wall time of the last run.")
        self.finished = gauge("last_run_timestamp_seconds", "When the last run finished (Unix time).")
        self.last_success = gauge("last_success_timestamp_seconds", "When a run last finished with exit 0.")
        self.exit_code = gauge("exit_code", "Exit code of the last run.")

    def record(self, report: RunReport, previous_success: float | None = None) -> None:
        command, now = report.command, time.time()
        for tally, count in (("migrated", report.migrated), ("skipped", report.skipped),
                             ("unchanged", report.unchanged), ("failed", report.failed)):
            self.generations.labels(command, tally).set(count)
        for outcome in COUNTED_OUTCOMES:
            self.outcomes.labels(command, outcome.value).set(
                report.failed if outcome is Outcome.FAILED
                else sum(1 for line in report.outcomes if line.action is outcome))
        self.orphans.labels(command).set(len(report.orphans))
        self.bytes_handled.labels(command).set(report.bytes_handled)
        self.duration.labels(command).set(report.seconds)
        self.finished.labels(command).set(now)
        self.exit_code.labels(command).set(report.exit_code)
        success = now if report.exit_code == EXIT_OK else previous_success
        if success is not None:
            self.last_success.labels(command).set(success)


def write_metrics_file(path: Path, report: RunReport) -> None:
    """Replace ``path`` with the numbers of ``report`` (not below ROOT: the operator's file).
    A path that cannot be written is a one-line error (exit 2) after the report was printed."""
    gauges = ReportGauges(CollectorRegistry())
    gauges.record(report, _previous_success(path, report.command))
    try:
        write_to_textfile(str(path), gauges.registry)
    except OSError as error:
        raise UsageError(f"cannot write the metrics file {path}: {error.strerror}; "
                         "point --metrics-file at a writable file") from None


def _previous_success(path: Path, command: str) -> float | None:
    try:
        text = path.read_text()               # not below ROOT: the operator's metrics file
    except (OSError, UnicodeError):
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("command") == command:
                    return float(sample.value)
    except ValueError:
        return None
    return None


@dataclass
class WatchMetrics:
    """What ``watch`` serves on /metrics: its last resync's report, how far behind it is, and
    how often the kernel's event queue overflowed."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    gauges: ReportGauges = field(init=False)
    lag: Gauge = field(init=False)
    overflows: Counter = field(init=False)
    _last_success: float | None = None

    def __post_init__(self) -> None:
        self.gauges = ReportGauges(self.registry)
        self.lag = Gauge(f"{PREFIX}_watch_lag_seconds", "Age of the oldest change watch has not resynced yet "
                         "(0 when it is up to date).", registry=self.registry)
        self.overflows = Counter(f"{PREFIX}_watch_overflows", "Times the kernel's event queue overflowed "
                                 "(each followed by a resync of every project).", registry=self.registry)

    def record(self, report: RunReport) -> None:
        self.gauges.record(report, self._last_success)
        if report.exit_code == EXIT_OK:
            self._last_success = time.time()

    def serve(self, port: int, address: str) -> None:
        """Serve /metrics on ``address``:``port`` from a daemon thread (it ends with the process)."""
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as error:
            raise UsageError(f"cannot serve metrics on {address}:{port}: {error.strerror}; "
                             "choose another --metrics-port") from None
