"""``GET /metrics/vllm``: vLLM's own metrics, relayed by the serve container beside it.

vLLM listens on the pod's loopback only, because its HTTP API loads and unloads adapters;
binding it wider for Prometheus would open all of it. serve relays only the metrics page on
its own port, which Prometheus already reaches (the chart's ServiceMonitor endpoint with
``serve.vllm.metrics.enabled``). A vLLM that does not answer is a 503, so its scrape target
shows down.
"""

from __future__ import annotations

import fastapi
from fastapi import responses

from tunewire.core.base import errors
from tunewire.serve import vllm_server

PATH = "/metrics/vllm"


def router(server: vllm_server.VllmBackend) -> fastapi.APIRouter:
    """The relay route (public, like ``/metrics``)."""
    routes = fastapi.APIRouter()

    @routes.get(PATH, include_in_schema=False)
    async def vllm_metrics() -> responses.Response:
        try:
            body, content_type = await server.metrics()
        except errors.Unavailable as down:
            return responses.PlainTextResponse(f"{down}\n", status_code=503)
        return responses.Response(body, media_type=content_type)

    return routes
