"""The console tests' helpers: the browser they drive, the objectives and tickets they send,
and what the review they start is measured against."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from playwright import sync_api

from tests.support.waiting import eventually
from tunewire import samples

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 20_000
"""How long a browser action or expectation waits: the stack shares two cores with it."""

SignIn = Callable[..., sync_api.Page]
"""The ``sign_in`` fixture: ``sign_in(url, name=..., token=..., clock=...)`` gives a page
signed in as ``name`` in a fresh browser context."""

SEEDED = "ft-seeded-champion"
"""The champion a review's candidate is measured against: an untrained, poor adapter."""
TICKETS = 260
"""Sample tickets sent for the review: enough for the rules to label the ~200 examples that
the sample objective's gates need, with conflicts and abstentions left for the queue."""


def shot(page: sync_api.Page, path: pathlib.Path) -> None:
    """A full-page screenshot; a blank or missing file fails the test."""
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"


def objective_spec(**changes: Any) -> dict[str, Any]:
    """The sample objective under a fresh name and event type, with ``changes`` applied."""
    spec = samples.support_intent_spec()
    suffix = uuid.uuid4().hex[:8]
    spec["name"] = f"console-{suffix}"
    spec["source"]["event_type"] = f"ticket.console.{suffix}"
    # Label builds no snapshot of its own: the tests decide when training starts.
    spec["dataset"] = {"eval_fraction": 0.2, "min_examples": 10_000, "retrain_every": 10_000}
    spec.update(changes)
    return spec


def send_tickets(api: httpx.Client, spec: dict[str, Any], tickets: list[tuple[str, str]]) -> None:
    """Send ``(subject, body)`` tickets, in this order, through ingest's HTTP API."""
    events = []
    for number, (subject, body) in enumerate(tickets):
        events.append(
            {
                "specversion": "1.0",
                "id": f"{spec['name']}-{number}",
                "type": spec["source"]["event_type"],
                "source": "helpdesk/console-test",
                "data": {
                    "ticket_id": f"T-{uuid.uuid4().hex[:10]}",
                    "channel": "web",
                    "subject": subject,
                    "body": body,
                },
            }
        )
    response = api.post("/v1/events", json=events)
    assert response.status_code == 202, response.text


def queued(label_api: httpx.Client, objective: str, count: int) -> None:
    """Wait until ``count`` tasks of ``objective`` are open."""

    def open_tasks() -> int:
        status = label_api.get(f"/v1/queue/{objective}")
        if status.status_code != 200:
            return 0
        opened: int = status.json()["counts"].get("open", 0)
        return opened

    eventually(
        open_tasks,
        ready=lambda opened: opened >= count,
        interval_s=0.25,
        what=f"{count} open tasks of {objective}",
    )
