"""Dataset snapshots against the embedded S3 endpoint and broker: files, ids, announcements."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import pathlib
import tracemalloc
import uuid
from typing import Any

import pytest
from google.protobuf import message as protobuf_message

from tests.support import kafka_io
from tunewire import samples
from tunewire.contracts.v1 import datasets_pb2
from tunewire.core.base import errors, settings, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.state import objectives
from tunewire.label import examples, snapshots
from tunewire.stack import embedded

LABELS = ["refund", "shipping", "account", "warranty"]


@pytest.fixture
def objective() -> objectives.ObjectiveVersion:
    spec = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"snap-{uuid.uuid4().hex[:8]}"
    return objectives.ObjectiveVersion(
        name=spec["name"],
        version=3,
        status="active",
        spec=objectives.parse_spec(spec),
        created_at=datetime.datetime.now(datetime.UTC),
        created_by="test",
    )


@pytest.fixture
def log(artifacts: store.ArtifactStore) -> examples.ExampleLog:
    return examples.ExampleLog(artifacts)


@pytest.fixture
def builder(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    producer: producing.Producer,
    tmp_path: pathlib.Path,
) -> snapshots.SnapshotBuilder:
    return snapshots.SnapshotBuilder(artifacts, log, producer, workdir=tmp_path / "work")


def example(objective: str, n: int, **changes: Any) -> examples.Example:
    fields: dict[str, Any] = {
        "example_id": f"ex-{n}",
        "objective": objective,
        "objective_version": 3,
        "source_id": f"ticket-{n}",
        "record_id": f"rec-{n}",
        "event_id": f"evt-{n}",
        "text": f"ticket {n}: please help",
        "label": LABELS[n % 4],
        "label_source": "rule" if n % 3 else "human",
        "voters": (f"{LABELS[n % 4]}/any#{n % 4}",) if n % 3 else ("ann",),
        "split": "eval" if n % 5 == 0 else "train",
        "labelled_at": "2025-01-02T03:04:05+00:00",
    }
    fields.update(changes)
    return examples.Example(**fields)


def add(log: examples.ExampleLog, objective: str, numbers: range) -> None:
    for n in numbers:
        log.append(example(objective, n))
    log.flush()


def jsonl(artifacts: store.ArtifactStore, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in artifacts.get_bytes(key).decode().splitlines()]


def snapshot_events(stack: embedded.EmbeddedStack, objective: str, *, expect: int) -> list[Any]:
    """The snapshot events of one objective on ``tunewire.datasets``, read from the start."""

    def mine(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m.key == objective.encode()]

    reader = kafka_io.TopicReader(stack.bootstrap_servers, topics.DATASETS)
    try:
        reader.read_until(lambda ms: len(mine(ms)) >= expect, timeout_s=20)
        reader.drain(quiet_s=1.5)  # a duplicate would arrive right behind the first
        return mine(reader.messages)
    finally:
        reader.close()


def test_a_snapshot_writes_chat_files_lineage_and_a_manifest(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
    stack: embedded.EmbeddedStack,
    tmp_path: pathlib.Path,
) -> None:
    name = objective.name
    add(log, name, range(0, 12))
    add(log, name, range(12, 20))

    info = builder.build(objective, rules=["refund/any#0", "shipping/regex#1"], reason="manual")

    assert info.created
    assert info.dataset_id.startswith("ds-") and len(info.dataset_id) == 19
    prefix = f"datasets/{name}/{info.dataset_id}/"
    assert info.uri == f"s3://{stack.bucket}/{prefix}"
    assert sorted(artifacts.list_keys(prefix)) == [
        prefix + f for f in ("announced.json", "eval.jsonl", "lineage.jsonl", "manifest.json")
    ] + [prefix + "train.jsonl"]
    manifest = artifacts.get_json(prefix + "manifest.json")
    assert manifest == info.manifest
    train = jsonl(artifacts, prefix + "train.jsonl")
    evals = jsonl(artifacts, prefix + "eval.jsonl")
    lineage = jsonl(artifacts, prefix + "lineage.jsonl")
    eval_numbers = [n for n in range(20) if n % 5 == 0]
    assert [line["id"] for line in evals] == [f"ex-{n}" for n in eval_numbers]
    assert [line["id"] for line in train] == [f"ex-{n}" for n in range(20) if n % 5]
    first = train[0]
    assert first["source_id"] == "ticket-1"
    system, user, assistant = first["messages"]
    assert system["role"] == "system"
    assert objective.spec.description in system["content"]
    assert all(label in system["content"] for label in LABELS)
    assert user == {"role": "user", "content": "ticket 1: please help"}
    assert assistant == {"role": "assistant", "content": "shipping"}
    assert [line["example_id"] for line in lineage] == [f"ex-{n}" for n in range(20)]
    assert lineage[3] == {
        "example_id": "ex-3",
        "source_id": "ticket-3",
        "record_id": "rec-3",
        "event_id": "evt-3",
        "label_source": "human",
        "voters": ["ann"],
    }
    expected_hash = hashlib.sha256(
        artifacts.get_bytes(prefix + "train.jsonl") + artifacts.get_bytes(prefix + "eval.jsonl")
    ).hexdigest()
    assert manifest["content_hash"] == f"sha256:{expected_hash}"
    assert info.dataset_id == "ds-" + expected_hash[:16]
    assert manifest["counts"] == {"train": 16, "eval": 4}
    assert manifest["examples"] == 20
    assert manifest["labels"] == {
        "train": {"shipping": 4, "account": 4, "warranty": 4, "refund": 4},
        "eval": {"refund": 1, "shipping": 1, "account": 1, "warranty": 1},
    }
    assert manifest["objective"] == name
    assert manifest["objective_version"] == 3
    assert manifest["reason"] == "manual"
    assert manifest["parent"] is None
    assert manifest["rules"] == ["refund/any#0", "shipping/regex#1"]
    assert manifest["files"] == {
        "train": prefix + "train.jsonl",
        "eval": prefix + "eval.jsonl",
        "lineage": prefix + "lineage.jsonl",
    }
    assert manifest["split"] == {"eval_fraction": 0.2}
    assert manifest["instruction"] == system["content"]
    assert builder.latest(name) == manifest
    assert builder.manifests(name) == [manifest]
    # Temporary files are gone.
    assert list((tmp_path / "work").iterdir()) == []

    [event] = snapshot_events(stack, name, expect=1)
    assert kafka_io.header(event, "ce_type") == b"tunewire.v1.DatasetSnapshot"
    assert kafka_io.header(event, "ce_id") == (
        envelope.derived_id("dataset", name, info.dataset_id).encode()
    )
    payload = datasets_pb2.DatasetSnapshot.FromString(event.value)
    assert payload.dataset_id == info.dataset_id
    assert payload.uri == info.uri
    assert dict(payload.split_counts) == {"train": 16, "eval": 4}
    assert dict(payload.label_counts) == dict.fromkeys(LABELS, 5)
    assert payload.content_hash == manifest["content_hash"]
    assert payload.parent_dataset_id == ""
    assert payload.objective_version == 3


def test_the_same_examples_give_the_same_snapshot_once(
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
    stack: embedded.EmbeddedStack,
) -> None:
    add(log, objective.name, range(10))
    first = builder.build(objective, rules=[], reason="trigger")

    again = builder.build(objective, rules=[], reason="retry")

    assert not again.created
    assert again.dataset_id == first.dataset_id
    assert again.manifest == first.manifest  # not rewritten: still says "trigger"
    assert len(snapshot_events(stack, objective.name, expect=1)) == 1


def test_snapshots_chain_to_their_parent_and_keep_each_split(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
    stack: embedded.EmbeddedStack,
) -> None:
    add(log, objective.name, range(10))
    first = builder.build(objective, rules=[], reason="first")
    add(log, objective.name, range(10, 25))

    second = builder.build(objective, rules=[], reason="more examples")

    assert second.created and second.dataset_id != first.dataset_id
    assert second.manifest["parent"] == first.dataset_id
    assert second.manifest["examples"] == 25
    assert builder.latest(objective.name) == second.manifest
    assert [m["dataset_id"] for m in builder.manifests(objective.name)] == [
        first.dataset_id,
        second.dataset_id,
    ]
    # Every example kept its split: the eval set only grew.
    first_eval = {line["id"] for line in jsonl(artifacts, first.manifest["files"]["eval"])}
    second_eval = {line["id"] for line in jsonl(artifacts, second.manifest["files"]["eval"])}
    second_train = {line["id"] for line in jsonl(artifacts, second.manifest["files"]["train"])}
    assert first_eval < second_eval
    assert not first_eval & second_train
    events = snapshot_events(stack, objective.name, expect=2)
    parents = [datasets_pb2.DatasetSnapshot.FromString(e.value).parent_dataset_id for e in events]
    assert parents == ["", first.dataset_id]


def test_a_later_label_of_the_same_item_replaces_the_earlier_one(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
) -> None:
    add(log, objective.name, range(4))
    log.append(example(objective.name, 1, label="warranty", label_source="human", voters=("a",)))
    log.append(example(objective.name, 9, label="no-longer-a-label"))
    log.flush()

    info = builder.build(objective, rules=[], reason="relabel")

    train = jsonl(artifacts, info.manifest["files"]["train"])
    assert [line["id"] for line in train] == ["ex-2", "ex-3", "ex-1"]
    assert train[-1]["messages"][2]["content"] == "warranty"
    assert info.manifest["examples"] == 4
    assert info.manifest["dropped"] == {"superseded": 1, "unknown_label": 1}


def test_an_objective_without_examples_has_no_snapshot(
    builder: snapshots.SnapshotBuilder, objective: objectives.ObjectiveVersion
) -> None:
    with pytest.raises(errors.InvalidRequest, match="no labelled examples yet"):
        builder.build(objective, rules=[], reason="manual")
    assert builder.manifests(objective.name) == []
    assert builder.latest(objective.name) is None


class BrokenProducer(producing.Producer):
    """A producer whose broker is gone at the worst moment: after the manifest."""

    def publish(
        self,
        topic: str,
        payload: protobuf_message.Message,
        *,
        key: str,
        event: envelope.Envelope,
    ) -> None:
        raise errors.Unavailable("Kafka went away")


def test_a_crash_before_the_announcement_is_repaired_once(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
    stack: embedded.EmbeddedStack,
) -> None:
    add(log, objective.name, range(8))
    broken = BrokenProducer(
        settings.KafkaSettings(bootstrap_servers=stack.bootstrap_servers), client_id="broken"
    )
    try:
        with pytest.raises(errors.Unavailable):
            snapshots.SnapshotBuilder(artifacts, log, broken).build(
                objective, rules=[], reason="crash"
            )
    finally:
        broken.close()
    [manifest] = builder.manifests(objective.name)
    assert builder.latest(objective.name) is None  # complete, but not announced

    assert builder.announce_pending(objective.name) == 1
    assert builder.announce_pending(objective.name) == 0

    assert builder.latest(objective.name) == manifest
    [event] = snapshot_events(stack, objective.name, expect=1)
    assert kafka_io.header(event, "ce_id") == (
        envelope.derived_id("dataset", objective.name, manifest["dataset_id"]).encode()
    )
    retried = builder.build(objective, rules=[], reason="retry")
    assert not retried.created and retried.manifest == manifest
    assert len(snapshot_events(stack, objective.name, expect=1)) == 1


def test_a_retried_build_finishes_an_unannounced_snapshot(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
    stack: embedded.EmbeddedStack,
) -> None:
    add(log, objective.name, range(8))
    broken = BrokenProducer(
        settings.KafkaSettings(bootstrap_servers=stack.bootstrap_servers), client_id="broken"
    )
    try:
        with pytest.raises(errors.Unavailable):
            snapshots.SnapshotBuilder(artifacts, log, broken).build(
                objective, rules=[], reason="crash"
            )
    finally:
        broken.close()

    retried = builder.build(objective, rules=[], reason="retry")

    assert not retried.created
    assert builder.latest(objective.name) == retried.manifest
    assert builder.announce_pending(objective.name) == 0
    assert len(snapshot_events(stack, objective.name, expect=1)) == 1


def test_parts_without_a_manifest_are_absent_and_get_overwritten(
    artifacts: store.ArtifactStore,
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
) -> None:
    add(log, objective.name, range(6))
    first = builder.build(objective, rules=[], reason="first")
    # A build of more examples that died after uploading one part.
    artifacts.put_bytes(f"datasets/{objective.name}/ds-0000000000000000/train.jsonl", b"junk\n")
    assert [m["dataset_id"] for m in builder.manifests(objective.name)] == [first.dataset_id]
    assert builder.announce_pending(objective.name) == 0

    # The leftovers of the very snapshot about to be built: half-written parts, no manifest.
    add(log, objective.name, range(6, 9))
    probe = builder.build(objective, rules=[], reason="probe")
    prefix = f"datasets/{objective.name}/{probe.dataset_id}/"
    for name in ("manifest.json", "announced.json"):
        artifacts.delete(prefix + name)
    artifacts.put_bytes(prefix + "train.jsonl", b"truncated")
    assert probe.dataset_id not in [m["dataset_id"] for m in builder.manifests(objective.name)]

    rebuilt = builder.build(objective, rules=[], reason="rebuild")

    assert rebuilt.created and rebuilt.dataset_id == probe.dataset_id
    assert artifacts.get_bytes(prefix + "train.jsonl") != b"truncated"
    assert len(jsonl(artifacts, prefix + "train.jsonl")) == rebuilt.manifest["counts"]["train"]


def _traced_build(
    builder: snapshots.SnapshotBuilder,
    log: examples.ExampleLog,
    objective: objectives.ObjectiveVersion,
    total: int,
) -> tuple[snapshots.SnapshotInfo, int]:
    """Build a snapshot of ``total`` examples; its manifest and the traced peak in bytes."""
    for start in range(0, total, 10_000):
        add(log, objective.name, range(start, min(start + 10_000, total)))
    tracemalloc.start()
    try:
        info = builder.build(objective, rules=[], reason="load")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info, peak


def test_a_snapshot_streams_in_memory_that_does_not_grow_with_its_size(
    log: examples.ExampleLog,
    builder: snapshots.SnapshotBuilder,
    objective: objectives.ObjectiveVersion,
) -> None:
    def sized(n: int) -> objectives.ObjectiveVersion:
        return objective.model_copy(update={"name": f"{objective.name}-{n}"})

    _traced_build(builder, log, sized(1_000), 1_000)  # first use of the clients, untraced peak
    small, large = 10_000, 30_000
    small_info, small_peak = _traced_build(builder, log, sized(small), small)
    large_info, large_peak = _traced_build(builder, log, sized(large), large)

    for info, total in ((small_info, small), (large_info, large)):
        assert info.manifest["examples"] == total
        assert info.manifest["counts"] == {"train": total * 4 // 5, "eval": total // 5}
    # Holding the examples would cost ~300 bytes each (20,000 more: ~6 MiB). Streamed through
    # an on-disk table and uploaded from disk part by part, three times the examples take the
    # same memory (bench/label.py measures 1,000,000).
    growth = large_peak - small_peak
    assert growth < 1 * 2**20, (
        f"peak grew {growth / 2**20:.1f} MiB from {small:,} to {large:,} examples "
        f"({small_peak / 2**20:.1f} -> {large_peak / 2**20:.1f} MiB)"
    )
    assert large_peak < 32 * 2**20, f"peak traced memory {large_peak / 2**20:.1f} MiB"
