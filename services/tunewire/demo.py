"""``tunewire demo``: the main job on the embedded stack, shown step by step.

Ten stages. Starts the broker, the S3 endpoint and the five services, registers the sample
support-intent objective, sends sample tickets full of PII (half over Kafka, half over HTTP,
plus redelivered copies and broken messages), then shows what ingest made of them: redacted
records, counted duplicates, DLQ entries, the archive in S3 and a scan of records and archive
for planted PII. Then labelling by the rules, a simulated annotator answering the human
queue with each ticket's true intent, the dataset snapshot, the LoRA training run it starts
(with live progress), and the evaluation of the adapter against the base model and the
champion with the objective's gates. Last, once the registry has a champion, it asks the
served alias through serve's OpenAI-compatible API as an application would (each held-out
ticket's raw text, PII included, no system message) and the task endpoint with the same
tickets' data, compares both accuracies with the evaluator's, and prints where the web
console's pages are. ``--keep`` leaves the stack running; ``--json`` prints a summary as the
last line.
"""

from __future__ import annotations

import collections
import dataclasses
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
from tunewire.core.bus import topics
from tunewire.core.state import layout
from tunewire.serve import preparing, tasks
from tunewire.stack import embedded, processes

SERVICES = ("ingest", "label", "train", "evaluate", "serve")
STAGES = 10
SERVED_EXAMPLES = 100
"""Most held-out tickets the serve stage asks (the default run's whole eval split)."""
ANSWER_TOKENS = 8
"""Room for one label's tokens and the end of the turn."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(*, state_dir: Path, events: int, keep: bool, as_json: bool) -> dict[str, Any]:
    """Run the demo; returns (and with ``as_json`` prints last) the summary."""
    started = time.monotonic()
    stack = embedded.EmbeddedStack(state_dir)
    _say(
        f"1/{STAGES} starting the embedded stack (Kafka-compatible broker, S3 endpoint, "
        "ingest, label, train, evaluate, serve)"
    )
    stack.up(
        [processes.ServiceSpec(name=name, module=f"tunewire.{name}") for name in SERVICES],
        detach=keep,
    )
    service_urls = stack.service_urls
    try:
        summary = _drive(stack, events)
    finally:
        if not keep:
            stack.down()
    summary["seconds"] = round(time.monotonic() - started, 1)
    if keep:
        urls = ", ".join(f"{name} at {url}" for name, url in stack.service_urls.items())
        _say(
            f"\nthe stack keeps running: {urls}; token in {state_dir / 'api-token'}; "
            "stop it with `tunewire down`"
        )
    else:
        _say(f"\nstack stopped; S3 contents kept in {state_dir / 's3'} for the next `tunewire up`")
    _say_consoles(service_urls, token_file=state_dir / "api-token", running=keep)
    if as_json:
        print(json.dumps(summary))
    return summary


CONSOLES = (
    ("annotate", "label"),
    ("review", "evaluate"),
    ("history", "evaluate"),
    ("overview", "evaluate"),
)
"""The web console's views and the service serving each."""


def _say_consoles(urls: dict[str, str], *, token_file: Path, running: bool) -> None:
    """Where the web console's views are, and how to sign in."""
    _say(f"\nweb console (sign in with any name and the token in {token_file}):")
    for view, service in CONSOLES:
        _say(f"    {view:<9} {urls[service]}/console/{view}")
    if not running:
        _say(
            "    (these stopped with the stack: `tunewire demo --keep` leaves them up, "
            "and `tunewire up` starts them on new ports)"
        )


