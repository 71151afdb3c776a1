"""Launchers: how train and evaluate run their workloads, behind one interface.

A workload is ``python -m tunewire.workloads.<kind> ARGS`` (the trainer or the evaluator).
The ``kubernetes`` launcher runs it as a ``batch/v1`` Job on a GPU node; the ``local``
launcher runs it as a subprocess on this machine (the embedded stack and the tests). Both
take the same :class:`WorkloadSpec`, report the same :class:`JobStatus`, and are idempotent
on the workload's name, so a redelivered event never starts a second run.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import threading
from collections.abc import Callable
from typing import Literal, Protocol, TypeAlias

from pydantic import BaseModel, Field, field_validator

from tunewire.contracts.v1 import training_pb2

WorkloadKind = Literal["train", "evaluate"]
FailureReason: TypeAlias = training_pb2.FailureReason
"""Why a workload failed, in the training contract's terms (evaluations reuse them)."""

WORKLOAD_LABEL = "tunewire.io/workload"
"""Label holding the workload kind; a Kubernetes launcher follows only the Jobs of its kind."""
COMPONENT_LABEL = "app.kubernetes.io/component"
"""Label holding the workload's component name (trainer, evaluator)."""
_MAX_NAME = 63
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class JobPhase(enum.StrEnum):
    """Where a workload is in its life, as far as the launcher can tell."""

    PENDING = "pending"
    """Created, not running yet (waiting for a node, pulling the image)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"
    """The launcher knows no workload of that name (never created, deleted, or lost)."""


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """Everything a launcher needs to start one workload."""

    name: str
    """Idempotent name (a DNS-1123 label of at most 63 characters); see :func:`workload_name`."""
    kind: WorkloadKind
    args: list[str]
    """Arguments after ``python -m tunewire.workloads.<kind>``."""
    labels: dict[str, str]
    """Labels linking the workload to its objective and run (Kubernetes label syntax)."""
    gpus: int = 0
    """GPUs the workload needs (``nvidia.com/gpu`` on Kubernetes; ignored locally)."""
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    """Extra non-secret environment; secrets come from the configured Secret only."""
    module: str | None = None
    """The module run with ``python -m``; ``None`` means ``tunewire.workloads.<kind>``.

    Launcher tests run a small script through it, so they need neither torch nor S3.
    """

    def __post_init__(self) -> None:
        # The name becomes a Job name and a file name: refuse anything that could be neither.
        if len(self.name) > _MAX_NAME or not _NAME_RE.match(self.name):
            raise ValueError(
                f"workload name {self.name!r} is not a DNS-1123 label of at most {_MAX_NAME} "
                "characters; build it with workload_name()"
            )

    def command(self, python: str = "python") -> list[str]:
        """The full command line the workload runs."""
        module = self.module or f"tunewire.workloads.{self.kind}"
        return [python, "-m", module, *self.args]


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A launcher's view of one workload."""

    name: str
    phase: JobPhase
    reason: FailureReason = training_pb2.FAILURE_REASON_UNSPECIFIED
    """Set when ``phase`` is FAILED: why, classified (OOM, deadline, image pull, ...)."""
    message: str = ""
    """Human-readable detail: the pod condition or the last line the process wrote."""
    logs: str = ""
    """Where to read the workload's logs (a file path, or a ``kubectl logs`` command)."""

    @property
    def finished(self) -> bool:
        """True once the workload can change no more."""
        return self.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED)


StatusCallback = Callable[[JobStatus], None]

LEFT_BEHIND: frozenset[FailureReason] = frozenset(
    {training_pb2.FAILURE_REASON_UNSCHEDULABLE, training_pb2.FAILURE_REASON_IMAGE_PULL}
)
"""Failures the launcher decides on a pending workload it leaves in place (its Job still
waits for a node or an image): the caller cancels it so that it never starts later."""


EXIT_STORAGE = 75
"""A workload's exit status when it could not reach S3 (EX_TEMPFAIL): it recorded no
outcome, and another attempt resumes from its last checkpoint."""


def exit_failure(code: int, detail: str) -> tuple[FailureReason, str]:
    """The reason and message of a workload that exited with a non-zero ``code``; ``detail``
    is the last line it logged, if any. Both launchers report exits this way."""
    message = f"exit code {code}: {detail}" if detail else f"exit code {code}"
    if code == EXIT_STORAGE:
        return training_pb2.FAILURE_REASON_STORAGE, message
    return training_pb2.FAILURE_REASON_TRAINER_ERROR, message


class Launcher(Protocol):
    """Starts, follows and cancels workloads."""

    def launch(self, spec: WorkloadSpec) -> bool:
        """Start the workload; False (and nothing started) when one of that name exists."""

    def status(self, name: str) -> JobStatus:
        """The workload's current status (``MISSING`` when unknown)."""

    def cancel(self, name: str) -> bool:
        """Stop and delete the workload; False when there was nothing to cancel."""

    def watch(self, on_change: StatusCallback, stop: threading.Event) -> None:
        """Call ``on_change`` on every phase change of this launcher's workloads until ``stop``.

        At start it reports the current status of every workload it manages, so a restarted
        service catches up with what finished meanwhile; after that, a workload is reported
        again only when its phase or failure reason changes (a reconnection reports what
        changed while it was disconnected, a deleted workload as ``MISSING``).
        """


class Toleration(BaseModel):
    """A Kubernetes toleration, as in a pod spec."""

    key: str | None = None
    """The taint key it tolerates; None with ``Exists`` tolerates every taint."""
    operator: Literal["Equal", "Exists"] = "Equal"
    """``Equal`` matches a taint of that key and ``value``; ``Exists`` any value of the key."""
    value: str | None = None
    """The taint value to match with ``Equal``; left out with ``Exists``."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect it tolerates; None tolerates every effect."""


