"""Pure ingest logic: resolve the objective, validate the data, redact, build the record.

Nothing here does I/O, so every rule is easy to test: an :class:`IncomingEvent` and the
current objectives go in; a :class:`Accepted` (the record and the archive line) comes out, or
:class:`errors.InvalidEvent` names what is wrong.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import errors
from tunewire.core.bus import envelope
from tunewire.core.state import model_input, objectives
from tunewire.core.text import redaction
from tunewire.ingest import normalising

_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


#: Rejections that a catalog reloaded just now might turn into acceptance.
STALE_CATALOG_KINDS = frozenset({"unknown_objective", "retired_objective", "unknown_event_type"})

#: The CloudEvents source of every record ingest publishes.
RECORD_SOURCE = "tunewire/ingest"


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """An event that passed, ready to publish: its record and the redacted archive line.

    Everything is already encoded, so worker processes can send it back to the consumer
    cheaply (see parallel.py) and the consumer only has to hand bytes to Kafka and S3.
    """

    event_id: str
    objective: str
    record_value: bytes
    """The serialised ``tunewire.v1.Record``."""
    record_headers: list[tuple[str, bytes]]
    """Its CloudEvents headers; the id is derived from the event id, so it is stable."""
    archive_line: bytes
    """The redacted event as one JSON line for the archive."""
    day: datetime.date
    """The archive partition (the day ingest received the event)."""
    redactions: Mapping[str, int]

    @property
    def record(self) -> records_pb2.Record:
        """The record, parsed back (for callers that inspect it)."""
        return records_pb2.Record.FromString(self.record_value)


def resolve(
    event: normalising.IncomingEvent, current: Mapping[str, objectives.ObjectiveVersion]
) -> objectives.ObjectiveVersion:
    """The objective an event belongs to: named explicitly, or the one its type feeds."""
    if event.objective is not None:
        found = current.get(event.objective)
        if found is None:
            raise errors.InvalidEvent(
                f"objective {event.objective!r} is not registered", kind="unknown_objective"
            )
        if found.status != "active":
            raise errors.InvalidEvent(
                f"objective {event.objective!r} is retired", kind="retired_objective"
            )
        if found.spec.source.event_type != event.type:
            raise errors.InvalidEvent(
                f"objective {found.name!r} takes {found.spec.source.event_type!r} events, "
                f"not {event.type!r}",
                kind="unknown_event_type",
            )
        return found
    matches = [
        o
        for o in current.values()
        if o.status == "active" and o.spec.source.event_type == event.type
    ]
    if not matches:
        known = sorted({o.spec.source.event_type for o in current.values() if o.status == "active"})
        raise errors.InvalidEvent(
            f"no active objective takes {event.type!r} events "
            f"(known: {', '.join(known) or 'none'})",
            kind="unknown_event_type",
        )
    if len(matches) > 1:
        names = ", ".join(sorted(o.name for o in matches))
        raise errors.InvalidEvent(
            f"{event.type!r} feeds several objectives ({names}); set the 'objective' attribute",
            kind="ambiguous_event_type",
        )
    return matches[0]


def validate_data(data: Any, source: objectives.Source, *, max_depth: int) -> dict[str, Any]:
    """Check the event data against the objective's source fields; list every problem."""
    if not isinstance(data, dict):
        raise errors.InvalidEvent(
            f"event data must be a JSON object, not {_json_type(data)}", kind="invalid_data"
        )
    _check_structure(data, limit=max_depth)
    problems: list[str] = []
    kinds: set[str] = set()
    for name, expected in source.required_fields().items():
        if name not in data or data[name] is None:
            problems.append(f"field '{name}' is missing")
            kinds.add("missing_field")
            continue
        value = data[name]
        allowed = _TYPE_CHECKS[expected]
        if name == source.id_field and expected == "string":
            allowed = (str, int)
        if (isinstance(value, bool) and expected != "boolean") or not isinstance(value, allowed):
            problems.append(f"field '{name}' must be {expected}, not {_json_type(value)}")
            kinds.add("wrong_type")
    if problems:
        kind = "missing_field" if kinds == {"missing_field"} else "wrong_type"
        raise errors.InvalidEvent("; ".join(problems), kind=kind, details=problems)
    return data