def _drive(stack: embedded.EmbeddedStack, count: int) -> dict[str, Any]:
    url = stack.service_urls["ingest"]
    token = stack.api_tokens[0]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    spec = samples.support_intent_spec()
    _say(f"2/{STAGES} registering the sample objective 'support-intent' ...")
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
        f"3/{STAGES} sending {len(via_kafka)} tickets over Kafka (+{len(redelivered)} redelivered, "
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

    _say(f"4/{STAGES} waiting for ingest to publish the records ...")
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
    train = _client(stack, "train")
    evaluate = _client(stack, "evaluate")
    summary.update(_train_stage(train, spec["name"], summary["dataset_id"]))
    if summary.get("run_status") == "succeeded":
        summary.update(_evaluate_stage(evaluate, spec["name"], summary["run_id"]))
    champion = evaluate.get(f"/v1/registry/{spec['name']}").json().get("champion")
    if champion:  # this run's adapter if it was approved, else the champion it did not beat
        manifest = label.get(f"/v1/datasets/{spec['name']}/{summary['dataset_id']}").json()
        raw = {ticket["data"][spec["source"]["id_field"]]: ticket["data"] for ticket in tickets}
        held_out = _held_out(stack, manifest["files"]["eval"], raw, spec["source"]["text"])
        evaluated = _evaluated_accuracy(evaluate, spec["name"], summary.get("run_id"), champion)
        summary.update(
            _serve_stage(
                stack,
                spec["name"],
                champion,
                held_out,
                evaluated=evaluated,
                split_size=manifest["counts"]["eval"],
            )
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
    _say(f"\n5/{STAGES} labelling: the rules vote; conflicts and abstentions go to humans")
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

    _say(f"6/{STAGES} a simulated annotator works the queue (it knows the true intent)")
    answered = 0
    while True:
        claim = label.post(f"{path}/claim")
        if claim.status_code == 204:
            break
        claim.raise_for_status()
        task = claim.json()["task"]
        answer = truth.get(task["source_id"], "refund")
        label.post(
            f"{path}/tasks/{task['task_id']}/answer",
            json={"label": answer, "claim_id": claim.json()["claim_id"]},
        ).raise_for_status()
        answered += 1
        if answered <= 2:
            hints = ", ".join(f"{rule}→{vote}" for rule, vote in task["hints"]) or "no rule voted"
            _say(f"    task: {task['text'][:90]}...")
            _say(f"      hints: {hints}; answered: {answer}")
    _say(f"    {answered} tasks answered")

    _say(f"7/{STAGES} dataset snapshot (the objective's trigger, or on request)")
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


def _client(stack: embedded.EmbeddedStack, service: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.service_urls[service],
        headers={"Authorization": f"Bearer {stack.api_tokens[0]}"},
        timeout=60,
    )


def _train_stage(train: httpx.Client, objective: str, dataset_id: str) -> dict[str, Any]:
    """The snapshot's event starts a LoRA run; show its progress until it ends."""
    _say(f"8/{STAGES} training a LoRA adapter on the snapshot (the `local` launcher runs the same")
    _say("    trainer a Kubernetes Job runs on a GPU node; here the built-in small model on CPU)")
    deadline = time.monotonic() + 600
    run: dict[str, Any] | None = None
    shown: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = train.get("/v1/runs", params={"objective": objective}).json()["runs"]
        mine = [r for r in found if r["dataset_id"] == dataset_id]
        run = mine[-1] if mine else None
        if run is not None:
            progress = run.get("progress") or {}
            if progress.get("total_steps") and progress != shown:
                shown = progress
                _progress_bar(progress)
            if run["status"] in ("succeeded", "failed", "cancelled"):
                break
        time.sleep(0.5)
    _say("")
    if run is None:
        _say("    no run started (is the train service up?)")
        return {"run_status": "missing"}
    if run["status"] != "succeeded":
        _say(f"    run {run['run_id']} {run['status']}: {run.get('message') or run['status']}")
        return {"run_id": run["run_id"], "run_status": run["status"]}
    metrics = run.get("metrics", {})
    _say(
        f"    run {run['run_id']} succeeded: train loss {metrics.get('train_loss', 0):.3f}, "
        f"{metrics.get('tokens_per_second', 0):.0f} tokens/s, "
        f"{metrics.get('train_runtime_seconds', 0):.1f} s"
    )
    _say(f"    adapter: {run['adapter_uri']}")
    return {"run_id": run["run_id"], "run_status": "succeeded", "train_metrics": metrics}


def _progress_bar(progress: dict[str, Any]) -> None:
    step, total = int(progress["step"]), int(progress["total_steps"])
    filled = int(30 * step / max(total, 1))
    print(
        f"\r    [{'#' * filled}{'.' * (30 - filled)}] step {step}/{total} "
        f"loss {progress.get('loss', 0):.3f} {progress.get('tokens_per_second', 0):.0f} tok/s "
        f"ETA {progress.get('eta_seconds', 0):.0f}s   ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _evaluate_stage(evaluate: httpx.Client, objective: str, run_id: str) -> dict[str, Any]:
    """The evaluator scores base, champion and candidate; the gates decide."""
    _say(f"9/{STAGES} evaluating the adapter on the held-out split and applying the gates")
    deadline = time.monotonic() + 300
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = evaluate.get(f"/v1/evaluations/{objective}/{run_id}")
        if response.status_code == 200:
            found = response.json()
            if found.get("decision"):
                break
        time.sleep(0.5)
    if not found.get("decision"):
        _say(f"    no decision yet ({found.get('status', 'not started')})")
        return {"decision": None}
    metrics = found.get("metrics") or {}
    models = [m for m in ("base", "champion", "candidate") if metrics.get(m)]
    names = sorted({k for m in models for k in metrics[m]["values"]})
    _say(f"    {'metric':<12}" + "".join(f"{m:>12}" for m in models))
    for name in names:
        row = "".join(f"{metrics[m]['values'].get(name, float('nan')):>12.3f}" for m in models)
        _say(f"    {name:<12}{row}")
    for gate in found.get("gates", []):
        mark = "pass" if gate["passed"] else "FAIL"
        _say(
            f"    gate {gate['metric']} {gate['rule']} {gate['threshold']:.3f}: "
            f"{gate['value']:.3f} {mark}"
        )
    _say(f"    decision: {found['decision']} ({found.get('reason') or 'all gates passed'})")
    return {
        "decision": found["decision"],
        "base_metrics": metrics.get("base", {}).get("values", {}),
        "adapter_metrics": metrics.get("candidate", {}).get("values", {}),
    }


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """An eval-split example as an application would send it: the raw ticket (PII and all),
    its text by the objective's template, and the label the evaluator scored against."""

    data: dict[str, Any]
    text: str
    label: str


def _held_out(
    stack: embedded.EmbeddedStack, eval_key: str, raw: dict[str, dict[str, Any]], template: str
) -> list[HeldOut]:
    """The snapshot's eval examples whose tickets this run sent, in split order, rebuilt from
    the tickets as sent: the snapshot holds prepared text, and preparing is serve's job now."""
    body = stack.s3_client().get_object(Bucket=stack.bucket, Key=eval_key)["Body"].read()
    found: list[HeldOut] = []
    for line in body.decode().splitlines():
        example = json.loads(line)
        data = raw.get(example["source_id"])
        if data is not None:
            label = str(example["messages"][-1]["content"])
            found.append(HeldOut(data=data, text=template.format_map(data), label=label))
    return found[:SERVED_EXAMPLES]


def _evaluated_accuracy(
    evaluate: httpx.Client, objective: str, run_id: str | None, served: str
) -> float | None:
    """The evaluator's accuracy of the served adapter on this snapshot's eval split: the
    candidate column when this run's adapter is the champion, else the champion column."""
    if run_id is None:
        return None
    found = evaluate.get(f"/v1/evaluations/{objective}/{run_id}")
    metrics = (found.json().get("metrics") or {}) if found.status_code == 200 else {}
    for column in ("candidate", "champion"):
        scores = metrics.get(column) or {}
        if scores.get("model_ref") == served:
            accuracy: float | None = scores["values"].get("accuracy")
            return accuracy
    return None


def _serve_stage(
    stack: embedded.EmbeddedStack,
    objective: str,
    run_id: str,
    held_out: list[HeldOut],
    *,
    evaluated: float | None,
    split_size: int,
) -> dict[str, Any]:
    """Ask the alias as an application would (raw ticket, PII included, no system message)
    and the task endpoint with the same tickets' data, and compare both with the evaluator."""
    _say(f"10/{STAGES} asking the served alias '{objective}' (OpenAI API) as an application would:")
    _say(f"    {len(held_out)} held-out tickets' raw text, PII included, no system message")
    serve = _client(stack, "serve")
    served = f"{objective}@{run_id}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        models = serve.get("/v1/models").json().get("data", [])
        if any(m["id"] == objective and m["root"] == served for m in models):
            break
        time.sleep(0.5)
    else:
        _say(f"    {objective} is not served yet; see `tunewire deployments`")
        return {"served_model": None}
    asked = [_chat(serve, objective, example.text) for example in held_out]
    replies = [answer for answer, _ in asked]
    labels = _predicted(serve, objective, [example.data for example in held_out])
    answers: list[dict[str, str]] = []
    for example, reply in zip(held_out[:3], replies, strict=False):
        base, _ = _chat(serve, "base", example.text)
        ticket = example.data["subject"]
        answers.append({"ticket": ticket, "label": example.label, objective: reply, "base": base})
        _say(f"    ticket: {ticket!r} (label: {example.label})")
        _say(f"      {objective:<18} → {reply!r}")
        _say(f"      {'base':<18} → {base!r}")
    _say(f"    served by {served}")
    _say_prepared([header for _, header in asked])
    result = {
        "served_model": served,
        "answers": answers,
        "served_examples": len(held_out),
        "served_accuracy": _accuracy(replies, held_out),
        "task_accuracy": _accuracy(labels, held_out),
        "eval_accuracy": evaluated,
    }
    _say_accuracies(result, split_size=split_size)
    return result


def _say_prepared(headers: list[str]) -> None:
    """What serve did to the raw requests, from its header: the PII it kept from the model."""
    redacted = [header for header in headers if "redacted=none" not in header]
    example = f", e.g. {redacted[0]!r}" if redacted else ""
    count = f"{len(redacted)} of {len(headers)}"
    _say(f"    {preparing.HEADER}: PII redacted in {count} requests{example}")


def _chat(serve: httpx.Client, model: str, text: str) -> tuple[str, str]:
    """One greedy chat completion with ``text`` as the only message: the answer (stripped)
    and how serve prepared the request."""
    response = serve.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": ANSWER_TOKENS,
            "temperature": 0,
        },
    )
    response.raise_for_status()
    answer = str(response.json()["choices"][0]["message"]["content"]).strip()
    return answer, response.headers.get(preparing.HEADER, "")


