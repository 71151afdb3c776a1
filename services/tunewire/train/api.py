"""HTTP routes of the train service: list, show, submit and cancel training runs.

The policy table says which roles call each route; the principal who submits or cancels a
run is recorded as its actor. A run shows its record, the trainer's latest progress
(step, loss, tokens/s, ETA) and where its logs are.
"""

from __future__ import annotations

from typing import Any

import fastapi
from fastapi import concurrency
from pydantic import BaseModel, Field

from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization
from tunewire.train import runs
from tunewire.train.controller import RunController


class SubmitRequest(BaseModel):
    objective: str = Field(min_length=1)
    dataset_id: str = Field(min_length=1)
    overrides: dict[str, dict[str, Any]] = {}
    """Optional ``lora`` and ``training`` settings that replace the objective's."""


class CancelRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


def router(*, controller: RunController, auth: authorization.Authority) -> fastapi.APIRouter:
    """Routes under ``/v1/runs``."""
    routes = fastapi.APIRouter(prefix="/v1/runs", tags=["train"])
    Caller = fastapi.Depends(auth)

    def shown(run: runs.Run) -> dict[str, Any]:
        return {
            **run.model_dump(mode="json"),
            "progress": controller.runs.progress(run.objective, run.run_id),
        }

    @routes.get("", summary="Runs, oldest first, optionally of one objective or status")
    def list_runs(
        objective: str | None = None, status: str | None = None, _: Principal = Caller
    ) -> dict[str, Any]:
        found = controller.runs.list(objective)
        if status:
            found = [r for r in found if r.status == status]
        return {"runs": [shown(r) for r in found]}

    @routes.get("/{objective}/{run_id}", summary="One run with its progress")
    def show(objective: str, run_id: str, _: Principal = Caller) -> dict[str, Any]:
        return shown(controller.runs.get(objective, run_id))

    @routes.post("", status_code=202, summary="Queue a run of an existing dataset snapshot")
    async def submit(body: SubmitRequest, caller: Principal = Caller) -> dict[str, Any]:
        run = await concurrency.run_in_threadpool(
            lambda: controller.submit_by_hand(
                objective_name=body.objective,
                dataset_id=body.dataset_id,
                overrides=body.overrides,
                actor=caller.name,
            )
        )
        return shown(run)

    @routes.post("/{objective}/{run_id}/cancel", summary="Cancel a queued or running run")
    async def cancel(
        objective: str, run_id: str, body: CancelRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        run = await concurrency.run_in_threadpool(
            lambda: controller.cancel(objective, run_id, actor=caller.name, reason=body.reason)
        )
        return shown(run)

    return routes
