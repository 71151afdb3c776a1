"""The console's pages and static files over HTTP, on the stack's label and evaluate services."""

from __future__ import annotations

import re

import httpx

from tests.support import console
from tests.support.stacks import TOKEN
from tests.support.waiting import eventually
from tunewire.stack import embedded


def test_pages_are_shells_with_a_strict_content_security_policy(
    stack: embedded.EmbeddedStack,
) -> None:
    pages = {
        "label": ["annotate"],
        "evaluate": ["review", "history", "overview"],
    }
    for service, views in pages.items():
        url = stack.service_urls[service]
        home = httpx.get(f"{url}/console")
        assert home.status_code == 307
        assert home.headers["location"] == f"/console/{views[0]}"
        for view in views:
            page = httpx.get(f"{url}/console/{view}")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            policy = page.headers["content-security-policy"]
            assert "script-src 'self';" in policy and "unsafe-inline" not in policy
            assert "form-action 'none'" in policy and "frame-ancestors 'none'" in policy
            assert page.headers["x-content-type-options"] == "nosniff"
            assert "set-cookie" not in page.headers
            scripts = re.findall(r"<script[^>]*>", page.text)
            assert scripts == [
                '<script src="/console/static/console.js" defer>',
                f'<script src="/console/static/{view}.js" defer>',
            ]
            assert httpx.get(f"{url}/console/static/{view}.js").status_code == 200


def test_static_files_are_only_the_consoles_own(stack: embedded.EmbeddedStack) -> None:
    # The shell's script and stylesheet come with every service; a page's script only with
    # the service that owns the page.
    scripts = {"label": ("annotate",), "evaluate": ("review", "history", "overview")}
    for service, own in scripts.items():
        url = stack.service_urls[service]
        for name in ("console", *own):
            script = httpx.get(f"{url}/console/static/{name}.js")
            assert script.status_code == 200, (service, name)
            assert script.headers["content-type"].startswith("text/javascript")
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
                assert sink not in script.text, f"{name}.js uses {sink}"
        style = httpx.get(f"{url}/console/static/console.css")
        assert style.headers["content-type"].startswith("text/css")
        others = [name for other, names in scripts.items() if other != service for name in names]
        refused = ["nope.js", "..%2Fpages.py", "%2E%2E%2Fconfig.py", "annotate.html"]
        for name in [*refused, "console.JS", *(f"{other}.js" for other in others)]:
            assert httpx.get(f"{url}/console/static/{name}").status_code == 404, (service, name)


def test_console_data_needs_a_token(stack: embedded.EmbeddedStack) -> None:
    routes = {
        "label": ["/console/api/session", "/console/api/objectives"],
        "evaluate": [
            "/console/api/session",
            "/console/api/reviews",
            "/console/api/history",
            "/console/api/overview",
        ],
    }
    for service, paths in routes.items():
        url = stack.service_urls[service]
        for path in paths:
            refused = httpx.get(url + path, headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
        session = httpx.get(
            url + "/console/api/session", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert session.json()["service"] == service


def test_annotators_are_offered_the_objectives_with_a_human_queue(
    api: httpx.Client, label_api: httpx.Client
) -> None:
    queued = console.objective_spec()
    queued["labels"] = ["warranty", "refund", "shipping", "account"]
    unqueued = console.objective_spec()
    unqueued["labelling"]["human_queue"] = False
    for spec in (queued, unqueued):
        assert api.post("/v1/objectives", json=spec).status_code == 201

    def listed() -> dict[str, dict[str, object]]:
        found = label_api.get("/console/api/objectives").json()["objectives"]
        by_name = {o["name"]: o for o in found}
        return by_name if queued["name"] in by_name else {}

    offered = eventually(
        listed, ready=bool, timeout_s=20, interval_s=0.25, what="the new objective in the console"
    )
    assert offered[queued["name"]]["labels"] == queued["labels"], "key 1 is the first label"
    assert unqueued["name"] not in offered
