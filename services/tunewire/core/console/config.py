"""Settings of the console's pipeline overview (``TUNEWIRE_CONSOLE__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
