"""A sealed flush makes durable exactly what was handled before it, in the order sealed,
while the consumer goes on labelling (see ``consuming.SealingHandler``)."""

from __future__ import annotations

import copy
import pathlib
import uuid

from tests.label.test_restore import _process, _record
from tests.support import datasets
from tunewire import samples
from tunewire.core.base import store
from tunewire.core.bus import producing
from tunewire.core.state import objectives
from tunewire.label import examples

REFUND = "Please refund my order, it never came"
SHIPPING = "My parcel is late and tracking shows nothing"


def _objective(artifacts: store.ArtifactStore) -> str:
    document = copy.deepcopy(samples.support_intent_spec())
    document["name"] = f"sealing-{uuid.uuid4().hex[:8]}"
    datasets.register(artifacts, objectives.parse_spec(document))
    return str(document["name"])


def _sources(log: examples.ExampleLog, objective: str) -> list[str]:
    return [example.source_id for example in log.iter_examples(objective)]


def test_a_sealed_flush_makes_only_what_was_handled_before_it_durable(
    artifacts: store.ArtifactStore, producer: producing.Producer, tmp_path: pathlib.Path
) -> None:
    name = _objective(artifacts)
    flow = _process(artifacts, producer, tmp_path / "flow")
    before = _record(name, "ticket-1", REFUND)
    after = _record(name, "ticket-2", SHIPPING)
    flow.handle(before)
    make_durable = flow.seal()
    flow.handle(after)  # handled while the sealed batch is being written
    make_durable()

    log = examples.ExampleLog(artifacts)
    assert _sources(log, name) == ["ticket-1"]
    restarted = _process(artifacts, producer, tmp_path / "restarted")
    restarted.seen.refresh()  # as a starting label process does
    assert before.header("ce_id").decode() in restarted.seen  # type: ignore[union-attr]
    assert after.header("ce_id").decode() not in restarted.seen  # type: ignore[union-attr]

    flow.flush()
    assert _sources(log, name) == ["ticket-1", "ticket-2"]
    restarted.seen.refresh()
    assert after.header("ce_id").decode() in restarted.seen  # type: ignore[union-attr]


def test_a_flush_first_finishes_what_was_sealed_before_it(
    artifacts: store.ArtifactStore, producer: producing.Producer, tmp_path: pathlib.Path
) -> None:
    name = _objective(artifacts)
    flow = _process(artifacts, producer, tmp_path / "flow")
    flow.handle(_record(name, "ticket-1", REFUND))
    sealed_first = flow.seal()
    flow.handle(_record(name, "ticket-2", SHIPPING))
    flow.flush()  # e.g. a human label's flush from the API, before the consumer's finished
    assert _sources(examples.ExampleLog(artifacts), name) == ["ticket-1", "ticket-2"]
    sealed_first()  # already done: nothing is written twice
    assert _sources(examples.ExampleLog(artifacts), name) == ["ticket-1", "ticket-2"]
