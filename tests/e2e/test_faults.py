"""Faults across the whole loop, on a stack of its own, each test bounded in time.

Every service of this stack reaches S3 through a proxy the tests can cut. Each test feeds an
objective of its own a stream of sample tickets (over Kafka, a few chunks a second, so that
faults land mid-stream) and follows it to a served adapter:

- a SIGKILL of label, train and evaluate at their busiest moments loses and repeats nothing;
- S3 gone for 10 s, twice (while events stream, while the trainer trains), delays the loop
  and loses nothing;
- broker restarts with memory storage (every topic and committed offset gone) lose only what
  was on the topics; the services carry on from their state in S3, and the handoffs lost
  with the topics (a snapshot, a run's success) are announced again (last: it empties the
  topics the other tests read).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import gzip
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ingest.test_kafka_events import RAW, binary
from tests.support import kafka_io, metrics, proxy, waiting
from tests.support.events import events_for
from tests.support.stacks import TOKEN, artifact_store, client_of, service_specs
from tunewire import samples
from tunewire.contracts.v1 import evaluations_pb2, records_pb2, training_pb2
from tunewire.core.base import store
from tunewire.label import examples
from tunewire.stack import embedded, processes
from tunewire.train import runs

pytestmark = pytest.mark.stack

OUTAGE_S = 10.0
EVENTS = 300
EVENTS_AFTER_RESTARTS = 100
"""New events of the broker-restart test's second round: enough that its snapshot outgrows
the first, few enough that its run (trained and scored on every example so far) stays short."""
REPEAT_SOON = {
    "TUNEWIRE_LABEL__REPEAT_ANNOUNCEMENT_EVERY_S": "2",
    "TUNEWIRE_TRAIN__REPEAT_SUCCESS_EVERY_S": "2",
}
"""Handoff events lost with a broker's topics are announced again within seconds."""
LOOP_BOUND_S = 240.0
"""Each test's limit: its loop takes about a minute on two cores without faults."""


@dataclasses.dataclass
class FaultStack:
    """The stack, its S3 proxy, and clients of the services' APIs."""

    stack: embedded.EmbeddedStack
    s3_proxy: proxy.CuttableProxy
    artifacts: store.ArtifactStore

    def client(self, service: str) -> httpx.Client:
        return client_of(self.stack.service_urls[service])

    def outage(self, seconds: float = OUTAGE_S) -> threading.Timer:
        """Cut S3 now, restore it after ``seconds``; returns the restoring timer."""
        self.s3_proxy.cut()
        timer = threading.Timer(seconds, self.s3_proxy.restore)
        timer.start()
        return timer


