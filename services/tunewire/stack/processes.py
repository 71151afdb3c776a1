"""Supervising the stack's child processes: start, health-check, identify and stop them.

Every component of the embedded stack (broker, S3 endpoint, services) is a child process with
its own process group (``start_new_session=True``), for two reasons: a Ctrl-C in the terminal
reaches only the ``tunewire`` process, which then stops the children in order instead of having
them all die at once mid-write; and stopping a group also stops whatever a service started
itself. The ``local`` launcher's trainers and evaluators are the exception: they leave the
service's group on purpose (a service restart must not kill a training run), so the stack
stops them separately on ``down`` (see ``EmbeddedStack._stop_workloads``).

``tunewire down`` runs in a different process from the ``tunewire up`` that started the
children, so it cannot rely on :class:`subprocess.Popen` handles. It works from a
:class:`ProcessRecord` kept in the state file instead, and checks that the pid still belongs to
the process we started (command line and start time) before signalling it — pids are reused,
and killing a stranger's process group is much worse than leaving ours running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from tunewire.stack import ports

DEFAULT_STOP_GRACE_S = 10.0
"""How long a component may take to finish after SIGTERM before it is killed.

Services finish the in-flight message and commit its offset on SIGTERM; the broker exits 1-2 s
after it. Ten seconds covers both with room to spare on a slow machine.
"""

_KILL_WAIT_S = 5.0
"""After SIGKILL the kernel needs only moments; this bounds the wait for a process stuck in I/O."""

_POLL_S = 0.05

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StackError(RuntimeError):
    """Something about the embedded stack that the user can fix; the message says how."""


class ProcessExitedError(StackError):
    """A component exited while we were waiting for it to become ready."""


class StartupTimeoutError(StackError):
    """A component did not become ready within its deadline."""


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """One service process of the stack: ``python -m <module>`` serving HTTP on ``port``.

    ``env`` is merged over the stack's settings for the service (see
    :func:`tunewire.stack.embedded.service_env`), which are merged over ``os.environ``; so a spec
    only names what is special about it. ``port=0`` asks the stack to pick a free port.
    """

    name: str
    module: str
    port: int = 0
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"service name {self.name!r} must be letters, digits, '_', '.' or '-' "
                "(it names the log file)"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"service {self.name!r}: port {self.port} is out of range")

    @property
    def url(self) -> str:
        """The service's base URL on loopback."""
        return f"http://{ports.LOOPBACK}:{self.port}"

    @property
    def argv(self) -> list[str]:
        """The command line: the same interpreter as ours, so the same virtual environment."""
        return [sys.executable, "-m", self.module]


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """What a later process needs to find, recognise and stop a child: kept in the state file."""

    name: str
    pid: int
    identity: str | None
    """Start time and command line of ``pid`` when we started it; ``None`` if unknowable here."""
    log: str

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dump``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """The inverse of :meth:`to_json`; raises ``KeyError``/``TypeError`` on a damaged file."""
        identity = data["identity"]
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            identity=None if identity is None else str(identity),
            log=str(data["log"]),
        )

    def is_running(self) -> bool:
        """Whether the process (or anything left in its process group) is still ours and alive."""
        return _owned_group(self) is not None

    def stop(self, *, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """Stop the process group if it is still ours: SIGTERM, then SIGKILL after ``grace`` s."""
        stop_all([self], grace=grace)


class ManagedProcess:
    """A child process started by this process, with its output appended to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = env
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._identity: str | None = None

    def start(self) -> None:
        """Start the process in its own session, appending its stdout and stderr to the log.

        The log is appended to, not truncated, so that the output of a crashed previous run is
        still there to read; :meth:`log_tail` shows only what this run wrote.
        """
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self._env or {})}
        with self.log_path.open("ab") as log:
            now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            log.write(f"=== {now} starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._identity = _identity_after_exec(self._popen.pid)

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group id."""
        return self._require_popen().pid

    def poll(self) -> int | None:
        """The exit status if the process has exited (reaping it), else ``None``."""
        return self._require_popen().poll()

    def record(self) -> ProcessRecord:
        """What the state file keeps so that another process can stop this one."""
        return ProcessRecord(
            name=self.name, pid=self.pid, identity=self._identity, log=str(self.log_path)
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines this run wrote to its log, for error messages."""
        return log_tail(self.log_path, lines=lines, offset=self._log_offset)

    def stop(self, *, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds.

        Safe to call twice and on a process that already exited; the child is reaped either way.
        """
        stop_all([self], grace=grace)

    def _require_popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen


def start_service(spec: ServiceSpec, *, log_dir: Path) -> ManagedProcess:
    """Start a service as ``python -m <module>`` with ``spec.env`` over ``os.environ``.

    Output goes to ``<log_dir>/<name>.log``. The caller is responsible for putting the stack's
    settings into ``spec.env`` (the :class:`EmbeddedStack` does).
    """
    process = ManagedProcess(
        spec.name, spec.argv, log_path=log_dir / f"{spec.name}.log", env=spec.env
    )
    process.start()
    return process


def wait_until(
    probe: Callable[[], str | None],
    *,
    what: str,
    timeout: float,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Call ``probe`` until it returns None (ready), or fail with the process's log tail.

    ``probe`` returns what is still wrong. With ``process`` given, a process that exits while
    we wait fails at once instead of after the whole timeout, and both errors quote its log:
    the first thing a user needs is the reason it did not start, and that is in the log.
    """
    deadline = time.monotonic() + timeout
    name = process.name if process is not None else "the service"
    where = ""
    while True:
        if process is not None:
            where = f"; see its log {process.log_path}:\n"
            if (code := process.poll()) is not None:
                raise ProcessExitedError(
                    f"{name} exited with status {code} before {what}{where}{process.log_tail()}"
                )
        problem = probe()
        if problem is None:
            return
        if time.monotonic() >= deadline:
            tail = process.log_tail() if process is not None else ""
            raise StartupTimeoutError(
                f"{name}: no {what} after {timeout:.0f} s (last: {problem}){where}{tail}"
            )
        time.sleep(interval)


def wait_healthy(
    url: str,
    *,
    timeout: float,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``url`` until it answers 200 (see :func:`wait_until`)."""
    with httpx.Client(timeout=min(2.0, max(timeout, 0.1))) as client:

        def probe() -> str | None:
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None if response.status_code == 200 else f"HTTP {response.status_code}"

        wait_until(
            probe,
            what=f"a healthy answer at {url}",
            timeout=timeout,
            process=process,
            interval=interval,
        )


class LocalServer:
    """A server child process on a loopback port: started, waited for, stopped.

    Subclasses give the command line (:meth:`start`) and a readiness :meth:`probe`; the
    lifecycle — stop on a failed start, context manager, the process for the state file — is
    here once.
    """

    name = "server"
    """The process name in logs, errors and the state file."""
    start_timeout_s = 30.0
    """How long :meth:`start` waits for readiness by default."""

    def __init__(self, *, log_path: Path, port: int = 0) -> None:
        self.port = ports.port_or_free(port)
        self.log_path = log_path
        self._process: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess:
        """The running process (for the state file); raises before it was started."""
        if self._process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._process

    def probe(self) -> str | None:
        """What keeps the server from being ready now, or None when it is."""
        raise NotImplementedError

    def _launch(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        what: str,
        env: Mapping[str, str] | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Start ``argv``, wait until :meth:`probe` passes, run ``then``; stop it on failure."""
        process = ManagedProcess(self.name, list(argv), log_path=self.log_path, env=env)
        self._process = process
        process.start()
        try:
            wait_until(self.probe, what=what, timeout=timeout, process=process, interval=0.05)
            if then is not None:
                then()
        except BaseException:
            process.stop(grace=2.0)
            raise

    def stop(self, *, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """SIGTERM the server, SIGKILL it after ``grace`` seconds; a no-op if never started."""
        if self._process is not None:
            self._process.stop(grace=grace)

    def start(self, *, timeout: float) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start(timeout=self.start_timeout_s)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def log_tail(path: Path, *, lines: int = 30, offset: int = 0) -> str:
    """The last ``lines`` lines of a log file from byte ``offset`` on (``""`` if unreadable)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def process_identity(pid: int) -> str | None:
    """A string that changes when ``pid`` is reused: its start time and command line.

    ``None`` when the process is gone or a zombie, or when this platform offers no way to tell
    (then the caller must not signal the pid on a guess).
    """
    proc = Path("/proc")
    if proc.is_dir():
        try:
            stat = (proc / str(pid) / "stat").read_text()
            cmdline = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        # Fields after the command name, which is in parentheses and may itself contain ") ".
        fields = stat[stat.rindex(")") + 2 :].split()
        state, start_ticks = fields[0], fields[19]
        if state in ("Z", "X"):
            return None
        return f"{start_ticks} {cmdline.decode('utf-8', errors='replace')}"
    try:
        result = subprocess.run(
            ["ps", "-o", "lstart=,stat=,args=", "-p", str(pid)],
            capture_output=True,
            check=False,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = result.stdout.strip()
    if result.returncode != 0 or not line:
        return None
    # lstart is five words; stat follows. Drop stat, which changes while the process runs.
    words = line.split(None, 6)
    if len(words) < 7 or words[5].startswith("Z"):
        return None
    return " ".join(words[:5] + words[6:])


def _identity_after_exec(pid: int) -> str | None:
    """:func:`process_identity` of a child that Popen has just started.

    Popen returns once the exec has closed the child's close-on-exec pipe, which is a moment
    before the kernel fills in the new command line: /proc shows an empty one until then, and
    an identity taken at that moment would never match the process again.
    """
    deadline = time.monotonic() + _KILL_WAIT_S
    while True:
        identity = process_identity(pid)
        # "<start ticks> <command line>": nothing after the space while the exec finishes.
        if identity is None or not identity.endswith(" ") or time.monotonic() >= deadline:
            return identity
        time.sleep(0.001)


def _owned_group(record: ProcessRecord) -> int | None:
    """The process group to stop for ``record``, or ``None`` when nothing of ours is left.

    The leader's pid is the group id. If the pid now belongs to another live process, the group
    is not ours. If the leader is gone but members of its group remain (a service's children),
    they are ours: Linux does not hand out a pid while a process group of that number exists.
    """
    if record.identity is None:
        return None
    current = process_identity(record.pid)
    if current is not None:
        return record.pid if current == record.identity else None
    return record.pid if _group_alive(record.pid) else None


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_all(
    targets: Sequence[ManagedProcess | ProcessRecord], *, grace: float = DEFAULT_STOP_GRACE_S
) -> None:
    """Stop several process groups at once: SIGTERM to all, SIGKILL to what is left after ``grace``.

    Signalling all first makes the graceful shutdowns overlap, so five services take one grace
    period, not five. No threads: this also runs from ``atexit``, where new threads are refused.
    A running :class:`ManagedProcess` is reaped (it is our child); one that exited earlier, and a
    :class:`ProcessRecord`, are signalled only while their pid is still the process we started
    or what is left of its group: a reaped child's pid may already lead someone else's group.
    """
    groups: dict[int, Callable[[], object]] = {}
    children: list[subprocess.Popen[bytes]] = []
    for target in targets:
        if isinstance(target, ManagedProcess):
            popen = target._popen
            if popen is None:
                continue
            if popen.poll() is None:
                groups[popen.pid] = popen.poll
                children.append(popen)
                continue
            target = target.record()
        pgid = _owned_group(target)
        if pgid is not None:
            groups[pgid] = lambda: None
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    for sig, wait_s in ((signal.SIGKILL, grace), (None, _KILL_WAIT_S)):
        deadline = time.monotonic() + wait_s
        while True:
            for reap in groups.values():
                reap()  # our exited child stays a zombie, still "in" its group, until reaped
            alive = [pgid for pgid in groups if _group_alive(pgid)]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
        if not alive:
            for popen in children:  # it may have died after its last poll(): reap it for good
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=_KILL_WAIT_S)
            return
        if sig is not None:
            for pgid in alive:
                _signal_group(pgid, sig)
    raise StackError(
        f"process groups {alive} are still alive after SIGKILL; see `ps -e -o pid,pgid,args`"
    )
