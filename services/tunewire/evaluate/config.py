"""Settings of the evaluate service (``TUNEWIRE_EVALUATE__*`` and ``TUNEWIRE_LAUNCHER__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tunewire.core import launching, settings
from tunewire.core.console import config as console_config


class EvaluateLimits(BaseModel):
    """How failed evaluator workloads are retried and how often open evaluations are checked."""

    max_attempts: int = Field(default=2, ge=1)
    """Evaluator workloads tried per candidate before it is rejected with the last failure
    (one retry absorbs a lost node or an evicted pod; a broken adapter fails every time)."""
    reconcile_every_s: float = Field(default=30.0, gt=0)
    """How often open evaluations are re-checked with the launcher (and re-read from S3), so
    a status report that could not be handled, or one another replica missed, is not lost."""


class EvaluateSettings(settings.ServiceSettings):
    """Everything the evaluate process needs."""

    evaluate: EvaluateLimits = EvaluateLimits()
    launcher: launching.LauncherSettings = launching.LauncherSettings()
    consumer_group: str = "tunewire-evaluate"
    console: console_config.ConsoleSettings = console_config.ConsoleSettings()
    """The console's pipeline overview: where the label and train APIs are."""
