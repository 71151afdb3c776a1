"""The trainer as the Job runs it: a process against the stack's S3 and broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import uuid
from typing import Any

import pytest

from tests.support import datasets, kafka_io, proxy
from tests.support.waiting import eventually
from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import store
from tunewire.core.bus import envelope, topics
from tunewire.core.launchers import launching
from tunewire.core.state import outcomes
from tunewire.stack import embedded

TRAINING = {"epochs": 2, "lr": 0.003, "batch_size": 8, "max_seq_len": 64, "gpu": 0}


def _objective(artifacts: store.ArtifactStore, **changes: Any) -> tuple[str, int]:
    name = f"trainer-{uuid.uuid4().hex[:8]}"
    spec = datasets.quick_objective(name, **{"training": TRAINING, **changes})
    return name, datasets.register(artifacts, spec)


def _args(name: str, version: int, snapshot: Any, *, run_id: str, attempt: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tunewire.workloads.train",
        "--objective",
        name,
        "--objective-version",
        str(version),
        "--run-id",
        run_id,
        "--dataset-id",
        snapshot.dataset_id,
        "--dataset-uri",
        snapshot.uri,
        "--attempt",
        str(attempt),
    ]


def _train(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def _events(
    stack: embedded.EmbeddedStack, run_id: str, *, until: str
) -> list[tuple[str, training_pb2.TrainingEvent]]:
    """(ce_id, event) of a run on the training topic, once its ``until`` phase is there."""
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topics.TRAINING)
    try:

        def parsed() -> list[tuple[str, training_pb2.TrainingEvent]]:
            found = []
            for record in reader.messages:
                event = training_pb2.TrainingEvent.FromString(record.value)
                if event.run_id == run_id:
                    found.append((kafka_io.header(record, "ce_id").decode(), event))
            return found

        reader.read_until(lambda _: any(e.WhichOneof("phase") == until for _, e in parsed()))
        reader.drain(quiet_s=0.5)
        return parsed()
    finally:
        reader.close()


def _phases(events: list[tuple[str, training_pb2.TrainingEvent]]) -> list[str]:
    return [str(e.WhichOneof("phase")) for _, e in events]


def test_a_run_writes_its_adapter_then_announces_it_once(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore, trainer_env: dict[str, str]
) -> None:
    name, version = _objective(artifacts)
    snapshot = datasets.write_snapshot(
        artifacts, objective=name, version=version, train=60, eval_=20
    )
    run_id = f"run-{uuid.uuid4().hex[:8]}"

    done = _train(_args(name, version, snapshot, run_id=run_id), trainer_env)

    assert done.returncode == 0, done.stderr[-3000:]
    prefix = f"adapters/{name}/{run_id}/"
    assert set(artifacts.list_keys(prefix)) == {
        prefix + f
        for f in ("adapter_model.safetensors", "adapter_config.json", "metrics.json", "card.md")
    }
    metrics = artifacts.get_json(prefix + "metrics.json")
    assert metrics["examples"] == 60
    assert metrics["epochs"] == 2
    assert metrics["steps"] == 2 * 8  # ceil(60 / 8) batches per epoch
    assert metrics["tokens_per_second"] > 0
    assert 0 < metrics["trainable_params"] < 1_000_000
    adapter_config = json.loads(artifacts.get_bytes(prefix + "adapter_config.json"))
    assert adapter_config["base_model_name_or_path"] == "builtin://tiny-llama"
    card = artifacts.get_bytes(prefix + "card.md").decode()
    for fact in (snapshot.dataset_id, snapshot.uri, "builtin://tiny-llama", f"version {version}"):
        assert fact in card
    logged = [json.loads(line) for line in done.stderr.splitlines()]  # JSON lines only
    assert any(
        line["message"].startswith("step 16/16") and line["run_id"] == run_id for line in logged
    )
    progress = artifacts.get_json(f"runs/{name}/{run_id}/progress.json")
    assert progress["step"] == progress["total_steps"] == 16
    assert progress["attempt"] == 1

    events = _events(stack, run_id, until="succeeded")
    phases = _phases(events)
    assert phases[0] == "started"
    assert phases.count("succeeded") == 1
    assert phases.count("failed") == 0
    progress_events = [e.progress for _, e in events if e.WhichOneof("phase") == "progress"]
    assert progress_events and progress_events[-1].step == progress_events[-1].total_steps == 16
    assert progress_events[-1].loss > 0 and progress_events[-1].tokens_per_second > 0
    succeeded = next(e for _, e in events if e.WhichOneof("phase") == "succeeded")
    assert succeeded.succeeded.adapter_uri == artifacts.uri(prefix)
    assert succeeded.succeeded.metrics["train_loss"] == pytest.approx(metrics["train_loss"])
    assert (succeeded.objective, succeeded.dataset_id) == (name, snapshot.dataset_id)
    assert succeeded.objective_version == version and succeeded.attempt == 1

    # A retried pod (say it crashed after the claim, before its event was acknowledged)
    # announces the same success again, with the same event id, and trains nothing.
    again = _train(_args(name, version, snapshot, run_id=run_id, attempt=2), trainer_env)
    assert again.returncode == 0, again.stderr[-3000:]
    events = _events(stack, run_id, until="succeeded")
    succeeded_ids = {ce_id for ce_id, e in events if e.WhichOneof("phase") == "succeeded"}
    assert succeeded_ids == {envelope.derived_id(run_id, "succeeded")}
    assert not [e for _, e in events if e.attempt == 2 and e.WhichOneof("phase") == "started"]


def _failed_run(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    env: dict[str, str],
    *,
    name: str,
    version: int,
    snapshot: Any,
) -> training_pb2.TrainingEvent.Failed:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    done = _train(_args(name, version, snapshot, run_id=run_id), env)
    assert done.returncode == 1, done.stderr[-3000:]
    phases = _phases(events := _events(stack, run_id, until="failed"))
    assert phases.count("failed") == 1 and "succeeded" not in phases
    assert not list(artifacts.list_keys(f"adapters/{name}/{run_id}/"))
    outcome = outcomes.read(artifacts, name, run_id)
    assert outcome is not None and outcome.kind == "failed"
    return next(e.failed for _, e in events if e.WhichOneof("phase") == "failed")


def test_a_bad_dataset_fails_the_run_naming_the_line(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore, trainer_env: dict[str, str]
) -> None:
    name, version = _objective(artifacts)
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version, train=8)
    key = snapshot.uri.removeprefix(f"s3://{artifacts.bucket}/") + "train.jsonl"
    lines = artifacts.get_bytes(key).splitlines()
    artifacts.put_bytes(key, b"\n".join([*lines[:3], b'{"id": "broken"', *lines[3:]]))

    failed = _failed_run(
        stack, artifacts, trainer_env, name=name, version=version, snapshot=snapshot
    )

    assert failed.reason == training_pb2.FAILURE_REASON_BAD_DATASET
    assert f"{snapshot.uri}train.jsonl line 4 is not JSON" in failed.message


def test_a_missing_base_model_fails_the_run_saying_what_was_looked_for(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore, trainer_env: dict[str, str]
) -> None:
    name, version = _objective(artifacts, base_model="builtin://tiny-gpt")
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version, train=8)

    failed = _failed_run(
        stack, artifacts, trainer_env, name=name, version=version, snapshot=snapshot
    )

    assert failed.reason == training_pb2.FAILURE_REASON_MISSING_BASE_MODEL
    assert "builtin://tiny-gpt" in failed.message


def test_a_killed_trainer_resumes_from_its_last_checkpoint(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore, trainer_env: dict[str, str]
) -> None:
    name, version = _objective(artifacts, training={**TRAINING, "epochs": 4})
    snapshot = datasets.write_snapshot(
        artifacts, objective=name, version=version, train=60, eval_=20
    )
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    # A checkpoint after every step, so the first lands at once and the kill comes early.
    env = {**trainer_env, "TUNEWIRE_TRAINER__CHECKPOINT_EVERY_S": "0.01"}
    pointer = f"checkpoints/{name}/{run_id}/latest.json"
    first = subprocess.Popen(
        _args(name, version, snapshot, run_id=run_id),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def checkpointed() -> None:
            written = list(artifacts.list_keys(pointer))
            if not written and first.poll() is not None:
                # Not an AssertionError, which eventually() would retry until the deadline.
                pytest.fail("the trainer ended before its first checkpoint")
            assert written, "no checkpoint was written"

        eventually(checkpointed, timeout_s=90, interval_s=0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert outcomes.read(artifacts, name, run_id) is None

    # The next attempt checkpoints as a Job does: what it resumes from is the first's.
    second = _train(_args(name, version, snapshot, run_id=run_id, attempt=2), trainer_env)

    assert second.returncode == 0, second.stderr[-3000:]
    events = _events(stack, run_id, until="succeeded")
    started = [e for _, e in events if e.WhichOneof("phase") == "started" and e.attempt == 2]
    assert len(started) == 1
    assert started[0].started.resumed_from_step > 0
    resumed_progress = [e.progress.step for _, e in events if e.attempt == 2 and e.progress.step]
    assert min(resumed_progress) > started[0].started.resumed_from_step
    assert _phases(events).count("succeeded") == 1
    assert artifacts.get_json(f"adapters/{name}/{run_id}/metrics.json")["steps"] == 4 * 8


def test_s3_out_of_reach_leaves_the_run_to_another_attempt(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore, trainer_env: dict[str, str]
) -> None:
    """S3 gone mid-training, past the client's retries: exit 75 and no outcome, so train
    tries again; the next attempt resumes from the checkpoint."""
    # Training goes on while S3 is gone (checkpoints and progress are best effort) and the
    # run ends at the adapter's upload: every step after the cut waits out failing calls,
    # so the run is kept short. The cut still comes early in it (after the first checkpoint,
    # written after the first step).
    name, version = _objective(artifacts)
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version, train=60)
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    endpoint = urllib.parse.urlsplit(stack.s3_endpoint_url)
    cut = proxy.CuttableProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
    env = {
        **trainer_env,
        "TUNEWIRE_S3__ENDPOINT_URL": f"http://127.0.0.1:{cut.port}",
        "TUNEWIRE_S3__MAX_ATTEMPTS": "2",
        "TUNEWIRE_TRAINER__CHECKPOINT_EVERY_S": "0.01",
    }
    trainer = subprocess.Popen(
        _args(name, version, snapshot, run_id=run_id),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def checkpointed() -> None:
            written = list(artifacts.list_keys(f"checkpoints/{name}/{run_id}/latest.json"))
            if not written and trainer.poll() is not None:
                # Not an AssertionError, which eventually() would retry until the deadline.
                pytest.fail(f"the trainer ended (exit {trainer.returncode}) before a checkpoint")
            assert written, "no checkpoint was written"

        eventually(checkpointed, timeout_s=90, interval_s=0.05)
        cut.cut()
        _, logged = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(10)
        cut.close()

    assert trainer.returncode == launching.EXIT_STORAGE, logged[-3000:]
    assert "leaving the run to another attempt" in logged
    assert outcomes.read(artifacts, name, run_id) is None

    second = _train(_args(name, version, snapshot, run_id=run_id, attempt=2), trainer_env)

    assert second.returncode == 0, second.stderr[-3000:]
    events = _events(stack, run_id, until="succeeded")
    started = [e for _, e in events if e.WhichOneof("phase") == "started" and e.attempt == 2]
    assert started[0].started.resumed_from_step > 0


def test_sigterm_checkpoints_and_leaves_the_run_open(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore, trainer_env: dict[str, str]
) -> None:
    """A pre-empted pod gets SIGTERM: it saves its state and exits without an outcome."""
    name, version = _objective(artifacts, training={**TRAINING, "epochs": 20})
    snapshot = datasets.write_snapshot(artifacts, objective=name, version=version, train=60)
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    trainer = subprocess.Popen(
        _args(name, version, snapshot, run_id=run_id),
        env={**os.environ, **trainer_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def progressed() -> None:
            written = list(artifacts.list_keys(f"runs/{name}/{run_id}/progress.json"))
            if not written and trainer.poll() is not None:
                # Not an AssertionError, which eventually() would retry until the deadline.
                pytest.fail(f"the trainer ended (exit {trainer.returncode}) before any progress")
            assert written, "no progress was written"

        eventually(progressed, timeout_s=90, interval_s=0.05)
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(30) == 143
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(10)

    assert outcomes.read(artifacts, name, run_id) is None
    latest = artifacts.get_json(f"checkpoints/{name}/{run_id}/latest.json")
    assert 0 < latest["step"] < 20 * 8
    assert list(artifacts.list_keys(f"checkpoints/{name}/{run_id}/step-")) == [latest["key"]]
