"""What the raw topic's dead-letter copy of an event may keep: no personal data.

A raw event is dead-lettered before ingest could redact it (it did not parse, named no
active objective, or broke a limit), and a DLQ is read by operators and kept for days. So the
copy is redacted with every PII kind (at least as strict as any objective's redaction): a
JSON value keeps its structure with every string redacted; anything else, or anything too
large to be worth keeping whole, becomes a redacted excerpt of its start with the original's
size and sha256 (to match it against the producer's own logs). Only the CloudEvents context
headers that name the event survive; they, the key and the error reason are redacted too.
"""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any

from tunewire.core.bus import consuming, producing
from tunewire.core.text import redaction

WHOLE_UP_TO_BYTES = 64 * 1024
"""A parsed event up to this size is kept whole (redacted); larger ones as an excerpt."""
EXCERPT_CHARS = 2000
KEPT_HEADERS = frozenset(
    {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "ce_objective"}
    | {"content-type", "ce_datacontenttype"}
)

_REDACTOR = redaction.Redactor()


def sanitized(message: producing.Message, reason: str) -> consuming.DeadLetter:
    """The key, value, headers and reason the DLQ may hold for ``message``."""
    counts: collections.Counter[str] = collections.Counter()
    key = message.key
    if key is not None:
        key = _REDACTOR.redact_text(key.decode("utf-8", "replace"), counts).encode()
    value = _value(message.value, counts)
    headers = [
        (name, _REDACTOR.redact_text(raw.decode("utf-8", "replace"), counts).encode())
        for name, raw in message.headers
        if name.lower() in KEPT_HEADERS
    ]
    return consuming.DeadLetter(key, value, headers, _REDACTOR.redact_text(reason, counts))


def _value(raw: bytes, counts: collections.Counter[str]) -> bytes:
    if len(raw) <= WHOLE_UP_TO_BYTES:
        try:
            document: Any = json.loads(raw)
            redacted = _REDACTOR.redact_value(document, counts)
            return json.dumps(redacted, ensure_ascii=False).encode()
        except (ValueError, RecursionError):  # not JSON, or nested past any use
            pass
    excerpt = raw[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS]
    summary = {
        "excerpt": _REDACTOR.redact_text(excerpt, counts),
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return json.dumps(summary, ensure_ascii=False).encode()
