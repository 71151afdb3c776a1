"""HTTP routes of the train service: list, show, submit and cancel training runs.

Every route needs a bearer token. A run shows its record, the trainer's latest progress
(step, loss, tokens/s, ETA) and where its logs are.
"""

from __future__ import annotations

from typing import Any

import fastapi
from fastapi import concurrency
from pydantic import BaseModel, Field

from tunewire.core.process import http
from tunewire.train import runs
from tunewire.train.controller import RunController

_ACTOR = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")


class SubmitRequest(BaseModel):
    objective: str = Field(min_length=1)
    dataset_id: str = Field(min_length=1)
    actor: str = _ACTOR
    overrides: dict[str, dict[str, Any]] = {}
    """Optional ``lora`` and ``training`` settings that replace the objective's."""


class CancelRequest(BaseModel):
    actor: str = _ACTOR
    reason: str = Field(min_length=1, max_length=1000)


def router(*, controller: RunController, auth: http.BearerAuth) -> fastapi.APIRouter:
    """Routes under ``/v1/runs``."""
    routes = fastapi.APIRouter(prefix="/v1/runs", tags=["train"])
    Actor = fastapi.Depends(auth)

    def shown(run: runs.Run) -> dict[str, Any]:
        return {
            **run.model_dump(mode="json"),
            "progress": controller.runs.progress(run.objective, run.run_id),
        }

    @routes.get("", summary="Runs, oldest first, optionally of one objective or status")
    def list_runs(
        objective: str | None = None, status: str | None = None, _: str = Actor
    ) -> dict[str, Any]:
        found = controller.runs.list(objective)
        if status:
            found = [r for r in found if r.status == status]
        return {"runs": [shown(r) for r in found]}

    @routes.get("/{objective}/{run_id}", summary="One run with its progress")
    def show(objective: str, run_id: str, _: str = Actor) -> dict[str, Any]:
        return shown(controller.runs.get(objective, run_id))

    @routes.post("", status_code=202, summary="Queue a run of an existing dataset snapshot")
    async def submit(body: SubmitRequest, _: str = Actor) -> dict[str, Any]:
        run = await concurrency.run_in_threadpool(
            lambda: controller.submit_by_hand(
                objective_name=body.objective,
                dataset_id=body.dataset_id,
                overrides=body.overrides,
                actor=body.actor,
            )
        )
        return shown(run)

    @routes.post("/{objective}/{run_id}/cancel", summary="Cancel a queued or running run")
    async def cancel(
        objective: str, run_id: str, body: CancelRequest, _: str = Actor
    ) -> dict[str, Any]:
        run = await concurrency.run_in_threadpool(
            lambda: controller.cancel(objective, run_id, actor=body.actor, reason=body.reason)
        )
        return shown(run)

    return routes
