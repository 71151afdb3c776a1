"""The embedded stack, once per test session, on free ports.

A real Kafka-protocol broker (tansu), a real S3 endpoint over HTTP (moto's server) and the
services as real processes — the same stack ``tunewire up`` starts.
"""

from __future__ import annotations

import collections.abc
from pathlib import Path

import boto3
import httpx
import pytest

from tests.support import stacks
from tunewire.core.base import store
from tunewire.stack import embedded

STACK_FIXTURES = {"stack", "memory_broker"}
"""Fixtures that start the embedded stack or a broker: a test using one is a stack test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a stack fixture ``stack``, so ``make check`` can leave it out.

    Modules that start processes themselves carry ``pytestmark = pytest.mark.stack``.
    """
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> collections.abc.Iterator[embedded.EmbeddedStack]:
    state = tmp_path_factory.mktemp("stack")
    running = embedded.EmbeddedStack(state, api_tokens=[stacks.TOKEN], principals=stacks.PRINCIPALS)
    running.up(stacks.service_specs())
    try:
        yield running
    finally:
        running.down(snapshot=False)


@pytest.fixture(scope="session")
def ingest_url(stack: embedded.EmbeddedStack) -> str:
    return stack.service_urls["ingest"]


@pytest.fixture
def api(ingest_url: str) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the ingest service."""
    with stacks.client_of(ingest_url) as client:
        yield client


@pytest.fixture
def label_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the label service."""
    with stacks.client_of(stack.service_urls["label"]) as client:
        yield client


@pytest.fixture
def train_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the train service."""
    with stacks.client_of(stack.service_urls["train"]) as client:
        yield client


@pytest.fixture
def serve_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated admin client of the serve service."""
    with stacks.client_of(stack.service_urls["serve"]) as client:
        yield client


@pytest.fixture
def evaluate_api(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[httpx.Client]:
    """An authenticated client of the evaluate service."""
    with stacks.client_of(stack.service_urls["evaluate"]) as client:
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


@pytest.fixture
def artifacts(
    stack: embedded.EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> store.ArtifactStore:
    """The stack's bucket over HTTP (moto enforces conditional writes, as S3 does)."""
    return stacks.artifact_store(stack, monkeypatch)


@pytest.fixture
def log_dir(stack: embedded.EmbeddedStack) -> Path:
    return stack.log_dir
