"""A restarted label process remembers what its predecessor queued for humans, not only what
it labelled: a redelivered or near-identical record never becomes a second task."""

from __future__ import annotations

import copy
import pathlib
import uuid

from tests.support import datasets
from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import store
from tunewire.core.bus import producing
from tunewire.core.state import objectives
from tunewire.label import config, examples, pipeline, queue, snapshots

UNDECIDED = "Question about my order\nCan I change the colour of the sofa I picked?"
"""No rule of the sample objective votes on this text: it waits for a person."""


def _process(
    artifacts: store.ArtifactStore, producer: producing.Producer, workdir: pathlib.Path
) -> pipeline.LabelPipeline:
    """A label process's pipeline, as ``python -m tunewire.label`` wires it."""
    log = examples.ExampleLog(artifacts)
    return pipeline.LabelPipeline(
        limits=config.LabelLimits(),
        catalog=objectives.ObjectiveCatalog(artifacts),
        artifacts=artifacts,
        producer=producer,
        human_queue=queue.HumanQueue(artifacts),
        builder=snapshots.SnapshotBuilder(artifacts, log, producer, workdir=workdir),
        log_=log,
    )


def _record(objective: str, source_id: str, text: str) -> producing.Message:
    record = records_pb2.Record(
        objective=objective, source_id=source_id, text=text, event_id=f"evt-{uuid.uuid4().hex}"
    )
    headers = [("ce_id", f"rec-{uuid.uuid4().hex}".encode())]
    return producing.Message(
        "tunewire.records", 0, 0, objective.encode(), record.SerializeToString(), headers
    )


def test_a_restarted_process_remembers_the_queued_items(
    artifacts: store.ArtifactStore, producer: producing.Producer, tmp_path: pathlib.Path
) -> None:
    document = copy.deepcopy(samples.support_intent_spec())
    document["name"] = f"restore-{uuid.uuid4().hex[:8]}"
    name = document["name"]
    datasets.register(artifacts, objectives.parse_spec(document))

    first = _process(artifacts, producer, tmp_path / "first")
    first.handle(_record(name, "ticket-1", UNDECIDED))
    first.flush()
    assert first.queue.counts(name)["open"] == 1

    second = _process(artifacts, producer, tmp_path / "second")
    second.handle(_record(name, "ticket-2", UNDECIDED + " Thanks!"))  # a near-identical one
    second.handle(_record(name, "ticket-1", UNDECIDED))  # the same item, published again
    second.flush()

    assert second.queue.counts(name)["open"] == 1
    assert [t.source_id for t in second.queue.tasks(name)] == ["ticket-1"]
