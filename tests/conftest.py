"""The embedded stack, once per test session, on free ports.

A real Kafka-protocol broker (tansu), a real S3 endpoint over HTTP (moto's server) and the
services as real processes — the same stack ``tunewire up`` starts.
"""

from __future__ import annotations

import collections.abc
import json
import uuid
from pathlib import Path

import boto3
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


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> collections.abc.Iterator[embedded.EmbeddedStack]:
    state = tmp_path_factory.mktemp("stack")
    running = embedded.EmbeddedStack(state, api_tokens=[TOKEN])
    running.up(service_specs())
    try:
        yield running
    finally:
        running.down(snapshot=False)


@pytest.fixture(scope="session")
def ingest_url(stack: embedded.EmbeddedStack) -> str:
    return stack.service_urls["ingest"]


def client_of(url: str) -> httpx.Client:
    """An authenticated client of a service's API."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


@pytest.fixture
def api(ingest_url: str) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the ingest service."""
    with client_of(ingest_url) as client:
        yield client


@pytest.fixture
def label_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the label service."""
    with client_of(stack.service_urls["label"]) as client:
        yield client


@pytest.fixture
def train_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the train service."""
    with client_of(stack.service_urls["train"]) as client:
        yield client


@pytest.fixture
def serve_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated admin client of the serve service."""
    with client_of(stack.service_urls["serve"]) as client:
        yield client


@pytest.fixture
def evaluate_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the evaluate service."""
    with client_of(stack.service_urls["evaluate"]) as client:
        yield client


@pytest.fixture(scope="session")
def s3(stack: embedded.EmbeddedStack) -> object:
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


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


@pytest.fixture
def artifacts(
    stack: embedded.EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> store.ArtifactStore:
    """The stack's bucket over HTTP (moto enforces conditional writes, as S3 does)."""
    return artifact_store(stack, monkeypatch)


@pytest.fixture
def log_dir(stack: embedded.EmbeddedStack) -> Path:
    return stack.log_dir
