"""HTTP routes of the label service: the human queue and dataset snapshots.

The annotator is the principal whose token makes the request (the policy table says which
roles call each route). Wrong labels are 422, a lost or expired lease is 409.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import fastapi
from fastapi import concurrency, responses
from pydantic import BaseModel, Field

from tunewire.core.base import errors, store
from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization
from tunewire.label import export, pipeline


class AnswerRequest(BaseModel):
    label: str = Field(min_length=1)
    claim_id: str | None = None


class LeaseRequest(BaseModel):
    claim_id: str


def router(
    *,
    flow: pipeline.LabelPipeline,
    auth: authorization.Authority,
    artifacts: store.ArtifactStore,
) -> fastapi.APIRouter:
    """Routes under ``/v1/queue`` and ``/v1/datasets``."""
    routes = fastapi.APIRouter(prefix="/v1", tags=["label"])
    Caller = fastapi.Depends(auth)

    def restored(name: str) -> str:
        objective = flow.objective(name)
        flow.restore(objective.name)
        return objective.name

    def manifest_of(objective: str, dataset_id: str) -> dict[str, Any]:
        for manifest in flow.builder.manifests(restored(objective)):
            if manifest.get("dataset_id") == dataset_id:
                return manifest
        raise errors.NotFound(f"objective {objective!r} has no snapshot {dataset_id!r}")

    @routes.get("/queue/{objective}", summary="Queue counts, per-annotator counts, agreement")
    def queue_status(objective: str, _: Principal = Caller) -> dict[str, Any]:
        name = restored(objective)
        return {
            "objective": name,
            "counts": flow.queue.counts(name),
            "annotators": flow.queue.annotators(name),
            "agreement": flow.queue.agreement(name),
            "examples": flow.example_count(name),
        }

    @routes.post("/queue/{objective}/claim", summary="Claim the next task (a lease)")
    def claim(objective: str, caller: Principal = Caller) -> fastapi.Response:
        claimed = flow.queue.claim(restored(objective), caller.name)
        if claimed is None:
            return fastapi.Response(status_code=204)
        return fastapi.responses.JSONResponse(dataclasses.asdict(claimed))

    @routes.post("/queue/{objective}/tasks/{task_id}/renew", summary="Extend a lease")
    def renew(
        objective: str, task_id: str, body: LeaseRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        renewed = flow.queue.renew(restored(objective), task_id, caller.name, body.claim_id)
        return dataclasses.asdict(renewed)

    @routes.post("/queue/{objective}/tasks/{task_id}/answer", summary="Submit a label")
    def answer(
        objective: str, task_id: str, body: AnswerRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        return flow.submit(objective, task_id, caller.name, body.label, body.claim_id)

    @routes.post("/queue/{objective}/tasks/{task_id}/skip", summary="Skip a task")
    def skip(
        objective: str, task_id: str, body: LeaseRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        flow.queue.skip(restored(objective), task_id, caller.name, body.claim_id)
        return {"status": "skipped"}

    @routes.get("/datasets/{objective}", summary="Snapshots of an objective, oldest first")
    def datasets(objective: str, _: Principal = Caller) -> dict[str, Any]:
        name = restored(objective)
        return {"objective": name, "snapshots": flow.builder.manifests(name)}

    @routes.get("/datasets/{objective}/{dataset_id}", summary="One snapshot's manifest")
    def dataset(objective: str, dataset_id: str, _: Principal = Caller) -> dict[str, Any]:
        return manifest_of(objective, dataset_id)

    @routes.get(
        "/datasets/{objective}/{dataset_id}/files/{split}",
        summary="One of a snapshot's files (train, eval, lineage) as JSON lines",
    )
    def dataset_file(
        objective: str, dataset_id: str, split: str, _: Principal = Caller
    ) -> responses.StreamingResponse:
        manifest = manifest_of(objective, dataset_id)
        return export.file_response(artifacts, manifest, split)

    @routes.post("/datasets/{objective}", status_code=201, summary="Build a snapshot now")
    async def build(objective: str, _: Principal = Caller) -> dict[str, Any]:
        version = flow.objective(objective)
        info = await concurrency.run_in_threadpool(flow.snapshot, version, reason="request")
        return {"created": info.created, **info.manifest}

    return routes
