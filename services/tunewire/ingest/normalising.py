"""Turns what arrives (Kafka message or HTTP item) into one :class:`IncomingEvent`.

Three shapes are accepted: CloudEvents binary mode (``ce_*`` headers, JSON value),
CloudEvents structured mode (a JSON object with ``specversion``; content type
``application/cloudevents+json``) and plain JSON data with the type in a ``ce_type`` or
``type`` header. An event without an id gets one derived from its content, so a resent copy
is still recognised as a duplicate. Anything unreadable raises :class:`errors.InvalidEvent`
with a ``kind`` that metrics and DLQ headers carry.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from typing import Any

from tunewire.core.base import errors
from tunewire.core.bus import producing

CLOUDEVENTS_JSON = "application/cloudevents+json"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STRUCTURED_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "subject",
        "datacontenttype",
        "data",
        "data_base64",
        "dataschema",
        "objective",
    }
)


@dataclasses.dataclass(frozen=True)
class IncomingEvent:
    """A business event as ingest understands it, before validation against an objective."""

    id: str
    type: str
    source: str
    time: datetime.datetime | None
    subject: str | None
    objective: str | None
    data: Any


def from_message(message: producing.Message, *, max_bytes: int) -> IncomingEvent:
    """Read a Kafka message from the raw topic."""
    _check_size(len(message.value), max_bytes)
    text = _decode(message.value)
    headers = dict(reversed(message.headers))  # the first value of a repeated header wins
    if "ce_specversion" in headers:
        return _binary(headers, text)
    content_type = headers.get("content-type", b"").decode("latin-1")
    document = _parse_json(text)
    if content_type.startswith(CLOUDEVENTS_JSON) or (
        isinstance(document, dict) and "specversion" in document
    ):
        return from_structured(document, default_source="kafka")
    event_type = _header_text(headers, "ce_type") or _header_text(headers, "type")
    if not event_type:
        raise errors.InvalidEvent(
            "no event type: send a CloudEvent, or set the 'ce_type' header on plain JSON",
            kind="missing_attribute",
        )
    return IncomingEvent(
        id=_header_text(headers, "ce_id") or _content_id(event_type, message.value),
        type=event_type,
        source=_header_text(headers, "ce_source") or "kafka",
        time=None,
        subject=None,
        objective=_header_text(headers, "ce_objective") or _header_text(headers, "objective"),
        data=document,
    )


def from_structured(document: Any, *, default_source: str) -> IncomingEvent:
    """Read a CloudEvent in structured JSON form (also each item of ``POST /v1/events``)."""
    if not isinstance(document, dict):
        raise errors.InvalidEvent("an event must be a JSON object", kind="malformed")
    specversion = document.get("specversion", "1.0")
    if specversion != "1.0":
        raise errors.InvalidEvent(
            f"specversion {specversion!r} is not supported; send CloudEvents 1.0",
            kind="invalid_attribute",
        )
    unknown = sorted(
        k for k in document if k not in _STRUCTURED_ATTRIBUTES and not _is_extension(k)
    )
    if unknown:
        raise errors.InvalidEvent(
            f"unknown attributes {', '.join(unknown)}: put business fields inside 'data'",
            kind="invalid_attribute",
        )
    event_type = _attribute(document, "type", required=True)
    assert event_type is not None
    if "data_base64" in document:
        raise errors.InvalidEvent(
            "data_base64 is not accepted: send JSON 'data'", kind="invalid_data"
        )
    if "data" not in document:
        raise errors.InvalidEvent("the event has no 'data'", kind="missing_attribute")
    data = document["data"]
    event_id = _attribute(document, "id") or _content_id(
        event_type, json.dumps(data, sort_keys=True).encode()
    )
    return IncomingEvent(
        id=event_id,
        type=event_type,
        source=_attribute(document, "source") or default_source,
        time=_time(_attribute(document, "time")),
        subject=_attribute(document, "subject"),
        objective=_attribute(document, "objective"),
        data=data,
    )


def parse_json_body(body: bytes) -> Any:
    """Parse an HTTP body, turning every failure into a clear error."""
    return _parse_json(_decode(body))


def _binary(headers: dict[str, bytes], text: str) -> IncomingEvent:
    attributes = {
        name: _header_text(headers, name)
        for name in (
            "ce_specversion",
            "ce_id",
            "ce_type",
            "ce_source",
            "ce_time",
            "ce_subject",
            "ce_objective",
        )
        if name in headers
    }
    if attributes.get("ce_specversion") != "1.0":
        raise errors.InvalidEvent("ce_specversion must be 1.0", kind="invalid_attribute")
    event_id = attributes.get("ce_id")
    event_type = attributes.get("ce_type")
    source = attributes.get("ce_source")
    if not (event_id and event_type and source):
        missing = [h for h in ("ce_id", "ce_type", "ce_source") if not attributes.get(h)]
        raise errors.InvalidEvent(
            f"CloudEvents header(s) {', '.join(missing)} missing", kind="missing_attribute"
        )
    return IncomingEvent(
        id=event_id,
        type=event_type,
        source=source,
        time=_time(attributes.get("ce_time")),
        subject=attributes.get("ce_subject"),
        objective=attributes.get("ce_objective"),
        data=_parse_json(text),
    )


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise errors.InvalidEvent(
            f"the event is {size} bytes; the limit is {limit}", kind="too_large"
        )


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidEvent(
            f"the event is not valid UTF-8 (byte {exc.start})", kind="invalid_utf8"
        ) from None
    if "\x00" in text:
        raise errors.InvalidEvent("the event contains NUL bytes", kind="nul_bytes")
    return text


def _parse_json(text: str) -> Any:
    try:
        document = json.loads(text)
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            # JSON may escape a lone UTF-16 surrogate, which no UTF-8 text can hold.
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        return document
    except UnicodeEncodeError:
        raise errors.InvalidEvent(
            "the event holds an unpaired UTF-16 surrogate escape (\\udXXX)", kind="invalid_utf8"
        ) from None
    except json.JSONDecodeError as exc:
        raise errors.InvalidEvent(
            f"the event is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            kind="malformed",
        ) from None
    except RecursionError:
        raise errors.InvalidEvent("the event is nested too deeply", kind="too_deep") from None


def _header_text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidEvent(f"header {name} is not UTF-8", kind="invalid_utf8") from None


def _attribute(document: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = document.get(name)
    if value is None:
        if required:
            raise errors.InvalidEvent(f"the event has no '{name}'", kind="missing_attribute")
        return None
    if not isinstance(value, str) or not value:
        raise errors.InvalidEvent(
            f"'{name}' must be a non-empty string, not {type(value).__name__}",
            kind="invalid_attribute",
        )
    if "\x00" in value:
        raise errors.InvalidEvent(f"'{name}' contains NUL bytes", kind="nul_bytes")
    return value


def _time(value: str | None) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidEvent(
            f"time {value!r} is not an RFC 3339 timestamp", kind="invalid_attribute"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _is_extension(name: str) -> bool:
    return name.isalnum() and name.islower() and len(name) <= 20


def _content_id(event_type: str, raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(event_type.encode() + b"\x1f" + raw).hexdigest()
