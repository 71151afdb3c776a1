"""The HTTP surface every service shares: probes, metrics and error bodies (authorization
has tests of its own)."""

from __future__ import annotations

import collections.abc
import threading
import warnings

import fastapi
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from tunewire.core.base import errors
from tunewire.core.process import http

with warnings.catch_warnings():
    # Starlette 1.10 asks for the httpx2 fork; the project depends on httpx, which still works.
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from fastapi.testclient import TestClient

BODY_LIMIT = 16

router = fastapi.APIRouter()


class Teapot(errors.TunewireError):
    status = 418
    code = "teapot"


@router.get("/v1/things/{thing_id}")
def get_thing(thing_id: str) -> dict[str, str]:
    return {"id": thing_id}


@router.get("/v1/fail/{which}")
def fail(which: str) -> None:
    if which == "teapot":
        raise Teapot("short and stout", details={"spout": "blocked"})
    if which == "missing":
        raise errors.NotFound("no thing named 'x'")
    if which == "down":
        raise errors.Unavailable("S3 is down; retry later")
    raise errors.InvalidRequest("bad request", details=[{"field": "name", "message": "empty"}])


@router.post("/v1/upload")
async def upload(request: fastapi.Request) -> dict[str, int]:
    body = await http.read_body(request, limit=BODY_LIMIT)
    return {"size": len(body)}


def client_for(probes: http.Probes) -> TestClient:
    return TestClient(http.create_app(title="test", probes=probes, routers=[router]))


@pytest.fixture
def client() -> collections.abc.Iterator[TestClient]:
    with client_for(http.Probes()) as test_client:
        yield test_client


# -- probes -----------------------------------------------------------------------------


def test_healthz_is_200_while_alive(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"alive": True}


def test_healthz_is_503_when_a_root_task_died() -> None:
    with client_for(http.Probes(alive=lambda: False)) as test_client:
        response = test_client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"alive": False}


def test_healthz_runs_no_readiness_check() -> None:
    def broken() -> None:
        raise AssertionError("liveness must not call dependencies")

    with client_for(http.Probes(checks={"broker": broken})) as test_client:
        assert test_client.get("/healthz").status_code == 200


def test_readyz_is_200_when_every_check_passes() -> None:
    probes = http.Probes(checks={"broker": lambda: None, "s3": lambda: None})
    with client_for(probes) as test_client:
        response = test_client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"broker": "ok", "s3": "ok"}}


def test_readyz_is_503_with_the_failing_checks_reason() -> None:
    def broker() -> None:
        raise errors.Unavailable("no Kafka broker is reachable: 127.0.0.1:9092: refused")

    def consumer() -> None:
        raise LookupError

    probes = http.Probes(checks={"broker": broker, "s3": lambda: None, "consumer": consumer})
    with client_for(probes) as test_client:
        response = test_client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {
            "broker": "no Kafka broker is reachable: 127.0.0.1:9092: refused",
            "s3": "ok",
            "consumer": "LookupError",
        },
    }


def test_readiness_is_cached_so_probes_cannot_hammer_dependencies() -> None:
    calls: list[None] = []
    probes = http.Probes(checks={"s3": lambda: calls.append(None)}, cache_seconds=60)
    with client_for(probes) as test_client:
        statuses = [test_client.get("/readyz").status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert len(calls) == 1


def test_readiness_is_checked_again_after_the_cache_period() -> None:
    calls: list[None] = []
    probes = http.Probes(checks={"s3": lambda: calls.append(None)}, cache_seconds=0)
    with client_for(probes) as test_client:
        for _ in range(3):
            test_client.get("/readyz")

    assert len(calls) == 3


def test_metrics_are_prometheus_text_by_route_template(client: TestClient) -> None:
    assert client.get("/v1/things/42").status_code == 200
    assert client.get("/v1/things/43").status_code == 200
    client.get("/healthz")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE tunewire_http_request_seconds histogram" in text
    assert (
        'tunewire_http_request_seconds_count{method="GET",route="/v1/things/{thing_id}",'
        'status="200"}' in text
    )
    assert "/v1/things/42" not in text
    assert 'route="/healthz"' not in text


# -- error mapping ----------------------------------------------------------------------


def test_a_tunewire_error_becomes_its_status_and_json_body(client: TestClient) -> None:
    response = client.get("/v1/fail/teapot")

    assert response.status_code == 418
    assert response.json() == {
        "error": "teapot",
        "message": "short and stout",
        "details": {"spout": "blocked"},
    }


@pytest.mark.parametrize(
    ("which", "status", "code"),
    [
        ("missing", 404, "not_found"),
        ("invalid", 422, "invalid_request"),
        ("down", 503, "unavailable"),
    ],
)
def test_built_in_errors_map_to_their_status(
    client: TestClient, which: str, status: int, code: str
) -> None:
    response = client.get(f"/v1/fail/{which}")

    assert response.status_code == status
    assert response.json()["error"] == code


def test_an_error_without_details_has_no_details_key(client: TestClient) -> None:
    assert client.get("/v1/fail/missing").json() == {
        "error": "not_found",
        "message": "no thing named 'x'",
    }


def test_unavailable_tells_the_client_when_to_retry(client: TestClient) -> None:
    response = client.get("/v1/fail/down")

    assert response.headers["retry-after"] == "5"


# -- body limit -------------------------------------------------------------------------


def test_a_body_within_the_limit_is_read_whole(client: TestClient) -> None:
    assert client.post("/v1/upload", content=b"x" * BODY_LIMIT).json() == {"size": BODY_LIMIT}
    assert client.post("/v1/upload", content=b"").json() == {"size": 0}


def test_a_body_over_the_declared_limit_is_413(client: TestClient) -> None:
    response = client.post("/v1/upload", content=b"x" * (BODY_LIMIT + 1))

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert f"the limit is {BODY_LIMIT}" in response.json()["message"]


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> collections.abc.Iterator[bytes]:
        for _ in range(4):
            yield b"y" * 10

    response = client.post("/v1/upload", content=chunks())

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert f"over the limit of {BODY_LIMIT} bytes" in response.json()["message"]


def test_a_slow_check_holds_up_no_other_probe() -> None:
    """While one probe waits on a slow dependency, the others get the last results at once
    (a lock held through the checks would queue every probe behind S3's timeout)."""
    slow, entered = threading.Event(), threading.Event()
    slow.set()

    def s3() -> None:
        entered.set()
        slow.wait()

    probes = http.Probes(checks={"s3": s3}, cache_seconds=0)
    assert probes.readiness() == {"s3": "ok"}
    slow.clear()
    entered.clear()
    waiting = threading.Thread(target=probes.readiness)
    waiting.start()
    try:
        assert entered.wait(timeout=10), "the first probe never reached S3"
        answered: list[dict[str, str]] = []
        other = threading.Thread(target=lambda: answered.append(probes.readiness()))
        other.start()
        other.join(timeout=5)
        assert answered == [{"s3": "ok"}], "the second probe waited for the first"
    finally:
        slow.set()
        waiting.join(timeout=10)
