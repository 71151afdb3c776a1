"""From a trained adapter to a published decision, on the stack's S3 and Kafka.

The tests play the evaluator: they write metrics.json where the evaluation record says and
report the workload's end as the launcher's watch would. Everything else is real: records,
the registry and metrics.json in S3 over HTTP, events through the broker, reviews over HTTP.
"""

from __future__ import annotations

import collections.abc
from typing import Any

import fastapi.testclient
import pytest

from tests.support import evaluation
from tunewire.contracts.v1 import evaluations_pb2, training_pb2
from tunewire.core.base import errors, principals
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.launchers import launching
from tunewire.core.process import authorization, http
from tunewire.evaluate import api, records

TOKENS = {name: f"{name}-evaluate-test-token-0123456789" for name in ("alice", "bob", "vic")}
PRINCIPALS = principals.Principals(
    [
        principals.Principal(
            name=name,
            token_sha256=principals.token_digest(TOKENS[name]),
            roles=frozenset(
                {principals.Role.VIEWER if name == "vic" else principals.Role.REVIEWER}
            ),
        )
        for name in TOKENS
    ]
)
"""Two reviewers and a viewer."""
GATES = [{"metric": "accuracy", "min": 0.6}, {"metric": "accuracy", "beat_champion_by": 0.01}]


@pytest.fixture
def client(
    harness: evaluation.Harness,
) -> collections.abc.Iterator[fastapi.testclient.TestClient]:
    """The evaluate service's HTTP API, built in-process around the harness's controller."""
    app = http.create_app(
        title="tunewire evaluate",
        probes=http.Probes(),
        routers=[
            api.router(
                controller=harness.controller,
                catalog=harness.catalog,
                auth=authorization.Authority(PRINCIPALS, authorization.POLICY["evaluate"]),
            )
        ],
    )
    with fastapi.testclient.TestClient(app, headers=as_("alice")) as test_client:
        yield test_client


def as_(name: str) -> dict[str, str]:
    """The headers of a request by ``name``."""
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def _evaluate(
    harness: evaluation.Harness,
    objective: str,
    run_id: str,
    *,
    candidate: dict[str, float],
    champion: dict[str, float] | None = None,
) -> records.EvaluationRecord:
    """Start an evaluation, write its metrics and report the evaluator's success."""
    started = harness.controller.accept(harness.succeeded(objective, run_id))
    assert started is not None and started.status == "evaluating"
    harness.write_metrics(started, candidate=candidate, champion=champion)
    harness.finish(started, launching.JobPhase.SUCCEEDED)
    return harness.records_of(objective, run_id)


