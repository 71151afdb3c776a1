"""Headless Chromium (Debian's ``chromium``) driven by Playwright against the stack's services.

No browser is downloaded: Playwright's own driver launches ``/usr/bin/chromium``, which
``.ci/run`` installs. Each person is a browser context of their own (their own
``sessionStorage``), signed in through the console's form like a person would.
"""

from __future__ import annotations

import collections.abc
import os
import pathlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright import sync_api

from tests.conftest import TOKEN
from tests.support import adapters
from tunewire import samples
from tunewire.core.base import settings, store
from tunewire.stack import embedded

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
sync_api.expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="package")
def browser() -> collections.abc.Iterator[sync_api.Browser]:
    """One browser for the console tests, closed after them: Playwright's sync API keeps an
    event loop running in this thread while it is open, which later tests' asyncio would
    trip over."""
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


SignIn = Callable[..., sync_api.Page]


@pytest.fixture
def sign_in(browser: sync_api.Browser) -> collections.abc.Iterator[SignIn]:
    """Open a console page in a fresh context and sign in there as ``name``."""
    contexts: list[sync_api.BrowserContext] = []

    def open_as(url: str, *, name: str, token: str = TOKEN, clock: bool = False) -> sync_api.Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        if clock:
            page.clock.install()
        page.goto(url)
        page.get_by_label("Your name").fill(name)
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        return page

    yield open_as
    for context in contexts:
        context.close()


@pytest.fixture
def screenshots(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where the views' screenshots go: ``TUNEWIRE_SCREENSHOTS_DIR`` (``docs/img`` when the
    README's pictures are refreshed), else the test's own temporary folder."""
    folder = pathlib.Path(os.environ.get("TUNEWIRE_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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


def wait_for(check: Callable[[], Any], *, timeout_s: float = 60, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.25)


def queued(label_api: httpx.Client, objective: str, count: int) -> None:
    """Wait until ``count`` tasks of ``objective`` are open."""

    def ready() -> dict[str, Any] | None:
        status = label_api.get(f"/v1/queue/{objective}")
        if status.status_code != 200:
            return None
        body: dict[str, Any] = status.json()
        return body if body["counts"].get("open", 0) >= count else None

    wait_for(ready, what=f"{count} open tasks of {objective}")


SEEDED = "ft-seeded-champion"
"""The champion a review's candidate is measured against: an untrained, poor adapter."""
TICKETS = 260
"""Sample tickets sent for the review: enough for the rules to label the ~200 examples that
the sample objective's gates need, with conflicts and abstentions left for the queue."""


def client(url: str) -> httpx.Client:
    """An authenticated client of one of the stack's services."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


@pytest.fixture(scope="session", autouse=True)
def review_started(stack: embedded.EmbeddedStack) -> str:
    """Start the pipeline of an objective whose candidate will wait for a reviewer; its name.

    It takes the stack ~30 s, so it runs while the annotator tests do. The objective asks
    for ``approval: manual`` and has an untrained champion seeded in the registry; sample
    tickets go in through ingest, the rules label them, label builds a snapshot once there
    are enough examples, train trains on it, and evaluate measures the adapter beside the
    champion and holds it for a person.
    """
    spec = objective_spec(approval="manual")
    spec["dataset"] = {"eval_fraction": 0.2, "min_examples": 180, "retrain_every": 10_000}
    name: str = spec["name"]
    events = []
    for event, _ in samples.labelled_tickets(TICKETS, seed=901):
        event["id"] = f"{name}-{event['id']}"
        event["type"] = spec["source"]["event_type"]
        events.append(event)
    with client(stack.service_urls["ingest"]) as ingest, pytest.MonkeyPatch.context() as patch:
        registered = ingest.post("/v1/objectives", json=spec)
        assert registered.status_code == 201, registered.text
        for key, value in stack.service_env(0).items():
            if key.startswith("AWS_"):
                patch.setenv(key, value)
        artifacts = store.ArtifactStore(
            settings.S3Settings(bucket=stack.bucket, endpoint_url=stack.s3_endpoint_url)
        )
        cache = pathlib.Path(stack.service_env(0)["TUNEWIRE_MODEL_CACHE"])
        uri = adapters.write_adapter(
            artifacts, objective=name, run_id=SEEDED, cache_dir=cache, seed=5
        )
        adapters.approve(artifacts, objective=name, run_id=SEEDED, adapter_uri=uri)
        sent = ingest.post("/v1/events", json=events)
        assert sent.status_code == 202, sent.text
    return name
