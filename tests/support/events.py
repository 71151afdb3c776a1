"""Sample events for the ingest tests, retyped for one objective."""

from __future__ import annotations

from typing import Any

from tunewire import samples


def events_for(spec: dict[str, Any], count: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """Sample tickets retyped for an objective, with ids unique to it."""
    found = []
    for event in samples.tickets(count, seed=seed):
        event["type"] = spec["source"]["event_type"]
        event["id"] = f"{spec['name']}-{event['id']}"
        found.append(event)
    return found