def _predicted(serve: httpx.Client, objective: str, inputs: list[dict[str, Any]]) -> list[str]:
    """The task endpoint's label for each event's data, in batches it accepts."""
    labels: list[str] = []
    for start in range(0, len(inputs), tasks.MAX_INPUTS):
        response = serve.post(
            f"/v1/objectives/{objective}/predict",
            json={"inputs": inputs[start : start + tasks.MAX_INPUTS]},
        )
        response.raise_for_status()
        labels += [str(p["label"]) for p in response.json()["predictions"]]
    return labels


def _accuracy(answers: list[str], held_out: list[HeldOut]) -> float | None:
    """The share of answers equal to their example's label; None with no examples."""
    if not held_out:
        return None
    return sum(a == e.label for a, e in zip(answers, held_out, strict=True)) / len(held_out)


def _say_accuracies(result: dict[str, Any], *, split_size: int) -> None:
    """The three accuracies side by side: served as trained means they agree."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    count = result["served_examples"]
    _say(
        f"    accuracy served {shown(result['served_accuracy'])}  chat completions, {count} of "
        f"the {split_size} eval tickets, raw"
    )
    _say(
        f"             task   {shown(result['task_accuracy'])}  the task endpoint "
        f"(label scores), the same {count} tickets"
    )
    _say(
        f"             eval   {shown(result['eval_accuracy'])}  the evaluator, all "
        f"{split_size} eval examples"
    )


def _snapshots(label: httpx.Client, objective: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = label.get(f"/v1/datasets/{objective}").json()["snapshots"]
    return found


def _produce(bootstrap: str, events: list[dict[str, Any]], broken: list[bytes]) -> None:
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for event in events:
        message = samples.as_kafka_message(event)
        producer.send(
            topics.EVENTS_RAW, key=b"support-intent", value=message.value, headers=message.headers
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
    for page in paginator.paginate(Bucket=stack.bucket, Prefix=layout.raw_objective(objective)):
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