class KubernetesLauncherSettings(BaseModel):
    """How workload Jobs look in the cluster (the chart fills these in)."""

    namespace: str = "default"
    """Namespace the Jobs are created, watched and deleted in (the service account's RBAC
    must allow that there)."""
    image: str = "ghcr.io/tunewire/trainer:0.1.0"
    """The CUDA trainer/evaluator image."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """The workload container's ``imagePullPolicy``."""
    service_account: str = "tunewire-workload"
    """Service account of the Job's pods (IRSA annotations for S3 go on it)."""
    config_map: str | None = None
    """ConfigMap whose keys become the pods' environment (Kafka, S3, non-secret settings)."""
    secret: str | None = None
    """Secret whose keys become the pods' environment (SASL password, S3 keys); only its
    name ever appears in the Job spec."""
    labels: dict[str, str] = {}
    """Labels of the Jobs and their pods beyond the launcher's own, e.g. the release's
    selector labels, so that the release's NetworkPolicies select the pods. They also scope
    the launcher: it watches only Jobs that carry all of them and leaves alone any Job with
    other values for them, so two releases in one namespace never act on each other's Jobs."""
    ca_secret: str | None = None
    """Secret holding the CA bundle that signs the Kafka brokers' certificates (a private
    CA). It is mounted read-only into the pods and ``TUNEWIRE_KAFKA__SSL_CAFILE`` names the
    file; None leaves the image's system CAs to verify the brokers."""
    ca_key: str = Field(default="ca.crt", min_length=1)
    """Key of the PEM bundle in ``ca_secret``."""
    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource a workload's GPUs are requested and limited as (only when the
    workload asks for GPUs)."""
    node_selector: dict[str, str] = {}
    """Node labels the pods must match, e.g. to land on GPU nodes; empty sets none."""
    tolerations: list[Toleration] = []
    """Taints the pods tolerate, e.g. those that keep other pods off GPU nodes."""
    priority_class: str | None = None
    """The pods' ``priorityClassName``; None leaves the cluster's default."""
    cpu_request: str = "2"
    """CPU the workload container requests (a Kubernetes quantity); no CPU limit is set."""
    memory_request: str = "16Gi"
    """Memory the workload container requests (a Kubernetes quantity)."""
    memory_limit: str = "32Gi"
    """Memory limit of the workload container; a container over it is OOM-killed and the run
    fails as OUT_OF_MEMORY."""
    active_deadline_seconds: int = Field(default=6 * 3600, ge=60)
    """A run longer than this is stopped and reported as DEADLINE_EXCEEDED."""
    backoff_limit: int = Field(default=2, ge=0)
    """Pod retries (each resumes from the last checkpoint) before the Job fails."""
    ttl_seconds_after_finished: int = Field(default=24 * 3600, ge=0)
    """Finished Jobs are garbage-collected by Kubernetes after this long."""
    pending_timeout_s: float = Field(default=1800.0, gt=0)
    """A pod unschedulable (or unable to pull its image) this long fails the run."""
    in_cluster: bool = True
    """Use the pod's service account; False reads the kubeconfig (development)."""

    @field_validator("labels")
    @classmethod
    def _not_the_launchers_own(cls, labels: dict[str, str]) -> dict[str, str]:
        # The launcher tells trainer from evaluator Jobs by these; a setting must not blur them.
        taken = sorted({WORKLOAD_LABEL, COMPONENT_LABEL} & labels.keys())
        if taken:
            raise ValueError(
                f"labels {taken} are set by the launcher itself; remove them from "
                "TUNEWIRE_LAUNCHER__KUBERNETES__LABELS"
            )
        return labels


class LocalLauncherSettings(BaseModel):
    """How workloads run as subprocesses on this machine."""

    workdir: str = ".tunewire/workloads"
    """Holds each workload's log and pid file."""
    python: str | None = None
    """Interpreter to run workloads with (default: the service's own)."""
    active_deadline_seconds: int = Field(default=6 * 3600, ge=1)
    """A workload running longer is stopped by its supervisor (SIGTERM, then SIGKILL) and
    reported as DEADLINE_EXCEEDED."""


class LauncherSettings(BaseModel):
    """Which launcher a service uses and its settings."""

    kind: Literal["kubernetes", "local"] = "kubernetes"
    """``kubernetes`` runs workloads as ``batch/v1`` Jobs, ``local`` as supervised
    subprocesses on this machine (the embedded stack and the tests)."""
    kubernetes: KubernetesLauncherSettings = KubernetesLauncherSettings()
    """Used when ``kind`` is ``kubernetes`` (``TUNEWIRE_LAUNCHER__KUBERNETES__*``)."""
    local: LocalLauncherSettings = LocalLauncherSettings()
    """Used when ``kind`` is ``local`` (``TUNEWIRE_LAUNCHER__LOCAL__*``)."""


def workload_name(kind: WorkloadKind, *parts: str) -> str:
    """A stable DNS-1123 name for a workload, derived from what identifies it.

    The same inputs always give the same name (so a redelivered event finds the Job it
    already created); a readable prefix is kept and a hash keeps names unique and short.
    """
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts[:1]).lower()).strip("-")
    prefix = f"tw-{kind}-"
    room = _MAX_NAME - len(prefix) - len(digest) - 1
    readable = readable[:room].strip("-")
    return f"{prefix}{readable}-{digest}" if readable else f"{prefix}{digest}"
