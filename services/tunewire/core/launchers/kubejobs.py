"""The ``kubernetes`` launcher: each workload is a ``batch/v1`` Job created through the API.

The Job is the unit Kubernetes already knows how to retry, time out and garbage-collect, so
the launcher only builds it, reads it back and deletes it. Its name is the workload's
idempotent name: a redelivered event finds the Job it already created (409) instead of
starting a second run. Settings reach the pods from a ConfigMap and a Secret by name only
(a private Kafka CA from a Secret mounted as a file), so no secret value is ever part of the
Job spec, the API server's audit log, or an event.

A launcher's Jobs are those with its labels: its own, its kind's and ``settings.labels``
(the chart passes the release's selector labels). It watches only those, and never follows,
adopts or deletes a Job whose labels give it to another launcher, so two releases in one
namespace never see or stop each other's Jobs.

Status is followed with the watch API. A watch ends (the server's timeout), expires (410
Gone) or breaks (the connection); each time the launcher re-lists, reports what changed in
between, and watches again. Pod problems that never fail a Job by themselves (an
unschedulable pod, an image that cannot be pulled) give no Job event, so pending Jobs are
re-checked every few seconds and failed after ``pending_timeout_s``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import logging
import threading
from collections.abc import Iterator, Sequence

import kubernetes
import urllib3.exceptions
from kubernetes import client as k8s
from prometheus_client import Counter

from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors, metrics, retry
from tunewire.core.launchers import launching

log = logging.getLogger(__name__)

WATCH_RECONNECTS = Counter(
    "tunewire_launcher_watch_reconnects_total",
    "Times the Job watch was re-established, by cause (ended, expired, error).",
    ["kind", "cause"],
)

_MANAGED = {"app.kubernetes.io/name": "tunewire", "app.kubernetes.io/managed-by": "tunewire"}
"""Labels of every Job; ``settings.labels`` may replace them (a release's own name label)."""
_COMPONENT = {"train": "trainer", "evaluate": "evaluator"}
_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")

_UID = 10001
"""The non-root user of tunewire's images (the chart's pods run as the same one)."""
_TMP_DIR = "/tmp"
_CACHE_DIR = "/var/cache/tunewire"
"""Writable emptyDir mounts: the root filesystem is read-only."""
_KAFKA_CA_DIR = "/etc/tunewire/kafka-ca"
_KAFKA_CA_FILE = "ca.crt"
"""Where a private Kafka CA is mounted: the same file as in the services' pods."""

_IMAGE_PULL_WAITING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CONFIG_WAITING = frozenset({"CreateContainerConfigError", "CreateContainerError"})

_MAX_BACKOFF_S = 60.0
"""Longest pause between attempts to reach an unreachable API."""

_Reason = training_pb2.FailureReason
_NO_REASON = training_pb2.FAILURE_REASON_UNSPECIFIED


class KubernetesLauncher:
    """Runs workloads of one kind as ``batch/v1`` Jobs in one namespace."""

    def __init__(
        self,
        settings: launching.KubernetesLauncherSettings,
        *,
        kind: launching.WorkloadKind,
        api_client: k8s.ApiClient | None = None,
        watch_timeout_s: int = 300,
        pending_check_s: float = 5.0,
        retry_backoff_s: float = 1.0,
    ) -> None:
        """``api_client`` defaults to the pod's service account (``settings.in_cluster``)
        or the kubeconfig. ``watch_timeout_s`` bounds one watch request (the API server ends
        it then, and the launcher re-lists); ``pending_check_s`` is how often pending Jobs'
        pods are re-read; ``retry_backoff_s`` is the first pause after a failed connection
        (it doubles up to a minute)."""
        self.settings = settings
        self.kind = kind
        self._api = api_client if api_client is not None else _default_client(settings)
        self._batch = k8s.BatchV1Api(self._api)
        self._core = k8s.CoreV1Api(self._api)
        self._watch_timeout_s = watch_timeout_s
        self._pending_check_s = pending_check_s
        self._retry_backoff_s = retry_backoff_s
        self._selector = ",".join(f"{k}={v}" for k, v in self._own_labels().items())

    def manifest(self, spec: launching.WorkloadSpec) -> k8s.V1Job:
        """The Job that :meth:`launch` creates for ``spec``."""
        if spec.kind != self.kind:
            raise ValueError(f"this launcher runs {self.kind} workloads, not {spec.kind}")
        s = self.settings
        labels = {
            **spec.labels,
            **self._own_labels(),
            launching.COMPONENT_LABEL: _COMPONENT[spec.kind],
        }
        return k8s.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=k8s.V1ObjectMeta(name=spec.name, namespace=s.namespace, labels=labels),
            spec=k8s.V1JobSpec(
                active_deadline_seconds=s.active_deadline_seconds,
                backoff_limit=s.backoff_limit,
                ttl_seconds_after_finished=s.ttl_seconds_after_finished,
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=labels),
                    spec=_pod_spec(s, _container(s, spec)),
                ),
            ),
        )

    def launch(self, spec: launching.WorkloadSpec) -> bool:
        """Create the workload's Job; False when this launcher's Job of that name exists.

        Raises :class:`errors.Conflict` when the existing Job is another launcher's (another
        release's, in the same namespace): it is not this workload, and following it would
        report someone else's run.
        """
        job = self.manifest(spec)
        try:
            with _api_errors(f"create Job {spec.name} in namespace {self.settings.namespace}"):
                self._batch.create_namespaced_job(self.settings.namespace, job)
        except errors.Conflict:
            self._refuse_if_foreign(spec.name)
            log.info("Job %s exists already; not starting a second one", spec.name)
            return False
        log.info("created Job %s", spec.name)
        return True

    def status(self, name: str) -> launching.JobStatus:
        """The Job's status from the Job and its pods (``MISSING`` when there is no Job, or
        only another launcher's: see :meth:`_is_anothers`)."""
        try:
            job = self._read(name)
        except errors.NotFound:
            return launching.JobStatus(name=name, phase=launching.JobPhase.MISSING)
        if self._is_anothers(job):
            return launching.JobStatus(name=name, phase=launching.JobPhase.MISSING)
        return self._status_of(job, self._pods_of(name))

    def cancel(self, name: str) -> bool:
        """Delete the Job and, in the background, its pods; False when there was none.

        Another launcher's Job of that name is left alone (False): deleting it would stop
        another release's run.
        """
        try:
            job = self._read(name)
            if self._is_anothers(job):
                log.warning(
                    "not deleting Job %s: it belongs to another launcher (labels %s)",
                    name,
                    job.metadata.labels,
                )
                return False
            with _api_errors(f"delete Job {name}"):
                self._batch.delete_namespaced_job(
                    name,
                    self.settings.namespace,
                    propagation_policy="Background",
                    # Exactly the Job just read, never one created under its name since.
                    body=k8s.V1DeleteOptions(
                        preconditions=k8s.V1Preconditions(uid=job.metadata.uid)
                    ),
                )
        except errors.NotFound:
            return False
        log.info("deleted Job %s", name)
        return True

    def watch(self, on_change: launching.StatusCallback, stop: threading.Event) -> None:
        """Report status changes of this kind's Jobs until ``stop`` (see ``Launcher.watch``)."""
        tracker = _Tracker(on_change)
        current: list[kubernetes.watch.Watch] = []
        done = threading.Event()
        checker = threading.Thread(
            target=self._check_pending,
            args=(tracker, stop, done, current),
            name=f"{self.kind}-pending-check",
            daemon=True,
        )
        checker.start()
        backoff = retry.Backoff(self._retry_backoff_s, max(self._retry_backoff_s, _MAX_BACKOFF_S))
        try:
            while not stop.is_set():
                cause = self._watch_once(tracker, stop, current)
                if stop.is_set():
                    return
                metrics.child(WATCH_RECONNECTS, self.kind, cause).inc()
                if cause != "error":
                    log.info("re-listing %s Jobs (the watch %s)", self.kind, cause)
                    backoff.reset()
                    continue
                log.info("re-listing %s Jobs after a pause", self.kind)
                backoff.sleep(stop)
        finally:
            done.set()
            checker.join()

    def _watch_once(
        self, tracker: _Tracker, stop: threading.Event, current: list[kubernetes.watch.Watch]
    ) -> str:
        """List, then follow the watch until it ends; why it ended (ended, expired, error)."""
        try:
            version = self._relist(tracker)
            if not stop.is_set():
                self._follow(tracker, version, stop, current)
        except k8s.ApiException as exc:
            if exc.status == 410:
                return "expired"
            log.warning("watching %s Jobs failed: HTTP %s %s", self.kind, exc.status, exc.reason)
            return "error"
        except errors.Misconfigured as exc:
            log.error("watching %s Jobs failed: %s", self.kind, exc.message)
            return "error"
        except (urllib3.exceptions.HTTPError, OSError, errors.TunewireError) as exc:
            if not stop.is_set():
                log.warning("watching %s Jobs failed: %s", self.kind, exc)
            return "error"
        return "ended"

    def _own_labels(self) -> dict[str, str]:
        return {**_MANAGED, **self.settings.labels, launching.WORKLOAD_LABEL: self.kind}

    def _read(self, name: str) -> k8s.V1Job:
        with _api_errors(f"read Job {name}"):
            job: k8s.V1Job = self._batch.read_namespaced_job(name, self.settings.namespace)
        return job

    def _refuse_if_foreign(self, name: str) -> None:
        """Raise :class:`errors.Conflict` when the Job ``name`` is another launcher's."""
        try:
            existing = self._read(name)
        except errors.NotFound:
            return  # deleted since it conflicted: there is nothing of anyone's to follow
        if self._is_anothers(existing):
            raise errors.Conflict(
                f"Job {name} in namespace {self.settings.namespace} belongs to another "
                f"launcher (labels {existing.metadata.labels}; this launcher's are "
                f"{self._own_labels()}): two tunewire releases in one namespace name the Jobs "
                "of the same objective and data alike; install them in separate namespaces"
            )

    def _is_ours(self, job: k8s.V1Job) -> bool:
        """Whether the Job carries all of this launcher's labels: the Jobs it watches."""
        labels = job.metadata.labels or {}
        return all(labels.get(k) == v for k, v in self._own_labels().items())

    def _is_anothers(self, job: k8s.V1Job) -> bool:
        """Whether a label of the Job gives it to another launcher (another release, another
        kind), for the Jobs a caller names. A Job merely lacking some of this launcher's
        labels, created before ``settings.labels`` was set, is still followed and cancelled:
        an upgrade leaves no run behind."""
        labels = job.metadata.labels or {}
        return any(k in labels and labels[k] != v for k, v in self._own_labels().items())

    def _relist(self, tracker: _Tracker) -> str:
        """Report every current Job (and the ones gone since); the list's resource version."""
        ns = self.settings.namespace
        with _api_errors(f"list Jobs in namespace {ns}"):
            jobs = self._batch.list_namespaced_job(ns, label_selector=self._selector)
            pods = self._core.list_namespaced_pod(ns, label_selector=self._selector)
        by_job: dict[str, list[k8s.V1Pod]] = collections.defaultdict(list)
        for pod in pods.items:
            if (job_name := _job_name(pod)) is not None:
                by_job[job_name].append(pod)
        listed = [job for job in jobs.items if self._is_ours(job)]
        for job in listed:
            tracker.report(self._status_of(job, by_job[job.metadata.name]), job.metadata.uid)
        tracker.forget_except({job.metadata.name for job in listed})
        version: str = jobs.metadata.resource_version
        return version

    def _follow(
        self,
        tracker: _Tracker,
        version: str,
        stop: threading.Event,
        current: list[kubernetes.watch.Watch],
    ) -> None:
        """Report each Job event until the stream ends; raises on expiry or a broken connection."""
        stream = kubernetes.watch.Watch()
        current[:] = [stream]
        try:
            for event in stream.stream(
                self._batch.list_namespaced_job,
                self.settings.namespace,
                label_selector=self._selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout_s,
                # A connection that dies silently must not block forever.
                _request_timeout=(10, self._watch_timeout_s + 30),
            ):
                if stop.is_set():
                    return
                job = event["object"]
                if event["type"] not in ("ADDED", "MODIFIED", "DELETED") or not self._is_ours(job):
                    continue
                name = job.metadata.name
                if event["type"] == "DELETED":
                    tracker.report(
                        launching.JobStatus(name=name, phase=launching.JobPhase.MISSING),
                        job.metadata.uid,
                    )
                else:
                    tracker.report(self._status_of(job, self._pods_of(name)), job.metadata.uid)
        finally:
            current.clear()
            stream.stop()

    def _check_pending(
        self,
        tracker: _Tracker,
        stop: threading.Event,
        done: threading.Event,
        current: list[kubernetes.watch.Watch],
    ) -> None:
        """Re-read pending Jobs (pod changes give no Job event); break the stream on stop."""
        while not done.is_set():
            if stop.wait(self._pending_check_s):
                # Until the watch returns: a stream opened just now may not be stoppable yet.
                while not done.wait(0.1):
                    for stream in list(current):
                        stream.stop()
                return
            for seen in tracker.pending():
                try:
                    job = self._read(seen.name)
                    pods = self._pods_of(seen.name)
                except errors.NotFound:
                    continue  # the watch reports the deletion
                except errors.TunewireError as exc:
                    log.warning("re-checking pending Job %s failed: %s", seen.name, exc.message)
                    continue
                tracker.report(self._status_of(job, pods), job.metadata.uid, unless_after=seen)

    def _pods_of(self, name: str) -> list[k8s.V1Pod]:
        """The Job's pods; filtered here too, since not every API honours label selectors."""
        with _api_errors(f"list pods of Job {name}"):
            pods = self._core.list_namespaced_pod(
                self.settings.namespace, label_selector=f"job-name={name}"
            )
        return [pod for pod in pods.items if _job_name(pod) == name]

    def _status_of(self, job: k8s.V1Job, pods: Sequence[k8s.V1Pod]) -> launching.JobStatus:
        """Classify a Job: its conditions first, then what its pods are doing."""
        phase, reason, message = _classify(job, pods, self.settings.pending_timeout_s)
        name: str = job.metadata.name
        return launching.JobStatus(
            name=name,
            phase=phase,
            reason=reason,
            message=message,
            logs=f"kubectl logs -n {self.settings.namespace} job/{name}",
        )


