"""``tunewire demo``: the main job on the embedded stack, shown step by step.

Starts the broker, the S3 endpoint and the services, registers the sample support-intent
objective, sends sample tickets full of PII (half over Kafka, half over HTTP, plus redelivered
copies and broken messages), then shows what ingest made of them: redacted records, counted
duplicates, DLQ entries and the archive in S3. Later stages of the pipeline extend this.
"""

from __future__ import annotations

import collections
import datetime
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kafka
from kafka.structs import TopicPartition

from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.core import envelope, topics
from tunewire.stack import embedded, processes


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(*, state_dir: Path, events: int, keep: bool, as_json: bool) -> dict[str, Any]:
    """Run the demo; returns (and with ``as_json`` prints last) the summary."""
    started = time.monotonic()
    stack = embedded.EmbeddedStack(state_dir)
    _say("1/7 starting the embedded stack (Kafka-compatible broker, S3 endpoint, ingest, label)")
    stack.up(
        [
            processes.ServiceSpec(name="ingest", module="tunewire.ingest"),
            processes.ServiceSpec(name="label", module="tunewire.label"),
        ],
        detach=keep,
    )
    try:
        summary = _drive(stack, events)
    finally:
        if not keep:
            stack.down()
    summary["seconds"] = round(time.monotonic() - started, 1)
    if keep:
        _say(
            f"\nthe stack keeps running: ingest at {stack.service_urls['ingest']}, label at "
            f"{stack.service_urls['label']}, token in {state_dir / 'api-token'}; "
            "stop it with `tunewire down`"
        )
    else:
        _say(f"\nstack stopped; S3 contents kept in {state_dir / 's3'} for the next `tunewire up`")
    if as_json:
        print(json.dumps(summary))
    return summary