def test_a_succeeded_run_launches_one_evaluator_with_the_champion(
    harness: evaluation.Harness,
) -> None:
    objective = harness.objective(gates=GATES).name
    message = harness.succeeded(objective, "run-1")
    record = harness.controller.accept(message)
    assert record is not None
    again = harness.controller.accept(message)  # a redelivery
    assert again == record

    assert list(harness.launcher.created) == [record.workload]
    spec = harness.launcher.created[record.workload]
    assert spec.name == launching.workload_name("evaluate", objective, "run-1", "attempt-1")
    assert spec.kind == "evaluate"
    assert spec.gpus == 1
    assert spec.labels == {"tunewire.io/objective": objective, "tunewire.io/run": "run-1"}
    assert spec.args == [
        "--objective", objective,
        "--objective-version", "1",
        "--run-id", "run-1",
        "--dataset-id", "ds-run-1",
        "--dataset-uri", harness.artifacts.uri(f"datasets/{objective}/ds-run-1/"),
        "--candidate-uri", harness.artifacts.uri(f"adapters/{objective}/run-1/"),
        "--output-key", f"evaluations/{objective}/run-1/metrics.json",
    ]  # fmt: skip
    registered = harness.controller.registry.get(objective).versions["run-1"]
    assert registered.status == "pending"
    # The registry keeps how the adapter's data was prepared, for serve to prepare requests
    # alike: the manifest's instruction and the objective version's redaction and text form.
    manifest = harness.artifacts.get_json(f"datasets/{objective}/ds-run-1/manifest.json")
    spec = harness.catalog.get(objective, 1).spec
    assert registered.contract is not None
    assert registered.contract.instruction == manifest["instruction"]
    assert registered.contract.redaction == tuple(spec.redaction.kinds)
    assert registered.contract.labels == tuple(spec.labels)
    assert registered.contract.max_text_chars == spec.dataset.max_text_chars
    assert registered.contract.source == spec.source

    # Progress and failure events of training start nothing.
    progress = training_pb2.TrainingEvent(
        run_id="run-2",
        objective=objective,
        progress=training_pb2.TrainingEvent.Progress(step=3),
    )
    assert harness.controller.accept(evaluation.message(progress, event_id="p-1")) is None
    assert len(harness.launcher.created) == 1

    # Once run-1 is champion, the next evaluation measures it beside the candidate.
    harness.write_metrics(record, candidate={"accuracy": 0.9})
    harness.finish(record, launching.JobPhase.SUCCEEDED)
    second = harness.controller.accept(harness.succeeded(objective, "run-2"))
    assert second is not None
    assert (second.champion_run_id, second.champion_uri) == ("run-1", record.adapter_uri)
    args = harness.launcher.created[second.workload].args
    assert args[args.index("--champion-run-id") + 1] == "run-1"
    assert args[args.index("--champion-uri") + 1] == record.adapter_uri

    # A redelivered success of a decided run does not even ask the launcher (its workload
    # may long be garbage-collected, and a launch would then start it again).
    calls = harness.launcher.launch_calls
    assert harness.controller.accept(message) is not None
    assert harness.launcher.launch_calls == calls
    assert len(harness.launcher.created) == 2


def test_events_that_can_never_start_an_evaluation_are_invalid(
    harness: evaluation.Harness,
) -> None:
    with pytest.raises(errors.InvalidEvent) as malformed:
        harness.controller.accept(
            producing.Message(
                topic=topics.TRAINING,
                partition=0,
                offset=0,
                key=b"x",
                value=b"\x0a\x05ab",
                headers=[],
            )
        )
    assert malformed.value.kind == "malformed"
    with pytest.raises(errors.InvalidEvent) as unknown:
        harness.controller.accept(harness.succeeded("never-registered", "run-1"))
    assert unknown.value.kind == "unknown_objective"
    assert harness.launcher.created == {}


def _forged(harness: evaluation.Harness, objective: str, run_id: str, **succeeded: str) -> Any:
    """A success event the trainer never vouched for: no outcome written in S3."""
    event = training_pb2.TrainingEvent(
        run_id=run_id,
        objective=objective,
        dataset_id="ds-forged",
        objective_version=1,
        succeeded=training_pb2.TrainingEvent.Succeeded(
            adapter_uri=succeeded.get(
                "adapter_uri", harness.artifacts.uri(f"adapters/{objective}/{run_id}/")
            )
        ),
    )
    return evaluation.message(event, event_id=f"forged-{run_id}")


def test_a_forged_success_is_refused_and_nothing_is_registered(
    harness: evaluation.Harness,
) -> None:
    """Anyone who can produce to the training topic could announce an adapter; only what the
    trainer recorded in S3 is evaluated, registered and so ever served."""
    objective = harness.objective(gates=GATES).name
    genuine = harness.succeeded(objective, "run-1")  # writes run-1's outcome
    forged = [
        _forged(harness, objective, "run-1", adapter_uri="s3://elsewhere/adapters/x/"),
        _forged(harness, objective, "ft-000000000000"),  # a run train never had
        _forged(harness, objective, "../../../tmp/owned"),
        _forged(harness, objective, "run-1", adapter_uri=harness.artifacts.uri("adapters/x/")),
    ]
    for message in forged:
        with pytest.raises(errors.InvalidEvent) as refused:
            harness.controller.accept(message)
        assert refused.value.kind == "forged", refused.value.message
    assert harness.controller.registry.get(objective).versions == {}
    assert harness.launcher.created == {}
    assert harness.controller.accept(genuine) is not None
    assert list(harness.controller.registry.get(objective).versions) == ["run-1"]


