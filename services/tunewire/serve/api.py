"""The serve service's admin routes: what this replica serves, and rollback.

Rollback moves an objective's champion in the registry to an earlier approved version and
reconciles at once, so the alias answers with it when the call returns; every other replica
hears the deployment event and follows.
"""

from __future__ import annotations

from typing import Any

import fastapi
from fastapi import concurrency
from pydantic import BaseModel, Field

from tunewire.core.base import errors
from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization
from tunewire.core.state import registry
from tunewire.serve import deployments


class RollbackRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)
    to_run_id: str | None = None
    """The approved version to serve; default: the champion before the current one."""


def router(
    *,
    deployed: deployments.Deployments,
    registry_: registry.Registry,
    auth: authorization.Authority,
) -> fastapi.APIRouter:
    """Routes under ``/v1/deployments``."""
    routes = fastapi.APIRouter(prefix="/v1/deployments", tags=["serve"])
    Caller = fastapi.Depends(auth)

    @routes.get("", summary="Aliases, loaded adapters and load failures on this replica")
    def status(_: Principal = Caller) -> dict[str, Any]:
        return deployed.status()

    @routes.post("/{objective}/rollback", summary="Serve an earlier approved version now")
    async def rollback(
        objective: str, body: RollbackRequest, caller: Principal = Caller
    ) -> dict[str, Any]:
        document = await concurrency.run_in_threadpool(registry_.get, objective)
        target = body.to_run_id or previous_champion(document)
        await concurrency.run_in_threadpool(
            lambda: registry_.set_champion(objective, target, actor=caller.name, reason=body.reason)
        )
        await deployed.reconcile()
        name = deployments.served_name(objective, target)
        if deployed.aliases.get(objective) != target:
            why = deployed.failed.get(name, "it did not load")
            raise errors.Conflict(
                f"the registry now names {target}, but this replica cannot serve it: {why}"
            )
        return {"objective": objective, "serving": target, **deployed.status()}

    return routes


def previous_champion(document: registry.RegistryDocument) -> str:
    """The most recent earlier champion that is still approved."""
    approved = {v.run_id for v in document.approved()}
    for event in reversed(document.history):
        if (
            event.action in ("promoted", "champion_set")
            and event.run_id != document.champion
            and event.run_id in approved
        ):
            return event.run_id
    raise errors.Conflict(
        f"objective {document.objective!r} has no earlier approved champion to roll back to"
    )
