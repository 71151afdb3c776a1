"""The one terminal outcome of a training run, claimed in S3 before it is announced.

Two parties can end a run: the trainer workload (succeeded, or a failure it understood such
as a bad dataset) and the train service (a cancellation, or a failure only the launcher saw,
such as an OOM kill or an unschedulable pod). Whoever ends it first writes
``runs/{objective}/{run_id}/outcome.json`` with If-None-Match; only the winner publishes the
terminal training event, so consumers see exactly one succeeded, failed or cancelled per run.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tunewire.core.base import errors, store
from tunewire.core.state import layout

OutcomeKind = Literal["succeeded", "failed", "cancelled"]


class Outcome(BaseModel):
    """How a run ended."""

    model_config = ConfigDict(frozen=True)

    kind: OutcomeKind
    decided_by: str
    """``trainer`` or ``train`` (the service), or the person who cancelled."""
    reason: int = 0
    """For failures: a ``FailureReason`` value of the training contract."""
    message: str = ""
    adapter_uri: str = ""
    metrics: dict[str, float] = {}
    at: datetime.datetime


def claim(artifacts: store.ArtifactStore, objective: str, run_id: str, outcome: Outcome) -> Outcome:
    """Record ``outcome`` unless the run has one already; return the one that holds.

    The caller publishes the terminal event only when the returned outcome is its own
    (``returned is outcome``); otherwise the other party already did, or will.
    """
    key = layout.run(objective, run_id) + "outcome.json"
    try:
        artifacts.put_json(key, outcome.model_dump(mode="json"), only_if_absent=True)
    except errors.Conflict:
        existing = read(artifacts, objective, run_id)
        if existing is None:  # pragma: no cover - deleted between the two calls
            raise
        return existing
    return outcome


def read(artifacts: store.ArtifactStore, objective: str, run_id: str) -> Outcome | None:
    """The run's outcome, or None while it is still open."""
    try:
        document: Any = artifacts.get_json(layout.run(objective, run_id) + "outcome.json")
    except errors.NotFound:
        return None
    return Outcome.model_validate(document)
