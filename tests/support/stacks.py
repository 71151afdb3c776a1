"""The embedded stack as the tests run it: the API token, serve's clients, the five services'
specs, and authenticated clients of its APIs and bucket."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tunewire.core.base import settings, store
from tunewire.stack import embedded, processes

TOKEN = "test-token-" + uuid.uuid4().hex[:8]
CLIENTS = [
    {"name": "app", "token": "app-" + uuid.uuid4().hex[:8]},
    {"name": "slow", "token": "slow-" + uuid.uuid4().hex[:8], "requests_per_minute": 2},
    {"name": "scoped", "token": "scoped-" + uuid.uuid4().hex[:8], "objectives": ["nothing-here"]},
]
"""Applications of the serve service: unlimited, rate-limited, and scoped to one objective."""


def service_specs() -> list[processes.ServiceSpec]:
    """The five services as the test stacks run them: short intervals, the test clients."""
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
                "TUNEWIRE_CLIENTS": json.dumps(CLIENTS),
                "TUNEWIRE_SERVE__MAX_PROMPT_CHARS": "2000",
                "TUNEWIRE_SERVE__MAX_OUTPUT_TOKENS": "32",
            },
        ),
    ]


def client_of(url: str) -> httpx.Client:
    """An authenticated client of a service's API."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


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
