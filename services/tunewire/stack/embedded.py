"""The whole platform on one machine: broker, S3 endpoint and services, started together.

:class:`EmbeddedStack` is what ``tunewire up``/``tunewire down`` and the test suite's session
fixture use::

    with EmbeddedStack(tmp_path).up([ServiceSpec("ingest", "tunewire.ingest")]) as stack:
        httpx.get(stack.service_urls["ingest"] + "/readyz")

Everything it starts listens on 127.0.0.1 only and writes its log to ``<state_dir>/logs/``.
``<state_dir>/stack.json`` records what is running (pids, ports, URLs) so that ``tunewire down``
— a different process from the ``tunewire up`` that started the stack — can stop it, and so
that a second ``up`` on the same state dir refuses instead of fighting over it. The file is
rewritten after every component starts, so even an ``up`` killed half-way can be cleaned up.

S3 contents persist across ``down``/``up`` through a snapshot in ``<state_dir>/s3/`` (see
:mod:`tunewire.stack.objectstore`); a crash of the stack loses what was written since the last
``down``. By default the broker keeps nothing: each ``up`` is a brand-new Kafka cluster, and
services rebuild their state from S3 at start-up, as they do in production. With
``persist_kafka=True`` the broker keeps its log in the embedded S3, so topics and committed
offsets ride along in the same snapshot.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import secrets
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from tunewire.core.base.principals import Principal, Role, token_digest
from tunewire.core.launchers import launching, localjobs
from tunewire.stack import broker, objectstore, ports, processes
from tunewire.stack.processes import ServiceSpec, StackError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".tunewire")
STATE_FILE = "stack.json"
STATE_FORMAT = 1
DEFAULT_BUCKET = "tunewire"
DEFAULT_STARTUP_TIMEOUT_S = 60.0
"""Per component. A service that loads a small model takes seconds; a cold CI box, more."""

ServiceFactory: TypeAlias = Callable[["EmbeddedStack"], ServiceSpec]
"""Builds a spec once the broker and S3 are up, for services whose settings depend on them."""

ServiceLike: TypeAlias = ServiceSpec | ServiceFactory


class StackRunningError(StackError):
    """A stack recorded in the state dir is still running (or another up/down is under way)."""


class StackNotRunningError(StackError):
    """An attribute of a running stack was read while this stack is not up."""


def service_env(
    *,
    bootstrap_servers: str,
    s3_endpoint_url: str,
    bucket: str,
    http_port: int,
    principals: Sequence[Principal],
) -> dict[str, str]:
    """The settings a service process needs to run against the embedded stack.

    These are the same variables a Helm release sets in a cluster, pointed at loopback. The
    short session timeout and heartbeat make consumer-group joins take about a second on tansu
    instead of ~25 s (tansu holds a JoinGroup for half the session timeout); real clusters keep
    the usual defaults.
    """
    return {
        "TUNEWIRE_ENVIRONMENT": "development",
        "TUNEWIRE_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
        "TUNEWIRE_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "TUNEWIRE_KAFKA__HEARTBEAT_INTERVAL_MS": "300",
        "TUNEWIRE_KAFKA__FETCH_MAX_WAIT_MS": "100",
        "TUNEWIRE_S3__ENDPOINT_URL": s3_endpoint_url,
        "TUNEWIRE_S3__BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": objectstore.CREDENTIALS["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": objectstore.CREDENTIALS["secret_access_key"],
        "AWS_DEFAULT_REGION": objectstore.CREDENTIALS["region"],
        "TUNEWIRE_HTTP__HOST": ports.LOOPBACK,
        "TUNEWIRE_HTTP__PORT": str(http_port),
        "TUNEWIRE_PRINCIPALS": json.dumps([p.model_dump(mode="json") for p in principals]),
    }


class EmbeddedStack:
    """Broker + S3 endpoint + service processes on loopback, with their state in ``state_dir``.

    ``up()`` returns the stack, and the stack is a context manager that calls ``down()`` on
    exit (bringing it up with no services first if ``up()`` was not called), so both
    ``with EmbeddedStack(d) as s:`` and ``with EmbeddedStack(d).up(specs) as s:`` work.

    ``down()`` also works on a fresh instance in another process: it stops whatever the state
    file records.
    """

    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        bucket: str = DEFAULT_BUCKET,
        broker_port: int = 0,
        s3_port: int = 0,
        api_tokens: Sequence[str] | None = None,
        principals: Sequence[Principal] = (),
        persist_kafka: bool = False,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_grace: float = processes.DEFAULT_STOP_GRACE_S,
    ) -> None:
        """Configure a stack; nothing starts until :meth:`up`.

        Ports 0 mean "pick a free one" (what tests want); ``tunewire up`` may pin them.
        ``api_tokens`` are the owner's: each is a principal with every role (``local``,
        ``local-2``, ...). Without them, a random token is generated once and kept in
        ``<state_dir>/api-token``, so it stays valid across restarts. ``principals`` are
        further principals with roles of their own (their tokens as hashes).

        ``persist_kafka`` stores the broker's topics, records and committed offsets in the
        ``<bucket>-kafka`` bucket of the embedded S3, so they survive ``down``/``up`` with the
        rest of the snapshot (produce is about 4x slower). By default each ``up`` is a fresh
        cluster.
        """
        self.state_dir = Path(state_dir)
        self.bucket = bucket
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self._broker_port = broker_port
        self._s3_port = s3_port
        self._api_tokens = list(api_tokens) if api_tokens is not None else None
        self._principals = list(principals)
        self.persist_kafka = persist_kafka
        self._broker: broker.Broker | None = None
        self._store: objectstore.ObjectStore | None = None
        self._services: dict[str, processes.ManagedProcess] = {}
        self._specs: dict[str, ServiceSpec] = {}
        self._own: dict[int, processes.ManagedProcess] = {}
        """What this instance started, by pid: stopped through Popen, which also reaps them."""
        self._service_urls: dict[str, str] = {}
        self._state: dict[str, Any] | None = None
        self._running = False
        self._atexit_registered = False

    # -- what a running stack exposes -------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether this instance brought the stack up and has not brought it down yet."""
        return self._running

    @property
    def state_file(self) -> Path:
        """``<state_dir>/stack.json``."""
        return self.state_dir / STATE_FILE

    @property
    def log_dir(self) -> Path:
        """Where every component's log goes: ``<state_dir>/logs/<name>.log``."""
        return self.state_dir / "logs"

    @property
    def snapshot_dir(self) -> Path:
        """Where S3 contents are kept between ``down`` and ``up``."""
        return self.state_dir / "s3"

    @property
    def bootstrap_servers(self) -> str:
        """The broker's ``host:port`` (kafka-python ``bootstrap_servers``)."""
        if self._broker is None:
            raise StackNotRunningError("the broker is not running; call up() first")
        return self._broker.bootstrap_servers

    @property
    def s3_endpoint_url(self) -> str:
        """The S3 endpoint for boto3's ``endpoint_url`` (credentials: ``testing``/``testing``)."""
        if self._store is None:
            raise StackNotRunningError("the S3 endpoint is not running; call up() first")
        return self._store.endpoint_url

    @property
    def service_urls(self) -> dict[str, str]:
        """Each started service's base URL, by service name (a copy)."""
        return dict(self._service_urls)

    @property
    def principals(self) -> list[Principal]:
        """Who may call the services: the owner (every role, one principal per API token)
        and the principals the stack was given."""
        owners = [
            Principal(
                name="local" if index == 0 else f"local-{index + 1}",
                token_sha256=token_digest(token),
                roles=frozenset(Role),
            )
            for index, token in enumerate(self.api_tokens)
        ]
        return owners + self._principals

    @property
    def api_tokens(self) -> list[str]:
        """The owner's bearer tokens: each is a principal with every role."""
        if self._api_tokens is None:
            self._api_tokens = [self._load_or_create_token()]
        return list(self._api_tokens)

    def s3_client(self) -> S3Client:
        """A boto3 client for the embedded S3 endpoint."""
        return objectstore.s3_client(self.s3_endpoint_url)

    def service_env(self, http_port: int) -> dict[str, str]:
        """:func:`service_env` for this stack and a service listening on ``http_port``.

        Training and evaluation run as local subprocesses (the ``local`` launcher) with
        their files and the built-in base model kept in the state dir.
        """
        state = self.state_dir.resolve()
        return {
            **service_env(
                bootstrap_servers=self.bootstrap_servers,
                s3_endpoint_url=self.s3_endpoint_url,
                bucket=self.bucket,
                http_port=http_port,
                principals=self.principals,
            ),
            "TUNEWIRE_LAUNCHER__KIND": "local",
            "TUNEWIRE_LAUNCHER__LOCAL__WORKDIR": str(state / "workloads"),
            "TUNEWIRE_MODEL_CACHE": str(state / "models"),
            # Beside the services on a small machine, a second torch thread mostly waits
            # for a core: one thread trains at the same speed and far more steadily.
            "TUNEWIRE_TRAINER__THREADS": "1",
            # Runs here take seconds: report progress every second, not every five.
            "TUNEWIRE_TRAINER__PROGRESS_EVERY_S": "1",
            # Serving in process, with the adapters synced into the state dir.
            "TUNEWIRE_SERVE__BACKEND": "in_process",
            "TUNEWIRE_SERVE__ADAPTERS_DIR": str(state / "adapters"),
            "TUNEWIRE_SERVE__RECONCILE_EVERY_S": "2",
            "TUNEWIRE_SERVE__THREADS": "1",
        }

    # -- lifecycle --------------------------------------------------------------------------

    def up(
        self,
        services: Sequence[ServiceLike] = (),
        *,
        wait: bool = True,
        detach: bool = False,
    ) -> EmbeddedStack:
        """Start S3 (restoring the last snapshot), the broker, then the services.

        Each service gets :meth:`service_env` merged under its spec's own ``env``; a factory
        is called with this stack once the broker and S3 are up. With ``wait``, return only
        when every service answers ``/healthz`` with 200. If anything fails, everything
        started so far is stopped (without taking a snapshot) and the error says which log to
        read.

        Unless ``detach`` is true, whatever is still running when the interpreter exits is
        stopped then (best effort). ``tunewire up`` in the background passes ``detach=True``
        and leaves stopping to ``tunewire down``.
        """
        if self._running:
            raise StackRunningError("this stack is already up; call down() first")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._refuse_if_running()
            self._state = {
                "format": STATE_FORMAT,
                "stack_id": secrets.token_hex(8),
                "owner_pid": os.getpid(),
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "bucket": self.bucket,
                "s3": None,
                "broker": None,
                "services": {},
                "snapshot_on_down": False,
                "processes": [],
            }
            self._running = True
            if not detach and not self._atexit_registered:
                atexit.register(self._down_at_exit)
                self._atexit_registered = True
            try:
                self._start_all(services, wait=wait)
            except BaseException:
                self._stop_all(snapshot=False)
                raise
        return self

    def down(self, *, snapshot: bool = True) -> None:
        """Stop everything the state file (or this instance) records, snapshotting S3 first.

        Order: services (so nothing writes during the snapshot), broker, S3 snapshot into
        ``<state_dir>/s3/``, S3 endpoint. Safe to call when nothing is running. If the
        snapshot fails, everything is still stopped and the error says so; the previous
        snapshot is then left untouched.
        """
        if not self.state_dir.exists():
            return
        with self._locked():
            self._stop_all(snapshot=snapshot)

    def restart_broker(
        self, *, kill: bool = False, while_down: Callable[[], object] | None = None
    ) -> None:
        """Stop the broker, call ``while_down()``, then start it again on the same port.

        For outage tests: the services keep running and their clients reconnect to the same
        address. ``kill`` sends SIGKILL at once (a crash) instead of SIGTERM with the stack's
        grace. Topics and committed offsets survive only with ``persist_kafka=True``; otherwise
        the new broker is a brand-new cluster. The broker is started again even if
        ``while_down`` raises, and the state file is updated so that ``down()`` stops the new
        process. ``while_down`` may restart other parts of the stack.
        """
        kafka_broker = self._broker
        if kafka_broker is None or self._state is None:
            raise StackNotRunningError("the broker is not running; call up() first")

        def start() -> None:
            kafka_broker.start(timeout=self.startup_timeout)
            self._record(
                "broker",
                kafka_broker.process,
                {"bootstrap_servers": kafka_broker.bootstrap_servers},
            )

        self._restart(kafka_broker.process, kill=kill, while_down=while_down, start=start)

    def restart_service(
        self, name: str, *, kill: bool = False, while_down: Callable[[], object] | None = None
    ) -> None:
        """Stop one service, call ``while_down()``, then start it again with the same spec.

        For fault tests: ``kill`` sends SIGKILL to its process group at once (a crash, no
        final flush) instead of SIGTERM with the stack's grace. Workloads the local launcher
        started run under their own supervisors and keep running. Returns once the new
        process answers ``/healthz``; its URL is unchanged. ``while_down`` may restart other
        parts of the stack (the broker, say).
        """
        spec = self._specs.get(name)
        if spec is None or self._state is None:
            raise StackNotRunningError(f"no service {name!r} is running in this stack")

        def start() -> None:
            process = processes.start_service(spec, log_dir=self.log_dir)
            self._services[name] = process
            self._record(name, process, {"url": spec.url}, section="services")

        self._restart(self._services[name], kill=kill, while_down=while_down, start=start)
        processes.wait_healthy(
            spec.url + "/healthz", timeout=self.startup_timeout, process=self._services[name]
        )

    def __enter__(self) -> EmbeddedStack:
        if not self._running:
            self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- internals --------------------------------------------------------------------------

    def _start_all(self, services: Sequence[ServiceLike], *, wait: bool) -> None:
        store = objectstore.ObjectStore(
            log_path=self.log_dir / "s3.log", port=self._s3_port, bucket=self.bucket
        )
        self._store = store
        store.start(timeout=self.startup_timeout)
        self._record("s3", store.process, {"endpoint_url": store.endpoint_url})
        restored = store.restore(self.snapshot_dir)
        objectstore.ensure_bucket(store.client(), self.bucket)
        logger.info("restored %d objects from %s", restored, self.snapshot_dir)
        # Only now may down() overwrite the snapshot: before, S3 holds less than it does.
        self._write_state(snapshot_on_down=True)

        storage = None
        if self.persist_kafka:
            storage = broker.S3Storage(
                bucket=f"{self.bucket}-kafka",
                endpoint_url=store.endpoint_url,
                access_key_id=objectstore.CREDENTIALS["access_key_id"],
                secret_access_key=objectstore.CREDENTIALS["secret_access_key"],
                region=objectstore.CREDENTIALS["region"],
            )
            objectstore.ensure_bucket(store.client(), storage.bucket)
        kafka_broker = broker.Broker(
            log_path=self.log_dir / "broker.log", port=self._broker_port, storage=storage
        )
        self._broker = kafka_broker
        kafka_broker.start(timeout=self.startup_timeout)
        self._record(
            "broker", kafka_broker.process, {"bootstrap_servers": kafka_broker.bootstrap_servers}
        )

        specs = [self._resolve(item) for item in services]
        # The console's pipeline overview (in evaluate) asks the other services' APIs.
        peers = json.dumps({spec.name: spec.url for spec in specs})
        specs = [
            dataclasses.replace(spec, env={"TUNEWIRE_CONSOLE__PEERS": peers, **spec.env})
            for spec in specs
        ]
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or {"s3", "broker"} & set(names):
            raise StackError(f"service names must be unique and not s3/broker: {names}")
        for spec in specs:
            process = processes.start_service(spec, log_dir=self.log_dir)
            self._services[spec.name] = process
            self._specs[spec.name] = spec
            self._service_urls[spec.name] = spec.url
            self._record(spec.name, process, {"url": spec.url}, section="services")
        if wait:
            for spec in specs:
                processes.wait_healthy(
                    spec.url + "/healthz",
                    timeout=self.startup_timeout,
                    process=self._services[spec.name],
                )

    def _resolve(self, item: ServiceLike) -> ServiceSpec:
        spec = item if isinstance(item, ServiceSpec) else item(self)
        port = ports.port_or_free(spec.port)
        return dataclasses.replace(spec, port=port, env={**self.service_env(port), **spec.env})

    def _restart(
        self,
        process: processes.ManagedProcess,
        *,
        kill: bool,
        while_down: Callable[[], object] | None,
        start: Callable[[], None],
    ) -> None:
        """Stop ``process``, call ``while_down()``, then ``start()`` even if it raised.

        The lock is not held meanwhile, so ``while_down`` may restart other components.
        """
        with self._locked():
            self._stop_for_restart(process, kill=kill)
        try:
            if while_down is not None:
                while_down()
        finally:
            with self._locked():
                start()

    def _stop_for_restart(self, process: processes.ManagedProcess, *, kill: bool) -> None:
        """Stop (or SIGKILL) one process and drop it from the state file."""
        assert self._state is not None
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.stop(grace=self.stop_grace)  # also reaps it
        self._own.pop(process.pid, None)
        self._state["processes"] = [
            item for item in self._state["processes"] if item["pid"] != process.pid
        ]
        self._write_state()

    def _record(
        self,
        name: str,
        process: processes.ManagedProcess,
        info: Mapping[str, Any],
        *,
        section: str | None = None,
    ) -> None:
        """Add a started process to the state file at once, before anything else can fail."""
        assert self._state is not None
        self._own[process.pid] = process
        self._state["processes"].append(process.record().to_json())
        if section is None:
            self._state[name] = dict(info)
        else:
            self._state[section][name] = dict(info)
        self._write_state()

    def _write_state(self, **changes: Any) -> None:
        assert self._state is not None
        self._state.update(changes)
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StackError(
                f"cannot read {self.state_file} ({exc}); if no stack is running, delete it"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StackError(f"{self.state_file} is not a stack state file this version knows")
        return data

    def _records(self, state: Mapping[str, Any]) -> list[processes.ProcessRecord]:
        try:
            return [processes.ProcessRecord.from_json(item) for item in state["processes"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StackError(
                f"{self.state_file} is damaged ({exc}); stop its processes by hand, then delete it"
            ) from exc

    def _refuse_if_running(self) -> None:
        state = self._read_state()
        if state is None:
            return
        alive = [record for record in self._records(state) if record.is_running()]
        if alive:
            names = ", ".join(f"{record.name} (pid {record.pid})" for record in alive)
            raise StackRunningError(
                f"a stack started by pid {state.get('owner_pid')} at {state.get('started')} is "
                f"still running from {self.state_dir}: {names}. Stop it with `tunewire down` "
                "(or EmbeddedStack(state_dir).down()), or use another state dir"
            )
        logger.warning(
            "%s records a stack that is no longer running (it crashed or was killed); "
            "S3 writes since its last snapshot are lost",
            self.state_file,
        )
        self.state_file.unlink()

    def _stop_all(self, *, snapshot: bool) -> None:
        """Stop what is recorded: from memory when we started it, else from the state file."""
        state = self._state if self._state is not None else self._read_state()
        if state is None:
            self._forget()
            return
        records = self._records(state)
        errors: list[BaseException] = []

        def stop_many(group: list[processes.ProcessRecord]) -> None:
            targets = [self._own.get(record.pid, record) for record in group]
            try:
                processes.stop_all(targets, grace=self.stop_grace)
            except Exception as exc:  # keep going: the other components must stop too
                errors.append(exc)

        by_role: dict[str, list[processes.ProcessRecord]] = {"s3": [], "broker": [], "services": []}
        for record in records:
            by_role.get(record.name, by_role["services"]).append(record)
        stop_many(by_role["services"])
        try:
            self._stop_workloads()
        except Exception as exc:
            errors.append(exc)
        stop_many(by_role["broker"])
        s3_info = state.get("s3")
        s3_alive = any(record.is_running() for record in by_role["s3"])
        if snapshot and state.get("snapshot_on_down") and s3_info and s3_alive:
            try:
                client = objectstore.s3_client(str(s3_info["endpoint_url"]))
                count = objectstore.snapshot(client, self.snapshot_dir)
                logger.info("saved %d objects to %s", count, self.snapshot_dir)
            except Exception as exc:
                errors.append(
                    objectstore.SnapshotError(
                        f"saving S3 to {self.snapshot_dir} failed ({exc}); the previous "
                        "snapshot is kept, writes since the last `up` are lost"
                    )
                )
        stop_many(by_role["s3"])
        if not any(record.is_running() for record in records):
            self._remove_state_file(state)
        self._forget()
        if errors:
            raise errors[0]

    def _stop_workloads(self) -> None:
        """Stop trainers and evaluators the local launcher left running (after the services,
        so none starts another; before S3, so a trainer's last checkpoint lands). They are
        forgotten, so the next ``up`` finds their runs without a workload and resumes them
        from their checkpoints."""
        workdir = self.state_dir.resolve() / "workloads"
        if not workdir.is_dir():
            return
        local = launching.LocalLauncherSettings(workdir=str(workdir))
        kinds: tuple[launching.WorkloadKind, ...] = ("train", "evaluate")
        for kind in kinds:
            launcher = localjobs.LocalLauncher(local, kind=kind)
            for status in launcher.statuses():
                if not status.finished:
                    launcher.cancel(status.name)
                    logger.info("stopped %s workload %s", kind, status.name)

    def _remove_state_file(self, stopped: Mapping[str, Any]) -> None:
        """Delete the state file, unless it now describes another stack.

        That happens when ``tunewire down`` stopped our stack from outside and a new ``up``
        followed before our own (atexit) ``down`` ran: its file is not ours to delete.
        """
        try:
            current = self._read_state()
        except StackError:
            current = None
        if current is not None and current.get("stack_id") != stopped.get("stack_id"):
            return
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def _forget(self) -> None:
        self._broker = None
        self._store = None
        self._services = {}
        self._specs = {}
        self._own = {}
        self._service_urls = {}
        self._state = None
        self._running = False
        if self._atexit_registered:
            atexit.unregister(self._down_at_exit)
            self._atexit_registered = False

    def _down_at_exit(self) -> None:
        try:
            self.down()
        except Exception:
            logger.exception("stopping the embedded stack at exit failed; see %s", self.log_dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down on one state dir: two at once would start two stacks."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StackRunningError(
                    f"another `tunewire up` or `down` is working on {self.state_dir}; "
                    "wait for it to finish"
                ) from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load_or_create_token(self) -> str:
        path = self.state_dir / "api-token"
        with contextlib.suppress(FileNotFoundError):
            token = path.read_text().strip()
            if token:
                return token
        self.state_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token


def describe(state_dir: Path | str = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """What a running stack in ``state_dir`` offers (for the CLI), or None when none runs.

    Returns ``{"broker": bootstrap servers, "s3": endpoint URL, "services": {name: url},
    "token": API token}`` read from the state file another process wrote.
    """
    stack = EmbeddedStack(state_dir)
    state = stack._read_state()
    if state is None or not any(r.is_running() for r in stack._records(state)):
        return None
    return {
        "broker": (state.get("broker") or {}).get("bootstrap_servers"),
        "s3": (state.get("s3") or {}).get("endpoint_url"),
        "services": {
            name: entry.get("url") for name, entry in (state.get("services") or {}).items()
        },
        "token": stack.api_tokens[0],
    }
