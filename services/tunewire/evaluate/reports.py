"""The evaluator's ``metrics.json``: read, checked and turned into the contract's messages.

The evaluator workload writes it and exits; the service trusts nothing in it blindly. A file
that is missing, does not parse, or describes another run counts as a failed evaluator run
(:data:`UNREADABLE`), never as metrics.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from tunewire.contracts.v1 import evaluations_pb2
from tunewire.core.base import errors, store


class ModelScores(BaseModel):
    """One model's metrics on the held-out split."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_ref: str
    values: dict[str, float]
    examples: int

    def message(self) -> evaluations_pb2.ModelMetrics:
        """As the evaluations contract carries it."""
        return evaluations_pb2.ModelMetrics(
            model_ref=self.model_ref, values=self.values, examples=self.examples
        )


class MetricsReport(BaseModel):
    """What the evaluator measured: base model, champion (if any) and candidate."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    objective: str
    objective_version: int
    run_id: str
    dataset_id: str
    task: str
    examples: int
    base: ModelScores
    champion: ModelScores | None = None
    candidate: ModelScores
    disagreements: list[dict[str, Any]] = []
    warnings: list[str] = []
    """What the gates cannot see, e.g. an adapter that answered exactly as the base model."""
    seconds: float = 0.0


UNREADABLE = (errors.NotFound, ValueError)
"""What :func:`read` raises for a report that cannot be used (pydantic's and json's errors
are ValueErrors)."""


def read(artifacts: store.ArtifactStore, key: str, *, objective: str, run_id: str) -> MetricsReport:
    """The report at ``key``, checked to describe ``run_id`` of ``objective``.

    Raises one of :data:`UNREADABLE` with a message fit for a rejection reason.
    """
    document = artifacts.get_json(key)
    try:
        report = MetricsReport.model_validate(document)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{artifacts.uri(key)} is not a metrics report: {problems}") from None
    if (report.objective, report.run_id) != (objective, run_id):
        raise ValueError(
            f"{artifacts.uri(key)} describes run {report.run_id} of {report.objective!r}, "
            f"not run {run_id} of {objective!r}"
        )
    return report
