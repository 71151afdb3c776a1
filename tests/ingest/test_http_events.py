"""``POST /v1/events`` against the running ingest service."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from tests.support import kafka_io
from tests.support.events import events_for
from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.stack import embedded


def _records_for(stack: embedded.EmbeddedStack, name: str, count: int) -> list[records_pb2.Record]:
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records")
    try:
        mine = lambda msgs: [m for m in msgs if m.key == name.encode()]  # noqa: E731
        reader.read_until(lambda msgs: len(mine(msgs)) >= count)
        reader.drain(quiet_s=1.0)
        return [records_pb2.Record.FromString(m.value) for m in mine(reader.messages)]
    finally:
        reader.close()


def test_a_batch_becomes_redacted_records_once(
    api: httpx.Client, objective: dict[str, Any], stack: embedded.EmbeddedStack
) -> None:
    events = events_for(objective, 20)
    first = api.post("/v1/events", json={"events": events})
    assert first.status_code == 202, first.text
    assert first.json()["accepted"] == 20
    again = api.post("/v1/events", json=events[:5])
    assert again.status_code == 202
    assert again.json() == {
        "accepted": 0,
        "duplicates": 5,
        "results": [{"id": e["id"], "status": "duplicate"} for e in events[:5]],
    }

    records = _records_for(stack, objective["name"], 20)
    assert sorted(r.event_id for r in records) == sorted(e["id"] for e in events)
    for record in records:
        assert record.objective_version == 1
        assert record.source_id.startswith("T-")
        assert "\n" in record.text
        for planted in samples.PLANTED_PII:
            assert planted not in record.text
            assert planted not in record.fields_json
    assert sum(sum(r.redactions.values()) for r in records) >= 20
    assert any("<EMAIL>" in r.text or "<PHONE>" in r.text for r in records)


def test_accepted_events_are_archived_redacted_and_partitioned(
    api: httpx.Client, objective: dict[str, Any], s3: Any
) -> None:
    events = events_for(objective, 12, seed=3)
    assert api.post("/v1/events", json=events).status_code == 202
    prefix = f"raw/{objective['name']}/dt="
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket="tunewire", Prefix=prefix).get("Contents", [])
    ]
    assert keys, "no archive part was written before the 202"
    lines = []
    for key in keys:
        assert key.endswith(".jsonl.gz")
        body = s3.get_object(Bucket="tunewire", Key=key)["Body"].read()
        lines += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(e["id"] for e in events)
    text = json.dumps(lines)
    for planted in samples.PLANTED_PII:
        assert planted not in text


@pytest.mark.parametrize(
    ("body", "content", "status", "code"),
    [
        (None, b"{not json", 400, "malformed_body"),
        (None, b'[{"type": "x", "data": {}}]\xff\xfe', 400, "malformed_body"),
        (None, b"[" * 100_000 + b"]" * 100_000, 400, "malformed_body"),
        ([], None, 422, "invalid_request"),
        ({"events": "no"}, None, 422, "invalid_request"),
        (None, b"x" * (5 * 1024 * 1024), 413, "payload_too_large"),
    ],
    ids=["malformed-json", "invalid-utf8", "absurd-nesting", "empty", "not-a-list", "5-MiB"],
)
def test_unreadable_bodies_get_a_clear_4xx(
    api: httpx.Client, body: Any, content: bytes | None, status: int, code: str
) -> None:
    if content is None:
        response = api.post("/v1/events", json=body)
    else:
        response = api.post(
            "/v1/events", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["message"]


def _one_bad(objective: dict[str, Any], change: Any) -> list[dict[str, Any]]:
    events = events_for(objective, 3, seed=11)
    change(events[1])
    return events


@pytest.mark.parametrize(
    ("change", "kind", "words"),
    [
        (lambda e: e["data"].pop("subject"), "missing_field", "subject"),
        (lambda e: e["data"].update(channel=7), "wrong_type", "channel"),
        (lambda e: e.update(type="invoice.paid"), "unknown_event_type", "invoice.paid"),
        (lambda e: e.update(objective="no-such-objective"), "unknown_objective", "no-such"),
        (lambda e: e["data"].update(body="a\x00b"), "nul_bytes", "NUL"),
        (lambda e: e.update(data=[1, 2]), "invalid_data", "object"),
        (lambda e: e["data"].update(deep=json.loads("[" * 60 + "]" * 60)), "too_deep", "nested"),
        (lambda e: e.pop("type"), "missing_attribute", "type"),
    ],
    ids=[
        "missing",
        "wrong-type",
        "unknown-type",
        "unknown-objective",
        "nul",
        "not-object",
        "too-deep",
        "no-type",
    ],
)
def test_a_bad_event_rejects_the_batch_and_names_the_problem(
    api: httpx.Client, objective: dict[str, Any], change: Any, kind: str, words: str
) -> None:
    events = _one_bad(objective, change)
    response = api.post("/v1/events", json=events)
    assert response.status_code == 422, response.text
    problems = response.json()["details"]
    assert [p["index"] for p in problems] == [1]
    assert problems[0]["kind"] == kind
    assert words in problems[0]["message"]
    good = [events[0], events[2]]
    assert api.post("/v1/events", json=good).json()["accepted"] == 2, "nothing was accepted before"


def test_events_need_a_valid_token(ingest_url: str, objective: dict[str, Any]) -> None:
    events = events_for(objective, 1)
    missing = httpx.post(f"{ingest_url}/v1/events", json=events)
    wrong = httpx.post(
        f"{ingest_url}/v1/events", json=events, headers={"Authorization": "Bearer nope"}
    )
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"


def test_a_lone_surrogate_is_a_400_not_a_500(api: httpx.Client, objective: dict[str, Any]) -> None:
    events = events_for(objective, 1, seed=13)
    body = json.dumps(events).replace(events[0]["data"]["subject"], "x\\ud800y", 1)
    response = api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["message"]
