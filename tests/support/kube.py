"""A Kubernetes API without a cluster: kmock's emulator on a free port, and a test kubelet.

:class:`KubeCluster` serves kmock's stateful ``KubernetesEmulator`` over HTTP, so the product
talks to it with the official ``kubernetes`` client exactly as to a real API server. The
emulator's gaps that matter here are filled in this file, never in the product: objects get a
uid, a resourceVersion and a creationTimestamp, their namespace from the URL, Secrets'
``stringData`` becomes ``data``; ``watch=True`` (how the Python client spells it) is a watch;
a watch honours ``timeoutSeconds`` and ``resourceVersion``, and a test can expire it (410).

:class:`Kubelet` stands in for the scheduler, the Job controller and the kubelet: for each
new Job it creates a pod, resolves its environment (``env`` and ``envFrom`` from the
ConfigMap and the Secret, read through the API) and its volumes (a directory per mount, a
Secret volume's keys as files in it), runs the container's command as a local process and
writes pod and Job status back through the API — retries up to ``backoffLimit``,
``activeDeadlineSeconds``, deletion. A Job's :data:`SIMULATE_LABEL` asks for a failure that
needs a real cluster: ``oom``, ``preempted``, ``unschedulable`` or ``image-pull``, or
``preempted-after-checkpoint`` (the first pod is evicted once it logs a checkpoint; the next
pod runs undisturbed, as after a real pre-emption). A :class:`Kubelet` may also be given a
function choosing the simulation per Job, for Jobs whose labels a test does not write.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import functools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import attrs
import kmock
import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

SIMULATE_LABEL = "kubelet.test.tunewire.io/simulate"
"""Job label selecting a simulated failure (see the module docstring)."""
_CHECKPOINT_LINE = b"checkpoint at step"
"""What the trainer logs once a checkpoint is in S3."""

RESOURCES = ("batch/v1/jobs", "v1/pods", "v1/configmaps", "v1/secrets")

_TICK_S = 0.05
_T = TypeVar("_T")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version_of(event: Any) -> int:
    try:
        return int(event["object"]["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


_GONE = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version",
    },
}


@dataclasses.dataclass(eq=False)
class _WatchEnd:
    """Ends one open watch stream early; ``expired`` makes it end with 410 Gone."""

    transport: asyncio.BaseTransport | None
    event: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    expired: bool = False

    @property
    def port(self) -> int | None:
        """The server port the stream came in through."""
        if self.transport is None:
            return None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port


@attrs.define(kw_only=True)
class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with the gaps the launcher tests need filled (see the module doc)."""

    _revision: int = attrs.field(default=0, init=False)
    _watch_ends: set[_WatchEnd] = attrs.field(factory=set, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.query.get("watch") == "True":
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            if request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                meta.setdefault("namespace", request.namespace)
                meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
                meta["resourceVersion"] = self._next_revision()
                if request.resource.plural == "secrets" and "stringData" in data:
                    encoded = {
                        k: base64.b64encode(v.encode()).decode()
                        for k, v in data.pop("stringData").items()
                    }
                    data["data"] = {**data.get("data", {}), **encoded}
            elif request.action == kmock.action.UPDATE:
                data.setdefault("metadata", {})["resourceVersion"] = self._next_revision()
        if request.action == kmock.action.DELETE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                self.objects[key].patch({"metadata": {"resourceVersion": self._next_revision()}})
        return await super()._handle(request)

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    async def _serve_list(self, request: kmock.Request) -> Any:
        version = self._revision  # read first: anything newer is replayed by the watch
        payload = await super()._serve_list(request)
        payload["metadata"]["resourceVersion"] = str(version)
        return payload

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now: the client waits for them
        timeout = float(request.params.get("timeoutSeconds") or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        raw = request._raw_request
        end = _WatchEnd(transport=raw.transport if raw is not None else None)
        self._watch_ends.add(end)
        ending = asyncio.ensure_future(end.event.wait())
        stream = self._events(request)
        step: asyncio.Future[Any] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(stream))
                left = None if deadline is None else max(0.0, deadline - loop.time())
                await asyncio.wait({step, ending}, timeout=left, return_when="FIRST_COMPLETED")
                if not step.done():
                    if end.expired:
                        yield _GONE
                    return
                yield step.result()
        finally:
            ending.cancel()
            self._watch_ends.discard(end)
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
            await stream.aclose()

    async def _events(self, request: kmock.Request) -> AsyncIterator[Any]:
        """The objects newer than ``resourceVersion`` as ADDED, then every change.

        kmock's own watch subscribes to changes only after listing, so a change in between is
        lost; here the subscription comes first (a change may then show twice, which clients
        tolerate, as they must with a real server after a reconnection).
        """
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[request.resource]
        marker = await bus.mark()
        try:
            async with self._lock:
                current = [
                    obj.raw
                    for (resource, namespace, _), obj in self.objects.items()
                    if resource == request.resource
                    and request.namespace in (None, namespace)
                    and not obj.deleted
                ]
            for raw in current:
                event = {"type": "ADDED", "object": raw}
                if _version_of(event) > since:
                    yield event
            async for event in bus.stream(since=marker):
                namespace = event.get("object", {}).get("metadata", {}).get("namespace")
                if request.namespace in (None, namespace):
                    yield event
        finally:
            await bus.unmark(marker)

    def end_watches(self, *, expired: bool) -> None:
        """End every open watch stream (with 410 Gone when ``expired``); loop thread only."""
        for end in list(self._watch_ends):
            end.expired = expired
            end.event.set()

    def abort_watches(self, port: int) -> None:
        """Reset the connections of the watch streams served on ``port``; loop thread only."""
        for end in list(self._watch_ends):
            if end.port == port and end.transport is not None:
                end.transport.abort()


class KubeCluster:
    """The emulated API server on 127.0.0.1, its asyncio loop in a thread.

    It serves on one port (:attr:`url`); :meth:`endpoint` opens more ports onto the same
    objects, and :meth:`cut` / :meth:`restore` take one of them down and up again, so a
    test can break one client's connection while the kubelet carries on.
    """

    def __init__(self, *, namespace: str = "tunewire") -> None:
        self.namespace = namespace
        self.emulator = _Emulator()
        for resource in RESOURCES:
            self.emulator.resources[resource] = kmock.ResourceInfo(namespaced=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._servers: dict[int, kmock.Server] = {}
        self._clients: list[k8s.ApiClient] = []
        self.url = ""

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(15) or self._failure is not None:
            raise RuntimeError(f"the Kubernetes API emulator did not start: {self._failure}")
        self.url = self.endpoint()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for api in self._clients:
            api.close()
        self.end_watches(expired=False)
        for port in reversed(list(self._servers)):  # kmock's servers nest: close LIFO
            self._call(self._close(port))
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(15)
        self._loop.close()

    def endpoint(self, port: int = 0) -> str:
        """Serve the API on another port (a free one by default); its URL."""
        return f"http://127.0.0.1:{self._call(self._open(port))}"

    def cut(self, url: str) -> None:
        """Take an endpoint down: its watch connections are reset, new ones refused.

        Only the endpoint opened last can be cut: kmock's servers nest.
        """
        self._call(self._close(_port_of(url)))

    def restore(self, url: str) -> None:
        """Serve a cut endpoint again, on the same port."""
        self._call(self._open(_port_of(url)))

    def api_client(self, *, url: str | None = None) -> k8s.ApiClient:
        """An official client for this API (or for another of its endpoints)."""
        config = k8s.Configuration()
        config.host = url or self.url
        config.connection_pool_maxsize = 16
        api = k8s.ApiClient(config)
        self._clients.append(api)
        return api

    def end_watches(self, *, expired: bool) -> None:
        """End every open watch: as the server's timeout does, or with 410 Gone."""
        self._loop.call_soon_threadsafe(
            functools.partial(self.emulator.end_watches, expired=expired)
        )

    def requests(self, method: str, plural: str) -> list[kmock.Request]:
        """The requests the API received for a resource, e.g. ``("DELETE", "jobs")``."""
        return [
            r
            for r in list(self.emulator._requests)
            if r.method.value == method and r.resource is not None and r.resource.plural == plural
        ]

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(15)

    async def _open(self, port: int) -> int:
        server = kmock.Server(self.emulator, host="127.0.0.1", port=port or None)
        await server.__aenter__()
        self._servers[server.port] = server
        return server.port

    async def _close(self, port: int) -> None:
        server = self._servers.pop(port)
        self.emulator.abort_watches(port)
        await server.__aexit__(None, None, None)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator:
            self._ready.set()
            await self._stopping.wait()


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class Kubelet:
    """Runs the emulated cluster's Jobs as local processes and reports on them via the API."""

    def __init__(
        self,
        cluster: KubeCluster,
        *,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        simulate: Callable[[k8s.V1Job], str] | None = None,
    ) -> None:
        """``workdir`` receives one log per pod; ``env`` is every container's base
        environment (default: PATH, and PYTHONPATH set to the current directory);
        ``simulate`` picks a simulated failure for Jobs without the label."""
        self.namespace = cluster.namespace
        self.simulate = simulate
        self.workdir = workdir
        self._env = dict(env) if env is not None else _default_env()
        api = cluster.api_client()
        self._batch = k8s.BatchV1Api(api)
        self._core = k8s.CoreV1Api(api)
        self._stop = threading.Event()
        self._runs: dict[str, _JobRun] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="kubelet", daemon=True)
        self._stream = k8s_watch.Watch()

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._stream.stop()
        self._thread.join(10)
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.thread.join(10)

    def process(self, job_name: str) -> subprocess.Popen[bytes] | None:
        """The process of the Job's latest pod, once it was started."""
        with self._lock:
            run = next((r for r in reversed(self._runs.values()) if r.name == job_name), None)
        return run.process if run is not None else None

    def logs(self, job_name: str) -> str:
        """Everything the Job's pods wrote, in order."""
        paths = sorted(self.workdir.glob(f"{job_name}-*.log"), key=lambda p: p.stat().st_mtime)
        return "".join(p.read_text() for p in paths)

    def _watch(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            stream = self._stream = k8s_watch.Watch()
            options: dict[str, Any] = {"timeout_seconds": 1}
            if version:
                options["resource_version"] = version
            try:
                for event in stream.stream(
                    self._batch.list_namespaced_job, self.namespace, **options
                ):
                    self._on_event(event["type"], event["object"])
                version = stream.resource_version
            except k8s.ApiException:
                version = None
            except urllib3.exceptions.HTTPError:
                time.sleep(_TICK_S)

    def _on_event(self, kind: str, job: k8s.V1Job) -> None:
        uid = job.metadata.uid
        with self._lock:
            run = self._runs.get(uid)
            if kind == "ADDED" and run is None:
                run = _JobRun(self, job)
                self._runs[uid] = run
                run.thread.start()
        if kind == "DELETED" and run is not None:
            run.deleted.set()

    def _resolve_env(self, container: k8s.V1Container) -> dict[str, str] | str:
        """The container's environment, or the waiting message when a source is missing."""
        env: dict[str, str] = {}
        for source in container.env_from or []:
            prefix = source.prefix or ""
            try:
                if source.config_map_ref is not None:
                    ref = source.config_map_ref.name
                    data = self._core.read_namespaced_config_map(ref, self.namespace).data
                    env.update({prefix + k: v for k, v in (data or {}).items()})
                if source.secret_ref is not None:
                    ref = source.secret_ref.name
                    data = self._core.read_namespaced_secret(ref, self.namespace).data
                    decoded = {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}
                    env.update({prefix + k: v for k, v in decoded.items()})
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise
                what = "configmap" if source.config_map_ref is not None else "secret"
                return f'{what} "{ref}" not found'
        env.update({var.name: var.value or "" for var in container.env or []})
        return env


class _JobRun:
    """One Job's life: pods one after another until success, the backoff limit or deadline."""

    def __init__(self, kubelet: Kubelet, job: k8s.V1Job) -> None:
        self.kubelet = kubelet
        self.job = job
        self.name: str = job.metadata.name
        self.deleted = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._run, name=f"job-{self.name}", daemon=True)
        self._conditions: list[dict[str, str]] = []
        deadline_s = job.spec.active_deadline_seconds
        self._deadline = time.monotonic() + deadline_s if deadline_s else None
        labels = job.metadata.labels or {}
        chosen = kubelet.simulate(job) if kubelet.simulate is not None else ""
        self._simulate = labels.get(SIMULATE_LABEL, chosen)

    def _run(self) -> None:
        try:
            self._run_pods()
        except k8s.ApiException as exc:
            if exc.status != 404:  # the Job (or its pod) was deleted under us
                raise
        finally:
            self._kill()

    def _run_pods(self) -> None:
        backoff_limit = self.job.spec.backoff_limit
        backoff_limit = 6 if backoff_limit is None else backoff_limit
        self._patch_job({"startTime": _now(), "active": 0})
        failures = 0
        while True:
            outcome = self._run_pod()
            if outcome == "gone":
                self._kill()
                self._delete_pods()
                return
            if outcome == "succeeded":
                self._finish("Complete", "", "", succeeded=1)
                return
            if outcome == "deadline":
                self._finish(
                    "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
                )
                return
            failures += 1
            if failures > backoff_limit:
                message = "Job has reached the specified backoff limit"
                self._finish("Failed", "BackoffLimitExceeded", message, failed=failures)
                return
            self._patch_job({"failed": failures, "active": 0})

    def _run_pod(self) -> str:
        """Run one pod: ``succeeded``, ``failed``, ``deadline`` or ``gone``."""
        kubelet = self.kubelet
        template = self.job.spec.template
        pod_name = f"{self.name}-{secrets.token_hex(3)}"
        uid = self.job.metadata.uid
        labels = {
            **(template.metadata.labels or {}),
            "job-name": self.name,
            "batch.kubernetes.io/job-name": self.name,
            "controller-uid": uid,
            "batch.kubernetes.io/controller-uid": uid,
        }
        owner = k8s.V1OwnerReference(
            api_version="batch/v1",
            kind="Job",
            name=self.name,
            uid=uid,
            controller=True,
            block_owner_deletion=True,
        )
        pod = k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(
                name=pod_name, namespace=kubelet.namespace, labels=labels, owner_references=[owner]
            ),
            spec=template.spec,
        )
        kubelet._core.create_namespaced_pod(kubelet.namespace, pod)
        self._patch_job({"active": 1, "ready": 0})
        container = template.spec.containers[0]
        scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}
        if self._simulate == "unschedulable":
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                "lastTransitionTime": _now(),
            }
            self._patch_pod(pod_name, {"phase": "Pending", "conditions": [condition]})
            return self._wait_pending(pod_name)
        if self._simulate == "image-pull":
            waiting = {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{container.image}"',
            }
            self._patch_pod(pod_name, self._waiting(container, scheduled, waiting))
            return self._wait_pending(pod_name)
        env = kubelet._resolve_env(container)
        if isinstance(env, str):
            waiting = {"reason": "CreateContainerConfigError", "message": env}
            self._patch_pod(pod_name, self._waiting(container, scheduled, waiting))
            return self._wait_pending(pod_name)
        mounted = self._mount(pod_name, container, env)
        if mounted is None:
            # A Secret volume that cannot be mounted keeps the pod creating; the reason is
            # only an event (FailedMount), never the pod's status.
            waiting = {"reason": "ContainerCreating"}
            self._patch_pod(pod_name, self._waiting(container, scheduled, waiting))
            return self._wait_pending(pod_name)
        log_path = kubelet.workdir / f"{pod_name}.log"
        argv = [sys.executable if arg == "python" else arg for arg in container.command or []]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*argv, *(container.args or [])],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**kubelet._env, **mounted},
                start_new_session=True,
            )
        started = _now()
        running = {"running": {"startedAt": started}}
        self._patch_pod(
            pod_name,
            {
                "phase": "Running",
                "startTime": started,
                "conditions": [scheduled, {"type": "Ready", "status": "True"}],
                "containerStatuses": [self._container(container, running, ready=True)],
            },
        )
        self._patch_job({"ready": 1})
        # OOM: the kernel kills the process; preemption: the scheduler evicts the pod.
        kill = {"oom": signal.SIGKILL, "preempted": signal.SIGTERM}.get(self._simulate)
        kill_at = time.monotonic() + 0.3
        after_checkpoint = self._simulate == "preempted-after-checkpoint"
        while (code := self.process.poll()) is None:
            if after_checkpoint and _CHECKPOINT_LINE in log_path.read_bytes():
                self._simulate, kill, kill_at, after_checkpoint = (
                    "preempted-once",
                    signal.SIGTERM,
                    0.0,
                    False,
                )
            if self._gone():
                return "gone"
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._kill()
                self._fail_pod(pod_name, 137, "DeadlineExceeded", "", started)
                return "deadline"
            if kill is not None and time.monotonic() >= kill_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, kill)
            time.sleep(_TICK_S)
        exit_code = code if code >= 0 else 128 - code
        if exit_code == 0:
            terminated = {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": started,
                "finishedAt": _now(),
            }
            self._patch_pod(
                pod_name,
                {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        self._container(container, {"terminated": terminated}, ready=False)
                    ],
                },
            )
            return "succeeded"
        reason = "OOMKilled" if self._simulate == "oom" else "Error"
        message = ""
        if container.termination_message_policy == "FallbackToLogsOnError":
            message = "\n".join(log_path.read_text(errors="replace").splitlines()[-80:])[-2048:]
        self._fail_pod(pod_name, exit_code, reason, message, started)
        if self._simulate in ("preempted", "preempted-once"):
            disruption = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": "preempting to accommodate a higher priority pod",
                "lastTransitionTime": _now(),
            }
            self._patch_pod(pod_name, {"conditions": [disruption]})
        if self._simulate == "preempted-once":
            self._simulate = ""  # the replacement pod lands on a node nobody pre-empts
        return "failed"

    def _waiting(
        self, container: k8s.V1Container, scheduled: dict[str, str], waiting: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "phase": "Pending",
            "conditions": [scheduled],
            "containerStatuses": [self._container(container, {"waiting": waiting}, ready=False)],
        }

    def _mount(
        self, pod_name: str, container: k8s.V1Container, env: dict[str, str]
    ) -> dict[str, str] | None:
        """Give each volume mount a directory of its own (emptyDir semantics: per pod; a
        Secret volume's keys as files in it) and point environment values under a mount path
        at it, as the mount would; None when a Secret volume cannot be mounted."""
        volumes = {volume.name: volume for volume in self.job.spec.template.spec.volumes or []}
        mounted = dict(env)
        for mount in container.volume_mounts or []:
            local = self.kubelet.workdir / pod_name / mount.name
            local.mkdir(parents=True, exist_ok=True)
            secret = volumes[mount.name].secret
            if secret is not None and not self._project(secret, local):
                return None
            for key, value in env.items():
                if value == mount.mount_path or value.startswith(mount.mount_path + "/"):
                    mounted[key] = str(local) + value[len(mount.mount_path) :]
        return mounted

    def _project(self, source: k8s.V1SecretVolumeSource, local: Path) -> bool:
        """Write a Secret volume's files (its ``items``, else every key) into ``local``, read
        only as the kubelet mounts them; False when the Secret or a key is missing."""
        kubelet = self.kubelet
        try:
            secret = kubelet._core.read_namespaced_secret(source.secret_name, kubelet.namespace)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
            return False
        data = secret.data or {}
        items = source.items or [k8s.V1KeyToPath(key=key, path=key) for key in data]
        for item in items:
            if item.key not in data:
                return False
            path = local / item.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(data[item.key]))
            path.chmod(0o444)
        return True

    def _wait_pending(self, pod_name: str) -> str:
        """A pod that never starts: wait for the Job's deletion or its deadline."""
        while not self._gone():
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._patch_pod(pod_name, {"phase": "Failed", "reason": "DeadlineExceeded"})
                return "deadline"
            time.sleep(_TICK_S)
        return "gone"

    def _gone(self) -> bool:
        return self.deleted.is_set() or self.kubelet._stop.is_set()

    def _container(
        self, container: k8s.V1Container, state: dict[str, Any], *, ready: bool
    ) -> dict[str, Any]:
        return {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "state": state,
        }

    def _fail_pod(self, pod_name: str, code: int, reason: str, message: str, started: str) -> None:
        terminated = {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": started,
            "finishedAt": _now(),
        }
        container = self.job.spec.template.spec.containers[0]
        self._patch_pod(
            pod_name,
            {
                "phase": "Failed",
                "containerStatuses": [
                    self._container(container, {"terminated": terminated}, ready=False)
                ],
            },
        )

    def _finish(self, kind: str, reason: str, message: str, **counts: int) -> None:
        condition = {"type": kind, "status": "True", "lastTransitionTime": _now()}
        if reason:
            condition.update(reason=reason, message=message)
        self._conditions.append(condition)
        self._patch_job(
            {"conditions": self._conditions, "active": 0, "ready": 0, **counts}
            | ({"completionTime": _now()} if kind == "Complete" else {})
        )

    def _patch_job(self, status: dict[str, Any]) -> None:
        self.kubelet._batch.patch_namespaced_job_status(
            self.name, self.kubelet.namespace, {"status": status}
        )

    def _patch_pod(self, pod_name: str, status: dict[str, Any]) -> None:
        self.kubelet._core.patch_namespaced_pod_status(
            pod_name, self.kubelet.namespace, {"status": status}
        )

    def _delete_pods(self) -> None:
        """What the garbage collector does for a Job deleted with background propagation."""
        core = self.kubelet._core
        for pod in core.list_namespaced_pod(self.kubelet.namespace).items:
            if (pod.metadata.labels or {}).get("job-name") == self.name:
                with contextlib.suppress(k8s.ApiException):
                    core.delete_namespaced_pod(pod.metadata.name, self.kubelet.namespace)

    def _kill(self) -> None:
        """Stop the pod's process group as the kubelet does: SIGTERM, then SIGKILL."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait_s)
                return


def _default_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.getcwd()}