class _Tracker:
    """What the watch reported last per Job, so that only changes are reported again."""

    def __init__(self, on_change: launching.StatusCallback) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, launching.JobStatus]] = {}

    def report(
        self,
        status: launching.JobStatus,
        uid: str,
        *,
        unless_after: launching.JobStatus | None = None,
    ) -> None:
        """Call back with ``status`` unless it says nothing new about the Job ``uid``.

        With ``unless_after``, the status was read while ``unless_after`` was the last one
        reported; if another report came in between, this one may be older, and is dropped.
        """
        with self._lock:
            previous = self._last.get(status.name)
            if unless_after is not None and (previous is None or previous[1] is not unless_after):
                return
            if status.phase is launching.JobPhase.MISSING:
                if previous is None:
                    return
                del self._last[status.name]
            elif previous is not None and previous[0] == uid:
                before = previous[1]
                if (before.phase, before.reason) == (status.phase, status.reason):
                    return
                if before.finished and not status.finished:
                    return  # an older view of a finished Job (two readers race)
                self._last[status.name] = (uid, status)
            else:
                self._last[status.name] = (uid, status)
            self._on_change(status)

    def forget_except(self, names: set[str]) -> None:
        """Report the Jobs not in ``names`` (deleted while the watch was away) as missing."""
        for name in [n for n in list(self._last) if n not in names]:
            self.report(launching.JobStatus(name=name, phase=launching.JobPhase.MISSING), "")

    def pending(self) -> list[launching.JobStatus]:
        """Jobs last reported as pending: their pods may time out without a Job event."""
        with self._lock:
            return [s for _, s in self._last.values() if s.phase is launching.JobPhase.PENDING]


