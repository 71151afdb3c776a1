"""HTTP routes for objectives: register, list, get, new version, retire.

Every change is stored in S3 first (the source of truth) and then announced on the
objectives topic, so other services learn of it without polling. Bodies are JSON or YAML.
"""

from __future__ import annotations

import json
from typing import Any

import fastapi
import yaml

from tunewire.contracts.v1 import objectives_pb2
from tunewire.core.base import errors
from tunewire.core.base.principals import Principal, Role
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.process import authorization, http
from tunewire.core.state import objectives

MAX_SPEC_BYTES = 256 * 1024


def router(
    *,
    catalog: objectives.ObjectiveCatalog,
    producer: producing.Producer,
    auth: authorization.Authority,
    source: str,
) -> fastapi.APIRouter:
    """Routes under ``/v1/objectives``; the policy table says which roles call each, and a
    change to :data:`ADMIN_FIELDS` needs the admin role as well."""
    routes = fastapi.APIRouter(prefix="/v1/objectives", tags=["objectives"])
    Caller = fastapi.Depends(auth)

    def announce(stored: objectives.ObjectiveVersion) -> dict[str, Any]:
        changed = objectives_pb2.ObjectiveChanged(
            name=stored.name,
            version=stored.version,
            status=(
                objectives_pb2.OBJECTIVE_STATUS_ACTIVE
                if stored.status == "active"
                else objectives_pb2.OBJECTIVE_STATUS_RETIRED
            ),
            spec_json=stored.spec.model_dump_json(),
            changed_by=stored.created_by,
            changed_at=envelope.timestamp(stored.created_at),
        )
        event = envelope.for_payload(
            changed,
            id=envelope.derived_id("objective", stored.name, str(stored.version)),
            source=source,
            subject=stored.name,
        )
        producer.publish(topics.OBJECTIVES, changed, key=stored.name, event=event)
        producer.flush(timeout_s=15)
        return stored.model_dump(mode="json")

    @routes.post("", status_code=201, summary="Register a new objective (version 1)")
    async def register(request: fastapi.Request, caller: Principal = Caller) -> dict[str, Any]:
        spec = objectives.parse_spec(await _document(request))
        return announce(catalog.register(spec, actor=caller.name))

    @routes.get("", summary="The current version of every objective")
    def list_objectives(_: Principal = Caller) -> dict[str, Any]:
        return {"objectives": [o.model_dump(mode="json") for o in catalog.latest_all()]}

    @routes.get("/{name}", summary="One objective (newest version unless ?version=N)")
    def get(name: str, version: int | None = None, _: Principal = Caller) -> dict[str, Any]:
        return catalog.get(name, version).model_dump(mode="json")

    @routes.get("/{name}/versions", summary="Version numbers of one objective")
    def versions(name: str, _: Principal = Caller) -> dict[str, Any]:
        found = catalog.versions(name)
        if not found:
            raise errors.NotFound(f"no objective named {name!r}")
        return {"name": name, "versions": found}

    @routes.put("/{name}", summary="Store a new version of an objective")
    async def update(
        name: str, request: fastapi.Request, caller: Principal = Caller
    ) -> dict[str, Any]:
        spec = objectives.parse_spec(await _document(request))
        if Role.ADMIN not in caller.roles:
            guarded = _guarded_changes(catalog.get(name).spec, spec)
            if guarded:
                raise errors.Forbidden(
                    f"{caller.name} may not change {', '.join(guarded)} of an objective; "
                    "that needs the admin role"
                )
        return announce(catalog.update(name, spec, actor=caller.name))

    @routes.post("/{name}/retire", summary="Retire an objective (a new, retired version)")
    def retire(name: str, caller: Principal = Caller) -> dict[str, Any]:
        return announce(catalog.retire(name, actor=caller.name))

    return routes


ADMIN_FIELDS = ("approval", "gates", "redaction", "base_model", "serving")
"""What decides whether a model is trusted and what it may see: only an admin changes them."""


def _guarded_changes(
    current: objectives.ObjectiveSpec, proposed: objectives.ObjectiveSpec
) -> list[str]:
    return [f for f in ADMIN_FIELDS if getattr(current, f) != getattr(proposed, f)]


async def _document(request: fastapi.Request) -> Any:
    body = await http.read_body(request, limit=MAX_SPEC_BYTES)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.MalformedBody(f"the body is not UTF-8 (byte {exc.start})") from None
    content_type = request.headers.get("content-type", "")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(text)
        return json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "YAML" if "yaml" in content_type else "JSON"
        raise errors.MalformedBody(f"the body is not valid {kind}: {exc}") from None
