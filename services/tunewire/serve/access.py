"""Who may call the OpenAI-compatible API, for which models, and how often.

Callers are principals with the ``client`` role (the policy table says which routes need
it); a client may be scoped to some objectives and has a requests-per-minute budget kept as
a token bucket per client (per replica: a cluster of N replicas admits up to N times the
rate, as with vLLM's own API keys). Nobody calls the model unmetered.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import fastapi

from tunewire.core.base import errors
from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization


class Denied(Exception):
    """The request may not go on: ``status`` 401, 403 or 429 (with ``retry_after_s``)."""

    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclasses.dataclass
class _Bucket:
    capacity: float
    per_second: float
    tokens: float
    updated: float


def may_use(principal: Principal, objective: str | None) -> bool:
    """Whether ``principal`` may use a model of ``objective`` (None: the base model)."""
    return objective is None or principal.objectives is None or objective in principal.objectives


class Gatekeeper:
    """Applies the route's policy (in OpenAI's error shape) and each client's rate limit."""

    def __init__(self, authority: authorization.Authority) -> None:
        self._authority = authority
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def authenticate(self, request: fastapi.Request) -> Principal:
        """The caller, if the route's policy admits it; :class:`Denied` (401, 403) otherwise."""
        try:
            return self._authority.check(request)
        except errors.TunewireError as refused:
            raise Denied(refused.status, refused.message) from None

    def admit(self, caller: Principal) -> None:
        """Take one request from the caller's budget; :class:`Denied` (429) when empty."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(caller.name)
            if bucket is None:
                capacity = float(caller.requests_per_minute)
                bucket = _Bucket(capacity, capacity / 60.0, capacity, now)
                self._buckets[caller.name] = bucket
            bucket.tokens = min(
                bucket.capacity, bucket.tokens + (now - bucket.updated) * bucket.per_second
            )
            bucket.updated = now
            if bucket.tokens < 1.0:
                wait = math.ceil((1.0 - bucket.tokens) / bucket.per_second)
                raise Denied(
                    429,
                    f"rate limit of {caller.requests_per_minute} requests per minute reached",
                    retry_after_s=max(1, wait),
                )
            bucket.tokens -= 1.0