def _drive(stack: embedded.EmbeddedStack, count: int) -> dict[str, Any]:
    url = stack.service_urls["ingest"]
    token = stack.api_tokens[0]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    spec = samples.support_intent_spec()
    _say("2/7 registering the sample objective 'support-intent' ...")
    response = api.post("/v1/objectives", json=spec)
    if response.status_code == 409:
        response = api.put(f"/v1/objectives/{spec['name']}", json=spec)
    response.raise_for_status()
    version = response.json()["version"]
    _say(f"    support-intent is at version {version}")

    run_id = time.strftime("%Y%m%d%H%M%S")
    labelled = list(samples.labelled_tickets(count, seed=int(run_id[-6:])))
    tickets = [ticket for ticket, _ in labelled]
    truth = {ticket["data"]["ticket_id"]: intent for ticket, intent in labelled}
    for ticket in tickets:
        ticket["id"] = f"demo-{run_id}-{ticket['id']}"
    half = len(tickets) // 2
    via_kafka, via_http = tickets[:half], tickets[half:]
    redelivered = via_kafka[: max(1, half // 10)]
    broken = [b'{"ticket_id": "T-1", "subject": "no body"}', b"{not json"]
    _say(
        f"3/7 sending {len(via_kafka)} tickets over Kafka (+{len(redelivered)} redelivered, "
        f"{len(broken)} broken) and {len(via_http)} over HTTP ..."
    )
    before = _outcomes(api)
    label = httpx.Client(
        base_url=stack.service_urls["label"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    label_before = label.get(f"/v1/queue/{spec['name']}").json()
    _produce(stack.bootstrap_servers, via_kafka + redelivered, broken)
    for start in range(0, len(via_http), 100):
        api.post("/v1/events", json=via_http[start : start + 100]).raise_for_status()
    events_in = len(via_kafka) + len(redelivered) + len(broken) + len(via_http)

    _say("4/7 waiting for ingest to publish the records ...")
    records = _await_records(stack.bootstrap_servers, {t["id"] for t in tickets}, timeout_s=120)
    time.sleep(2.5)  # the next flush writes the last archive part
    outcomes = {k: v - before.get(k, 0) for k, v in _outcomes(api).items()}
    _say("    what ingest produced:\n")
    original = {t["id"]: t for t in tickets}
    for record in records[:3]:
        data = original[record.event_id]["data"]
        _say(f"  event  {record.event_id}")
        _say(f"    in : {data['subject']} | {data['body']}")
        _say(f"    out: {record.text.replace(chr(10), ' | ')}")
    redactions: collections.Counter[str] = collections.Counter()
    for record in records:
        redactions.update(dict(record.redactions))
    archive = _archive_summary(stack, spec["name"])
    summary: dict[str, Any] = {
        "events_in": events_in,
        "records": int(outcomes.get("record", 0)),
        "duplicates": int(outcomes.get("duplicate", 0)),
        "dlq": int(outcomes.get("rejected", 0)),
        "redactions": dict(sorted(redactions.items())),
        "archive_parts": archive["parts"],
        "archived_events": archive["events"],
        "pii_found_in_outputs": archive["pii"] + _pii_in(records),
    }
    _say("")
    _say(f"  events in      {summary['events_in']}")
    _say(f"  records        {summary['records']}")
    _say(f"  duplicates     {summary['duplicates']}")
    _say(f"  DLQ            {summary['dlq']}")
    _say(f"  redacted PII   {', '.join(f'{k} {v}' for k, v in summary['redactions'].items())}")
    _say(
        f"  archive        {summary['archived_events']} events in {summary['archive_parts']} "
        f"parts under s3://{stack.bucket}/raw/{spec['name']}/"
    )
    _say(f"  PII left       {summary['pii_found_in_outputs']} (records and archive scanned)")
    summary.update(
        _label_stage(label, spec["name"], truth, before=label_before, expected=summary["records"])
    )
    return summary


def _label_stage(
    label: httpx.Client,
    objective: str,
    truth: dict[str, str],
    *,
    before: dict[str, Any],
    expected: int,
) -> dict[str, Any]:
    """Rules label, a simulated annotator works the queue, the first snapshot is built."""
    _say("\n5/7 labelling: the objective's rules vote; conflicts and abstentions go to humans")
    path = f"/v1/queue/{objective}"
    handled_before = before["examples"] + before["counts"].get("open", 0)
    deadline = time.monotonic() + 120
    status = before
    shown = -1
    while time.monotonic() < deadline:
        status = label.get(path).json()
        handled = status["examples"] + status["counts"].get("open", 0) - handled_before
        if handled != shown:
            shown = handled
            print(
                f"\r    {handled}/{expected} records labelled or queued (duplicates are dropped)",
                end="",
                file=sys.stderr,
                flush=True,
            )
        if handled >= expected * 0.95:
            time.sleep(2)  # near-duplicates are dropped: give the last records a moment
            status = label.get(path).json()
            break
        time.sleep(0.5)
    _say("")
    by_rules = status["examples"] - before["examples"]
    queued = status["counts"].get("open", 0)
    _say(f"    {by_rules} labelled by rules, {queued} waiting in the human queue")

    _say("6/7 a simulated annotator works the queue (keyboard-free: it knows the true intent)")
    answered = 0
    while True:
        claim = label.post(f"{path}/claim", json={"annotator": "demo-annotator"})
        if claim.status_code == 204:
            break
        claim.raise_for_status()
        task = claim.json()["task"]
        answer = truth.get(task["source_id"], "refund")
        label.post(
            f"{path}/tasks/{task['task_id']}/answer",
            json={
                "annotator": "demo-annotator",
                "label": answer,
                "claim_id": claim.json()["claim_id"],
            },
        ).raise_for_status()
        answered += 1
        if answered <= 2:
            hints = ", ".join(f"{rule}→{vote}" for rule, vote in task["hints"]) or "no rule voted"
            _say(f"    task: {task['text'][:90]}...")
            _say(f"      hints: {hints}; answered: {answer}")
    _say(f"    {answered} tasks answered")

    _say("7/7 dataset snapshot (the objective's trigger, or on request)")
    known = {s["dataset_id"] for s in _snapshots(label, objective)}
    manifest: dict[str, Any] | None = None
    deadline = time.monotonic() + 15
    while manifest is None and time.monotonic() < deadline:
        fresh = [s for s in _snapshots(label, objective) if s["dataset_id"] not in known]
        manifest = fresh[-1] if fresh else None
        time.sleep(0 if manifest else 1)
    if manifest is None:  # the trigger did not fire (e.g. few new examples): ask for one
        manifest = label.post(f"/v1/datasets/{objective}").json()
    counts, labels = manifest["counts"], manifest["labels"]
    _say(f"    {manifest['dataset_id']}: {counts['train']} train / {counts['eval']} eval examples")
    for split in ("train", "eval"):
        spread = ", ".join(f"{name} {n}" for name, n in sorted(labels.get(split, {}).items()))
        _say(f"      {split:<5} {spread}")
    _say(f"    files: s3://tunewire/{manifest['files']['train'].rsplit('/', 1)[0]}/")
    return {
        "examples": status["examples"] - before["examples"] + answered,
        "labelled_by_rules": by_rules,
        "labelled_by_humans": answered,
        "dataset_id": manifest["dataset_id"],
        "dataset_counts": counts,
    }


def _snapshots(label: httpx.Client, objective: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = label.get(f"/v1/datasets/{objective}").json()["snapshots"]
    return found


def _produce(bootstrap: str, events: list[dict[str, Any]], broken: list[bytes]) -> None:
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for event in events:
        headers = binary_headers(event)
        producer.send(
            topics.EVENTS_RAW,
            key=b"support-intent",
            value=json.dumps(event["data"]).encode(),
            headers=headers,
        )
    for value in broken:
        producer.send(
            topics.EVENTS_RAW,
            key=b"support-intent",
            value=value,
            headers=[("ce_type", b"ticket.created")],
        )
    producer.flush(30)
    producer.close()


def binary_headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka headers of a structured CloudEvent sent in binary mode, as a business system would."""
    return envelope.Envelope(
        id=event["id"],
        type=event["type"],
        source=event["source"],
        time=datetime.datetime.fromisoformat(event["time"]),
        datacontenttype="application/json",
    ).headers()


def _await_records(bootstrap: str, ids: set[str], *, timeout_s: float) -> list[records_pb2.Record]:
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    found: dict[str, records_pb2.Record] = {}
    shown = -1
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topics.RECORDS):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "the records topic never appeared; see .tunewire/logs/ingest.log"
                )
            time.sleep(0.2)
        partitions = [
            TopicPartition(topics.RECORDS, p)
            for p in consumer.partitions_for_topic(topics.RECORDS) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while len(found) < len(ids) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                for message in batch:
                    record = records_pb2.Record.FromString(message.value)
                    if record.event_id in ids:
                        found[record.event_id] = record
            if len(found) != shown:
                shown = len(found)
                print(f"\r    {shown}/{len(ids)} records", end="", file=sys.stderr, flush=True)
        _say("")
    finally:
        consumer.close()
    return sorted(found.values(), key=lambda r: r.event_id)


def _outcomes(api: httpx.Client) -> dict[str, float]:
    totals: dict[str, float] = collections.defaultdict(float)
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("tunewire_ingest_events_total{"):
            labels, value = line.rsplit(" ", 1)
            totals[labels.split('outcome="')[1].split('"')[0]] += float(value)
    return dict(totals)


def _archive_summary(stack: embedded.EmbeddedStack, objective: str) -> dict[str, int]:
    client = stack.s3_client()
    parts = events = pii = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=stack.bucket, Prefix=f"raw/{objective}/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=stack.bucket, Key=item["Key"])["Body"].read()
            text = gzip.decompress(body).decode()
            parts += 1
            events += text.count("\n")
            pii += sum(text.count(value) for value in samples.PLANTED_PII)
    return {"parts": parts, "events": events, "pii": pii}


def _pii_in(records: list[records_pb2.Record]) -> int:
    return sum(
        (r.text + r.fields_json).count(value) for r in records for value in samples.PLANTED_PII
    )
