"""The train service on the embedded stack: dataset events become runs of the real trainer
(the ``local`` launcher), and the API lists, submits and cancels them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import datasets, kafka_io, waiting
from tests.support.stacks import TOKENS
from tunewire.contracts.v1 import datasets_pb2, training_pb2
from tunewire.core.base import store
from tunewire.core.bus import topics
from tunewire.stack import embedded
from tunewire.train import runs

OPERATOR = {"Authorization": f"Bearer {TOKENS['only-operator']}"}


def wait_for_run(
    train_api: httpx.Client,
    objective: str,
    run_id: str,
    done: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float = 120,
) -> dict[str, Any]:
    run: dict[str, Any] = waiting.poll_json(
        train_api, f"/v1/runs/{objective}/{run_id}", done, timeout_s=timeout_s
    )
    return run


def finished(run: dict[str, Any]) -> bool:
    return run["status"] in runs.TERMINAL


def training_events(stack: embedded.EmbeddedStack, run_id: str) -> list[training_pb2.TrainingEvent]:
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topics.TRAINING)
    found: list[training_pb2.TrainingEvent] = []

    def parse(records: list[Any]) -> bool:
        found.clear()
        for record in records:
            event = training_pb2.TrainingEvent.FromString(record.value)
            if event.run_id == run_id:
                found.append(event)
        return any(e.WhichOneof("phase") in ("succeeded", "failed", "cancelled") for e in found)

    try:
        reader.read_until(parse, timeout_s=30)
    finally:
        reader.close()
    return found


@pytest.fixture
def objective(artifacts: store.ArtifactStore) -> tuple[str, int]:
    name = f"train-{uuid.uuid4().hex[:6]}"
    return name, datasets.register(artifacts, datasets.quick_objective(name))


def test_a_dataset_event_trains_an_adapter_once(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    train_api: httpx.Client,
    objective: tuple[str, int],
) -> None:
    name, version = objective
    # Four steps (two epochs of two batches): a run, its progress and its adapter, quickly.
    snapshot = datasets.write_snapshot(
        artifacts, objective=name, version=version, train=32, eval_=8
    )
    datasets.announce(stack.bootstrap_servers, snapshot, times=2)  # a redelivery
    run_id = runs.run_id_for(name, snapshot.dataset_id)

    run = wait_for_run(train_api, name, run_id, finished)

    assert run["status"] == "succeeded", run
    assert run["adapter_uri"].endswith(f"/adapters/{name}/{run_id}/")
    assert run["metrics"]["train_loss"] > 0
    assert run["progress"]["step"] == run["progress"]["total_steps"]
    keys = set(artifacts.list_keys(f"adapters/{name}/{run_id}/"))
    for file in ("adapter_model.safetensors", "adapter_config.json", "metrics.json", "card.md"):
        assert f"adapters/{name}/{run_id}/{file}" in keys
    events = training_events(stack, run_id)
    phases = [e.WhichOneof("phase") for e in events]
    assert phases.count("submitted") == 1  # the redelivered event started nothing
    assert "started" in phases and "progress" in phases
    assert {e.succeeded.adapter_uri for e in events if e.HasField("succeeded")} == {
        run["adapter_uri"]
    }
    assert len(train_api.get("/v1/runs", params={"objective": name}).json()["runs"]) == 1


def test_a_bad_dataset_fails_the_run_with_a_reason(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    train_api: httpx.Client,
    objective: tuple[str, int],
) -> None:
    name, version = objective
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version, train=20)
    artifacts.put_bytes(
        f"datasets/{name}/{snapshot.dataset_id}/train.jsonl", b'{"id": "x", "messages": 3}\n'
    )
    datasets.announce(stack.bootstrap_servers, snapshot)
    run_id = runs.run_id_for(name, snapshot.dataset_id)

    run = wait_for_run(train_api, name, run_id, finished)

    assert run["status"] == "failed"
    assert run["failure_reason"] == "FAILURE_REASON_BAD_DATASET"
    assert "train.jsonl" in run["message"]
    failed = [e for e in training_events(stack, run_id) if e.HasField("failed")]
    assert {e.failed.reason for e in failed} == {training_pb2.FAILURE_REASON_BAD_DATASET}


def test_a_run_submitted_by_hand_can_be_cancelled(
    artifacts: store.ArtifactStore,
    train_api: httpx.Client,
    stack: embedded.EmbeddedStack,
    objective: tuple[str, int],
) -> None:
    name, version = objective
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version)
    response = train_api.post(
        "/v1/runs",
        json={
            "objective": name,
            "dataset_id": snapshot.dataset_id,
            "overrides": {"training": {"epochs": 50}},
        },
        headers=OPERATOR,
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.json()["config"]["training"]["epochs"] == 50
    wait_for_run(train_api, name, run_id, lambda r: bool(r["progress"]))

    viewer = {"Authorization": f"Bearer {TOKENS['only-viewer']}"}
    refused = train_api.post(
        f"/v1/runs/{name}/{run_id}/cancel", json={"reason": "no"}, headers=viewer
    )
    assert refused.status_code == 403
    cancelled = train_api.post(
        f"/v1/runs/{name}/{run_id}/cancel",
        json={"actor": "mallory", "reason": "wrong data"},
        headers=OPERATOR,
    )

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    events = training_events(stack, run_id)
    # The actor is the principal whose token cancelled, not a name in the body.
    assert [e.cancelled.actor for e in events if e.HasField("cancelled")] == ["only-operator"]
    again = train_api.post(f"/v1/runs/{name}/{run_id}/cancel", json={"reason": "twice"})
    assert again.status_code == 409


def test_the_api_refuses_what_it_cannot_do(
    train_api: httpx.Client,
    artifacts: store.ArtifactStore,
    objective: tuple[str, int],
    stack: embedded.EmbeddedStack,
) -> None:
    name, version = objective
    unknown = train_api.post("/v1/runs", json={"objective": name, "dataset_id": "ds-nope"})
    assert unknown.status_code == 404
    assert "ds-nope" in unknown.json()["message"]
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version, train=8)
    wrong = train_api.post(
        "/v1/runs",
        json={
            "objective": name,
            "dataset_id": snapshot.dataset_id,
            "overrides": {"training": {"epochs": 0}, "lora": {"rank": 4}},
        },
    )
    assert wrong.status_code == 422
    assert "training.epochs" in wrong.json()["message"]
    assert "lora.rank" in wrong.json()["message"]
    assert train_api.get("/v1/runs", params={"objective": name}).json()["runs"] == []
    assert train_api.get(f"/v1/runs/{name}/ft-nope").status_code == 404
    anonymous = httpx.get(stack.service_urls["train"] + "/v1/runs")
    assert anonymous.status_code == 401


def test_a_forged_dataset_event_starts_no_run(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    train_api: httpx.Client,
    objective: tuple[str, int],
) -> None:
    """Anyone who can produce to the datasets topic could point train at data of their own;
    only a snapshot label built (its manifest in S3, where label writes it) is trained."""
    name, version = objective
    real = datasets.write_snapshot(artifacts, objective=name, version=version)
    forged = [
        datasets_pb2.DatasetSnapshot(
            objective=name, dataset_id=real.dataset_id, uri="s3://elsewhere/data/"
        ),
        datasets_pb2.DatasetSnapshot(
            objective=name,
            dataset_id="ds-never-built",
            uri=artifacts.uri(f"datasets/{name}/ds-never-built/"),
        ),
        datasets_pb2.DatasetSnapshot(
            objective=name, dataset_id="../../etc", uri=artifacts.uri(f"datasets/{name}/")
        ),
    ]
    for snapshot in forged:
        datasets.announce(stack.bootstrap_servers, snapshot)
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topics.dlq(topics.DATASETS))
    try:
        dead = reader.read_until(
            lambda found: (
                sum(
                    datasets_pb2.DatasetSnapshot.FromString(m.value).objective == name
                    for m in found
                )
                >= len(forged)
            ),
            timeout_s=60,
        )
    finally:
        reader.close()
    kinds = {
        kafka_io.header(m, "tunewire_error_kind")
        for m in dead
        if datasets_pb2.DatasetSnapshot.FromString(m.value).objective == name
    }
    assert kinds == {b"forged"}
    assert train_api.get("/v1/runs", params={"objective": name}).json()["runs"] == []
