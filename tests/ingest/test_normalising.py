"""How ingest reads what arrives on the raw topic: three shapes in, one event out."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from tunewire.core.base import errors
from tunewire.core.bus import envelope, producing
from tunewire.ingest import normalising

LIMIT = 256 * 1024  # ingest's default max_event_bytes
DATA = {"ticket_id": "T-1", "subject": "Refund", "body": "Please refund me", "channel": "web"}


def message(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> producing.Message:
    return producing.Message(
        topic="tunewire.raw", partition=0, offset=0, key=None, value=value, headers=headers or []
    )


def binary_headers(**overrides: bytes | None) -> list[tuple[str, bytes]]:
    headers: dict[str, bytes | None] = {
        "ce_specversion": b"1.0",
        "ce_id": b"evt-1",
        "ce_type": b"ticket.created",
        "ce_source": b"helpdesk/eu",
    }
    headers.update(overrides)
    return [(name, value) for name, value in headers.items() if value is not None]


def structured(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-2",
        "type": "ticket.created",
        "source": "helpdesk/us",
        "time": "2026-11-03T09:30:00Z",
        "data": DATA,
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def read(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> normalising.IncomingEvent:
    return normalising.from_message(message(value, headers), max_bytes=LIMIT)


def refused(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> errors.InvalidEvent:
    with pytest.raises(errors.InvalidEvent) as raised:
        read(value, headers)
    return raised.value


# -- binary content mode ----------------------------------------------------------------


def test_binary_mode_reads_attributes_from_headers() -> None:
    headers = binary_headers(
        ce_time=b"2026-11-03T09:30:00+01:00", ce_subject=b"T-1", ce_objective=b"support-intent"
    )

    event = read(json.dumps(DATA).encode(), headers)

    assert event == normalising.IncomingEvent(
        id="evt-1",
        type="ticket.created",
        source="helpdesk/eu",
        time=datetime.datetime(2026, 11, 3, 8, 30, tzinfo=datetime.UTC),
        subject="T-1",
        objective="support-intent",
        data=DATA,
    )


def test_binary_mode_reads_what_an_envelope_writes() -> None:
    sent = envelope.Envelope(
        id="evt-9",
        type="ticket.created",
        source="crm",
        time=datetime.datetime(2026, 11, 3, 9, 0, tzinfo=datetime.UTC),
        subject="T-9",
        extensions={"objective": "support-intent"},
    )

    event = read(json.dumps(DATA).encode(), sent.headers())

    assert (event.id, event.type, event.source) == ("evt-9", "ticket.created", "crm")
    assert (event.time, event.subject, event.objective) == (sent.time, "T-9", "support-intent")


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_source"])
def test_binary_mode_without_a_required_header_is_refused(missing: str) -> None:
    error = refused(json.dumps(DATA).encode(), binary_headers(**{missing: None}))

    assert error.kind == "missing_attribute"
    assert missing in error.message


def test_binary_mode_with_an_empty_id_is_refused() -> None:
    error = refused(json.dumps(DATA).encode(), binary_headers(ce_id=b""))

    assert error.kind == "missing_attribute"


def test_binary_mode_with_another_specversion_is_refused() -> None:
    error = refused(json.dumps(DATA).encode(), binary_headers(ce_specversion=b"0.3"))

    assert error.kind == "invalid_attribute"
    assert "1.0" in error.message


def test_a_header_that_is_not_utf8_is_refused() -> None:
    error = refused(json.dumps(DATA).encode(), binary_headers(ce_source=b"\xff\xfe"))

    assert error.kind == "invalid_utf8"


# -- structured content mode ------------------------------------------------------------


def test_structured_mode_is_recognised_by_content_type() -> None:
    document = structured()
    del document["specversion"]

    event = read(
        json.dumps(document).encode(),
        [("content-type", b"application/cloudevents+json; charset=utf-8")],
    )

    assert event.id == "evt-2"
    assert event.type == "ticket.created"
    assert event.source == "helpdesk/us"
    assert event.time == datetime.datetime(2026, 11, 3, 9, 30, tzinfo=datetime.UTC)
    assert event.data == DATA


def test_structured_mode_is_recognised_by_its_specversion_key() -> None:
    event = read(json.dumps(structured(subject="T-1", objective="support-intent")).encode())

    assert (event.id, event.type, event.subject, event.objective) == (
        "evt-2",
        "ticket.created",
        "T-1",
        "support-intent",
    )
    assert event.data == DATA


def test_structured_mode_without_source_falls_back_to_the_transport() -> None:
    event = read(json.dumps(structured(source=None)).encode())

    assert event.source == "kafka"


def test_a_time_without_offset_is_taken_as_utc() -> None:
    event = read(json.dumps(structured(time="2026-11-03T09:30:00")).encode())

    assert event.time == datetime.datetime(2026, 11, 3, 9, 30, tzinfo=datetime.UTC)


def test_structured_mode_with_another_specversion_is_refused() -> None:
    error = refused(json.dumps(structured(specversion="0.3")).encode())

    assert error.kind == "invalid_attribute"


@pytest.mark.parametrize("time", ["yesterday", "2026-13-01T00:00:00Z", ""], ids=repr)
def test_a_bad_time_is_refused(time: str) -> None:
    error = refused(json.dumps(structured(time=time)).encode())

    assert error.kind == "invalid_attribute"
    assert "time" in error.message


def test_a_bad_time_header_is_refused_in_binary_mode() -> None:
    error = refused(json.dumps(DATA).encode(), binary_headers(ce_time=b"noon"))

    assert error.kind == "invalid_attribute"


def test_data_base64_is_refused() -> None:
    document = structured(data=None, data_base64="eyJ0aWNrZXRfaWQiOiAiVC0xIn0=")

    error = refused(json.dumps(document).encode())

    assert error.kind == "invalid_data"
    assert "data_base64" in error.message


def test_a_structured_event_without_data_is_refused() -> None:
    error = refused(json.dumps(structured(data=None)).encode())

    assert error.kind == "missing_attribute"


def test_a_structured_event_without_type_is_refused() -> None:
    error = refused(json.dumps(structured(type=None)).encode())

    assert error.kind == "missing_attribute"
    assert "type" in error.message


@pytest.mark.parametrize("value", [42, "", ["ticket.created"]], ids=repr)
def test_an_attribute_that_is_not_a_non_empty_string_is_refused(value: Any) -> None:
    error = refused(json.dumps(structured(type=value)).encode())

    assert error.kind == "invalid_attribute"


def test_business_fields_outside_data_are_refused() -> None:
    error = refused(json.dumps(structured(ticket_id="T-1")).encode())

    assert error.kind == "invalid_attribute"
    assert "ticket_id" in error.message


def test_an_escaped_nul_in_an_attribute_is_refused() -> None:
    error = refused(json.dumps(structured(id="evt\u00002")).encode())

    assert error.kind == "nul_bytes"


def test_a_structured_event_that_is_not_an_object_is_refused() -> None:
    error = refused(b"[1, 2]", [("content-type", b"application/cloudevents+json")])

    assert error.kind == "malformed"


# -- plain JSON -------------------------------------------------------------------------


def test_plain_json_takes_its_type_from_the_ce_type_header() -> None:
    event = read(
        json.dumps(DATA).encode(),
        [("ce_type", b"ticket.created"), ("ce_id", b"evt-3"), ("ce_objective", b"support-intent")],
    )

    assert event.type == "ticket.created"
    assert event.id == "evt-3"
    assert event.source == "kafka"
    assert event.objective == "support-intent"
    assert event.time is None
    assert event.data == DATA


def test_plain_json_takes_its_type_from_a_type_header() -> None:
    event = read(json.dumps(DATA).encode(), [("type", b"ticket.created")])

    assert event.type == "ticket.created"


def test_plain_json_without_a_type_is_refused() -> None:
    error = refused(json.dumps(DATA).encode())

    assert error.kind == "missing_attribute"
    assert "ce_type" in error.message


def test_an_event_without_id_gets_a_deterministic_content_id() -> None:
    raw = json.dumps(DATA).encode()
    headers = [("ce_type", b"ticket.created")]

    first = read(raw, headers)
    again = read(raw, headers)
    other_data = read(json.dumps({**DATA, "ticket_id": "T-2"}).encode(), headers)
    other_type = read(raw, [("ce_type", b"ticket.updated")])

    assert first.id.startswith("sha256:")
    assert len(first.id) == len("sha256:") + 64
    assert again.id == first.id
    assert other_data.id != first.id
    assert other_type.id != first.id


def test_a_structured_event_without_id_gets_a_deterministic_content_id() -> None:
    first = read(json.dumps(structured(id=None)).encode())
    # The same data resent with other key order and spacing is still the same event.
    reordered = dict(reversed(list(structured(id=None).items())))
    again = read(json.dumps(reordered, indent=2).encode())
    other = read(json.dumps(structured(id=None, data={**DATA, "body": "x"})).encode())

    assert first.id.startswith("sha256:")
    assert again.id == first.id
    assert other.id != first.id


# -- unreadable values ------------------------------------------------------------------


def test_invalid_utf8_is_refused_with_the_byte_position() -> None:
    error = refused(b'{"subject": "caf\xe9"}', [("ce_type", b"ticket.created")])

    assert error.kind == "invalid_utf8"
    assert "byte 16" in error.message


def test_a_raw_nul_byte_is_refused() -> None:
    error = refused(b'{"subject": "a\x00b"}', [("ce_type", b"ticket.created")])

    assert error.kind == "nul_bytes"


@pytest.mark.parametrize(
    "value",
    [b'{"subject": ', b"{'subject': 'x'}", b"", b'{"a": 1} trailing', b"NaN-ish"],
    ids=repr,
)
def test_malformed_json_is_refused(value: bytes) -> None:
    error = refused(value, [("ce_type", b"ticket.created")])

    assert error.kind == "malformed"
    assert "line 1 column" in error.message


@pytest.mark.parametrize(
    "headers",
    [[("ce_type", b"ticket.created")], binary_headers(), []],
    ids=["plain", "binary", "no-headers"],
)
def test_absurd_nesting_is_refused_without_a_recursion_error(
    headers: list[tuple[str, bytes]],
) -> None:
    error = refused(b"[" * 100_000, headers)

    assert error.kind in {"too_deep", "malformed"}


def test_deep_but_closed_nesting_is_refused_without_a_recursion_error() -> None:
    value = b"[" * 100_000 + b"]" * 100_000

    error = refused(value, [("ce_type", b"ticket.created")])

    assert error.kind in {"too_deep", "malformed"}


def test_an_oversize_event_is_refused_before_it_is_parsed() -> None:
    value = b"\xff" * (LIMIT + 1)  # not even UTF-8: size is checked first

    error = refused(value, [("ce_type", b"ticket.created")])

    assert error.kind == "too_large"
    assert str(LIMIT) in error.message


def test_an_event_of_exactly_the_limit_is_read() -> None:
    body = json.dumps({**DATA, "pad": ""}).encode()
    padded = json.dumps({**DATA, "pad": "x" * (LIMIT - len(body))}).encode()
    assert len(padded) == LIMIT

    event = read(padded, [("ce_type", b"ticket.created")])

    assert event.data["ticket_id"] == "T-1"


def test_parse_json_body_reports_the_same_kinds() -> None:
    assert normalising.parse_json_body(b'[{"a": 1}]') == [{"a": 1}]
    for raw, kind in [(b"\xc3(", "invalid_utf8"), (b"\x00", "nul_bytes"), (b"{", "malformed")]:
        with pytest.raises(errors.InvalidEvent) as raised:
            normalising.parse_json_body(raw)
        assert raised.value.kind == kind


def test_a_lone_surrogate_escape_is_refused_and_a_pair_is_kept() -> None:
    lone = message(b'{"body": "a\\ud800b"}', [("ce_type", b"t")])
    with pytest.raises(errors.InvalidEvent) as caught:
        normalising.from_message(lone, max_bytes=LIMIT)
    assert caught.value.kind == "invalid_utf8"
    pair = message(b'{"body": "smile \\ud83d\\ude00"}', [("ce_type", b"t")])
    assert normalising.from_message(pair, max_bytes=LIMIT).data == {"body": "smile \U0001f600"}
