"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

A request names a model (an objective's alias, a pinned ``objective@run_id`` or the base
model); the gateway checks the caller's token, scope and rate, the prompt and output limits,
routes the name to the backend's adapter and passes the answer on — streamed as
Server-Sent Events when asked. Every error is an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` with the matching status (401, 403,
404, 400, 422, 429 and 503 with ``Retry-After``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import fastapi
import prometheus_client
from fastapi import responses

from tunewire.core.base import errors, metrics
from tunewire.core.process import http
from tunewire.serve import access, backend, config, deployments

log = logging.getLogger(__name__)

LATENCY = prometheus_client.Histogram(
    "tunewire_serve_request_seconds",
    "OpenAI API latency by model (alias, pinned version or base) and status.",
    ["model", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FIRST_TOKEN = prometheus_client.Histogram(
    "tunewire_serve_time_to_first_token_seconds",
    "Streaming requests: from arrival to the first event sent.",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TOKENS = prometheus_client.Counter(
    "tunewire_serve_tokens_total",
    "Tokens by model and kind (prompt, completion), as the backend reported them.",
    ["model", "kind"],
)
ERRORS = prometheus_client.Counter(
    "tunewire_serve_errors_total", "Refused or failed requests by kind.", ["kind"]
)

_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
_MAX_BODY = 4 * 1024 * 1024


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, retry: int = 0):
        super().__init__(message)
        self.status, self.message, self.param, self.retry = status, message, param, retry


def router(
    *,
    deployed: deployments.Deployments,
    server: backend.Backend,
    gatekeeper: access.Gatekeeper,
    limits: config.ServeLimits,
) -> fastapi.APIRouter:
    """Routes under ``/v1`` of the OpenAI-compatible API."""
    routes = fastapi.APIRouter(prefix="/v1", tags=["openai"])

    @routes.get("/models", summary="Aliases, pinned versions and the base model")
    async def list_models(request: fastapi.Request) -> responses.JSONResponse:
        try:
            gatekeeper.authenticate(request.headers.get("authorization"))
        except access.Denied as denied:
            return _error(denied.status, denied.message)
        return responses.JSONResponse({"object": "list", "data": deployed.models()})

    async def answer(endpoint: backend.Endpoint, request: fastapi.Request) -> responses.Response:
        started = time.perf_counter()
        label, status = "-", 200  # the model label only once routed: names are user input
        try:
            caller = _admitted(gatekeeper, request)
            body = await _body(request)
            model = _checked(body, endpoint, limits)
            route = await deployed.route(model)
            label = model
            if not caller.may_use(route.objective):
                raise _Refused(403, f"this token may not use the model `{model}`", param="model")
            if body.get("stream"):
                return await _streamed(server, endpoint, body, route, model, started)
            body.pop("stream_options", None)  # only valid with stream: true
            reply = await server.complete(endpoint, body, target=route.target)
            _count_usage(model, reply.get("usage"))
            return responses.JSONResponse(reply)
        except _Refused as refused:
            status = refused.status
            return _error(status, refused.message, param=refused.param, retry=refused.retry)
        except access.Denied as denied:
            status = denied.status
            return _error(status, denied.message, retry=denied.retry_after_s or 0)
        except errors.NotFound as missing:
            status = 404
            return _error(status, str(missing), param="model")
        except backend.UpstreamError as upstream:
            status = upstream.status
            return responses.JSONResponse(upstream.body, status_code=status)
        except errors.Unavailable as down:
            status = 503
            message = f"the model server is unavailable: {down}"
            return _error(status, message, retry=limits.retry_after_s)
        except errors.Misconfigured as wrong:
            status = 500
            log.error("the model server is misconfigured: %s", wrong)
            return _error(status, "the model server is misconfigured; the operators are told")
        finally:
            if status >= 400:
                metrics.child(ERRORS, _KINDS.get(status, "upstream")).inc()
            metrics.child(LATENCY, label, str(status)).observe(time.perf_counter() - started)

    @routes.post("/chat/completions", summary="OpenAI chat completions (SSE with stream)")
    async def chat(request: fastapi.Request) -> responses.Response:
        return await answer("chat/completions", request)

    @routes.post("/completions", summary="OpenAI completions (SSE with stream)")
    async def completions(request: fastapi.Request) -> responses.Response:
        return await answer("completions", request)

    return routes


def _admitted(gatekeeper: access.Gatekeeper, request: fastapi.Request) -> access.Caller:
    caller = gatekeeper.authenticate(request.headers.get("authorization"))
    gatekeeper.admit(caller)
    return caller


async def _body(request: fastapi.Request) -> dict[str, Any]:
    try:
        raw = await http.read_body(request, limit=_MAX_BODY)
    except errors.PayloadTooLarge as exc:
        raise _Refused(400, exc.message) from None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _Refused(422, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Refused(422, "the body must be a JSON object")
    return body


def _checked(body: dict[str, Any], endpoint: backend.Endpoint, limits: config.ServeLimits) -> str:
    """The requested model name, once the body passed the limits (max_tokens filled in)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refused(422, "`model` is required: an objective, objective@run_id or the base")
    if endpoint == "chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Refused(422, "`messages` must be a non-empty list", param="messages")
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise _Refused(422, "each message needs a string `content`", param="messages")
        length = sum(len(m["content"]) for m in messages)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _Refused(422, "`prompt` must be a string", param="prompt")
        length = len(prompt)
    if length > limits.max_prompt_chars:
        raise _Refused(
            400,
            f"the prompt is {length} characters; this server accepts at most "
            f"{limits.max_prompt_chars}",
            param="messages" if endpoint == "chat/completions" else "prompt",
        )
    asked = body.get("max_tokens", body.get("max_completion_tokens"))
    if asked is None:
        body["max_tokens"] = limits.max_output_tokens
    elif not isinstance(asked, int) or asked < 1:
        raise _Refused(422, "`max_tokens` must be a positive integer", param="max_tokens")
    elif asked > limits.max_output_tokens:
        raise _Refused(
            400,
            f"max_tokens {asked} is over this server's limit of {limits.max_output_tokens}",
            param="max_tokens",
        )
    return model


async def _streamed(
    server: backend.Backend,
    endpoint: backend.Endpoint,
    body: dict[str, Any],
    route: deployments.Route,
    model: str,
    started: float,
) -> responses.Response:
    events = server.stream(endpoint, body, target=route.target)
    first = await anext(events)  # errors before the first event are answered as errors
    metrics.child(FIRST_TOKEN, model).observe(time.perf_counter() - started)

    async def relay() -> AsyncIterator[bytes]:
        yield first
        async for event in events:
            yield event

    return responses.StreamingResponse(
        relay(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _count_usage(model: str, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    for kind in ("prompt", "completion"):
        value = usage.get(f"{kind}_tokens")
        if isinstance(value, int) and value > 0:
            metrics.child(TOKENS, model, kind).inc(value)


def _error(
    status: int, message: str, *, param: str | None = None, retry: int = 0
) -> responses.JSONResponse:
    headers = {"Retry-After": str(retry)} if retry else None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    body = {
        "error": {
            "message": message,
            "type": _KINDS.get(status, "error"),
            "param": param,
            "code": status,
        }
    }
    return responses.JSONResponse(body, status_code=status, headers=headers)
