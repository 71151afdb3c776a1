"""What every request meets before any route reads its body: a token, then a size limit.

FastAPI reads a JSON body into memory before it runs a route's dependencies, so checking
the token there would let anyone who reaches the port make a service read (and hold) any
body it sends. This ASGI layer answers first: a request to a path that is not public needs
a valid bearer token (401), and a body may not pass the service's limit (413, when declared
by ``Content-Length``, or as soon as a streamed body passes it). Nothing of a refused body
is kept. Which roles a route needs is still the route's own policy
(:mod:`tunewire.core.process.authorization`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fastapi import responses
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunewire.core.base import errors
from tunewire.core.base.principals import Principals
from tunewire.core.process import authorization

Refusal = Callable[[str, errors.TunewireError], responses.Response]
"""How a service answers a request refused before any route sees it: ``(path, error)``."""


def refusal(_: str, error: errors.TunewireError) -> responses.Response:
    """tunewire's error shape, with a Bearer challenge on 401."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return responses.JSONResponse(error.body(), status_code=error.status, headers=headers)


@dataclasses.dataclass(frozen=True)
class Guard:
    """The checks, and how refusals look."""

    max_body_bytes: int
    """The longest body any route of the service accepts."""
    principals: Principals | None = None
    """When set, a request to a path that is not public needs one of their tokens."""
    refuse: Refusal = refusal


class Guarded:
    """The ASGI middleware applying a :class:`Guard`."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self._app = app
        self._guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        guard, path = self._guard, scope["path"]
        headers = dict(scope["headers"])
        try:
            if guard.principals is not None and not authorization.is_public(path):
                principal = guard.principals.authenticate(_text(headers.get(b"authorization")))
                scope[authorization.AUTHENTICATED] = principal
            declared = _text(headers.get(b"content-length"))
            if declared and declared.isdigit() and int(declared) > guard.max_body_bytes:
                raise _too_large(guard.max_body_bytes)
        except errors.TunewireError as refused:
            await guard.refuse(path, refused)(scope, receive, send)
            return
        await self._app(scope, *self._bounded(scope, receive, send))

    def _bounded(self, scope: Scope, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """``receive`` that stops a streamed body at the limit and answers 413 itself, and
        ``send`` that drops whatever the app answers after that."""
        limit, path = self._guard.max_body_bytes, scope["path"]
        received = 0
        started = refused = False

        async def bounded_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True
                    if not started:
                        await self._guard.refuse(path, _too_large(limit))(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def bounded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        return bounded_receive, bounded_send


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"the body is over this service's limit of {limit} bytes")


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