def _container(
    s: launching.KubernetesLauncherSettings, spec: launching.WorkloadSpec
) -> k8s.V1Container:
    """The workload's container: non-root, read-only, settings from the ConfigMap and Secret,
    and the private Kafka CA, if any, as a file."""
    resources = k8s.V1ResourceRequirements(
        requests={"cpu": s.cpu_request, "memory": s.memory_request},
        limits={"memory": s.memory_limit},
    )
    if spec.gpus > 0:
        resources.requests[s.gpu_resource] = str(spec.gpus)
        resources.limits[s.gpu_resource] = str(spec.gpus)
    env = {
        "HOME": _TMP_DIR,
        "TUNEWIRE_MODEL_CACHE": f"{_CACHE_DIR}/models",
        "PYTHONUNBUFFERED": "1",
        **spec.env,
    }
    mounts = [
        k8s.V1VolumeMount(name="tmp", mount_path=_TMP_DIR),
        k8s.V1VolumeMount(name="model-cache", mount_path=_CACHE_DIR),
    ]
    if s.ca_secret:
        env["TUNEWIRE_KAFKA__SSL_CAFILE"] = f"{_KAFKA_CA_DIR}/{_KAFKA_CA_FILE}"
        mounts.append(k8s.V1VolumeMount(name="kafka-ca", mount_path=_KAFKA_CA_DIR, read_only=True))
    env_from = []
    if s.config_map:
        env_from.append(
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=s.config_map))
        )
    if s.secret:
        env_from.append(k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=s.secret)))
    return k8s.V1Container(
        name=_COMPONENT[spec.kind],
        image=s.image,
        image_pull_policy=s.image_pull_policy,
        command=spec.command("python"),
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        env_from=env_from or None,
        resources=resources,
        # On failure the last lines of the log become the termination message: the reason
        # a run failed is then in the pod status, readable without access to the logs.
        termination_message_policy="FallbackToLogsOnError",
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=_UID,
            run_as_group=_UID,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=mounts,
    )


