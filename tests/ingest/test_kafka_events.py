"""The raw topic: every shape of event in, records out, bad ones to the DLQ."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest

from tests.support import kafka_io
from tests.support.events import events_for
from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.ingest import dead_letters
from tunewire.stack import embedded

RAW = "tunewire.events.raw"


def binary(event: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    message = samples.as_kafka_message(event)
    return b"k", message.value, message.headers


def structured(event: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return b"k", json.dumps(event).encode(), [("content-type", b"application/cloudevents+json")]


def plain(event: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return b"k", json.dumps(event["data"]).encode(), [("ce_type", event["type"].encode())]


def assert_kept_of(value: bytes, kept: bytes) -> None:
    """The DLQ holds a small JSON event as it parsed (these carry no personal data), and
    anything else as an excerpt with the original's size and digest."""
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        parsed = None
    if parsed is not None and len(value) <= dead_letters.WHOLE_UP_TO_BYTES:
        assert json.loads(kept) == parsed
        return
    summary = json.loads(kept)
    assert (summary["bytes"], summary["sha256"]) == (len(value), hashlib.sha256(value).hexdigest())
    assert len(summary["excerpt"]) <= dead_letters.EXCERPT_CHARS


def _read(stack: embedded.EmbeddedStack, topic: str, want: Any, timeout_s: float = 30) -> list[Any]:
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topic)
    try:
        reader.read_until(lambda msgs: len([m for m in msgs if want(m)]) >= 1, timeout_s=timeout_s)
        reader.drain(quiet_s=1.5)
        return [m for m in reader.messages if want(m)]
    finally:
        reader.close()


def test_binary_structured_and_plain_events_become_records(
    objective: dict[str, Any], stack: embedded.EmbeddedStack
) -> None:
    events = events_for(objective, 9, seed=21)
    shapes = [binary, structured, plain]
    kafka_io.produce(stack.bootstrap_servers, RAW, (shapes[i % 3](e) for i, e in enumerate(events)))
    name = objective["name"].encode()
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records")
    try:
        reader.read_until(lambda msgs: len([m for m in msgs if m.key == name]) >= 9)
        reader.drain(quiet_s=1.0)
        mine = [m for m in reader.messages if m.key == name]
    finally:
        reader.close()
    records = [records_pb2.Record.FromString(m.value) for m in mine]
    assert len(records) == 9
    ids = {r.event_id for r in records}
    assert {e["id"] for i, e in enumerate(events) if i % 3 != 2} <= ids
    plain_ids = {r.event_id for r in records} - {e["id"] for e in events}
    assert len(plain_ids) == 3 and all(i.startswith("sha256:") for i in plain_ids)
    for message in mine:
        assert kafka_io.header(message, "ce_type") == b"tunewire.v1.Record"
        assert kafka_io.header(message, "ce_specversion") == b"1.0"
        assert kafka_io.header(message, "ce_id")


@pytest.mark.parametrize(
    ("value", "headers", "kind"),
    [
        (b"{nope", [("ce_type", b"T")], "malformed"),
        (b'{"a": "\xff"}', [("ce_type", b"T")], "invalid_utf8"),
        (b'{"a": "x\x00"}', [("ce_type", b"T")], "nul_bytes"),
        (b"[" * 100_000 + b"]" * 100_000, [("ce_type", b"T")], "too_deep"),
        (b'{"a": 1}', [], "missing_attribute"),
        (b'{"a": 1}', [("ce_type", b"T")], "missing_field"),
        (b'{"a": 1}', [("ce_type", b"nobody.listens")], "unknown_event_type"),
    ],
    ids=["malformed", "utf8", "nul", "nesting", "no-type", "missing-field", "unknown-type"],
)
def test_bad_messages_go_to_the_dlq_with_the_reason(
    objective: dict[str, Any],
    stack: embedded.EmbeddedStack,
    value: bytes,
    headers: list[tuple[str, bytes]],
    kind: str,
) -> None:
    event_type = objective["source"]["event_type"].encode()
    headers = [(k, event_type if v == b"T" else v) for k, v in headers]
    marker = objective["name"].encode()  # the key: the DLQ keeps it (redacted), not headers
    kafka_io.produce(stack.bootstrap_servers, RAW, [(marker, value, headers)])
    # The partition keeps moving: a good event sent after the poison one still arrives.
    good = events_for(objective, 1, seed=99)[0]
    kafka_io.produce(stack.bootstrap_servers, RAW, [binary(good)])

    dead = _read(stack, RAW + ".dlq", lambda m: m.key == marker)
    assert len(dead) == 1
    assert_kept_of(value, dead[0].value)
    assert kafka_io.header(dead[0], "tunewire_error_kind") == kind.encode()
    assert kafka_io.header(dead[0], "tunewire_error")
    assert kafka_io.header(dead[0], "tunewire_original_topic") == RAW.encode()
    records = _read(stack, "tunewire.records", lambda m: m.key == objective["name"].encode())
    assert [records_pb2.Record.FromString(r.value).event_id for r in records] == [good["id"]]


