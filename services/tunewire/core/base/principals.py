"""Who may call tunewire: named principals, each with roles and a hashed bearer token.

Services read principals from ``TUNEWIRE_PRINCIPALS`` (a JSON list, mounted from a Secret)
and never see a token itself: each principal carries the sha256 of its token, so a copy of
the configuration does not let anyone in. Every recorded actor (an approval, an answer in
the queue, a run, a rollback) is the name of the principal whose token made the request;
the names the services record for themselves are reserved.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunewire.core.base import errors

MIN_TOKEN_LENGTH = 24
"""Shorter bearer tokens are refused before any comparison: guessable secrets never work."""

PLACEHOLDER_TOKENS = frozenset({"dev-token", "changeme", "change-me", "secret", "token", ""})
"""Token values that must never protect a production install."""

RESERVED_NAMES = frozenset(
    {"evaluator", "ingest", "label", "train", "serve", "tunewire", "system", "auto", "policy"}
)
"""Actor names the services record for their own decisions; no person may take them."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")


class Role(enum.StrEnum):
    """What a principal may do; a principal may hold several."""

    PRODUCER = "producer"
    """Send business events."""
    ANNOTATOR = "annotator"
    """Claim and answer tasks in the human queue."""
    REVIEWER = "reviewer"
    """Approve or reject candidates held for review."""
    OPERATOR = "operator"
    """Runs, snapshots on request, cancellation, rollback."""
    ADMIN = "admin"
    """Objectives: registration, approval/gates/redaction/base model changes, retirement."""
    VIEWER = "viewer"
    """Read-only lists and the overview."""
    CLIENT = "client"
    """An application of the OpenAI-compatible model API, scoped and rate limited."""


def token_digest(token: str) -> str:
    """The hex sha256 of a bearer token: what a principal's configuration holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


class Principal(BaseModel):
    """A person or a system allowed to call tunewire's APIs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Recorded as the actor of everything the principal does; lower case, unique."""
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """The sha256 (hex) of the principal's bearer token; ``tunewire principal`` makes one."""
    roles: frozenset[Role] = Field(min_length=1)
    """What the principal may do."""
    objectives: frozenset[str] | None = None
    """For a ``client``: the objectives whose models it may use (None: all)."""
    requests_per_minute: int = Field(default=600, ge=1)
    """For a ``client``: its model-API rate limit, a token bucket per serve replica."""

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"principal name {name!r} must be 1-64 characters of a-z, 0-9, '.', '_', "
                "'@' or '-', starting with a letter or digit"
            )
        if name in RESERVED_NAMES:
            raise ValueError(
                f"principal name {name!r} is reserved for the services' own decisions; "
                f"choose another (reserved: {', '.join(sorted(RESERVED_NAMES))})"
            )
        return name

    def may(self, allowed: Iterable[Role]) -> bool:
        """Whether the principal holds any of the ``allowed`` roles."""
        return not self.roles.isdisjoint(allowed)


class Principals:
    """Authenticates bearer tokens against the configured principals, in constant time."""

    def __init__(self, principals: Sequence[Principal]) -> None:
        names = [p.name for p in principals]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"principal names must be unique: {', '.join(twice)}")
        digests = [p.token_sha256 for p in principals]
        if len(set(digests)) != len(digests):
            raise ValueError("two principals share a token; give each its own")
        self._known = [(bytes.fromhex(p.token_sha256), p) for p in principals]

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an ``Authorization: Bearer`` header; 401 otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthorized("send 'Authorization: Bearer <token>' with your API token")
        if len(token) < MIN_TOKEN_LENGTH:
            raise errors.Unauthorized("the bearer token is not valid")
        candidate = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for known, principal in self._known:  # compare with every one: constant time
            if hmac.compare_digest(candidate, known):
                found = principal
        if found is None:
            raise errors.Unauthorized("the bearer token is not valid")
        return found


def placeholder_principals(principals: Iterable[Principal]) -> list[str]:
    """Names of principals whose token is a well-known placeholder."""
    weak = {token_digest(t) for t in PLACEHOLDER_TOKENS}
    return [p.name for p in principals if p.token_sha256 in weak]
