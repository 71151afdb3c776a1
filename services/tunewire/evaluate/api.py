"""HTTP routes of the evaluate service: evaluations, reviews and the adapter registry.

The policy table says which roles call each route; the reviewer is the principal whose
token approves or rejects, and must give a ``reason`` (422 without one). Only a candidate
held for review can be approved or rejected (409 otherwise, including a second approval),
and an unknown evaluation is 404.
"""

from __future__ import annotations

import math
from typing import Any

import fastapi
from fastapi import concurrency
from pydantic import BaseModel, ConfigDict, Field

from tunewire.core.base import errors
from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization
from tunewire.core.state import objectives
from tunewire.evaluate import records
from tunewire.evaluate.controller import EvaluationController


class ReviewRequest(BaseModel):
    """A person's approval or rejection of a candidate held for review."""

    model_config = ConfigDict(str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=2000)
    """Why; recorded in the registry's history and published with the decision."""


def router(
    *,
    controller: EvaluationController,
    catalog: objectives.ObjectiveCatalog,
    auth: authorization.Authority,
) -> fastapi.APIRouter:
    """Routes under ``/v1/evaluations`` and ``/v1/registry``."""
    routes = fastapi.APIRouter(prefix="/v1", tags=["evaluate"])
    Caller = fastapi.Depends(auth)

    @routes.get("/evaluations", summary="Evaluations, oldest first, optionally of one objective")
    def list_evaluations(objective: str | None = None, _: Principal = Caller) -> dict[str, Any]:
        found = controller.records.list_records(objective)
        return {"evaluations": [shown(r.model_dump(mode="json")) for r in found]}

    @routes.get(
        "/evaluations/{objective}/{run_id}",
        summary="One evaluation: its record, the gates and the evaluator's metrics",
    )
    def show(objective: str, run_id: str, _: Principal = Caller) -> dict[str, Any]:
        record = controller.records.get(objective, run_id)
        report = controller.report(record)  # None while measuring, or if the evaluator failed
        metrics = report.model_dump(mode="json") if report else None
        return shown({**record.model_dump(mode="json"), "metrics": metrics})

    async def review(
        objective: str, run_id: str, body: ReviewRequest, *, approve: bool, actor: str
    ) -> dict[str, Any]:
        record: records.EvaluationRecord = await concurrency.run_in_threadpool(
            controller.review,
            objective,
            run_id,
            approve=approve,
            actor=actor,
            reason=body.reason,
        )
        return shown(record.model_dump(mode="json"))

    @routes.post("/evaluations/{objective}/{run_id}/approve", summary="Approve a held candidate")
    async def approve(
        objective: str, run_id: str, body: ReviewRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        return await review(objective, run_id, body, approve=True, actor=caller.name)

    @routes.post("/evaluations/{objective}/{run_id}/reject", summary="Reject a held candidate")
    async def reject(
        objective: str, run_id: str, body: ReviewRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        return await review(objective, run_id, body, approve=False, actor=caller.name)

    @routes.get("/registry", summary="Every objective's champion and number of versions")
    def registries(_: Principal = Caller) -> dict[str, Any]:
        found = []
        for name in controller.registry.objectives():
            document = controller.registry.get(name)
            found.append(
                {
                    "objective": name,
                    "champion": document.champion,
                    "versions": len(document.versions),
                }
            )
        return {"objectives": found}

    @routes.get("/registry/{objective}", summary="An objective's versions, champion, history")
    def registry_of(objective: str, _: Principal = Caller) -> dict[str, Any]:
        document = controller.registry.get(objective)
        if not document.versions and not catalog.versions(objective):
            raise errors.NotFound(f"no objective named {objective!r}")
        return shown(document.model_dump(mode="json"))

    return routes


def shown(document: dict[str, Any]) -> dict[str, Any]:
    """A stored document as a JSON body: JSON has no NaN or infinity (a diverged perplexity
    is one), so they are shown as null."""
    return {key: _finite(value) for key, value in document.items()}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
