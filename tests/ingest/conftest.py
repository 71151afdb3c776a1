"""Fixtures for ingest's integration tests: a fresh objective per test."""

from __future__ import annotations

import collections.abc
import copy
import uuid
from typing import Any

import httpx
import pytest

from tunewire import samples


@pytest.fixture
def objective(api: httpx.Client) -> collections.abc.Iterator[dict[str, Any]]:
    """A registered objective with its own name and event type, so tests never collide."""
    suffix = uuid.uuid4().hex[:8]
    spec = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"support-{suffix}"
    spec["source"]["event_type"] = f"ticket.created.{suffix}"
    response = api.post("/v1/objectives", json=spec)
    assert response.status_code == 201, response.text
    yield spec
