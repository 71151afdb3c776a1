"""Topic names: one per stream, keyed by objective, and a ``.dlq`` twin per consumed topic.

:data:`ALL` is the one list of the topics tunewire uses: ``tunewire topics`` creates it and
docs/install.md's table shows it.
"""

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


CONSUMED = (EVENTS_RAW, RECORDS, DATASETS, TRAINING, EVALUATIONS, DEPLOYMENTS, OBJECTIVES)
"""The topics the services' consumer loops read: a message a loop cannot handle goes to the
topic's DLQ twin, so each has one."""
DEAD_LETTERS = tuple(dlq(topic) for topic in CONSUMED)
"""The DLQs, which hold what was refused (redacted) for operators to read."""
ALL = (*CONSUMED, EXAMPLES, *DEAD_LETTERS)
"""Every topic tunewire uses; label writes :data:`EXAMPLES` for consumers outside tunewire."""
