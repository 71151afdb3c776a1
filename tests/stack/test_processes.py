"""Stopping processes never signals a pid that is no longer ours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tunewire.stack import processes

pytestmark = pytest.mark.stack


def _start(tmp_path: Path, name: str, code: str) -> processes.ManagedProcess:
    process = processes.ManagedProcess(
        name, [sys.executable, "-c", code], log_path=tmp_path / f"{name}.log"
    )
    process.start()
    return process


def test_stopping_a_long_exited_child_spares_whoever_has_its_pid_now(tmp_path: Path) -> None:
    exited = _start(tmp_path, "exited", "pass")
    exited._require_popen().wait(timeout=30)
    bystander = _start(tmp_path, "bystander", "import time; time.sleep(60)")
    try:
        # As if the pid had been handed out again: to another session leader, as ours are.
        exited._require_popen().pid = bystander.pid

        exited.stop(grace=1)

        assert bystander.poll() is None, "a process that merely reused the pid was signalled"
    finally:
        bystander.stop(grace=1)
    assert bystander.poll() is not None


def test_a_started_process_is_recognised_by_another_process_later(tmp_path: Path) -> None:
    # Popen returns while the kernel is still finishing the exec, when /proc shows an empty
    # command line for a moment: an identity taken then never matches again, and `tunewire
    # down` (another process, reading the state file) would leave that service running.
    started = [_start(tmp_path, f"p{n}", "import time; time.sleep(60)") for n in range(40)]
    try:
        for process in started:
            record = processes.ProcessRecord.from_json(process.record().to_json())
            assert record.is_running(), f"{record.identity!r} is not recognised"
    finally:
        processes.stop_all(started, grace=1)
    assert all(process.poll() is not None for process in started)
