"""Topic names: one per stream, keyed by objective, and a ``.dlq`` twin per consumed topic."""

from __future__ import annotations

EVENTS_RAW = "tunewire.events.raw"
RECORDS = "tunewire.records"
EXAMPLES = "tunewire.examples"
DATASETS = "tunewire.datasets"
TRAINING = "tunewire.training"
EVALUATIONS = "tunewire.evaluations"
DEPLOYMENTS = "tunewire.deployments"
OBJECTIVES = "tunewire.objectives"


def dlq(topic: str) -> str:
    """The dead-letter twin of a consumed topic."""
    return f"{topic}.dlq"
