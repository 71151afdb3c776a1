"""The authorization matrix: every route of every running service, called with no token, a
wrong token and a token of each role, answers as the policy table says.

Path parameters name things that do not exist and bodies are empty, so an admitted call is
refused by the route itself (404, 422) and changes nothing; what is checked is that the
policy decided first: 401 without a valid token, 403 for a role the route does not name,
and neither for a role it does. A service also refuses to start with a route outside its
table (tests/core/test_authorization.py), and what each service publishes in its OpenAPI
description is checked against the table here, so a new route cannot ship open.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support.stacks import TOKENS
from tunewire.core.base.principals import Role
from tunewire.core.process import authorization
from tunewire.stack import embedded

CALLERS = {
    "none": None,
    "wrong": "a-wrong-token-that-is-long-enough-1234",
    **{f"only-{role}": TOKENS[f"only-{role}"] for role in Role},
}
_PARAMETER = re.compile(r"\{[a-z_]+\}")


def _call(url: str, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] | None = {} if method in ("POST", "PUT") else None
    concrete = _PARAMETER.sub("matrix-nothing", path)
    return httpx.request(method, url + concrete, json=body, headers=headers, timeout=60)


def _message(service: str, path: str, response: httpx.Response) -> str:
    """The refusal's message, in the service's own error shape (OpenAI's on the model API)."""
    body = response.json()
    if service == "serve" and path.startswith(
        ("/v1/models", "/v1/chat", "/v1/completions", "/v1/objectives")
    ):
        assert body["error"]["code"] == response.status_code, body
        return str(body["error"]["message"])
    assert body["error"] in ("unauthorized", "forbidden"), body
    return str(body["message"])


@pytest.mark.parametrize("service", sorted(authorization.POLICY))
def test_every_route_answers_every_caller_as_the_policy_says(
    stack: embedded.EmbeddedStack, service: str
) -> None:
    url = stack.service_urls[service]
    wrong: list[str] = []
    for (method, path), allowed in sorted(authorization.POLICY[service].items()):
        for caller, token in CALLERS.items():
            response = _call(url, method, path, token)
            where = f"{caller} {method} {path}: {response.status_code} {response.text[:200]}"
            if token is None or caller == "wrong":
                expected_ok = response.status_code == 401
                if expected_ok:
                    assert response.headers["www-authenticate"] == "Bearer"
                    assert _message(service, path, response)
            elif Role(caller.removeprefix("only-")) in allowed:
                expected_ok = response.status_code not in (401, 403)
            else:
                expected_ok = response.status_code == 403
                if expected_ok:
                    assert caller in _message(service, path, response), where
            if not expected_ok:
                wrong.append(where)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("service", sorted(authorization.POLICY))
def test_every_route_a_service_describes_has_a_policy(
    stack: embedded.EmbeddedStack, service: str
) -> None:
    described = httpx.get(stack.service_urls[service] + "/openapi.json", timeout=30).json()
    routes = {
        (method.upper(), path)
        for path, operations in described["paths"].items()
        for method in operations
    }
    assert routes, f"{service} describes no routes"
    assert routes <= set(authorization.POLICY[service]), routes - set(authorization.POLICY[service])