def test_an_approval_moves_the_champion_and_is_published_once(
    harness: evaluation.Harness,
) -> None:
    objective = harness.objective(gates=GATES).name
    record = _evaluate(harness, objective, "run-1", candidate={"accuracy": 0.9, "macro_f1": 0.8})

    assert (record.status, record.decision, record.decided_by) == (
        "decided",
        "approved",
        "evaluator",
    )
    assert [(g.rule, g.passed) for g in record.gates] == [("min", True), ("beat_champion_by", True)]
    document = harness.controller.registry.get(objective)
    assert document.champion == "run-1"
    assert document.versions["run-1"].metrics == {"accuracy": 0.9, "macro_f1": 0.8}
    assert [e.action for e in document.history] == ["approved", "promoted"]

    # The watch reporting the same success again (a reconnection) changes nothing.
    harness.finish(record, launching.JobPhase.SUCCEEDED)
    harness.controller.poll_open()

    published = harness.results(objective, count=1)
    assert len(published) == 1, [r.decision for _, r in published]
    ce_id, result = published[0]
    assert ce_id == envelope.derived_id(objective, "run-1", "evaluation", "approved", "evaluator")
    assert result.decision == evaluations_pb2.DECISION_APPROVED
    assert (result.run_id, result.dataset_id, result.decided_by) == (
        "run-1",
        "ds-run-1",
        "evaluator",
    )
    assert result.metrics_uri == record.metrics_uri
    assert dict(result.candidate.values) == {"accuracy": 0.9, "macro_f1": 0.8}
    assert result.base.values["accuracy"] == 0.25
    assert not result.HasField("champion")
    assert [(g.metric, g.rule, g.passed) for g in result.gates] == [
        ("accuracy", "min", True),
        ("accuracy", "beat_champion_by", True),
    ]
    assert "no champion yet" in result.reason


def test_a_failing_gate_rejects_with_the_reason(harness: evaluation.Harness) -> None:
    objective = harness.objective(gates=GATES).name
    _evaluate(harness, objective, "run-1", candidate={"accuracy": 0.80})
    rejected = _evaluate(
        harness, objective, "run-2", candidate={"accuracy": 0.805}, champion={"accuracy": 0.80}
    )

    assert (rejected.status, rejected.decision) == ("decided", "rejected")
    assert rejected.reason == ("failed gates: accuracy 0.805 ≥ champion 0.8 by 0.01 does not hold")
    margin = rejected.gates[1]
    assert margin.threshold == pytest.approx(0.81)
    assert (margin.value, margin.passed) == (0.805, False)
    document = harness.controller.registry.get(objective)
    assert document.champion == "run-1", "a rejected candidate never becomes champion"
    assert document.versions["run-2"].status == "rejected"

    published = dict((r.run_id, r) for _, r in harness.results(objective, count=2))
    assert published["run-2"].decision == evaluations_pb2.DECISION_REJECTED
    assert published["run-2"].reason == rejected.reason
    assert published["run-2"].champion.values["accuracy"] == 0.80
    assert published["run-2"].gates[1].passed is False


def test_the_evaluators_warnings_join_the_reason_and_decide_nothing(
    harness: evaluation.Harness,
) -> None:
    objective = harness.objective(gates=GATES).name
    started = harness.controller.accept(harness.succeeded(objective, "run-1"))
    assert started is not None
    harness.write_metrics(started, candidate={"accuracy": 0.9})
    warning = "the candidate's answers equal the base model's on all 40 eval examples"
    written = harness.artifacts.get_json(started.metrics_key)
    harness.artifacts.put_json(started.metrics_key, {**written, "warnings": [warning]})
    harness.finish(started, launching.JobPhase.SUCCEEDED)

    record = harness.records_of(objective, "run-1")
    assert (record.status, record.decision) == ("decided", "approved")
    assert record.reason == (
        "passed every gate (accuracy margin over the champion: no champion yet, passes); "
        f"warning: {warning}"
    )
    assert harness.controller.registry.get(objective).versions["run-1"].reason == record.reason


