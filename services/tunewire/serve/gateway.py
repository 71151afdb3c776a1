"""The model API: OpenAI's ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``,
and the task endpoint ``/v1/objectives/{name}/predict`` (:mod:`tasks`).

A request names a model (an objective's alias, a pinned ``objective@run_id`` or the base
model); the gateway checks the caller's token, scope and rate, reads the request once with
:mod:`openai_request` (the prompt and output limits included), routes the name to the
backend's adapter and passes the answer on — streamed as Server-Sent Events when asked.
Every error is an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}`` with
the matching status (401, 403, 404, 400, 422, 429 and 503 with ``Retry-After``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fastapi
import prometheus_client
from fastapi import responses

from tunewire.core.base import errors, metrics
from tunewire.core.base.principals import Principal
from tunewire.core.process import guard, http
from tunewire.serve import (
    access,
    backend,
    config,
    deployments,
    openai_request,
    preparing,
    tasks,
)

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
MAX_BODY_BYTES = 4 * 1024 * 1024
"""The longest request body of the model API."""
ADMIN_PATHS = ("/v1/deployments", "/console")
"""Where serve answers in tunewire's error shape; everywhere else in OpenAI's."""


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
            gatekeeper.authenticate(request)
        except access.Denied as denied:
            return _error(denied.status, denied.message)
        return responses.JSONResponse({"object": "list", "data": deployed.models()})

    async def routed(caller: Principal, model: str, seen: _Seen) -> deployments.Route:
        """The route of ``model``, if ``caller`` may use it."""
        route = await deployed.route(model)
        seen.model = model  # the metric's label only once routed: names are user input
        if not access.may_use(caller, route.objective):
            raise openai_request.RequestError(
                403, f"this token may not use the model `{model}`", param="model"
            )
        return route

    async def answer(endpoint: backend.Endpoint, request: fastapi.Request) -> responses.Response:
        async def work(caller: Principal, seen: _Seen) -> responses.Response:
            body = await _body(request)
            asked = openai_request.parse(endpoint, body, limits=limits)
            route = await routed(caller, asked.model, seen)
            prepared = preparing.prepare(body, asked, route.preparation)
            told = {preparing.HEADER: prepared.header()}
            _relayed(body, asked, limits)
            if asked.stream:
                return await _streamed(server, endpoint, body, route, asked, seen.started, told)
            reply = await server.complete(endpoint, body, target=route.target)
            _count_usage(asked.model, reply.get("usage"))
            return responses.JSONResponse(reply, headers=told)

        return await handled(request, work)

    async def predict(name: str, request: fastapi.Request) -> responses.Response:
        async def work(caller: Principal, seen: _Seen) -> responses.Response:
            body = await _body(request)
            batch, many = tasks.inputs(body)
            model = body.get("model", name)
            if not isinstance(model, str) or model.partition("@")[0] != name:
                raise openai_request.RequestError(
                    422,
                    f"`model` must be {name} or one of its versions ({name}@run_id)",
                    param="model",
                )
            route = await routed(caller, model, seen)
            redacted: collections.Counter[str] = collections.Counter()
            answers = [
                await tasks.answer(server, route, data, limits=limits, redacted=redacted)
                for data in batch
            ]
            done = preparing.Preparation(
                route.prepare, redacted, "added", held_to=tasks.held_to(route.contract)
            )
            head = {"objective": name, "model": route.target, "run_id": route.run_id}
            content = {**head, "predictions": answers} if many else {**head, **answers[0]}
            return responses.JSONResponse(content, headers={preparing.HEADER: done.header()})

        return await handled(request, work)

    async def handled(
        request: fastapi.Request,
        work: Callable[[Principal, _Seen], Awaitable[responses.Response]],
    ) -> responses.Response:
        """Admit the caller, do ``work``, answer every failure in OpenAI's shape, and count
        it all in the metrics."""
        seen = _Seen(started=time.perf_counter())
        status = 200
        try:
            return await work(_admitted(gatekeeper, request), seen)
        except openai_request.RequestError as refused:
            status = refused.status
            return _error(status, refused.message, param=refused.param)
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
            elapsed = time.perf_counter() - seen.started
            metrics.child(LATENCY, seen.model, str(status)).observe(elapsed)

    @routes.post("/chat/completions", summary="OpenAI chat completions (SSE with stream)")
    async def chat(request: fastapi.Request) -> responses.Response:
        return await answer("chat/completions", request)

    @routes.post("/completions", summary="OpenAI completions (SSE with stream)")
    async def completions(request: fastapi.Request) -> responses.Response:
        return await answer("completions", request)

    @routes.post(
        "/objectives/{name}/predict",
        summary="The objective's answer to event data: a label with scores, or text",
    )
    async def objective_predict(name: str, request: fastapi.Request) -> responses.Response:
        return await predict(name, request)

    return routes


@dataclasses.dataclass
class _Seen:
    """What the metrics of one request need to know."""

    started: float
    model: str = "-"


def _admitted(gatekeeper: access.Gatekeeper, request: fastapi.Request) -> Principal:
    caller = gatekeeper.authenticate(request)
    gatekeeper.admit(caller)
    return caller


async def _body(request: fastapi.Request) -> dict[str, Any]:
    try:
        raw = await http.read_body(request, limit=MAX_BODY_BYTES)
    except errors.PayloadTooLarge as exc:
        raise openai_request.RequestError(400, exc.message) from None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise openai_request.RequestError(422, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise openai_request.RequestError(422, "the body must be a JSON object")
    return body


def _relayed(
    body: dict[str, Any], asked: openai_request.OpenAIRequest, limits: config.ServeLimits
) -> None:
    """Make ``body`` what the backend is sent: one ``max_tokens`` (the request's smaller
    cap, or this server's when it asks none), and ``stream_options`` only with ``stream``
    (vLLM refuses them otherwise), always asking for the usage chunk: the token metrics
    count streams too (the chunk reaches the client only if it asked for it)."""
    body.pop("max_completion_tokens", None)
    body["max_tokens"] = asked.max_tokens or limits.max_output_tokens
    if asked.stream:
        body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
    else:
        body.pop("stream_options", None)


async def _streamed(
    server: backend.Backend,
    endpoint: backend.Endpoint,
    body: dict[str, Any],
    route: deployments.Route,
    asked: openai_request.OpenAIRequest,
    started: float,
    headers: dict[str, str],
) -> responses.Response:
    model = asked.model
    events = server.stream(endpoint, body, target=route.target)
    first = await anext(events)  # errors before the first event are answered as errors
    metrics.child(FIRST_TOKEN, model).observe(time.perf_counter() - started)

    async def relay() -> AsyncIterator[bytes]:
        """The backend's events, its usage chunk counted (and kept back unless asked for);
        a failure after the first event ends the stream with an error event and [DONE]."""
        try:
            yield first
            async for event in events:
                usage = _usage_of(event)
                if usage is not None:
                    _count_usage(model, usage)
                    if not asked.include_usage:
                        continue
                yield event
        except Exception as exc:  # the stream must end well-formed whatever went wrong
            status = exc.status if isinstance(exc, backend.UpstreamError) else 503
            log.warning("a stream failed midway", extra={"model": model, "error": repr(exc)})
            metrics.child(ERRORS, _KINDS.get(status, "upstream")).inc()
            yield _error_event(status, f"the answer broke off: {exc}")
            yield _DONE

    return responses.StreamingResponse(
        relay(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )


_DONE = b"data: [DONE]\n\n"


def _usage_of(event: bytes) -> dict[str, Any] | None:
    """The usage of a stream's usage chunk (no choices, a usage); None for any other event.

    Every chunk of a stream that asked for usage says ``"usage": null`` until the last: those
    are told apart without parsing, since this runs for every token streamed."""
    if b'"usage"' not in event or b'"usage": null' in event or b'"usage":null' in event:
        return None
    if not event.startswith(b"data: {"):
        return None
    try:
        chunk = json.loads(event[len(b"data: ") :])
    except ValueError:
        return None
    usage = chunk.get("usage")
    return usage if isinstance(usage, dict) and not chunk.get("choices") else None


def _error_event(status: int, message: str) -> bytes:
    error = {"message": message, "type": _KINDS.get(status, "error"), "param": None, "code": status}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


def _count_usage(model: str, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    for kind in ("prompt", "completion"):
        value = usage.get(f"{kind}_tokens")
        if isinstance(value, int) and value > 0:
            metrics.child(TOKENS, model, kind).inc(value)


def refusal(path: str, error: errors.TunewireError) -> responses.Response:
    """A request refused before any route, or to no route at all: tunewire's shape on the
    admin routes and the console, OpenAI's everywhere else (the model API, unknown paths)."""
    if path.startswith(ADMIN_PATHS):
        return guard.refusal(path, error)
    return _error(error.status, error.message)


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