def accept(
    event: normalising.IncomingEvent,
    objective: objectives.ObjectiveVersion,
    redactor: redaction.Redactor,
    *,
    max_depth: int,
    now: datetime.datetime,
) -> Accepted:
    """Validate and redact an event; build its record and archive line."""
    data = validate_data(event.data, objective.spec.source, max_depth=max_depth)
    counts: collections.Counter[str] = collections.Counter()
    clean = redactor.redact_value(data, counts)
    assert isinstance(clean, dict)
    source = objective.spec.source
    text = model_input.render(source, clean)
    subject = redactor.redact_text(event.subject, counts) if event.subject else None
    occurred = event.time or now
    fields_json = json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
    record = records_pb2.Record(
        objective=objective.name,
        objective_version=objective.version,
        source_id=_source_id(data[source.id_field], redactor),
        text=text,
        fields_json=fields_json,
        event_type=event.type,
        event_id=event.id,
        event_source=event.source,
        occurred_at=envelope.timestamp(occurred),
        ingested_at=envelope.timestamp(now),
        redactions=dict(counts),
    )
    meta = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": occurred.isoformat(),
        "subject": subject,
        "objective": objective.name,
        "objective_version": objective.version,
        "ingested_at": now.isoformat(),
    }
    # The data is already JSON in fields_json: splice it in rather than encode it twice.
    head = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    line = f'{head[:-1]},"data":{fields_json}}}'.encode()
    headers = envelope.for_payload(
        record,
        id=envelope.derived_id("record", objective.name, event.id),
        source=RECORD_SOURCE,
        time=now,
    ).headers()
    return Accepted(
        event_id=event.id,
        objective=objective.name,
        record_value=record.SerializeToString(),
        record_headers=headers,
        archive_line=line,
        day=now.date(),
        redactions=dict(counts),
    )


def prepare(
    event: normalising.IncomingEvent,
    current: Mapping[str, objectives.ObjectiveVersion],
    *,
    max_depth: int,
    now: datetime.datetime,
) -> Accepted:
    """Resolve the objective, then validate and redact: everything but the side effects."""
    objective = resolve(event, current)
    kinds = frozenset(objective.spec.redaction.kinds)
    return accept(event, objective, model_input.redactor_for(kinds), max_depth=max_depth, now=now)


def _source_id(raw: Any, redactor: redaction.Redactor) -> str:
    """The id as sent, unless it is itself PII; then a stable pseudonym of it.

    Redacting an id would merge distinct items under one placeholder (and the train/eval
    split hashes on it), so a PII-looking id is replaced by its hash instead.
    """
    text = str(raw)
    if redactor.redact_text(text, collections.Counter()) == text:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _check_structure(value: Any, *, limit: int, level: int = 1) -> None:
    """Refuse data nested deeper than ``limit`` or holding NUL characters anywhere."""
    if level > limit:
        raise errors.InvalidEvent(
            f"event data is nested deeper than {limit} levels", kind="too_deep"
        )
    if isinstance(value, dict):
        for key, child in value.items():
            if "\x00" in key:
                raise errors.InvalidEvent("a field name contains NUL characters", kind="nul_bytes")
            _check_child(child, limit=limit, level=level)
    elif isinstance(value, list):
        for child in value:
            _check_child(child, limit=limit, level=level)


def _check_child(child: Any, *, limit: int, level: int) -> None:
    if isinstance(child, str):
        if "\x00" in child:
            raise errors.InvalidEvent("a field value contains NUL characters", kind="nul_bytes")
    elif isinstance(child, dict | list):
        _check_structure(child, limit=limit, level=level + 1)


def _json_type(value: Any) -> str:
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
