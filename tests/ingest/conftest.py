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


def events_for(spec: dict[str, Any], count: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """Sample tickets retyped for an objective, with ids unique to it."""
    found = []
    for event in samples.tickets(count, seed=seed):
        event["type"] = spec["source"]["event_type"]
        event["id"] = f"{spec['name']}-{event['id']}"
        found.append(event)
    return found
