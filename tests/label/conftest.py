"""Fixtures for the label service's tests: an artifact store on the embedded S3 endpoint."""

from __future__ import annotations

import pytest

from tunewire.core import settings, store
from tunewire.stack import embedded


@pytest.fixture
def artifacts(
    stack: embedded.EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> store.ArtifactStore:
    """The stack's bucket over HTTP (moto enforces conditional writes, as S3 does)."""
    for key, value in stack.service_env(0).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return store.ArtifactStore(
        settings.S3Settings(bucket=stack.bucket, endpoint_url=stack.s3_endpoint_url)
    )
