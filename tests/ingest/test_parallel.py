"""Worker processes prepare events exactly as the consumer process would."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest

from tunewire import samples
from tunewire.core.base import errors
from tunewire.core.bus import producing
from tunewire.core.state import objectives
from tunewire.ingest import handlers, normalising, parallel

LIMITS = {"max_event_bytes": 256 * 1024, "max_depth": 32}


@pytest.fixture(scope="module")
def pool() -> Iterator[parallel.PreparePool]:
    workers = parallel.PreparePool(workers=1, **LIMITS)
    yield workers
    workers.close()


def _catalog() -> dict[str, objectives.ObjectiveVersion]:
    spec = objectives.parse_spec(samples.support_intent_spec())
    version = objectives.ObjectiveVersion(
        name=spec.name,
        version=3,
        status="active",
        spec=spec,
        created_at=datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC),
        created_by="test",
    )
    return {spec.name: version}


def _messages() -> list[producing.Message]:
    encoded = [samples.as_kafka_message(e) for e in samples.tickets(40, seed=9)]
    found = [
        producing.Message("raw", 0, n, b"k", message.value, message.headers)
        for n, message in enumerate(encoded)
    ]
    found.append(
        producing.Message("raw", 0, 40, b"k", b"{broken", [("ce_type", b"ticket.created")])
    )
    found.append(
        producing.Message("raw", 0, 41, b"k", b'{"x": 1}', [("ce_type", b"ticket.created")])
    )
    return found


def test_workers_give_the_same_records_and_rejections(pool: parallel.PreparePool) -> None:
    catalog = _catalog()
    messages = _messages()
    results = pool.submit(messages, catalog).result(timeout=60)
    assert len(results) == len(messages)
    now = datetime.datetime.now(datetime.UTC)
    for message, result in zip(messages, results, strict=True):
        try:
            event = normalising.from_message(message, max_bytes=LIMITS["max_event_bytes"])
            here: object = handlers.prepare(event, catalog, max_depth=32, now=now)
        except errors.InvalidEvent as exc:
            assert result == parallel.Rejected(kind=exc.kind, message=exc.message)
            continue
        assert isinstance(result, handlers.Accepted) and isinstance(here, handlers.Accepted)
        assert result.record.text == here.record.text
        assert result.record.fields_json == here.record.fields_json
        assert result.record.source_id == here.record.source_id
        assert result.record.objective_version == 3
        assert dict(result.redactions) == dict(here.redactions)
    kinds = [r.kind for r in results if isinstance(r, parallel.Rejected)]
    assert kinds == ["malformed", "missing_field"]


def test_a_new_catalog_reaches_the_workers(pool: parallel.PreparePool) -> None:
    first = _catalog()
    message = _messages()[:1]
    assert isinstance(pool.submit(message, first).result(timeout=60)[0], handlers.Accepted)
    retired = {
        name: version.model_copy(update={"status": "retired"}) for name, version in first.items()
    }
    result = pool.submit(message, retired).result(timeout=60)[0]
    assert result == parallel.Rejected(
        kind="unknown_event_type",
        message="no active objective takes 'ticket.created' events (known: none)",
    )
