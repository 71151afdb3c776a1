"""The local launcher: real subprocesses under their supervisor, state in a work directory."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import fake_workload
from tests.support.waiting import eventually
from tunewire.contracts.v1 import training_pb2
from tunewire.core.launchers import factory, launching, localjobs
from tunewire.stack import processes

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
Phase = launching.JobPhase


def spec(name: str, *args: str, kind: launching.WorkloadKind = "train") -> launching.WorkloadSpec:
    return launching.WorkloadSpec(
        name=name, kind=kind, args=list(args), labels={}, module=fake_workload.MODULE
    )


def make_launcher(workdir: Path, *, deadline_s: int = 600) -> localjobs.LocalLauncher:
    settings = launching.LocalLauncherSettings(
        workdir=str(workdir), active_deadline_seconds=deadline_s
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return localjobs.LocalLauncher(settings, kind="train", env=env, stop_grace_s=1.0, poll_s=0.05)


def wait_for(
    launcher: localjobs.LocalLauncher,
    name: str,
    done: Callable[[launching.JobStatus], bool],
    *,
    timeout_s: float = 15.0,
) -> launching.JobStatus:

    def reached() -> launching.JobStatus:
        status = launcher.status(name)
        assert done(status), f"{name} stayed {status}"
        return status

    return eventually(reached, timeout_s=timeout_s, interval_s=0.05)


def finished(status: launching.JobStatus) -> bool:
    return status.finished


def gone(pid: int) -> bool:
    return processes.process_identity(pid) is None


def wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    def ended() -> None:
        assert gone(pid), f"pid {pid} still runs"

    eventually(ended, timeout_s=timeout_s, interval_s=0.05)


def log_pids(path: str, pattern: str, *, timeout_s: float = 10.0) -> int:
    """The pid a workload printed (``pattern`` has one group), once it is in the log."""

    def printed() -> int:
        found = re.search(pattern, Path(path).read_text())
        assert found, f"{pattern!r} never appeared in {path}"
        return int(found.group(1))

    return eventually(printed, timeout_s=timeout_s, interval_s=0.05)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[localjobs.LocalLauncher]:
    running = make_launcher(tmp_path / "workloads")
    yield running
    for state in running.workdir.glob("*.state.json"):
        running.cancel(state.name.removesuffix(".state.json"))


def test_success_and_log(launcher: localjobs.LocalLauncher) -> None:
    job = dataclasses.replace(
        spec("tw-train-ok", "--print-env", "GREETING"), env={"GREETING": "hello"}
    )

    assert launcher.launch(job) is True
    status = wait_for(launcher, job.name, finished)

    assert status.phase is Phase.SUCCEEDED
    assert status.reason == training_pb2.FAILURE_REASON_UNSPECIFIED
    assert "GREETING=hello" in Path(status.logs).read_text()


def test_failure_reports_the_last_log_line(launcher: localjobs.LocalLauncher) -> None:
    launcher.launch(spec("tw-train-bad", "--exit", "3"))

    status = wait_for(launcher, "tw-train-bad", finished)

    assert status.phase is Phase.FAILED
    assert status.reason == training_pb2.FAILURE_REASON_TRAINER_ERROR
    assert status.message == "exit code 3: fake workload failing on purpose with status 3"


def test_exit_75_is_a_storage_failure(launcher: localjobs.LocalLauncher) -> None:
    launcher.launch(spec("tw-train-s3", "--exit", str(launching.EXIT_STORAGE)))

    status = wait_for(launcher, "tw-train-s3", finished)

    assert status.phase is Phase.FAILED
    assert status.reason == training_pb2.FAILURE_REASON_STORAGE
    assert status.message == "exit code 75: fake workload failing on purpose with status 75"


def test_deadline_stops_the_workload(tmp_path: Path) -> None:
    launcher = make_launcher(tmp_path, deadline_s=1)
    launcher.launch(spec("tw-train-slow", "--sleep", "60"))
    pid = log_pids(launcher.status("tw-train-slow").logs, r"fake workload pid (\d+)")

    status = wait_for(launcher, "tw-train-slow", finished)

    assert status.phase is Phase.FAILED
    assert status.reason == training_pb2.FAILURE_REASON_DEADLINE_EXCEEDED
    assert "deadline of 1 s" in status.message
    wait_gone(pid)


def test_a_missing_interpreter_is_a_trainer_error(tmp_path: Path) -> None:
    settings = launching.LocalLauncherSettings(
        workdir=str(tmp_path), python=str(tmp_path / "no-such-python")
    )
    launcher = localjobs.LocalLauncher(settings, kind="train", poll_s=0.05)
    launcher.launch(spec("tw-train-nopython"))

    status = wait_for(launcher, "tw-train-nopython", finished)

    assert status.reason == training_pb2.FAILURE_REASON_TRAINER_ERROR
    assert status.message.startswith("exit code 127: cannot start ")


def test_killed_by_a_signal_is_named(launcher: localjobs.LocalLauncher) -> None:
    launcher.launch(spec("tw-train-killed", "--sleep", "60"))
    pid = log_pids(launcher.status("tw-train-killed").logs, r"fake workload pid (\d+)")

    os.kill(pid, 9)
    status = wait_for(launcher, "tw-train-killed", finished)

    assert status.phase is Phase.FAILED
    assert status.reason == training_pb2.FAILURE_REASON_UNKNOWN
    assert status.message == "killed by SIGKILL (possibly out of memory)"


def test_cancel_kills_the_process_group_and_forgets(launcher: localjobs.LocalLauncher) -> None:
    # The workload ignores SIGTERM (so the grace ends in SIGKILL) and has a child of its own.
    launcher.launch(spec("tw-train-stubborn", "--ignore-term", "--spawn", "--sleep", "60"))
    logs = launcher.status("tw-train-stubborn").logs
    pid = log_pids(logs, r"fake workload pid (\d+)")
    child = log_pids(logs, r"child pid (\d+)")
    assert launcher.status("tw-train-stubborn").phase is Phase.RUNNING

    assert launcher.cancel("tw-train-stubborn") is True

    wait_gone(pid)
    wait_gone(child)
    assert launcher.status("tw-train-stubborn").phase is Phase.MISSING
    assert launcher.cancel("tw-train-stubborn") is False


def test_launch_is_idempotent_until_cancelled(launcher: localjobs.LocalLauncher) -> None:
    job = spec("tw-train-once", "--sleep", "60")
    assert launcher.launch(job) is True
    assert launcher.launch(job) is False
    pid = log_pids(launcher.status(job.name).logs, r"fake workload pid (\d+)")

    launcher.cancel(job.name)
    assert launcher.launch(job) is True

    assert log_pids(launcher.status(job.name).logs, r"fake workload pid (\d+)") != pid
    quick = spec("tw-train-quick")
    launcher.launch(quick)
    wait_for(launcher, quick.name, finished)
    assert launcher.launch(quick) is False


def test_concurrent_launches_start_one_workload(launcher: localjobs.LocalLauncher) -> None:
    job = spec("tw-train-race", "--sleep", "60")
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(launcher.launch(job))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, False, False, True]


def test_another_kind_is_not_ours(launcher: localjobs.LocalLauncher) -> None:
    launcher.launch(spec("tw-train-mine", "--sleep", "60"))
    evaluator = localjobs.LocalLauncher(launcher.settings, kind="evaluate")

    assert evaluator.status("tw-train-mine").phase is Phase.MISSING
    assert evaluator.cancel("tw-train-mine") is False
    with pytest.raises(ValueError, match="runs evaluate workloads"):
        evaluator.launch(spec("tw-train-other"))


def test_watch_reports_every_change(launcher: localjobs.LocalLauncher) -> None:
    seen: list[launching.JobStatus] = []
    stop = threading.Event()
    watcher = threading.Thread(target=launcher.watch, args=(seen.append, stop))
    watcher.start()
    try:
        launcher.launch(spec("tw-train-watched", "--sleep", "0.5", "--exit", "4"))
        deadline = time.monotonic() + 15

        def ended() -> None:
            assert any(s.finished for s in seen), seen

        def forgotten() -> None:
            assert seen[-1].phase is Phase.MISSING, seen

        eventually(ended, timeout_s=15, interval_s=0.05)
        launcher.cancel("tw-train-watched")
        # Within what is left of the same 15 s.
        eventually(forgotten, timeout_s=deadline - time.monotonic(), interval_s=0.05)
    finally:
        stop.set()
        watcher.join()

    # PENDING shows only when the watch looks while the launch is writing the state file.
    phases = [s.phase for s in seen if s.phase is not Phase.PENDING]
    assert phases == [Phase.RUNNING, Phase.FAILED, Phase.MISSING]
    assert seen[-2].reason == training_pb2.FAILURE_REASON_TRAINER_ERROR


def test_a_new_launcher_adopts_running_and_finished_workloads(tmp_path: Path) -> None:
    first = make_launcher(tmp_path)
    first.launch(spec("tw-train-long", "--sleep", "60"))
    first.launch(spec("tw-train-short", "--sleep", "0.3", "--exit", "5"))
    long_pid = log_pids(first.status("tw-train-long").logs, r"fake workload pid (\d+)")
    del first
    # The short one ends while no launcher looks: its supervisor records the outcome.
    outcome = tmp_path / "tw-train-short.exit.json"

    def recorded() -> None:
        assert outcome.is_file(), "the short one's supervisor recorded no outcome"

    eventually(recorded, timeout_s=10, interval_s=0.05)

    second = make_launcher(tmp_path)
    seen: list[launching.JobStatus] = []
    stop = threading.Event()
    watcher = threading.Thread(target=second.watch, args=(seen.append, stop))
    watcher.start()
    try:
        eventually(
            lambda: {s.name for s in seen},
            ready=lambda names: names >= {"tw-train-long", "tw-train-short"},
            timeout_s=10,
            interval_s=0.05,
            what="the new launcher's watch reporting both workloads",
        )
    finally:
        stop.set()
        watcher.join()

    by_name = {s.name: s for s in seen}
    assert by_name["tw-train-long"].phase is Phase.RUNNING
    assert by_name["tw-train-short"].phase is Phase.FAILED
    assert by_name["tw-train-short"].message.startswith("exit code 5: ")
    assert second.launch(spec("tw-train-long")) is False
    assert second.cancel("tw-train-long") is True
    wait_gone(long_pid)


def test_a_reused_pid_is_not_mistaken_for_the_workload(
    launcher: localjobs.LocalLauncher,
) -> None:
    # A state file whose pid now belongs to another process (same pid, other start time).
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        launcher.workdir.mkdir(parents=True, exist_ok=True)
        state = {"name": "tw-train-old", "kind": "train", "pid": stranger.pid, "started": "1"}
        (launcher.workdir / "tw-train-old.state.json").write_text(
            json.dumps({**state, "deadline_s": 60.0})
        )

        status = launcher.status("tw-train-old")
        assert launcher.cancel("tw-train-old") is True

        assert status.phase is Phase.FAILED
        assert status.reason == training_pb2.FAILURE_REASON_UNKNOWN
        assert "ended without recording an exit status" in status.message
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_build_picks_the_local_launcher(tmp_path: Path) -> None:
    chosen = launching.LauncherSettings(
        kind="local", local=launching.LocalLauncherSettings(workdir=str(tmp_path))
    )

    built = factory.build(chosen, kind="evaluate", local_env={"PATH": "/usr/bin"})

    assert isinstance(built, localjobs.LocalLauncher)
    assert built.kind == "evaluate"


@pytest.mark.parametrize("name", ["", "Upper", "../escape", "a" * 64, "-dash"])
def test_a_name_that_is_no_dns_label_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        spec(name)