def test_a_failed_evaluator_is_retried_then_rejected_with_the_launchers_reason(
    harness: evaluation.Harness,
) -> None:
    objective = harness.objective(gates=GATES).name
    first = harness.controller.accept(harness.succeeded(objective, "run-1"))
    assert first is not None
    harness.finish(
        first,
        launching.JobPhase.FAILED,
        reason=training_pb2.FAILURE_REASON_PREEMPTED,
        message="the node went away",
    )
    second = harness.records_of(objective, "run-1")
    assert (second.status, second.attempt) == ("evaluating", 2)
    assert second.workload == launching.workload_name("evaluate", objective, "run-1", "attempt-2")
    assert list(harness.launcher.created) == [first.workload, second.workload]

    # A late report about the first attempt changes nothing.
    harness.finish(first, launching.JobPhase.FAILED)
    assert harness.records_of(objective, "run-1") == second

    harness.finish(
        second,
        launching.JobPhase.FAILED,
        reason=training_pb2.FAILURE_REASON_OUT_OF_MEMORY,
        message="OOMKilled",
    )
    final = harness.records_of(objective, "run-1")
    assert (final.status, final.decision) == ("decided", "rejected")
    assert final.reason == (
        "the evaluator failed 2 time(s); last: attempt 2 failed "
        "(FAILURE_REASON_OUT_OF_MEMORY): OOMKilled"
    )
    assert final.failures == ["attempt 1 failed (FAILURE_REASON_PREEMPTED): the node went away"]
    assert harness.controller.registry.get(objective).versions["run-1"].status == "rejected"
    assert len(harness.launcher.created) == 2

    [(_, result)] = harness.results(objective, count=1)
    assert result.decision == evaluations_pb2.DECISION_REJECTED
    assert result.reason == final.reason
    assert not result.HasField("candidate")


def test_an_evaluator_that_wrote_no_metrics_counts_as_failed(harness: evaluation.Harness) -> None:
    objective = harness.objective(gates=GATES).name
    record = harness.controller.accept(harness.succeeded(objective, "run-1"))
    assert record is not None
    harness.finish(record, launching.JobPhase.SUCCEEDED)
    retried = harness.records_of(objective, "run-1")
    assert (retried.status, retried.attempt) == ("evaluating", 2)
    assert "without a usable metrics.json" in retried.failures[0]


