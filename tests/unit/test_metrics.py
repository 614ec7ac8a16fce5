"""Prometheus numbers, through the real command: ``run``/``resync --metrics-file`` replace a
textfile-collector file that says what the run did (and keeps the last success time across a
failed run); ``watch --metrics-port`` serves the same of its resyncs, on 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.sandbox import Sandbox, build_installation, execute_sql, query_rows, run_cli


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_run_writes_its_numbers_and_a_failed_run_keeps_the_last_success(sqlite_url: str, tmp_path: Path) -> None:
    installation: Sandbox = build_installation(sqlite_url, tmp_path / "projects")
    metrics_file = tmp_path / "textfile" / "storage_migrate.prom"
    metrics_file.parent.mkdir()
    result = run_cli(installation, "--json", "run", "--metrics-file", str(metrics_file))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    first = samples(metrics_file.read_text())
    assert value(first, "storage_migrate_generations", command="run", tally="migrated") == document["migrated"] > 0
    assert value(first, "storage_migrate_generations", command="run", tally="failed") == 0
    assert value(first, "storage_migrate_bytes", command="run") == document["bytes"]
    assert value(first, "storage_migrate_exit_code", command="run") == 0
    assert abs(value(first, "storage_migrate_last_success_timestamp_seconds", command="run") - time.time()) < 120

    assert run_cli(installation, "resync", "--metrics-file", str(metrics_file)).returncode == 0
    succeeded_at = value(samples(metrics_file.read_text()), "storage_migrate_last_success_timestamp_seconds",
                         command="resync")
    broken = installation.sample.missing_folder_generation_id       # rebuilt by the run; now gone, row emptied
    (storage_path,) = query_rows(installation, "SELECT storage_path FROM generations WHERE id = :id", id=broken)[0]
    shutil.rmtree(installation.root / Path(storage_path).relative_to("storage/projects"))
    execute_sql(installation, "UPDATE generations SET output_files = 'null' WHERE id = :id", id=broken)
    failed = run_cli(installation, "resync", "--metrics-file", str(metrics_file))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    second = samples(metrics_file.read_text())
    assert value(second, "storage_migrate_exit_code", command="resync") == 1
    assert value(second, "storage_migrate_outcomes", command="resync", outcome="failed") == 1
    assert value(second, "storage_migrate_last_success_timestamp_seconds", command="resync") == succeeded_at
    assert [path.name for path in metrics_file.parent.iterdir()] == [metrics_file.name], "replaced atomically"


def test_an_unwritable_metrics_file_is_one_line_after_the_report(sqlite_url: str, tmp_path: Path) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    result = run_cli(installation, "run", "--metrics-file", str(tmp_path / "no-such-folder" / "x.prom"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot write the metrics file" in result.stderr and "run: migrated" in result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_watch_serves_its_resyncs_on_localhost(sqlite_url: str, tmp_path: Path) -> None:
    installation = build_installation(sqlite_url, tmp_path / "projects")
    assert run_cli(installation, "run").returncode == 0
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "storage_migrator", "watch", "--debounce", "0.3",
                                "--metrics-port", str(port)], env=installation.cli_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                time.sleep(0.2)
                continue
            if "storage_migrate_watch_lag_seconds" in text:
                break
        found = samples(text)
        assert value(found, "storage_migrate_watch_overflows_total") == 0
        assert value(found, "storage_migrate_watch_lag_seconds") >= 0
        listening = Path("/proc/net/tcp").read_text()
        assert f"0100007F:{port:04X}" in listening, "bound to 127.0.0.1 by default"
    finally:
        process.terminate()
        process.wait(timeout=60)
