"""Dataset snapshots written straight to S3 and announced on the broker, for tests that
start at training: the same files and event the label service produces."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import uuid
from typing import Any

from tests.support import kafka_io
from tunewire import samples
from tunewire.contracts.v1 import datasets_pb2
from tunewire.core.base import store
from tunewire.core.bus import envelope, topics
from tunewire.core.state import objectives

INSTRUCTION = (
    "Route incoming support tickets to the right team by intent.\nClassify the user's text. "
    "Answer with exactly one of these labels: refund, shipping, account, warranty."
)


def quick_objective(name: str, **changes: Any) -> objectives.ObjectiveSpec:
    """The sample objective under another name, with training settings small enough for a
    test (a few seconds on two cores); ``changes`` replace top-level fields."""
    document = samples.support_intent_spec()
    document.update(
        name=name,
        training={"epochs": 2, "lr": 0.003, "batch_size": 16, "max_seq_len": 96, "gpu": 0},
    )
    document.update(changes)
    return objectives.ObjectiveSpec.model_validate(document)


def register(artifacts: store.ArtifactStore, spec: objectives.ObjectiveSpec) -> int:
    """Register (or update) the objective; returns its version."""
    catalog = objectives.ObjectiveCatalog(artifacts)
    if catalog.versions(spec.name):
        return catalog.update(spec.name, spec, actor="test").version
    return catalog.register(spec, actor="test").version


def write_snapshot(
    artifacts: store.ArtifactStore,
    *,
    objective: str,
    version: int,
    train: int = 160,
    eval_: int = 40,
    seed: int = 11,
    shuffle_labels: bool = False,
) -> datasets_pb2.DatasetSnapshot:
    """Write train/eval files and a manifest of sample tickets; returns the event to send.

    ``shuffle_labels`` gives every example a random label: a deliberately mislabelled
    snapshot that no adapter should learn anything useful from.
    """
    rng = random.Random(seed)
    tickets = list(samples.labelled_tickets(train + eval_, seed=seed))
    splits: dict[str, list[str]] = {"train": [], "eval": []}
    counts: dict[str, dict[str, int]] = {"train": {}, "eval": {}}
    for number, (event, label) in enumerate(tickets):
        split = "train" if number < train else "eval"
        if shuffle_labels:
            label = rng.choice(samples.LABELS)
        data = event["data"]
        line = {
            "id": f"ex-{seed}-{number}",
            "source_id": data["ticket_id"],
            "messages": [
                {"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": f"{data['subject']}\n{data['body']}"},
                {"role": "assistant", "content": label},
            ],
        }
        splits[split].append(json.dumps(line))
        counts[split][label] = counts[split].get(label, 0) + 1
    content = "\n".join(splits["train"] + splits["eval"]).encode()
    digest = hashlib.sha256(content).hexdigest()
    dataset_id = f"ds-test-{digest[:10]}-{uuid.uuid4().hex[:4]}"
    prefix = f"datasets/{objective}/{dataset_id}/"
    for split, lines in splits.items():
        artifacts.put_bytes(f"{prefix}{split}.jsonl", ("\n".join(lines) + "\n").encode())
    artifacts.put_json(
        prefix + "manifest.json",
        {
            "dataset_id": dataset_id,
            "objective": objective,
            "objective_version": version,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "task": "classification",
            "instruction": INSTRUCTION,
            "counts": {split: len(lines) for split, lines in splits.items()},
            "labels": counts,
            "examples": train + eval_,
            "content_hash": f"sha256:{digest}",
            "parent": None,
        },
    )
    label_counts: dict[str, int] = {}
    for per_split in counts.values():
        for label, n in per_split.items():
            label_counts[label] = label_counts.get(label, 0) + n
    return datasets_pb2.DatasetSnapshot(
        objective=objective,
        dataset_id=dataset_id,
        uri=artifacts.uri(prefix),
        split_counts={split: len(lines) for split, lines in splits.items()},
        label_counts=label_counts,
        content_hash=f"sha256:{digest}",
        objective_version=version,
    )


def announce(bootstrap: str, snapshot: datasets_pb2.DatasetSnapshot, *, times: int = 1) -> None:
    """Publish the snapshot event as label does (``times`` > 1 redelivers the same event)."""
    event = envelope.for_payload(
        snapshot,
        id=envelope.derived_id("dataset", snapshot.objective, snapshot.dataset_id),
        source="tests",
    )
    message = (snapshot.objective.encode(), snapshot.SerializeToString(), event.headers())
    kafka_io.produce(bootstrap, topics.DATASETS, [message] * times)
