"""Stopping processes never signals a pid that is no longer ours."""

from __future__ import annotations

import sys
from pathlib import Path

from tunewire.stack import processes


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
