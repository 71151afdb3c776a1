"""The embedded stack as the tests run it: the owner's token, principals with one role each
(serve's clients among them), the five services' specs, and authenticated clients of its
APIs and bucket."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tunewire.core.base import settings, store
from tunewire.core.base.principals import Principal, Role, token_digest
from tunewire.stack import embedded, processes

TOKEN = "test-owner-" + uuid.uuid4().hex
"""The owner's token: the principal ``local``, with every role."""


def _principal(name: str, *roles: Role, **limits: Any) -> tuple[Principal, str]:
    token = f"{name}-" + uuid.uuid4().hex
    principal = Principal(
        name=name, token_sha256=token_digest(token), roles=frozenset(roles), **limits
    )
    return principal, token


_MADE = [
    *(_principal(f"only-{role}", role) for role in Role),
    *(_principal(name, Role.ANNOTATOR) for name in ("a1", "a2", "a3")),
    _principal("app", Role.CLIENT),
    _principal("slow", Role.CLIENT, requests_per_minute=2),
    _principal("scoped", Role.CLIENT, objectives=frozenset({"nothing-here"})),
]
PRINCIPALS = [principal for principal, _ in _MADE]
"""Beside the owner: ``only-<role>`` for every role, annotators ``a1``-``a3``, and serve's
clients ``app`` (600 a minute), ``slow`` (2 a minute) and ``scoped`` (one objective)."""
TOKENS = {principal.name: token for principal, token in _MADE}
"""Each principal's bearer token, by name."""


def service_specs() -> list[processes.ServiceSpec]:
    """The five services as the test stacks run them: short intervals, small limits."""
    return [
        processes.ServiceSpec(name="ingest", module="tunewire.ingest"),
        processes.ServiceSpec(
            name="label",
            module="tunewire.label",
            env={
                "TUNEWIRE_LABEL__SNAPSHOT_CHECK_S": "1",
                "TUNEWIRE_LABEL__FLUSH_INTERVAL_S": "0.5",
                # Tests count announcements; tests/e2e/test_faults.py tests the repeats.
                "TUNEWIRE_LABEL__REPEAT_ANNOUNCEMENT_EVERY_S": "3600",
            },
        ),
        processes.ServiceSpec(
            name="train",
            module="tunewire.train",
            env={
                "TUNEWIRE_TRAIN__RECONCILE_EVERY_S": "2",
                "TUNEWIRE_TRAIN__REPEAT_SUCCESS_EVERY_S": "3600",
            },
        ),
        processes.ServiceSpec(
            name="evaluate",
            module="tunewire.evaluate",
            env={"TUNEWIRE_EVALUATE__RECONCILE_EVERY_S": "2"},
        ),
        processes.ServiceSpec(
            name="serve",
            module="tunewire.serve",
            env={
                "TUNEWIRE_SERVE__MAX_PROMPT_CHARS": "2000",
                "TUNEWIRE_SERVE__MAX_OUTPUT_TOKENS": "32",
                # The shared stack serves the champions of every test's objective.
                "TUNEWIRE_SERVE__MAX_ADAPTERS": "64",
            },
        ),
    ]


def client_of(url: str, *, token: str = TOKEN) -> httpx.Client:
    """An authenticated client of a service's API (the owner's, unless ``token``)."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def artifact_store(
    stack: embedded.EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> store.ArtifactStore:
    """A stack's bucket over HTTP, with its credentials in our environment."""
    for key, value in stack.service_env(0).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return store.ArtifactStore(
        settings.S3Settings(bucket=stack.bucket, endpoint_url=stack.s3_endpoint_url)
    )
