"""The HTTP surface every service shares: probes, metrics and error mapping.

``/healthz`` says the process and its root tasks are alive (no calls out); ``/readyz`` runs
the service's readiness checks (broker, S3, consumer assigned), cached briefly so a busy
prober cannot hammer dependencies; ``/metrics`` is Prometheus' text format. User-facing
errors (:class:`errors.TunewireError`) become JSON 4xx bodies here, once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

import fastapi
import prometheus_client
from fastapi import exception_handlers, responses
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunewire.core.base import errors, settings
from tunewire.core.bus import producing
from tunewire.core.process import guard as guard_

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/vllm"})

REQUESTS = prometheus_client.Histogram(
    "tunewire_http_request_seconds",
    "HTTP request latency by route and status (probes excluded).",
    ["method", "route", "status"],
)

Check = Callable[[], None]
"""A readiness check: returns when ready, raises (any exception) with the reason otherwise."""


_PROBE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="probes")
"""Readiness checks run here, never on the request pool: requests stuck on a slow S3 cannot
starve the probes, and a slow check cannot take a request's thread."""


@dataclasses.dataclass
class Probes:
    """Liveness of root tasks and cached readiness checks."""

    checks: dict[str, Check] = dataclasses.field(default_factory=dict)
    alive: Callable[[], bool] = lambda: True
    cache_seconds: float = 2.0
    _cached: tuple[float, dict[str, str]] | None = dataclasses.field(default=None, init=False)
    _checking: bool = dataclasses.field(default=False, init=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False)

    def readiness(self) -> dict[str, str]:
        """Each check's result ("ok" or the reason), cached for ``cache_seconds``.

        No lock is held while the checks run: while one caller checks (S3 may be slow),
        the others get the last results at once instead of queueing behind it.
        """
        with self._lock:
            now = time.monotonic()
            fresh = self._cached and now - self._cached[0] < self.cache_seconds
            if self._cached and (fresh or self._checking):
                return self._cached[1]
            self._checking = True
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # every check's failure is its result, never raised
                results[name] = str(exc) or type(exc).__name__
        with self._lock:
            self._cached, self._checking = (now, results), False
        return results


def service_probes(
    *,
    artifacts_check: Check,
    kafka: settings.KafkaSettings,
    consumer_check: Check,
    alive: Callable[[], bool],
) -> Probes:
    """The readiness every consuming service has: S3, a broker connection, its consumer."""
    return Probes(
        checks={
            "s3": artifacts_check,
            "kafka": lambda: producing.check_reachable(kafka),
            "consumer": consumer_check,
        },
        alive=alive,
    )


def create_app(
    *,
    title: str,
    probes: Probes,
    routers: Sequence[fastapi.APIRouter],
    guard: guard_.Guard | None = None,
) -> fastapi.FastAPI:
    """A FastAPI app with probes, metrics, error mapping and the service's routers; with a
    ``guard``, tokens and body sizes are checked before any route reads a body."""
    app = fastapi.FastAPI(title=title)

    @app.exception_handler(errors.TunewireError)
    async def _user_error(_: fastapi.Request, exc: errors.TunewireError) -> responses.JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return responses.JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    refuse = guard.refuse if guard is not None else guard_.refusal

    @app.exception_handler(HTTPException)
    async def _no_route(request: fastapi.Request, exc: HTTPException) -> responses.Response:
        """Unknown paths and methods in the service's own error shape, as every error."""
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 405:
            return refuse(request.url.path, errors.MethodNotAllowed(f"{where} is not allowed"))
        if exc.status_code == 404:
            return refuse(request.url.path, errors.NotFound(f"there is no route {where}"))
        return await exception_handlers.http_exception_handler(request, exc)

    if guard is not None:
        app.add_middleware(guard_.Guarded, guard=guard)
    app.add_middleware(_Observed)  # outermost: refusals are counted too

    # The probes are coroutines: they answer on the event loop, off the request pool.
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> responses.JSONResponse:
        alive = probes.alive()
        return responses.JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> responses.JSONResponse:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(_PROBE_POOL, probes.readiness)
        ready = all(v == "ok" for v in results.values())
        return responses.JSONResponse(
            {"ready": ready, "checks": results}, status_code=200 if ready else 503
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> responses.Response:
        return responses.Response(
            prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )

    for router in routers:
        app.include_router(router)
    return app


class _Observed:
    """Request latency by route and status, probes left out.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every response in
    a stream of its own, which costs milliseconds per request on the serving hot path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping a handler is answered 500: count it as one

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, observed)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], name, str(status)).observe(
                time.perf_counter() - started
            )


async def read_body(request: fastapi.Request, *, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