def test_manual_approval_holds_for_a_person_who_decides_over_http(
    harness: evaluation.Harness, client: fastapi.testclient.TestClient
) -> None:
    objective = harness.objective(approval="manual", gates=GATES).name
    held = _evaluate(harness, objective, "run-a", candidate={"accuracy": 0.9})
    assert (held.status, held.decision) == ("needs_review", "needs_review")
    assert harness.controller.registry.get(objective).champion is None

    shown = client.get(f"/v1/evaluations/{objective}/run-a")
    assert shown.status_code == 200
    body = shown.json()
    assert body["status"] == "needs_review"
    assert body["metrics"]["candidate"]["values"] == {"accuracy": 0.9}
    assert [g["passed"] for g in body["gates"]] == [True, True]
    listed = client.get("/v1/evaluations", params={"objective": objective}).json()
    assert [e["run_id"] for e in listed["evaluations"]] == ["run-a"]

    url = f"/v1/evaluations/{objective}/run-a"
    assert client.post(f"{url}/approve", json={}).status_code == 422
    assert client.post(f"{url}/approve", json={"reason": "  "}).status_code == 422
    unauthenticated = client.post(
        f"{url}/approve", json={"reason": "ok"}, headers={"Authorization": "Bearer wrong"}
    )
    assert unauthenticated.status_code == 401
    viewer = client.post(f"{url}/approve", json={"reason": "ok"}, headers=as_("vic"))
    assert viewer.status_code == 403 and "reviewer" in viewer.json()["message"]
    assert harness.records_of(objective, "run-a").status == "needs_review"

    # The reviewer is whoever the token names; an actor in the body changes nothing.
    approved = client.post(f"{url}/approve", json={"actor": "bob", "reason": "spot-checked"})
    assert approved.status_code == 200, approved.text
    assert (approved.json()["decision"], approved.json()["decided_by"]) == ("approved", "alice")
    again = client.post(f"{url}/approve", json={"reason": "spot-checked"})
    assert again.status_code == 409
    assert "approved by alice" in again.json()["message"]
    refused = client.post(f"{url}/reject", json={"reason": "no"}, headers=as_("bob"))
    assert refused.status_code == 409
    missing = client.post(f"/v1/evaluations/{objective}/run-zzz/approve", json={"reason": "b"})
    assert missing.status_code == 404

    # A second candidate, rejected by a person: the champion stays.
    _evaluate(harness, objective, "run-b", candidate={"accuracy": 0.95}, champion={"accuracy": 0.9})
    rejected = client.post(
        f"/v1/evaluations/{objective}/run-b/reject", json={"reason": "bias"}, headers=as_("bob")
    )
    assert rejected.status_code == 200, rejected.text

    registry_body = client.get(f"/v1/registry/{objective}").json()
    assert registry_body["champion"] == "run-a"
    assert {k: v["status"] for k, v in registry_body["versions"].items()} == {
        "run-a": "approved",
        "run-b": "rejected",
    }
    assert [(e["action"], e["actor"]) for e in registry_body["history"]] == [
        ("needs_review", "evaluator"),
        ("approved", "alice"),
        ("promoted", "alice"),
        ("needs_review", "evaluator"),
        ("rejected", "bob"),
    ]
    overview = client.get("/v1/registry").json()["objectives"]
    assert {"objective": objective, "champion": "run-a", "versions": 2} in overview
    assert client.get("/v1/registry/no-such-objective").status_code == 404

    published = [
        (r.run_id, r.decision, r.decided_by, r.reason)
        for _, r in harness.results(objective, count=4)
    ]
    assert published == [
        ("run-a", evaluations_pb2.DECISION_NEEDS_REVIEW, "evaluator", held.reason),
        ("run-a", evaluations_pb2.DECISION_APPROVED, "alice", "spot-checked"),
        ("run-b", evaluations_pb2.DECISION_NEEDS_REVIEW, "evaluator", published[2][3]),
        ("run-b", evaluations_pb2.DECISION_REJECTED, "bob", "bias"),
    ]


def test_the_reconciler_launches_what_could_not_be_and_fails_what_vanished(
    harness: evaluation.Harness,
) -> None:
    objective = harness.objective(gates=GATES).name
    harness.launcher.unreachable = True
    record = harness.controller.accept(harness.succeeded(objective, "run-1"))
    assert record is not None and record.status == "evaluating"
    assert harness.launcher.created == {}, "the event is consumed; the reconciler retries"

    harness.launcher.unreachable = False
    harness.controller.poll_open()
    assert list(harness.launcher.created) == [record.workload]

    harness.finish(record, launching.JobPhase.RUNNING, logs="/tmp/evaluator.log")
    running = harness.records_of(objective, "run-1")
    assert running.started_at is not None and running.logs == "/tmp/evaluator.log"
    # The running workload is deleted behind our back: that attempt failed.
    harness.finish(record, launching.JobPhase.MISSING)
    retried = harness.records_of(objective, "run-1")
    assert (retried.attempt, retried.started_at) == (2, None)
    assert "disappeared while running" in retried.failures[0]
    assert retried.workload in harness.launcher.created


def test_a_decision_the_registry_already_holds_is_completed_not_refused(
    harness: evaluation.Harness,
) -> None:
    """A crash after the registry write and before the event: the repeat finishes the job."""
    objective = harness.objective(gates=GATES).name
    record = harness.controller.accept(harness.succeeded(objective, "run-1"))
    assert record is not None
    harness.controller.registry.decide(
        objective, "run-1", decision="approved", actor="evaluator", reason="first try"
    )
    harness.write_metrics(record, candidate={"accuracy": 0.9})
    harness.finish(record, launching.JobPhase.SUCCEEDED)

    final = harness.records_of(objective, "run-1")
    assert (final.status, final.decision) == ("decided", "approved")
    [(_, result)] = harness.results(objective, count=1)
    assert result.decision == evaluations_pb2.DECISION_APPROVED
