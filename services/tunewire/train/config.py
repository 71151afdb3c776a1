"""Settings of the train service (``TUNEWIRE_TRAIN__*`` and ``TUNEWIRE_LAUNCHER__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tunewire.core.base import settings
from tunewire.core.launchers import launching


class TrainLimits(BaseModel):
    """How many runs may train at once and how failed attempts are retried."""

    max_running: int = Field(default=2, ge=1)
    """Runs training at the same time, across objectives."""
    gpu_budget: int = Field(default=0, ge=0)
    """GPUs the running runs may hold together; 0 means only ``max_running`` limits them."""
    max_attempts: int = Field(default=3, ge=1)
    """Attempts of a run whose workload was lost or killed (pre-empted, node gone); each
    resumes from the last checkpoint. User errors (bad dataset, OOM) are never retried."""
    reconcile_every_s: float = Field(default=30.0, gt=0)
    """How often runs are re-read from S3 (changes made by other replicas or by hand)."""
    repeat_success_every_s: float = Field(default=60.0, gt=0)
    """How often each objective's newest succeeded run is announced again (same event id),
    so that evaluation still happens if a broker without storage lost the first one."""


class TrainSettings(settings.ServiceSettings):
    """Everything the train process needs."""

    train: TrainLimits = TrainLimits()
    """Concurrency, GPU budget and retries of runs (``TUNEWIRE_TRAIN__*``)."""
    launcher: launching.LauncherSettings = launching.LauncherSettings()
    """How trainer workloads run: Kubernetes Jobs or local subprocesses
    (``TUNEWIRE_LAUNCHER__*``)."""
    consumer_group: str = "tunewire-train"
    """Consumer group of ``tunewire.datasets``; replicas share it."""
