"""The ``local`` launcher: each workload is a subprocess on this machine.

It is what the embedded stack and the tests use, so it keeps the promises the Kubernetes
launcher keeps: idempotent names, a deadline, classified failures, and outcomes that survive
a restart of the service that launched them. The last one shapes the design. A workload
runs under a small supervising process (``python -m tunewire.core.launchers.localjobs supervise``),
detached from the service, which waits for it, enforces the deadline and records the exit
status in a file; a workload that ends while no service is running is therefore not lost.

Per workload the work directory holds ``<name>.state.json`` (the supervisor's pid and start
time: pids are reused quickly, so a pid alone never proves the process is ours),
``<name>.exit.json`` (written by the supervisor when the workload ends) and ``<name>.log``
(its stdout and stderr). Each supervisor leads its own process group, so cancelling stops
whatever the workload started too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors
from tunewire.core.launchers import launching

log = logging.getLogger(__name__)

_STATE = ".state.json"
_EXIT = ".exit.json"
_CLAIM_STALE_S = 60.0
"""A state file still empty after this long belongs to a launcher that died while starting."""
_DEADLINE_GRACE_S = 10.0
"""Time a workload gets after SIGTERM at its deadline before it is killed."""
_START_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class _State:
    """What a later launcher needs to recognise a running workload."""

    name: str
    kind: str
    pid: int
    """The supervisor's pid, which is also its process group id."""
    started: str
    """The supervisor's start time in clock ticks since boot: changes when the pid is reused."""
    deadline_s: float


