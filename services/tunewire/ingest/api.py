"""``POST /v1/events``: a batch of business events over HTTP.

A batch is all or nothing: every item is validated first and, if any is wrong, the answer
is 422 listing each bad item's index, kind and message, and nothing is accepted. A valid
batch is answered 202 once its records are in Kafka and its archive lines in S3; an outage
that outlasts the wait gives 503 and the client resends (duplicates are recognised).
"""

from __future__ import annotations

from typing import Any

import fastapi

from tunewire.core.base import errors
from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization, http
from tunewire.ingest import config, normalising, pipeline


def router(
    *, flow: pipeline.Pipeline, limits: config.IngestLimits, auth: authorization.Authority
) -> fastapi.APIRouter:
    """Routes under ``/v1/events``."""
    routes = fastapi.APIRouter(prefix="/v1/events", tags=["events"])
    Caller = fastapi.Depends(auth)

    @routes.post("", status_code=202, summary="Send a batch of events (all or nothing)")
    async def post_events(request: fastapi.Request, _: Principal = Caller) -> dict[str, Any]:
        body = await http.read_body(request, limit=limits.max_body_bytes)
        try:
            document = normalising.parse_json_body(body)
        except errors.InvalidEvent as exc:
            flow.reject(via="http", kind=exc.kind)
            raise errors.MalformedBody(exc.message) from None
        items = document.get("events") if isinstance(document, dict) else document
        if not isinstance(items, list) or not items:
            raise errors.InvalidRequest(
                'send a non-empty JSON array of events, or {"events": [...]}'
            )
        if len(items) > limits.max_events_per_request:
            raise errors.PayloadTooLarge(
                f"{len(items)} events in one request; the limit is {limits.max_events_per_request}"
            )
        return await fastapi.concurrency.run_in_threadpool(_accept_batch, flow, limits, items)

    return routes


def _accept_batch(
    flow: pipeline.Pipeline, limits: config.IngestLimits, items: list[Any]
) -> dict[str, Any]:
    prepared = []
    problems = []
    for index, item in enumerate(items):
        try:
            size = len(repr(item))
            if size > limits.max_event_bytes:
                raise errors.InvalidEvent(
                    f"the event is about {size} bytes; the limit is {limits.max_event_bytes}",
                    kind="too_large",
                )
            event = normalising.from_structured(item, default_source="http")
            prepared.append(flow.prepare(event, via="http"))
        except errors.InvalidEvent as exc:
            problems.append({"index": index, "kind": exc.kind, "message": exc.message})
    if problems:
        accepted_count = len(prepared)
        for _ in range(accepted_count):
            flow.reject(via="http", kind="batch_rejected")
        raise errors.InvalidRequest(
            f"{len(problems)} of {len(items)} events are invalid; nothing was accepted",
            details=problems,
        )
    results = [
        {"id": accepted.event_id, "status": flow.commit(accepted, via="http")}
        for accepted in prepared
    ]
    flow.flush_patiently(timeout_s=limits.http_flush_timeout_s)
    return {
        "accepted": sum(r["status"] == "record" for r in results),
        "duplicates": sum(r["status"] == "duplicate" for r in results),
        "results": results,
    }
