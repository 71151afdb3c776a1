"""Headless Chromium (Debian's ``chromium``) driven by Playwright against the stack's services.

No browser is downloaded: Playwright's own driver launches ``/usr/bin/chromium``, which
``.ci/run`` installs. Each person is a browser context of their own (their own
``sessionStorage``), signed in through the console's form like a person would.
"""

from __future__ import annotations

import collections.abc
import os
import pathlib

import pytest
from playwright import sync_api

from tests.support import adapters, console, stacks
from tunewire import samples
from tunewire.stack import embedded

sync_api.expect.set_options(timeout=console.TIMEOUT_MS)


@pytest.fixture(scope="package")
def browser() -> collections.abc.Iterator[sync_api.Browser]:
    """One browser for the console tests, closed after them: Playwright's sync API keeps an
    event loop running in this thread while it is open, which later tests' asyncio would
    trip over."""
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=console.CHROMIUM, args=console.ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def sign_in(browser: sync_api.Browser) -> collections.abc.Iterator[console.SignIn]:
    """Open a console page in a fresh context and sign in there as the principal ``name``
    (the owner ``local`` unless told), with its token unless ``token`` says otherwise."""
    contexts: list[sync_api.BrowserContext] = []

    def open_as(
        url: str, *, name: str = "local", token: str | None = None, clock: bool = False
    ) -> sync_api.Page:
        if token is None:
            token = stacks.TOKEN if name == "local" else stacks.TOKENS[name]
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(console.TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        if clock:
            page.clock.install()
        page.goto(url)
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


@pytest.fixture(scope="session", autouse=True)
def review_started(stack: embedded.EmbeddedStack) -> str:
    """Start the pipeline of an objective whose candidate will wait for a reviewer; its name.

    It takes the stack ~30 s, so it runs while the annotator tests do. The objective asks
    for ``approval: manual`` and has an untrained champion seeded in the registry; sample
    tickets go in through ingest, the rules label them, label builds a snapshot once there
    are enough examples, train trains on it, and evaluate measures the adapter beside the
    champion and holds it for a person.
    """
    spec = console.objective_spec(approval="manual")
    spec["dataset"] = {"eval_fraction": 0.2, "min_examples": 180, "retrain_every": 10_000}
    name: str = spec["name"]
    events = []
    for event, _ in samples.labelled_tickets(console.TICKETS, seed=901):
        event["id"] = f"{name}-{event['id']}"
        event["type"] = spec["source"]["event_type"]
        events.append(event)
    with (
        stacks.client_of(stack.service_urls["ingest"]) as ingest,
        pytest.MonkeyPatch.context() as patch,
    ):
        registered = ingest.post("/v1/objectives", json=spec)
        assert registered.status_code == 201, registered.text
        artifacts = stacks.artifact_store(stack, patch)
        cache = pathlib.Path(stack.service_env(0)["TUNEWIRE_MODEL_CACHE"])
        uri = adapters.write_adapter(
            artifacts, objective=name, run_id=console.SEEDED, cache_dir=cache, seed=5
        )
        adapters.approve(artifacts, objective=name, run_id=console.SEEDED, adapter_uri=uri)
        sent = ingest.post("/v1/events", json=events)
        assert sent.status_code == 202, sent.text
    return name
