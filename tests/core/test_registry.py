"""The adapter registry against the embedded S3 endpoint: versions, champion, history, CAS."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable

import pytest

from tunewire.core.base import errors, store
from tunewire.core.state import registry


@pytest.fixture
def objective() -> str:
    return f"reg-{uuid.uuid4().hex[:10]}"


def _register(reg: registry.Registry, objective: str, run_id: str) -> registry.RegistryDocument:
    return reg.register(
        objective,
        run_id=run_id,
        dataset_id=f"ds-{run_id}",
        objective_version=1,
        adapter_uri=f"s3://tunewire/adapters/{objective}/{run_id}/",
        metrics_uri=f"s3://tunewire/evaluations/{objective}/{run_id}/metrics.json",
    )


def _together(count: int, work: Callable[[int], object]) -> None:
    """Run ``work(i)`` in ``count`` threads released at the same moment; re-raise failures."""
    barrier = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures


def test_an_absent_registry_reads_empty_and_writes_nothing(
    artifacts: store.ArtifactStore, objective: str
) -> None:
    reg = registry.Registry(artifacts)
    empty = reg.get(objective)
    assert empty == registry.RegistryDocument(objective=objective)
    assert empty.champion is None and empty.champion_version() is None
    assert objective not in reg.objectives()
    with pytest.raises(errors.NotFound):
        artifacts.get_bytes(f"registry/{objective}.json")


def test_concurrent_first_writes_all_land(artifacts: store.ArtifactStore, objective: str) -> None:
    """The first write is only-if-absent: the losers retry on top of the winner's document."""
    writers = [registry.Registry(artifacts) for _ in range(6)]
    _together(6, lambda i: _register(writers[i], objective, f"run-{i}"))
    document = registry.Registry(artifacts).get(objective)
    assert sorted(document.versions) == [f"run-{i}" for i in range(6)]
    assert all(v.status == "pending" for v in document.versions.values())
    assert objective in registry.Registry(artifacts).objectives()


def test_concurrent_decisions_lose_no_write(artifacts: store.ArtifactStore, objective: str) -> None:
    reg = registry.Registry(artifacts)
    runs = [f"run-{i:02d}" for i in range(12)]
    for run_id in runs:
        _register(reg, objective, run_id)

    def decide(index: int) -> None:
        registry.Registry(artifacts).decide(
            objective,
            runs[index],
            decision="approved" if index % 3 == 0 else "rejected",
            actor="evaluator",
            reason=f"decision {index}",
            metrics={"accuracy": index / 100},
        )

    _together(len(runs), decide)
    document = reg.get(objective)
    for index, run_id in enumerate(runs):
        version = document.versions[run_id]
        assert version.status == ("approved" if index % 3 == 0 else "rejected"), run_id
        assert version.reason == f"decision {index}"
        assert version.metrics == {"accuracy": index / 100}
        assert version.decided_at is not None
    decisions = [e for e in document.history if e.action in ("approved", "rejected")]
    assert sorted(e.run_id for e in decisions) == runs
    promotions = [e for e in document.history if e.action == "promoted"]
    assert len(promotions) == 4, "each approval moved the champion once"
    # The promotions chain: each one starts from the champion the previous one set.
    assert promotions[0].from_run_id is None
    for before, after in itertools.pairwise(promotions):
        assert after.from_run_id == before.run_id
    assert document.champion == promotions[-1].run_id
    assert [v.run_id for v in document.approved()] == runs[::3]


def test_repeating_a_decision_changes_nothing(
    artifacts: store.ArtifactStore, objective: str
) -> None:
    reg = registry.Registry(artifacts)
    _register(reg, objective, "run-a")
    first = reg.decide(objective, "run-a", decision="approved", actor="evaluator", reason="ok")
    _, etag = artifacts.get_versioned(f"registry/{objective}.json")

    again = reg.decide(objective, "run-a", decision="approved", actor="evaluator", reason="ok")
    registered_again = _register(reg, objective, "run-a")

    assert again == first == registered_again
    assert artifacts.get_versioned(f"registry/{objective}.json")[1] == etag, "nothing written"
    assert [e.action for e in first.history] == ["approved", "promoted"]


def test_a_decided_version_refuses_another_decision(
    artifacts: store.ArtifactStore, objective: str
) -> None:
    reg = registry.Registry(artifacts)
    _register(reg, objective, "run-a")
    reg.decide(objective, "run-a", decision="rejected", actor="evaluator", reason="low")
    with pytest.raises(errors.Conflict, match="rejected by evaluator"):
        reg.decide(objective, "run-a", decision="approved", actor="evaluator", reason="x")
    with pytest.raises(errors.NotFound, match="run-zzz"):
        reg.decide(objective, "run-zzz", decision="approved", actor="evaluator", reason="x")
    assert reg.get(objective).versions["run-a"].status == "rejected"


def test_a_person_decides_a_held_version_once(
    artifacts: store.ArtifactStore, objective: str
) -> None:
    reg = registry.Registry(artifacts)
    _register(reg, objective, "run-a")
    held = reg.decide(objective, "run-a", decision="needs_review", actor="evaluator", reason="ok")
    assert held.champion is None, "a held version is not served"

    approved = reg.decide(
        objective,
        "run-a",
        decision="approved",
        actor="alice",
        reason="checked the disagreements",
        allowed_from=registry.HELD,
    )
    assert approved.champion == "run-a"
    assert approved.versions["run-a"].decided_by == "alice"
    # The same person's retry is idempotent; someone else's is a conflict.
    assert (
        reg.decide(
            objective,
            "run-a",
            decision="approved",
            actor="alice",
            reason="checked the disagreements",
            allowed_from=registry.HELD,
        )
        == approved
    )
    with pytest.raises(errors.Conflict, match="approved by alice"):
        reg.decide(
            objective,
            "run-a",
            decision="rejected",
            actor="bob",
            reason="no",
            allowed_from=registry.HELD,
        )
    assert [(e.action, e.actor) for e in approved.history] == [
        ("needs_review", "evaluator"),
        ("approved", "alice"),
        ("promoted", "alice"),
    ]


def test_set_champion_moves_only_to_an_approved_version(
    artifacts: store.ArtifactStore, objective: str
) -> None:
    reg = registry.Registry(artifacts)
    for run_id in ("run-a", "run-b", "run-c", "run-d"):
        _register(reg, objective, run_id)
    reg.decide(objective, "run-a", decision="approved", actor="evaluator", reason="ok")
    reg.decide(objective, "run-b", decision="approved", actor="evaluator", reason="ok")
    reg.decide(objective, "run-c", decision="rejected", actor="evaluator", reason="low")
    reg.decide(objective, "run-d", decision="needs_review", actor="evaluator", reason="ok")
    assert reg.get(objective).champion == "run-b"

    for refused in ("run-c", "run-d"):
        with pytest.raises(errors.Conflict, match="only an approved version"):
            reg.set_champion(objective, refused, actor="sre", reason="rollback")
    with pytest.raises(errors.NotFound):
        reg.set_champion(objective, "run-x", actor="sre", reason="rollback")
    assert reg.get(objective).champion == "run-b"

    rolled_back = reg.set_champion(objective, "run-a", actor="sre", reason="run-b misroutes")
    assert rolled_back.champion == "run-a"
    last = rolled_back.history[-1]
    assert (last.action, last.run_id, last.from_run_id, last.actor, last.reason) == (
        "champion_set",
        "run-a",
        "run-b",
        "sre",
        "run-b misroutes",
    )
    assert reg.set_champion(objective, "run-a", actor="sre", reason="again") == rolled_back