@pytest.fixture(scope="module")
def faults(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[FaultStack]:
    cut: list[proxy.CuttableProxy] = []

    def behind_proxy(spec: processes.ServiceSpec) -> embedded.ServiceFactory:
        def build(stack: embedded.EmbeddedStack) -> processes.ServiceSpec:
            if not cut:
                endpoint = urllib.parse.urlsplit(stack.s3_endpoint_url)
                cut.append(
                    proxy.CuttableProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
                )
            env = {
                **spec.env,
                **REPEAT_SOON,
                "TUNEWIRE_S3__ENDPOINT_URL": f"http://127.0.0.1:{cut[0].port}",
            }
            return dataclasses.replace(spec, env=env)

        return build

    state: Path = tmp_path_factory.mktemp("fault-stack")
    running = embedded.EmbeddedStack(state, api_tokens=[TOKEN])
    running.up([behind_proxy(spec) for spec in service_specs()])
    try:
        yield FaultStack(running, cut[0], artifact_store(running, monkeypatch_module))
    finally:
        running.down(snapshot=False)
        for item in cut:
            item.close()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# -- driving the loop --------------------------------------------------------------------------


def register(faults: FaultStack) -> dict[str, Any]:
    """The sample objective under a fresh name and event type: first snapshot at 200."""
    suffix = uuid.uuid4().hex[:8]
    spec = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"fault-{suffix}"
    spec["source"]["event_type"] = f"ticket.created.fault.{suffix}"
    # One snapshot by trigger; any later one on request, so a test knows which to follow.
    spec["dataset"] = {**spec["dataset"], "min_examples": 200, "retrain_every": 1_000_000}
    with faults.client("ingest") as ingest:
        response = ingest.post("/v1/objectives", json=spec)
    assert response.status_code == 201, response.text
    return spec


def stream(
    faults: FaultStack, events: list[dict[str, Any]], *, chunk: int = 10, every_s: float = 0.1
) -> threading.Thread:
    """Produce ``events`` to the raw topic in chunks, in the background."""

    def produce() -> None:
        for start in range(0, len(events), chunk):
            kafka_io.produce(
                faults.stack.bootstrap_servers,
                RAW,
                (binary(e) for e in events[start : start + chunk]),
            )
            time.sleep(every_s)  # a stream, not a burst: faults land mid-stream

    thread = threading.Thread(target=produce, name="stream-events", daemon=True)
    thread.start()
    return thread


def label_handled(faults: FaultStack, objective: str) -> float:
    """Records label has decided on (any outcome) since its process started."""
    return metrics.counter(
        faults.stack.service_urls["label"],
        f'tunewire_label_records_total{{objective="{objective}"',
    )


def until_label_handled(faults: FaultStack, objective: str, count: int) -> None:
    """Wait until label has decided on ``count`` records of ``objective``."""
    waiting.eventually(
        lambda: label_handled(faults, objective),
        ready=lambda handled: handled >= count,
        timeout_s=120,
        interval_s=0.1,
        what=f"label handling {count} records of {objective}",
    )


def first_snapshot(faults: FaultStack, objective: str) -> str:
    with faults.client("label") as label:
        listing = waiting.poll_json(
            label, f"/v1/datasets/{objective}", lambda body: body["snapshots"], timeout_s=120
        )
    dataset_id: str = listing["snapshots"][0]["dataset_id"]
    return dataset_id


def run_of(faults: FaultStack, objective: str, run_id: str, done: Callable[[Any], object]) -> Any:
    with faults.client("train") as train:
        return waiting.poll_json(train, f"/v1/runs/{objective}/{run_id}", done, interval_s=0.1)


def decision(faults: FaultStack, objective: str, run_id: str) -> dict[str, Any]:
    with faults.client("evaluate") as evaluate:
        decided: dict[str, Any] = waiting.poll_json(
            evaluate, f"/v1/evaluations/{objective}/{run_id}", lambda e: e.get("decision")
        )
    return decided


def served_by(faults: FaultStack, objective: str, run_id: str) -> None:
    """Wait until the alias routes to ``run_id``, then ask it a ticket."""
    with faults.client("serve") as serve:
        waiting.poll_json(
            serve,
            "/v1/models",
            lambda body: any(
                m["id"] == objective and m["root"] == f"{objective}@{run_id}" for m in body["data"]
            ),
            timeout_s=120,
        )
        reply = serve.post(
            "/v1/chat/completions",
            json={
                "model": objective,
                "messages": [{"role": "user", "content": "I was charged twice, refund please"}],
                "max_tokens": 4,
            },
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == f"{objective}@{run_id}"


# -- what the stores and topics hold -----------------------------------------------------------


def records_of(faults: FaultStack, objective: str, want: int) -> dict[str, str]:
    """The objective's records on ``tunewire.records``: record id (``ce_id``) to event id."""
    key = objective.encode()
    reader = kafka_io.TopicReader(faults.stack.bootstrap_servers, "tunewire.records")
    try:
        reader.read_until(
            lambda msgs: len({m.value for m in msgs if m.key == key}) >= want, timeout_s=60
        )
        reader.drain(quiet_s=1.0)
        return {
            (kafka_io.header(m, "ce_id") or b"").decode(): records_pb2.Record.FromString(
                m.value
            ).event_id
            for m in reader.messages
            if m.key == key
        }
    finally:
        reader.close()


def phases_about(
    faults: FaultStack, topic: str, run_id: str, parse: Callable[[bytes], Any]
) -> dict[str, collections.Counter[str]]:
    """Event ids about ``run_id`` on ``topic``, by phase (the ``phase`` oneof, if the event
    has one), with how often each id was published."""
    reader = kafka_io.TopicReader(faults.stack.bootstrap_servers, topic)
    try:
        reader.drain(quiet_s=1.0)
        found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for message in reader.messages:
            event = parse(message.value)
            if event.run_id == run_id:
                phases = event.DESCRIPTOR.oneofs_by_name
                phase = event.WhichOneof("phase") if "phase" in phases else None
                event_id = (kafka_io.header(message, "ce_id") or b"").decode()
                found[phase or "result"][event_id] += 1
        return found
    finally:
        reader.close()


def seen_by_label(faults: FaultStack) -> set[str]:
    """Every record id label has made durable (its seen window in S3)."""
    ids: set[str] = set()
    for key in faults.artifacts.list_keys("state/label/seen/"):
        ids.update(gzip.decompress(faults.artifacts.get_bytes(key)).decode().split("\n"))
    return ids


def assert_label_lost_and_repeated_nothing(
    faults: FaultStack, objective: str, records: set[str]
) -> None:
    """Every record's outcome is durable, and no source item became two examples."""
    missing = records - seen_by_label(faults)
    assert not missing, f"{len(missing)} records never handled durably, e.g. {sorted(missing)[:3]}"
    stored = [e.source_id for e in examples.ExampleLog(faults.artifacts).iter_examples(objective)]
    repeated = {s: n for s, n in collections.Counter(stored).items() if n > 1}
    assert not repeated, f"examples stored twice: {repeated}"
    assert 0.5 * len(records) < len(stored) <= len(records)


def assert_one_of_each(faults: FaultStack, objective: str, run_id: str) -> None:
    """One run for the snapshot, one terminal training event, one evaluation result.

    Events are published at least once: a repeat after a crash carries the same id, so
    consumers drop it; what must never happen is a second, different terminal event.
    """
    with faults.client("train") as train:
        listed = train.get("/v1/runs", params={"objective": objective}).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]
    training = phases_about(
        faults, "tunewire.training", run_id, training_pb2.TrainingEvent.FromString
    )
    terminal = {p: ids for p, ids in training.items() if p in ("succeeded", "failed", "cancelled")}
    assert list(terminal) == ["succeeded"] and len(terminal["succeeded"]) == 1, training
    results = phases_about(
        faults, "tunewire.evaluations", run_id, evaluations_pb2.EvaluationResult.FromString
    )
    assert len(results["result"]) == 1, results


def assert_the_loop_ran_once(
    faults: FaultStack, objective: str, events: list[dict[str, Any]], run_id: str
) -> None:
    """The run's adapter approved and served; every event became one record, label handled
    every record and stored no item twice; one run, one training outcome, one decision."""
    assert decision(faults, objective, run_id)["decision"] == "approved"
    served_by(faults, objective, run_id)
    records = records_of(faults, objective, len(events))
    assert set(records.values()) == {e["id"] for e in events}
    assert_label_lost_and_repeated_nothing(faults, objective, set(records))
    assert_one_of_each(faults, objective, run_id)


# -- the faults --------------------------------------------------------------------------------


def test_killed_services_lose_and_repeat_nothing(faults: FaultStack) -> None:
    started = time.monotonic()
    spec = register(faults)
    name = spec["name"]
    events = events_for(spec, EVENTS, seed=501)
    producing = stream(faults, events)

    until_label_handled(faults, name, 60)
    faults.stack.restart_service("label", kill=True)
    producing.join(timeout=60)
    dataset_id = first_snapshot(faults, name)
    run_id = runs.run_id_for(name, dataset_id)

    run_of(faults, name, run_id, lambda run: (run.get("progress") or {}).get("step", 0) >= 1)
    faults.stack.restart_service("train", kill=True)
    run_of(faults, name, run_id, lambda run: run["status"] == "succeeded")
    # At once: the evaluate service has just been told, or is about to be.
    faults.stack.restart_service("evaluate", kill=True)
    assert_the_loop_ran_once(faults, name, events, run_id)
    assert time.monotonic() - started < LOOP_BOUND_S


def test_s3_outages_delay_the_loop_and_lose_nothing(faults: FaultStack) -> None:
    started = time.monotonic()
    spec = register(faults)
    name = spec["name"]
    events = events_for(spec, EVENTS, seed=502)
    producing = stream(faults, events, every_s=0.2)

    until_label_handled(faults, name, 60)
    first = faults.outage()  # ingest's archive and label's flushes wait
    producing.join(timeout=60)
    first.join()
    dataset_id = first_snapshot(faults, name)
    run_id = runs.run_id_for(name, dataset_id)

    run_of(faults, name, run_id, lambda run: (run.get("progress") or {}).get("step", 0) >= 1)
    faults.outage().join()  # the trainer's progress and checkpoints, train, evaluate, serve
    run_of(faults, name, run_id, lambda run: run["status"] == "succeeded")
    assert_the_loop_ran_once(faults, name, events, run_id)
    assert time.monotonic() - started < LOOP_BOUND_S + 2 * OUTAGE_S


def test_memory_broker_restarts_lose_the_topics_and_the_services_carry_on_from_s3(
    faults: FaultStack,
) -> None:
    """Last in the module: it empties every topic, three times.

    A broker without persistent storage comes back as a new, empty cluster: what was on the
    topics and every committed offset is gone. Nothing the services made durable is: the
    objective catalog, seen ids, examples, snapshots, runs and the registry live in S3.

    1. After a first loop: a business system replaying its events gets them dropped as
       duplicates, a restarted label counts on from its stored examples (the second
       snapshot, built on request, follows the first and holds more), a restarted serve
       serves the champion.
    2. A snapshot announced while train is down, then lost with the topics: label announces
       its newest snapshot again now and then, so train still trains it.
    3. A run's success lost the same way while evaluate is down: train announces its newest
       success again, so evaluate still evaluates it.
    """
    started = time.monotonic()
    spec = register(faults)
    name = spec["name"]
    before = events_for(spec, EVENTS, seed=503)
    stream(faults, before).join(timeout=60)
    first_run = runs.run_id_for(name, first_snapshot(faults, name))
    with faults.client("label") as label:
        first = label.get(f"/v1/datasets/{name}").json()["snapshots"][0]
    assert decision(faults, name, first_run)["decision"] == "approved"
    served_by(faults, name, first_run)

    faults.stack.restart_broker(kill=True)
    # Both read only S3 at start-up: there is nothing left on the topics to replay.
    faults.stack.restart_service("label", kill=True)
    faults.stack.restart_service("serve", kill=True)
    served_by(faults, name, first_run)

    after = events_for(spec, EVENTS_AFTER_RESTARTS, seed=504)
    second: dict[str, Any] = {}

    def lose_the_snapshot_event() -> None:
        stream(faults, before[:50] + after).join(timeout=60)
        records = records_of(faults, name, len(after))
        assert set(records.values()) == {e["id"] for e in after}, "replayed events came back"
        until_label_handled(faults, name, len(after))
        with faults.client("label") as label:
            built = label.post(f"/v1/datasets/{name}")
        assert built.status_code == 201, built.text
        second.update(built.json())
        # Label counted on from the examples it had stored before the restarts.
        assert second["parent"] == first["dataset_id"]
        assert second["examples"] > first["examples"]
        faults.stack.restart_broker(kill=True)

    faults.stack.restart_service("train", kill=True, while_down=lose_the_snapshot_event)
    second_run = runs.run_id_for(name, second["dataset_id"])

    def lose_the_success() -> None:
        run_of(faults, name, second_run, lambda run: run["status"] == "succeeded")
        faults.stack.restart_broker(kill=True)

    faults.stack.restart_service("evaluate", kill=True, while_down=lose_the_success)
    decided = decision(faults, name, second_run)
    champion = first_run if decided["decision"] == "rejected" else second_run
    served_by(faults, name, champion)
    assert time.monotonic() - started < 2 * LOOP_BOUND_S