def test_every_event_is_accounted_for(
    api: httpx.Client, objective: dict[str, Any], stack: embedded.EmbeddedStack
) -> None:
    """records + duplicates + rejected (DLQ or HTTP error) = events in, by the metrics."""

    def counts() -> dict[str, float]:
        found: dict[str, float] = {}
        for line in api.get("/metrics").text.splitlines():
            if line.startswith("tunewire_ingest_events_total{"):
                labels, value = line.rsplit(" ", 1)
                found[labels] = found.get(labels, 0) + float(value)
        return found

    before = counts()
    events = events_for(objective, 30, seed=5)
    # Kafka: 20 good, 5 redelivered, 3 poison. HTTP: 10 good, 4 duplicates, 1 bad batch of 2.
    kafka_msgs = [binary(e) for e in events[:20]] + [binary(e) for e in events[:5]]
    kafka_msgs += [(b"k", b"{broken", [("ce_type", b"x")])] * 3
    kafka_io.produce(stack.bootstrap_servers, RAW, kafka_msgs)
    assert api.post("/v1/events", json=events[20:30]).status_code == 202
    assert api.post("/v1/events", json=events[26:30]).json()["duplicates"] == 4
    bad = [events[0], {"type": "nope", "data": {}}]
    assert api.post("/v1/events", json=bad).status_code == 422
    total_in = len(kafka_msgs) + 10 + 4 + len(bad)

    name = objective["name"].encode()
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records")
    try:
        reader.read_until(lambda msgs: len([m for m in msgs if m.key == name]) >= 30)
        reader.drain(quiet_s=2.0)
        records = [m for m in reader.messages if m.key == name]
    finally:
        reader.close()
    assert len(records) == 30

    after = counts()
    delta = {k: after[k] - before.get(k, 0) for k in after}
    by_outcome: dict[str, float] = {}
    for labels, value in delta.items():
        outcome = labels.split('outcome="')[1].split('"')[0]
        by_outcome[outcome] = by_outcome.get(outcome, 0) + value
    assert by_outcome.get("record") == 30
    assert by_outcome.get("duplicate") == 5 + 4
    assert by_outcome.get("rejected") == 3 + len(bad)
    assert sum(by_outcome.values()) == total_in


def test_a_large_batch_with_poison_inside_is_fully_accounted_for(
    objective: dict[str, Any], stack: embedded.EmbeddedStack
) -> None:
    """Large polls go through the worker processes; the outcome must not change."""
    events = events_for(objective, 400, seed=31)
    marker = objective["name"].encode()
    messages = [binary(e) for e in events]
    for position in (50, 150, 250, 350):
        messages.insert(position, (marker, b"{broken", [("ce_type", b"x")]))
    kafka_io.produce(stack.bootstrap_servers, RAW, messages)

    name = objective["name"].encode()
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records")
    try:
        reader.read_until(lambda msgs: len([m for m in msgs if m.key == name]) >= 400)
        reader.drain(quiet_s=1.0)
        ids = [
            records_pb2.Record.FromString(m.value).event_id
            for m in reader.messages
            if m.key == name
        ]
    finally:
        reader.close()
    assert sorted(ids) == sorted(e["id"] for e in events)
    dead = _read(stack, RAW + ".dlq", lambda m: m.key == marker)
    assert len(dead) == 4


def test_a_dead_lettered_event_keeps_no_personal_data(
    api: httpx.Client, objective: dict[str, Any], stack: embedded.EmbeddedStack
) -> None:
    """Events for a retired objective are dead-lettered before ingest redacts them; the DLQ
    copy (value, key, headers, reason) holds none of their personal data."""
    name = objective["name"]
    assert api.post(f"/v1/objectives/{name}/retire").status_code == 200
    pii = ["anna.schmidt@example.com", "+49 30 1234567", "4111 1111 1111 1111"]
    event = events_for(objective, 1, seed=77)[0]
    event["data"]["body"] = f"Write to {pii[0]} or call {pii[1]}; my card is {pii[2]}."
    event["subject"] = pii[0]
    shapes = [binary(event), structured(event), (b"k", b"not json: " + pii[0].encode(), [])]
    marked = [
        (f"{name}-{i}".encode(), value, headers) for i, (_, value, headers) in enumerate(shapes)
    ]
    kafka_io.produce(stack.bootstrap_servers, RAW, marked)

    keys = {key for key, _, _ in marked}
    dead = _read(stack, RAW + ".dlq", lambda m: m.key in keys)
    assert len(dead) == len(marked)
    for message in dead:
        stored = message.value + b"".join(value for _, value in message.headers)
        for value in pii:
            assert value.encode() not in stored, (value, stored[:300])
        assert kafka_io.header(message, "tunewire_error_kind")