def _pod_spec(s: launching.KubernetesLauncherSettings, container: k8s.V1Container) -> k8s.V1PodSpec:
    """Where and as whom the pod runs: GPU nodes, the workload service account, no retries."""
    volumes = [
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
        k8s.V1Volume(name="model-cache", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    if s.ca_secret:
        # Only the CA's key, under a fixed file name: the Secret may hold other keys.
        volumes.append(
            k8s.V1Volume(
                name="kafka-ca",
                secret=k8s.V1SecretVolumeSource(
                    secret_name=s.ca_secret,
                    items=[k8s.V1KeyToPath(key=s.ca_key, path=_KAFKA_CA_FILE)],
                ),
            )
        )
    return k8s.V1PodSpec(
        containers=[container],
        restart_policy="Never",
        service_account_name=s.service_account,
        # The workload talks to S3 and Kafka, never to the Kubernetes API.
        automount_service_account_token=False,
        priority_class_name=s.priority_class,
        node_selector=dict(s.node_selector) or None,
        tolerations=[
            k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
            for t in s.tolerations
        ]
        or None,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=_UID,
            run_as_group=_UID,
            fs_group=_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volumes=volumes,
    )


def _job_name(pod: k8s.V1Pod) -> str | None:
    labels = pod.metadata.labels or {}
    for key in _JOB_NAME_LABELS:
        if key in labels:
            name: str = labels[key]
            return name
    return None


def _classify(
    job: k8s.V1Job, pods: Sequence[k8s.V1Pod], pending_timeout_s: float
) -> tuple[launching.JobPhase, _Reason, str]:
    """Phase, failure reason and message of a Job and its pods."""
    conditions = {
        c.type: c for c in ((job.status and job.status.conditions) or []) if c.status == "True"
    }
    if "Complete" in conditions:
        return launching.JobPhase.SUCCEEDED, _NO_REASON, ""
    if (failed := conditions.get("Failed")) is not None:
        return (launching.JobPhase.FAILED, *_failure(failed, pods))
    if any(pod.status is not None and pod.status.phase == "Running" for pod in pods):
        return launching.JobPhase.RUNNING, _NO_REASON, ""
    now = datetime.datetime.now(datetime.UTC)
    waiting = ""
    for pod in pods:
        if pod.status is None or pod.status.phase != "Pending":
            continue
        if (problem := _pending_problem(pod)) is None:
            continue
        reason, waiting, since = problem
        if (now - since).total_seconds() >= pending_timeout_s:
            detail = f"{waiting} (pending for more than {pending_timeout_s:g} s)"
            return launching.JobPhase.FAILED, reason, detail
    return launching.JobPhase.PENDING, _NO_REASON, waiting


def _failure(condition: k8s.V1JobCondition, pods: Sequence[k8s.V1Pod]) -> tuple[_Reason, str]:
    """Why a Job failed: its condition, or else what happened to its last failed pod."""
    detail = condition.message or condition.reason or "the Job failed"
    if condition.reason == "DeadlineExceeded":
        return training_pb2.FAILURE_REASON_DEADLINE_EXCEEDED, detail
    failed = [pod for pod in pods if pod.status is not None and pod.status.phase == "Failed"]
    if not failed:
        return training_pb2.FAILURE_REASON_UNKNOWN, detail
    pod = max(failed, key=_created)
    status = pod.status
    conditions = {c.type: c for c in status.conditions or [] if c.status == "True"}
    if status.reason == "Evicted" or "DisruptionTarget" in conditions:
        why = status.message or getattr(conditions.get("DisruptionTarget"), "message", None)
        return (
            training_pb2.FAILURE_REASON_PREEMPTED,
            f"pod {pod.metadata.name} was preempted: {why or status.reason}",
        )
    for container in status.container_statuses or []:
        terminated = (container.state and container.state.terminated) or (
            container.last_state and container.last_state.terminated
        )
        if terminated is None:
            continue
        if terminated.reason == "OOMKilled":
            return (
                training_pb2.FAILURE_REASON_OUT_OF_MEMORY,
                f"container {container.name} was killed for using too much memory (OOMKilled)",
            )
        if terminated.exit_code:
            detail = _last_line(terminated.message) or terminated.reason or "no message"
            return launching.exit_failure(terminated.exit_code, detail)
    return training_pb2.FAILURE_REASON_UNKNOWN, detail


def _pending_problem(pod: k8s.V1Pod) -> tuple[_Reason, str, datetime.datetime] | None:
    """What keeps a pending pod from running, and since when, or None if nothing does (yet)."""
    status = pod.status
    created = _created(pod)
    for condition in status.conditions or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            since = condition.last_transition_time or created
            return (
                training_pb2.FAILURE_REASON_UNSCHEDULABLE,
                f"Unschedulable: {condition.message or ''}".rstrip(": "),
                since,
            )
    for container in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = container.state and container.state.waiting
        if waiting is None:
            continue
        text = f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        if waiting.reason in _IMAGE_PULL_WAITING:
            return training_pb2.FAILURE_REASON_IMAGE_PULL, text, created
        if waiting.reason in _CONFIG_WAITING:
            return training_pb2.FAILURE_REASON_UNKNOWN, text, created
    return None


def _created(pod: k8s.V1Pod) -> datetime.datetime:
    created: datetime.datetime | None = pod.metadata.creation_timestamp
    return created or datetime.datetime.now(datetime.UTC)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """Turn API failures into the typed errors a caller can act on."""
    try:
        yield
    except k8s.ApiException as exc:
        detail = f"could not {what}: HTTP {exc.status} {exc.reason}"
        if exc.status == 404:
            raise errors.NotFound(detail) from exc
        if exc.status == 409:
            raise errors.Conflict(detail) from exc
        if exc.status in (401, 403):
            raise errors.Misconfigured(
                f"{detail}; the service account needs RBAC to create, read, watch and delete "
                "Jobs and to list pods in that namespace (the chart's rbac values grant it)"
            ) from exc
        if exc.status in (400, 422):
            raise errors.Misconfigured(
                f"{detail}; the Kubernetes launcher settings produce an invalid Job: {exc.body}"
            ) from exc
        raise errors.Unavailable(f"{detail}; retry when the Kubernetes API is healthy") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise errors.Unavailable(
            f"could not {what}: the Kubernetes API is unreachable ({exc}); retry later"
        ) from exc


def _default_client(settings: launching.KubernetesLauncherSettings) -> k8s.ApiClient:
    try:
        if settings.in_cluster:
            kubernetes.config.load_incluster_config()
        else:
            kubernetes.config.load_kube_config()
    except kubernetes.config.ConfigException as exc:
        where = "the pod's service account" if settings.in_cluster else "the kubeconfig"
        raise errors.Misconfigured(
            f"cannot configure the Kubernetes client from {where} ({exc}); outside a cluster "
            "set TUNEWIRE_LAUNCHER__KUBERNETES__IN_CLUSTER=false and point KUBECONFIG at a "
            "kubeconfig, or use the local launcher (TUNEWIRE_LAUNCHER__KIND=local)"
        ) from exc
    return k8s.ApiClient()
