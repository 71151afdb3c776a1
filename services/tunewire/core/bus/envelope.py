"""CloudEvents 1.0 in Kafka binary content mode: attributes in ``ce_*`` headers.

Every event tunewire publishes carries its payload (a protobuf message from
:mod:`tunewire.contracts`) as the Kafka value and its attributes as headers. ``ce_id`` is
the idempotency key that consumers deduplicate on.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import uuid
from collections.abc import Iterable, Sequence

from google.protobuf import message as protobuf_message
from google.protobuf import timestamp_pb2

SPECVERSION = "1.0"
PROTOBUF_CONTENT_TYPE = "application/protobuf"
Headers = Sequence[tuple[str, bytes]]


@dataclasses.dataclass(frozen=True)
class Envelope:
    """The CloudEvents attributes of one event."""

    id: str
    type: str
    source: str
    time: datetime.datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    extensions: dict[str, str] = dataclasses.field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers of this envelope (binary content mode)."""
        headers = [
            ("ce_specversion", SPECVERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
        ]
        if self.time is not None:
            headers.append(("ce_time", self.time.isoformat().encode()))
        if self.subject is not None:
            headers.append(("ce_subject", self.subject.encode()))
        if self.datacontenttype is not None:
            headers.append(("content-type", self.datacontenttype.encode()))
        headers.extend((f"ce_{k}", v.encode()) for k, v in sorted(self.extensions.items()))
        return headers


def header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    """The first value of a header, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def for_payload(
    payload: protobuf_message.Message,
    *,
    id: str,
    source: str,
    subject: str | None = None,
    time: datetime.datetime | None = None,
) -> Envelope:
    """The envelope of a tunewire event: its type is the payload's protobuf full name."""
    return Envelope(
        id=id,
        type=payload.DESCRIPTOR.full_name,
        source=source,
        subject=subject,
        time=time or datetime.datetime.now(datetime.UTC),
        datacontenttype=PROTOBUF_CONTENT_TYPE,
    )


def derived_id(*parts: str) -> str:
    """A deterministic event id: a redelivered input yields the same output id."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest))


def timestamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    seconds = moment.timestamp()
    whole = int(seconds // 1)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=moment.microsecond * 1000)
