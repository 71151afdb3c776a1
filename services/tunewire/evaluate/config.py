"""Settings of the evaluate service (``TUNEWIRE_EVALUATE__*``, ``TUNEWIRE_LAUNCHER__*`` and
``TUNEWIRE_CONSOLE__*``, the console's pipeline overview)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tunewire.core.base import settings
from tunewire.core.launchers import launching


class EvaluateLimits(BaseModel):
    """How failed evaluator workloads are retried and how often open evaluations are checked."""

    max_attempts: int = Field(default=2, ge=1)
    """Evaluator workloads tried per candidate before it is rejected with the last failure
    (one retry absorbs a lost node or an evicted pod; a broken adapter fails every time)."""
    reconcile_every_s: float = Field(default=30.0, gt=0)
    """How often open evaluations are re-checked with the launcher (and re-read from S3), so
    a status report that could not be handled, or one another replica missed, is not lost."""


class ConsoleSettings(BaseModel):
    """Where the overview finds the other services, and how long it waits for them."""

    peers: dict[str, str] = {}
    """Base URLs of the services whose APIs the overview asks, by service name: ``label``
    (queue depth, latest snapshot) and ``train`` (training runs), e.g. ``{"label":
    "http://tunewire-label:8080"}`` (a JSON object in the environment). A service left out is
    shown as not configured; the rest of the overview still works."""
    peer_timeout_s: float = Field(default=3.0, gt=0)
    """Seconds one call to another service may take before the overview shows it as
    unreachable: a slow service must not make the whole page hang."""
    events_days: int = Field(default=7, ge=1, le=31)
    """Days of the raw archive the overview counts events over (each archive part is read
    once per replica, so a longer window costs memory, not repeated reads)."""


class EvaluateSettings(settings.ServiceSettings):
    """Everything the evaluate process needs."""

    evaluate: EvaluateLimits = EvaluateLimits()
    """Retries and re-checks of evaluator workloads (``TUNEWIRE_EVALUATE__*``)."""
    launcher: launching.LauncherSettings = launching.LauncherSettings()
    """How evaluator workloads run: Kubernetes Jobs or local subprocesses
    (``TUNEWIRE_LAUNCHER__*``)."""
    consumer_group: str = "tunewire-evaluate"
    """Consumer group of ``tunewire.training``; replicas share it."""
    console: ConsoleSettings = ConsoleSettings()
    """The console's pipeline overview: where the label and train APIs are."""
