"""The guard in front of every route: a token before any body is read, and a body limit.

A real service refusing a streamed gigabyte is in tests/e2e/test_bounded_inputs.py.
"""

from __future__ import annotations

import collections.abc
import warnings

import fastapi
import pytest
from pydantic import BaseModel
from starlette.exceptions import StarletteDeprecationWarning

from tunewire.core.base import errors, principals
from tunewire.core.base.principals import Principal, Principals, Role
from tunewire.core.process import guard, http

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from fastapi.testclient import TestClient

TOKEN = "a-token-for-the-guard-tests-0123456789"
LIMIT = 2048
KNOWN = Principals(
    [
        Principal(
            name="gus",
            token_sha256=principals.token_digest(TOKEN),
            roles=frozenset({Role.OPERATOR}),
        )
    ]
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Note(BaseModel):
    text: str


def shaped(path: str, error: errors.TunewireError) -> fastapi.Response:
    """A service's own refusal shape, as serve's model API has one."""
    return fastapi.responses.JSONResponse(
        {"shape": "own", "path": path, "message": error.message}, status_code=error.status
    )


@pytest.fixture
def reached() -> list[int]:
    """The sizes of the bodies the route got: a refused request must add none."""
    return []


@pytest.fixture
def client(reached: list[int]) -> collections.abc.Iterator[TestClient]:
    router = fastapi.APIRouter()

    @router.post("/v1/notes")
    def note(body: Note) -> dict[str, int]:
        reached.append(len(body.text))
        return {"size": len(body.text)}

    @router.post("/v1/shaped")
    def shaped_route(body: Note) -> dict[str, int]:
        reached.append(len(body.text))
        return {"size": len(body.text)}

    app = http.create_app(
        title="test",
        probes=http.Probes(),
        routers=[router],
        guard=guard.Guard(
            max_body_bytes=LIMIT,
            principals=KNOWN,
            refuse=lambda path, error: (
                shaped(path, error) if path == "/v1/shaped" else guard.refusal(path, error)
            ),
        ),
    )
    with TestClient(app) as test_client:
        yield test_client


def chunks(total: int, size: int = 512) -> collections.abc.Iterator[bytes]:
    """A JSON body of about ``total`` bytes, streamed without a Content-Length."""
    yield b'{"text": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


def test_a_body_within_the_limit_reaches_the_route(client: TestClient, reached: list[int]) -> None:
    answer = client.post("/v1/notes", json={"text": "x" * 1000}, headers=AUTH)
    assert answer.json() == {"size": 1000}
    assert reached == [1000]


@pytest.mark.parametrize("header", [None, "Bearer not-a-known-token-of-anyone-at-all"])
def test_no_valid_token_is_401_before_the_body_is_read(
    client: TestClient, reached: list[int], header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    for body in ({"content": b'{"text": "hi"}'}, {"content": chunks(100_000)}):
        refused = client.post("/v1/notes", headers=headers, **body)  # type: ignore[arg-type]
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"] == "unauthorized"
    assert reached == []


def test_a_declared_body_over_the_limit_is_413_without_reading_it(
    client: TestClient, reached: list[int]
) -> None:
    refused = client.post("/v1/notes", json={"text": "x" * (LIMIT + 1)}, headers=AUTH)
    assert refused.status_code == 413
    assert refused.json() == {
        "error": "payload_too_large",
        "message": f"the body is over this service's limit of {LIMIT} bytes",
    }
    assert reached == []


def test_a_streamed_body_is_cut_at_the_limit(client: TestClient, reached: list[int]) -> None:
    refused = client.post("/v1/notes", content=chunks(1_000_000), headers=AUTH)
    assert refused.status_code == 413
    assert refused.json()["error"] == "payload_too_large"
    assert reached == []
    as_json = {**AUTH, "Content-Type": "application/json"}
    fits = client.post("/v1/notes", content=chunks(LIMIT // 2), headers=as_json)
    assert fits.status_code == 200, fits.text


def test_a_refusal_takes_the_services_own_shape(client: TestClient) -> None:
    anonymous = client.post("/v1/shaped", json={"text": "hi"})
    assert anonymous.json() == {
        "shape": "own",
        "path": "/v1/shaped",
        "message": "send 'Authorization: Bearer <token>' with your API token",
    }
    too_large = client.post("/v1/shaped", content=chunks(100_000), headers=AUTH)
    assert too_large.status_code == 413 and too_large.json()["shape"] == "own"


def test_probes_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
