"""The label service on the embedded stack: records → rule labels → queue → snapshots."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import httpx
import kafka
import pytest
from kafka.structs import OffsetAndMetadata, TopicPartition

from tests.support import kafka_io, metrics
from tests.support.stacks import TOKENS
from tests.support.waiting import eventually
from tunewire import samples
from tunewire.contracts.v1 import datasets_pb2, examples_pb2, records_pb2
from tunewire.stack import embedded, ports, processes

LABELLED_S = 90
"""How long the label service gets to act on what a test sent."""


@pytest.fixture
def labelled_objective(api: httpx.Client) -> dict[str, Any]:
    """An objective with the sample rules, a human queue and a small first snapshot."""
    suffix = uuid.uuid4().hex[:8]
    spec = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"label-{suffix}"
    spec["source"]["event_type"] = f"ticket.label.{suffix}"
    spec["dataset"] = {"eval_fraction": 0.25, "min_examples": 30, "retrain_every": 20}
    assert api.post("/v1/objectives", json=spec).status_code == 201
    return spec


def _send(api: httpx.Client, spec: dict[str, Any], count: int, *, seed: int) -> dict[str, str]:
    """Send tickets through ingest; returns ticket_id → the intent it was written for."""
    truth = {}
    events = []
    for event, intent in samples.labelled_tickets(count, seed=seed):
        event["type"] = spec["source"]["event_type"]
        event["id"] = f"{spec['name']}-{event['id']}"
        truth[event["data"]["ticket_id"]] = intent
        events.append(event)
    assert api.post("/v1/events", json=events).status_code == 202
    return truth


def test_records_become_examples_tasks_and_a_snapshot(
    api: httpx.Client,
    label_api: httpx.Client,
    labelled_objective: dict[str, Any],
    stack: embedded.EmbeddedStack,
    s3: Any,
) -> None:
    name = labelled_objective["name"]
    truth = _send(api, labelled_objective, 60, seed=501)

    def settled() -> dict[str, Any]:
        status: dict[str, Any] = label_api.get(f"/v1/queue/{name}").json()
        queued = status["counts"].get("open", 0)
        # Examples count as they are labelled; queued tasks appear at the next flush.
        assert queued and status["examples"] + queued >= 55, status
        return status

    status = eventually(settled, timeout_s=LABELLED_S, interval_s=0.3)
    assert status["counts"]["open"] >= 1, "conflicts and abstentions wait for a human"

    # An annotator works the queue; each resolved task becomes an example. Who answers is
    # whoever the token names: a name in the body counts for nothing, and a viewer may not.
    a1 = {"Authorization": f"Bearer {TOKENS['a1']}"}
    viewer = {"Authorization": f"Bearer {TOKENS['only-viewer']}"}
    assert label_api.post(f"/v1/queue/{name}/claim", headers=viewer).status_code == 403
    answered = 0
    while True:
        claim = label_api.post(f"/v1/queue/{name}/claim", json={"annotator": "a2"}, headers=a1)
        if claim.status_code == 204:
            break
        task = claim.json()["task"]
        intent = truth[task["source_id"]]
        wrong = label_api.post(
            f"/v1/queue/{name}/tasks/{task['task_id']}/answer",
            json={"label": "not-a-label", "claim_id": claim.json()["claim_id"]},
            headers=a1,
        )
        assert wrong.status_code == 422
        result = label_api.post(
            f"/v1/queue/{name}/tasks/{task['task_id']}/answer",
            json={"label": intent, "claim_id": claim.json()["claim_id"]},
            headers=a1,
        )
        assert result.status_code == 200, result.text
        assert result.json()["resolved"]["label"] == intent
        again = label_api.post(
            f"/v1/queue/{name}/tasks/{task['task_id']}/answer",
            json={"label": intent},
            headers=a1,
        )
        assert again.json()["status"] == "unchanged"
        answered += 1
    assert answered == status["counts"]["open"]
    after = label_api.get(f"/v1/queue/{name}").json()
    assert after["annotators"] == {"a1": answered}

    # The first snapshot is built by the trigger (min_examples=30) and announced.
    snapshots = eventually(
        lambda: label_api.get(f"/v1/datasets/{name}").json()["snapshots"],
        ready=bool,
        what=f"a snapshot of {name}",
        timeout_s=LABELLED_S,
        interval_s=0.3,
    )
    assert snapshots, "no snapshot after the trigger"
    first = snapshots[0]
    assert first["examples"] >= 30
    assert first["counts"]["train"] + first["counts"]["eval"] == first["examples"]
    train = s3.get_object(Bucket="tunewire", Key=first["files"]["train"])["Body"].read()
    line = json.loads(train.splitlines()[0])
    assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant"]
    assert line["messages"][2]["content"] in labelled_objective["labels"]
    lineage = s3.get_object(Bucket="tunewire", Key=first["files"]["lineage"])["Body"].read()
    assert all(json.loads(row)["event_id"].startswith(name) for row in lineage.splitlines())

    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.datasets")
    try:
        mine = lambda msgs: [m for m in msgs if m.key == name.encode()]  # noqa: E731
        reader.read_until(lambda msgs: len(mine(msgs)) >= 1)
        announced = [
            datasets_pb2.DatasetSnapshot.FromString(m.value) for m in mine(reader.messages)
        ]
    finally:
        reader.close()
    assert first["dataset_id"] in {a.dataset_id for a in announced}

    # More events, a snapshot on request: an item never changes split between snapshots.
    _send(api, labelled_objective, 40, seed=502)
    eventually(
        lambda: label_api.get(f"/v1/queue/{name}").json()["examples"],
        ready=lambda examples: examples >= first["examples"] + 30,
        what=f"30 more examples of {name}",
        timeout_s=LABELLED_S,
        interval_s=0.3,
    )
    built = label_api.post(f"/v1/datasets/{name}")
    assert built.status_code == 201, built.text
    second = built.json()
    assert second["parent"] == first["dataset_id"]
    assert second["examples"] > first["examples"]

    def splits(manifest: dict[str, Any]) -> dict[str, str]:
        found = {}
        for split in ("train", "eval"):
            body = s3.get_object(Bucket="tunewire", Key=manifest["files"][split])["Body"].read()
            found.update({json.loads(row)["source_id"]: split for row in body.splitlines()})
        return found

    before, now = splits(first), splits(second)
    assert all(now[source] == split for source, split in before.items())


def test_examples_are_announced_with_provenance(
    api: httpx.Client,
    label_api: httpx.Client,
    labelled_objective: dict[str, Any],
    stack: embedded.EmbeddedStack,
) -> None:
    name = labelled_objective["name"]
    _send(api, labelled_objective, 10, seed=503)
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.examples")
    try:
        mine = lambda msgs: [m for m in msgs if m.key == name.encode()]  # noqa: E731
        reader.read_until(lambda msgs: len(mine(msgs)) >= 5)
        found = [examples_pb2.LabelledExample.FromString(m.value) for m in mine(reader.messages)]
    finally:
        reader.close()
    assert found
    for example in found:
        assert example.label in labelled_objective["labels"]
        assert example.source_id.startswith("T-503-")


def test_records_of_unknown_objectives_go_to_the_dlq(stack: embedded.EmbeddedStack) -> None:
    marker = uuid.uuid4().hex
    record = records_pb2.Record(objective=f"nobody-{marker}", source_id="x", text="hello")
    headers = [("ce_id", marker.encode()), ("ce_type", b"tunewire.v1.Record")]
    kafka_io.produce(
        stack.bootstrap_servers,
        "tunewire.records",
        [(record.objective.encode(), record.SerializeToString(), headers)],
    )
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records.dlq")
    try:
        dead = reader.read_until(
            lambda msgs: any(kafka_io.header(m, "ce_id") == marker.encode() for m in msgs)
        )
    finally:
        reader.close()
    mine = [m for m in dead if kafka_io.header(m, "ce_id") == marker.encode()]
    assert kafka_io.header(mine[0], "tunewire_error_kind") == b"unknown_objective"


def test_records_of_a_retired_objective_go_to_the_dlq(
    api: httpx.Client, labelled_objective: dict[str, Any], stack: embedded.EmbeddedStack
) -> None:
    name = labelled_objective["name"]
    assert api.post(f"/v1/objectives/{name}/retire").status_code == 200
    marker = uuid.uuid4().hex
    record = records_pb2.Record(objective=name, source_id="late", text="a late refund request")
    headers = [("ce_id", marker.encode()), ("ce_type", b"tunewire.v1.Record")]
    kafka_io.produce(
        stack.bootstrap_servers,
        "tunewire.records",
        [(name.encode(), record.SerializeToString(), headers)],
    )
    reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records.dlq")
    try:
        dead = reader.read_until(
            lambda msgs: any(kafka_io.header(m, "ce_id") == marker.encode() for m in msgs)
        )
    finally:
        reader.close()
    mine = [m for m in dead if kafka_io.header(m, "ce_id") == marker.encode()]
    assert kafka_io.header(mine[0], "tunewire_error_kind") == b"retired_objective"


def test_the_queue_lives_in_s3_so_a_new_replica_sees_it(
    api: httpx.Client,
    label_api: httpx.Client,
    labelled_objective: dict[str, Any],
    stack: embedded.EmbeddedStack,
) -> None:
    name = labelled_objective["name"]
    _send(api, labelled_objective, 40, seed=504)

    def waiting_tasks() -> dict[str, Any]:
        found: dict[str, Any] = label_api.get(f"/v1/queue/{name}").json()
        assert found["counts"].get("open"), "some tasks wait for a human"
        return found

    status = eventually(waiting_tasks, timeout_s=LABELLED_S, interval_s=0.3)
    port = ports.free_port()
    spec = processes.ServiceSpec(
        name="label-replica", module="tunewire.label", port=port, env=stack.service_env(port)
    )
    replica = processes.start_service(spec, log_dir=stack.log_dir)
    try:
        processes.wait_healthy(spec.url + "/healthz", timeout=60, process=replica)
        seen = httpx.get(
            f"{spec.url}/v1/queue/{name}", headers=label_api.headers, timeout=60
        ).json()
        assert seen["counts"]["open"] == status["counts"]["open"]
        claim = httpx.post(
            f"{spec.url}/v1/queue/{name}/claim",
            headers={"Authorization": f"Bearer {TOKENS['a1']}"},
            timeout=60,
        )
        assert claim.status_code == 200
        # The lease is in S3: the first replica does not offer the same task to anyone.
        other = label_api.post(
            f"/v1/queue/{name}/claim", headers={"Authorization": f"Bearer {TOKENS['a2']}"}
        )
        if other.status_code == 200:
            assert other.json()["task"]["task_id"] != claim.json()["task"]["task_id"]
    finally:
        replica.stop()


def test_metrics_count_what_happened(
    api: httpx.Client, label_api: httpx.Client, labelled_objective: dict[str, Any]
) -> None:
    name = labelled_objective["name"]
    _send(api, labelled_objective, 10, seed=505)

    def labelled() -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in label_api.get("/metrics").text.splitlines()
            if line.startswith("tunewire_label_records_total{")
            and f'objective="{name}"' in line
            and 'outcome="labelled"' in line
        )

    count = eventually(
        labelled,
        ready=lambda found: found > 0,
        what=f"labelled records of {name} in /metrics",
        timeout_s=LABELLED_S,
        interval_s=0.3,
    )
    assert count > 0
    text = label_api.get("/metrics").text
    for metric in (
        "tunewire_label_rule_decisions_total",
        "tunewire_label_examples_total",
        "tunewire_consumer_lag",
    ):
        assert metric in text


def test_a_catastrophic_regex_cannot_stall_labelling(
    api: httpx.Client, label_api: httpx.Client
) -> None:
    """``(a+)+$`` on a long ``aaaa…b`` would backtrack for ages; the partition moves on."""
    suffix = uuid.uuid4().hex[:8]
    spec = copy.deepcopy(samples.support_intent_spec())
    spec["name"] = f"redos-{suffix}"
    spec["source"]["event_type"] = f"ticket.redos.{suffix}"
    spec["labelling"]["rules"].append({"label": "account", "regex": "(a+)+$"})
    spec["dataset"]["max_text_chars"] = 100_000
    assert api.post("/v1/objectives", json=spec).status_code == 201
    hostile = {
        "specversion": "1.0",
        "id": f"{spec['name']}-hostile",
        "source": "tests",
        "type": spec["source"]["event_type"],
        "data": {
            "ticket_id": f"{spec['name']}-hostile",
            "subject": "a" * 50_000 + "b",
            "body": "a",
            "channel": "web",
        },
    }
    assert api.post("/v1/events", json=[hostile]).status_code == 202
    _send(api, spec, 10, seed=507)
    handled = eventually(
        lambda: metrics.counter(
            str(label_api.base_url), f'tunewire_label_records_total{{objective="{spec["name"]}"'
        ),
        ready=lambda count: count >= 11,
        what=f"label deciding on all 11 records of {spec['name']}",
        timeout_s=LABELLED_S,
        interval_s=0.3,
    )
    assert handled == 11


def _start_at_the_end(bootstrap: str, group: str, topic: str) -> None:
    """Commit ``group``'s offsets at the end of ``topic``: a consumer of that group starts
    with what is produced from now on, not with everything the session produced before."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    try:

        def partitions() -> list[TopicPartition]:
            found = consumer.partitions_for_topic(topic)
            if not found:
                consumer.topics()  # refreshes the metadata for the next look
            assert found, f"topic {topic} never appeared"
            return [TopicPartition(topic, p) for p in sorted(found)]

        ends = consumer.end_offsets(eventually(partitions, timeout_s=15))
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    finally:
        consumer.close()