class LocalLauncher:
    """Runs workloads of one kind as local subprocesses, with their state in ``workdir``."""

    def __init__(
        self,
        settings: launching.LocalLauncherSettings,
        *,
        kind: launching.WorkloadKind,
        env: Mapping[str, str] | None = None,
        stop_grace_s: float = 10.0,
        poll_s: float = 0.2,
    ) -> None:
        """``env`` is the workloads' base environment (default: this process's);
        ``stop_grace_s`` is how long a cancelled workload may take to exit after SIGTERM;
        ``poll_s`` is how often :meth:`watch` looks at the work directory."""
        self.settings = settings
        self.kind = kind
        self.workdir = Path(settings.workdir).expanduser()
        self._env = dict(os.environ if env is None else env)
        self._stop_grace_s = stop_grace_s
        self._poll_s = poll_s

    def launch(self, spec: launching.WorkloadSpec) -> bool:
        """Start the workload; False when one of that name is running or finished."""
        if spec.kind != self.kind:
            raise ValueError(f"this launcher runs {self.kind} workloads, not {spec.kind}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        state_path = self._path(spec.name, _STATE)
        try:
            # The empty file is the claim: of two concurrent launches only one creates it.
            os.close(os.open(state_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            log.info("workload %s exists already; not starting a second one", spec.name)
            return False
        try:
            self._path(spec.name, _EXIT).unlink(missing_ok=True)
            pid, started = self._spawn(spec)
        except BaseException:
            state_path.unlink(missing_ok=True)
            raise
        state = _State(
            name=spec.name,
            kind=spec.kind,
            pid=pid,
            started=started,
            deadline_s=float(self.settings.active_deadline_seconds),
        )
        _write_json(state_path, dataclasses.asdict(state))
        log.info("started workload %s (supervisor pid %d)", spec.name, pid)
        return True

    def status(self, name: str) -> launching.JobStatus:
        """The workload's status from its files and its supervisor (``MISSING`` if unknown)."""
        state = self._read_state(name)
        if state is None:
            return launching.JobStatus(name=name, phase=launching.JobPhase.MISSING)
        return self._judge(name, state)

    def cancel(self, name: str) -> bool:
        """Stop the workload's process group (SIGTERM, SIGKILL after a grace) and forget it."""
        state = self._read_state(name)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while state == "claimed" and time.monotonic() < deadline:
            time.sleep(0.05)  # another thread is starting it: stop what it starts
            state = self._read_state(name)
        if state is None:
            return False
        if isinstance(state, _State):
            self._stop(state)
        for suffix in (_STATE, _EXIT):
            self._path(name, suffix).unlink(missing_ok=True)
        log.info("cancelled workload %s", name)
        return True

    def watch(self, on_change: launching.StatusCallback, stop: threading.Event) -> None:
        """Report every workload of this kind, then each change, until ``stop``."""
        last: dict[str, tuple[launching.JobPhase, int]] = {}
        while True:
            current = {status.name: status for status in self.statuses()}
            for name, status in current.items():
                key = (status.phase, status.reason)
                if last.get(name) != key:
                    last[name] = key
                    on_change(status)
            for name in [n for n in last if n not in current]:
                del last[name]
                on_change(launching.JobStatus(name=name, phase=launching.JobPhase.MISSING))
            if stop.wait(self._poll_s):
                return

    def _path(self, name: str, suffix: str) -> Path:
        return self.workdir / f"{name}{suffix}"

    def _spawn(self, spec: launching.WorkloadSpec) -> tuple[int, str]:
        """Start the supervisor; return its pid and start time once it runs on its own."""
        log_path = self._path(spec.name, ".log")
        python = self.settings.python or sys.executable
        argv = [
            sys.executable,
            "-m",
            __name__,
            "supervise",
            "--exit-file",
            str(self._path(spec.name, _EXIT)),
            "--deadline-s",
            str(self.settings.active_deadline_seconds),
            "--",
            *spec.command(python),
        ]
        env = {**self._env, **spec.env, "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log_file:
            starter = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=env,
                start_new_session=True,
            )
        with starter:
            assert starter.stdout is not None
            line = starter.stdout.readline().decode().split()
            starter.wait(timeout=_START_TIMEOUT_S)
        if len(line) != 2:
            raise errors.Misconfigured(
                f"the supervisor of workload {spec.name} did not start; its error is in "
                f"{log_path} (is tunewire installed for {sys.executable}?)"
            )
        return int(line[0]), line[1]

    def _read_state(self, name: str) -> _State | str | None:
        """The state, ``"claimed"`` while a launch is writing it, or None when unknown."""
        path = self._path(name, _STATE)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        if not text:
            return "claimed"
        data = json.loads(text)
        if data.get("kind") != self.kind:
            return None
        return _State(**data)

    def statuses(self) -> list[launching.JobStatus]:
        """Every workload of this kind the workdir knows, with its status."""
        names = sorted(p.name[: -len(_STATE)] for p in self.workdir.glob(f"*{_STATE}"))
        statuses = [self.status(name) for name in names]
        return [s for s in statuses if s.phase is not launching.JobPhase.MISSING]

    def _judge(self, name: str, state: _State | str) -> launching.JobStatus:
        logs = str(self._path(name, ".log"))

        def failed(reason: launching.FailureReason, message: str) -> launching.JobStatus:
            phase = launching.JobPhase.FAILED
            return launching.JobStatus(name, phase, reason=reason, message=message, logs=logs)

        if not isinstance(state, _State):
            try:
                claim_age = time.time() - self._path(name, _STATE).stat().st_mtime
            except FileNotFoundError:  # cancelled meanwhile
                return launching.JobStatus(name, launching.JobPhase.MISSING)
            if claim_age < _CLAIM_STALE_S:
                return launching.JobStatus(name, launching.JobPhase.PENDING, logs=logs)
            return failed(
                training_pb2.FAILURE_REASON_UNKNOWN,
                "the launcher stopped while starting this workload; cancel it and launch again",
            )
        outcome = _read_json(self._path(name, _EXIT))
        if outcome is None:
            if _start_ticks(state.pid) == state.started:
                return launching.JobStatus(name, launching.JobPhase.RUNNING, logs=logs)
            outcome = _read_json(self._path(name, _EXIT))  # it may have ended just now
        if outcome is None:
            return failed(
                training_pb2.FAILURE_REASON_UNKNOWN,
                f"the workload's supervisor (pid {state.pid}) ended without recording an exit "
                "status (killed, or the machine restarted); see the log",
            )
        code = int(outcome["returncode"])
        if outcome.get("deadline_exceeded"):
            return failed(
                training_pb2.FAILURE_REASON_DEADLINE_EXCEEDED,
                f"ran longer than the deadline of {state.deadline_s:g} s and was stopped",
            )
        if code == 0:
            return launching.JobStatus(name, launching.JobPhase.SUCCEEDED, logs=logs)
        if code < 0:
            signame = signal.Signals(-code).name
            hint = " (possibly out of memory)" if -code == signal.SIGKILL else ""
            return failed(training_pb2.FAILURE_REASON_UNKNOWN, f"killed by {signame}{hint}")
        return failed(*launching.exit_failure(code, _last_line(Path(logs))))

    def _stop(self, state: _State) -> None:
        """SIGTERM the group; SIGKILL it if the supervisor is still there after the grace."""
        exit_path = self._path(state.name, _EXIT)
        for sig, wait_s in ((signal.SIGTERM, self._stop_grace_s), (signal.SIGKILL, 5.0)):
            if _start_ticks(state.pid) != state.started:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if _start_ticks(state.pid) != state.started or exit_path.exists():
                    return
                time.sleep(0.05)
        log.error("workload %s (pid %d) survived SIGKILL", state.name, state.pid)


def _start_ticks(pid: int) -> str | None:
    """The start time of a live process ``pid`` (clock ticks since boot), or None if gone.

    A zombie counts as gone: it has finished, only its parent has not collected it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ".
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _supervise(argv: Sequence[str]) -> int:
    """Run a workload detached from the launcher and record how it ended.

    The launcher waits for the first line on stdout: the supervisor's pid and start time,
    printed once it has left the launcher's session; after that stdout joins the log.
    """
    parser = argparse.ArgumentParser(prog="python -m tunewire.core.launchers.localjobs supervise")
    parser.add_argument("--exit-file", required=True, type=Path)
    parser.add_argument("--deadline-s", required=True, type=float)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if os.fork():
        os._exit(0)  # the launcher reaps this one; the supervisor is nobody's child now
    os.setsid()
    pid = os.getpid()
    sys.stdout.write(f"{pid} {_start_ticks(pid)}\n")
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as exc:
        sys.stderr.write(f"cannot start {command[0]}: {exc}\n")
        _write_json(args.exit_file, {"returncode": 127, "deadline_exceeded": False})
        return 0

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    deadline_exceeded = False
    try:
        code = child.wait(timeout=args.deadline_s)
    except subprocess.TimeoutExpired:
        deadline_exceeded = True
        child.terminate()
        try:
            code = child.wait(timeout=_DEADLINE_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    _write_json(args.exit_file, {"returncode": code, "deadline_exceeded": deadline_exceeded})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["supervise"]:
        sys.exit(
            "usage: python -m tunewire.core.launchers.localjobs supervise"
            " --exit-file F --deadline-s S -- CMD"
        )
    sys.exit(_supervise(sys.argv[2:]))
