"""An S3 outage of a few seconds delays ingest but loses nothing."""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ingest.test_kafka_events import RAW, binary
from tests.support import kafka_io, metrics, proxy
from tests.support.events import events_for
from tests.support.stacks import TOKEN
from tests.support.waiting import eventually
from tunewire.contracts.v1 import records_pb2
from tunewire.stack import embedded, ports, processes


@pytest.fixture
def ingest_behind_proxy(
    stack: embedded.EmbeddedStack,
) -> Iterator[tuple[str, proxy.CuttableProxy]]:
    """A second ingest replica whose S3 traffic goes through a proxy the test can cut."""
    endpoint = urllib.parse.urlsplit(stack.s3_endpoint_url)
    cut = proxy.CuttableProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
    port = ports.free_port()
    env = {
        **stack.service_env(port),
        "TUNEWIRE_S3__ENDPOINT_URL": f"http://127.0.0.1:{cut.port}",
        "TUNEWIRE_S3__MAX_ATTEMPTS": "2",
        "TUNEWIRE_INGEST__FLUSH_INTERVAL_S": "0.5",
    }
    spec = processes.ServiceSpec(name="ingest-outage", module="tunewire.ingest", port=port, env=env)
    process = processes.start_service(spec, log_dir=stack.log_dir)
    try:
        processes.wait_healthy(spec.url + "/healthz", timeout=60, process=process)
        yield spec.url, cut
    finally:
        process.stop()
        cut.close()


HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def warmed(url: str, event: dict[str, Any]) -> None:
    """Send one event first, so the replica knows the objective before S3 goes away."""
    warm = httpx.post(f"{url}/v1/events", json=[event], headers=HEADERS, timeout=60)
    assert warm.status_code == 202, warm.text


def test_http_waits_out_an_s3_outage(
    ingest_behind_proxy: tuple[str, proxy.CuttableProxy], objective: dict[str, Any], s3: Any
) -> None:
    url, cut = ingest_behind_proxy
    events = events_for(objective, 6, seed=77)
    warmed(url, events[0])
    cut.cut()
    threading.Timer(4.0, cut.restore).start()
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/events", json=events[1:], headers=HEADERS, timeout=60)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 5
    assert time.monotonic() - started >= 3.5, "the answer came before S3 was back"
    archived = _archived_ids(s3, objective["name"])
    assert archived == {e["id"] for e in events}


def test_kafka_events_survive_an_s3_outage(
    ingest_behind_proxy: tuple[str, proxy.CuttableProxy],
    objective: dict[str, Any],
    stack: embedded.EmbeddedStack,
    s3: Any,
) -> None:
    _url, cut = ingest_behind_proxy
    cut.cut()
    events = events_for(objective, 40, seed=78)
    kafka_io.produce(stack.bootstrap_servers, RAW, (binary(e) for e in events))
    time.sleep(5)  # the outage: S3 stays cut while the events arrive
    cut.restore()
    name = objective["name"].encode()
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records")
    try:
        reader.read_until(
            lambda msgs: len({m.value for m in msgs if m.key == name}) >= 40, timeout_s=90
        )
        ids = {
            records_pb2.Record.FromString(m.value).event_id
            for m in reader.messages
            if m.key == name
        }
    finally:
        reader.close()
    assert ids == {e["id"] for e in events}

    def archived() -> None:
        assert _archived_ids(s3, objective["name"]) == ids

    eventually(archived, timeout_s=60, interval_s=0.5)


def test_s3_throttling_is_waited_out_and_dead_letters_nothing(
    ingest_behind_proxy: tuple[str, proxy.CuttableProxy],
    objective: dict[str, Any],
    stack: embedded.EmbeddedStack,
    s3: Any,
) -> None:
    """S3 answering 503 SlowDown for 10 s is an outage like any other, not a bad event."""
    url, throttled = ingest_behind_proxy
    events = events_for(objective, 30, seed=79)
    warmed(url, events[0])
    throttled.throttle()
    threading.Timer(10.0, throttled.restore).start()
    listing = httpx.get(f"{url}/v1/objectives/{objective['name']}/versions", headers=HEADERS)
    assert listing.status_code == 503, listing.text  # "not now", not a server error
    assert listing.headers["Retry-After"]
    kafka_io.produce(stack.bootstrap_servers, RAW, (binary(e) for e in events[1:20]))
    response = httpx.post(f"{url}/v1/events", json=events[20:], headers=HEADERS, timeout=90)
    assert response.status_code in (202, 503), response.text
    if response.status_code == 503:  # the client resends, as a 503 asks it to
        eventually(
            lambda: httpx.post(f"{url}/v1/events", json=events[20:], headers=HEADERS),
            ready=lambda answer: answer.status_code == 202,
            timeout_s=60,
            what="the resent batch accepted once S3 is back",
        )

    def archived() -> None:
        assert _archived_ids(s3, objective["name"]) == {e["id"] for e in events}

    eventually(archived, timeout_s=90, interval_s=0.5)
    dead = metrics.counter(url, 'tunewire_dlq_messages_total{topic="tunewire.events.raw"')
    assert dead == 0, "a throttled S3 sent events to the DLQ"


def _archived_ids(s3: Any, objective: str) -> set[str]:
    found: set[str] = set()
    listing = s3.list_objects_v2(Bucket="tunewire", Prefix=f"raw/{objective}/")
    for item in listing.get("Contents", []):
        body = s3.get_object(Bucket="tunewire", Key=item["Key"])["Body"].read()
        for line in gzip.decompress(body).splitlines():
            found.add(json.loads(line)["id"])
    return found