def test_a_record_whose_rules_overrun_the_time_budget_goes_to_the_dlq(
    api: httpx.Client, stack: embedded.EmbeddedStack
) -> None:
    """A label process with a budget no rule can keep dead-letters a record of an objective
    with rules (kind ``rule_budget``) and goes on with the next one on the partition."""
    suffix = uuid.uuid4().hex[:8]
    ruled = copy.deepcopy(samples.support_intent_spec())
    ruled["name"] = f"budget-{suffix}"
    ruled["source"]["event_type"] = f"ticket.budget.{suffix}"
    unruled = copy.deepcopy(ruled)
    unruled["name"] = f"budget-none-{suffix}"
    unruled["labelling"]["rules"] = []
    for spec in (ruled, unruled):
        assert api.post("/v1/objectives", json=spec).status_code == 201

    group = f"tunewire-label-budget-{suffix}"
    _start_at_the_end(stack.bootstrap_servers, group, "tunewire.records")
    port = ports.free_port()
    service = processes.ServiceSpec(
        name=f"label-budget-{suffix}",
        module="tunewire.label",
        port=port,
        env={
            **stack.service_env(port),
            "TUNEWIRE_CONSUMER_GROUP": group,
            "TUNEWIRE_LABEL__RULE_BUDGET_MS": "0.000001",
        },
    )
    label = processes.start_service(service, log_dir=stack.log_dir)
    try:
        # Ready once its consumer has partitions, and with them the seen ids read from S3:
        # sent from now on, the records are new to it even once the stack's label has them.
        processes.wait_healthy(service.url + "/readyz", timeout=60, process=label)
        # One key, so both records are on one partition, the slow one first.
        sent = []
        for objective, marker in ((ruled["name"], "slow"), (unruled["name"], "next")):
            record = records_pb2.Record(
                objective=objective, source_id=marker, text="Please refund my order"
            )
            headers = [("ce_id", f"{marker}-{suffix}".encode()), ("ce_type", b"tunewire.v1.Record")]
            sent.append((suffix.encode(), record.SerializeToString(), headers))
        kafka_io.produce(stack.bootstrap_servers, "tunewire.records", sent)

        reader = kafka_io.TopicReader(stack.bootstrap_servers, "tunewire.records.dlq")
        slow = f"slow-{suffix}".encode()
        try:
            dead = reader.read_until(
                lambda msgs: any(kafka_io.header(m, "ce_id") == slow for m in msgs),
                timeout_s=LABELLED_S,
            )
        finally:
            reader.close()
        (mine,) = [m for m in dead if kafka_io.header(m, "ce_id") == slow]
        assert kafka_io.header(mine, "tunewire_error_kind") == b"rule_budget"
        reason = (kafka_io.header(mine, "tunewire_error") or b"").decode()
        assert f"the rules of objective {ruled['name']!r} (v1) took " in reason, reason
        assert "over its budget of 1e-06 ms (TUNEWIRE_LABEL__RULE_BUDGET_MS)" in reason, reason

        eventually(
            lambda: metrics.counter(
                service.url,
                'tunewire_dlq_messages_total{kind="rule_budget",topic="tunewire.records"}',
            ),
            ready=bool,
            what="the rule_budget dead letter in /metrics",
            timeout_s=LABELLED_S,
        )
        handled = eventually(
            lambda: metrics.counter(
                service.url, f'tunewire_label_records_total{{objective="{unruled["name"]}"'
            ),
            ready=bool,
            what=f"the next record, of {unruled['name']}, handled",
            timeout_s=LABELLED_S,
        )
        assert handled == 1
    finally:
        label.stop()
