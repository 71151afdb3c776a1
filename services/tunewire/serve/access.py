"""Who may call the OpenAI-compatible API, for which models, and how often.

Clients present a bearer token; a client may be scoped to some objectives and has a
requests-per-minute budget kept as a token bucket per client (per replica: a cluster of N
replicas admits up to N times the rate, as with vLLM's own API keys).
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import threading
import time
from collections.abc import Sequence

from pydantic import SecretStr

from tunewire.serve import config


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


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated caller."""

    name: str
    objectives: frozenset[str] | None
    """None: every objective."""

    def may_use(self, objective: str | None) -> bool:
        """Whether the caller may use a model of ``objective`` (None: the base model)."""
        return objective is None or self.objectives is None or objective in self.objectives


class Gatekeeper:
    """Authenticates bearer tokens and applies each client's rate limit."""

    def __init__(self, clients: Sequence[config.Client], admin_tokens: Sequence[SecretStr]):
        self._clients = [(c.token.get_secret_value().encode(), c) for c in clients]
        self._admins = [t.get_secret_value().encode() for t in admin_tokens]
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization`` header; :class:`Denied` (401) otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Denied(401, "send 'Authorization: Bearer <token>'")
        candidate = token.strip().encode()
        found: config.Client | None = None
        admin = False
        for known, client in self._clients:  # compare with every token: constant time
            if hmac.compare_digest(candidate, known):
                found = client
        for known in self._admins:
            admin |= hmac.compare_digest(candidate, known)
        if found is not None:
            scope = frozenset(found.objectives) if found.objectives is not None else None
            return Caller(name=found.name, objectives=scope)
        if admin:
            return Caller(name="admin", objectives=None)
        raise Denied(401, "the bearer token is not valid")

    def admit(self, caller: Caller) -> None:
        """Take one request from the caller's budget; :class:`Denied` (429) when empty."""
        client = next((c for _, c in self._clients if c.name == caller.name), None)
        if client is None:
            return  # admin tokens are not rate limited
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(caller.name)
            if bucket is None:
                capacity = float(client.requests_per_minute)
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
                    f"rate limit of {client.requests_per_minute} requests per minute reached",
                    retry_after_s=max(1, wait),
                )
            bucket.tokens -= 1.0
