"""The example log against the embedded S3 endpoint: segments, order, and failed writes."""

from __future__ import annotations

import datetime
import gzip
import uuid

import pytest

from tunewire.contracts.v1 import examples_pb2
from tunewire.core.base import errors, settings, store
from tunewire.label import examples


def make(objective: str, n: int, **changes: object) -> examples.Example:
    fields: dict[str, object] = {
        "example_id": f"ex-{objective}-{n}",
        "objective": objective,
        "objective_version": 1,
        "source_id": f"ticket-{n}",
        "record_id": f"rec-{n}",
        "event_id": f"evt-{n}",
        "text": f"my parcel {n} is late — ünïcode",
        "label": "shipping",
        "label_source": "rule",
        "voters": ("shipping/regex#1",),
        "split": "eval" if n % 5 == 0 else "train",
        "labelled_at": "2025-01-02T03:04:05.000006+00:00",
    }
    fields.update(changes)
    return examples.Example(**fields)  # type: ignore[arg-type]


def objective_name() -> str:
    return f"obj-{uuid.uuid4().hex[:8]}"


def test_examples_round_trip_across_flushes_and_objectives(
    artifacts: store.ArtifactStore,
) -> None:
    log = examples.ExampleLog(artifacts)
    first, second = objective_name(), objective_name()
    for n in range(3):
        log.append(make(first, n))
    log.append(make(second, 0, label_source="human", voters=("ann", "bob")))
    assert log.pending() == 4

    written = log.flush()

    assert log.pending() == 0
    assert len(written) == 2
    assert {k.split("/")[1] for k in written} == {first, second}
    for n in range(3, 6):
        log.append(make(first, n))
    log.flush()
    assert log.flush() == []  # nothing buffered: nothing written

    segments = log.segments(first)
    assert len(segments) == 2
    assert segments == sorted(segments)
    assert all(
        k.startswith(f"labels/{first}/examples/") and k.endswith(".jsonl.gz") for k in segments
    )
    assert list(log.iter_examples(first)) == [make(first, n) for n in range(6)]
    assert list(log.iter_examples(second)) == [
        make(second, 0, label_source="human", voters=("ann", "bob"))
    ]
    # Segments are plain gzip JSON lines, readable by any tool.
    lines = gzip.decompress(artifacts.get_bytes(segments[0])).decode().splitlines()
    assert len(lines) == 3
    assert "ünïcode" in lines[0]


def test_after_reads_only_later_segments_in_order(artifacts: store.ArtifactStore) -> None:
    log = examples.ExampleLog(artifacts)
    objective = objective_name()
    for n in range(5):
        log.append(make(objective, n))
        log.flush()
    segments = log.segments(objective)
    assert len(segments) == 5

    later = list(log.iter_examples(objective, after=segments[1]))

    assert [e.example_id for e in later] == [f"ex-{objective}-{n}" for n in (2, 3, 4)]
    assert list(log.iter_examples(objective, after=segments[-1])) == []
    assert list(log.iter_examples("no-such-objective")) == []


def test_a_failed_flush_keeps_the_examples_for_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = store.ArtifactStore(
        settings.S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=1, region="us-east-1")
    )
    log = examples.ExampleLog(dead)
    objective = objective_name()
    log.append(make(objective, 0))
    log.append(make(objective, 1))

    with pytest.raises(errors.Unavailable):
        log.flush()
    assert log.pending() == 2
    log.append(make(objective, 2))
    with pytest.raises(errors.Unavailable):
        log.flush()
    assert log.pending() == 3


def test_a_failed_flush_retried_against_a_live_store_keeps_order(
    artifacts: store.ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same log, its store unreachable for one flush and back for the next.
    log = examples.ExampleLog(artifacts)
    objective = objective_name()
    log.append(make(objective, 0))
    healthy = log._store  # swapping the store in and out simulates an outage
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    log._store = store.ArtifactStore(
        settings.S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=1, region="us-east-1")
    )
    with pytest.raises(errors.Unavailable):
        log.flush()
    log.append(make(objective, 1))
    log._store = healthy

    assert len(log.flush()) == 1
    assert [e.example_id for e in log.iter_examples(objective)] == [
        f"ex-{objective}-0",
        f"ex-{objective}-1",
    ]


def test_an_example_becomes_its_labelled_example_event() -> None:
    rule = make("o", 5).to_proto()
    assert rule.label_source == examples_pb2.LABEL_SOURCE_RULE
    assert list(rule.voting_rules) == ["shipping/regex#1"]
    assert rule.annotator == ""
    assert rule.split == examples_pb2.SPLIT_EVAL
    assert rule.record_id == "rec-5"
    assert rule.labelled_at.ToDatetime(tzinfo=datetime.UTC) == datetime.datetime(
        2025, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC
    )
    human = make("o", 1, label_source="human", voters=("ann", "bob")).to_proto()
    assert human.label_source == examples_pb2.LABEL_SOURCE_HUMAN
    assert list(human.voting_rules) == []
    assert human.annotator == "ann,bob"
    assert human.split == examples_pb2.SPLIT_TRAIN


def test_a_line_with_an_unknown_split_is_refused() -> None:
    document = make("o", 1).to_json()
    assert examples.Example.from_json(document) == make("o", 1)
    with pytest.raises(ValueError, match="split"):
        examples.Example.from_json({**document, "split": "test"})


def test_a_segment_line_has_every_field_of_the_example() -> None:
    import dataclasses
    import json

    example = make("o", 1, label_source="human", voters=("ann", "bob"))
    document = example.to_json()
    assert document == {**dataclasses.asdict(example), "voters": ["ann", "bob"]}
    assert json.loads(json.dumps(document)) == document
