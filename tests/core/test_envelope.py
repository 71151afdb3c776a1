"""CloudEvents attributes in Kafka headers, and the ids tunewire derives for its events."""

from __future__ import annotations

import datetime
import uuid

from tunewire.contracts.v1 import records_pb2
from tunewire.core.bus import envelope

MOMENT = datetime.datetime(2026, 11, 3, 9, 30, 15, 250_000, tzinfo=datetime.UTC)


def test_every_attribute_round_trips_through_the_headers() -> None:
    event = envelope.Envelope(
        id="evt-1",
        type="tunewire.v1.Record",
        source="tunewire/ingest",
        time=MOMENT,
        subject="support-intent",
        datacontenttype="application/protobuf",
        extensions={"objective": "support-intent", "traceparent": "00-abc-def-01"},
    )

    headers = event.headers()

    assert envelope.header(headers, "ce_specversion") == b"1.0"
    assert envelope.header(headers, "ce_id") == b"evt-1"
    assert envelope.header(headers, "ce_type") == b"tunewire.v1.Record"
    assert envelope.header(headers, "ce_source") == b"tunewire/ingest"
    assert envelope.header(headers, "ce_subject") == b"support-intent"
    assert envelope.header(headers, "content-type") == b"application/protobuf"
    assert envelope.header(headers, "ce_objective") == b"support-intent"
    assert envelope.header(headers, "ce_traceparent") == b"00-abc-def-01"
    raw_time = envelope.header(headers, "ce_time")
    assert raw_time is not None
    assert datetime.datetime.fromisoformat(raw_time.decode()) == MOMENT
    assert all(isinstance(value, bytes) for _, value in headers)


def test_optional_attributes_are_left_out_when_unset() -> None:
    headers = envelope.Envelope(id="evt-2", type="t", source="s").headers()

    assert [name for name, _ in headers] == ["ce_specversion", "ce_id", "ce_type", "ce_source"]
    assert envelope.header(headers, "ce_time") is None
    assert envelope.header(headers, "ce_subject") is None
    assert envelope.header(headers, "content-type") is None


def test_non_ascii_attributes_are_utf8_encoded() -> None:
    headers = envelope.Envelope(id="évènement", type="t", source="zürich").headers()

    assert envelope.header(headers, "ce_id") == "évènement".encode()
    assert envelope.header(headers, "ce_source") == "zürich".encode()


def test_header_returns_the_first_value_or_none() -> None:
    headers = [("ce_id", b"first"), ("ce_id", b"second")]

    assert envelope.header(headers, "ce_id") == b"first"
    assert envelope.header(headers, "ce_type") is None
    assert envelope.header([], "ce_id") is None


def test_for_payload_types_the_event_by_the_protobuf_full_name() -> None:
    event = envelope.for_payload(
        records_pb2.Record(objective="support-intent"),
        id="evt-3",
        source="tunewire/ingest",
        subject="support-intent",
        time=MOMENT,
    )

    assert event.type == records_pb2.Record.DESCRIPTOR.full_name == "tunewire.v1.Record"
    assert event.datacontenttype == envelope.PROTOBUF_CONTENT_TYPE == "application/protobuf"
    assert event.time == MOMENT
    assert event.subject == "support-intent"
    assert envelope.header(event.headers(), "ce_type") == b"tunewire.v1.Record"


def test_for_payload_stamps_the_current_time_when_none_is_given() -> None:
    before = datetime.datetime.now(datetime.UTC)
    event = envelope.for_payload(records_pb2.Record(), id="evt-4", source="s")
    after = datetime.datetime.now(datetime.UTC)

    assert event.time is not None
    assert event.time.tzinfo is not None
    assert before <= event.time <= after


def test_derived_id_is_deterministic() -> None:
    first = envelope.derived_id("ingest", "support-intent", "ticket-7-1")
    again = envelope.derived_id("ingest", "support-intent", "ticket-7-1")

    assert first == again
    assert str(uuid.UUID(first)) == first


def test_derived_id_differs_for_different_parts() -> None:
    ids = {
        envelope.derived_id("ingest", "support-intent", "ticket-7-1"),
        envelope.derived_id("ingest", "support-intent", "ticket-7-2"),
        envelope.derived_id("ingest", "other-objective", "ticket-7-1"),
        envelope.derived_id("labeller", "support-intent", "ticket-7-1"),
        envelope.derived_id("ab", "c"),
        envelope.derived_id("a", "bc"),
        envelope.derived_id("abc"),
    }

    assert len(ids) == 7


def test_timestamp_keeps_the_instant() -> None:
    stamp = envelope.timestamp(MOMENT)

    assert stamp.ToDatetime(tzinfo=datetime.UTC) == MOMENT
