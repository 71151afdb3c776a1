"""Records prepared in worker processes get exactly the outcomes labelling in the consumer
gives, near-duplicates included; a worker that fails hands the record back to the consumer."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import multiprocessing
import os
import signal
from collections.abc import Iterator, Mapping, Sequence

import pytest

from tunewire import samples
from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import errors
from tunewire.core.bus import pooling, producing
from tunewire.core.state import objectives
from tunewire.label import labelling, parallel

NOW = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def pool() -> Iterator[parallel.LabelPool]:
    workers = parallel.LabelPool(workers=1, preparer=labelling.Preparer())
    yield workers
    workers.close()


def _objective(version: int = 3) -> objectives.ObjectiveVersion:
    spec = objectives.parse_spec(samples.support_intent_spec())
    return objectives.ObjectiveVersion(
        name=spec.name,
        version=version,
        status="active",
        spec=spec,
        created_at=NOW,
        created_by="test",
    )


def _messages(objective: str, count: int = 300) -> list[producing.Message]:
    """Sample tickets as records, with exact and edited copies among them."""
    found = []
    tickets = [event for event, _ in samples.labelled_tickets(count, seed=21)]
    # Repeats under new ids: exact duplicates, then near-duplicates (one word changed).
    tickets += [{**t, "id": f"{t['id']}-again"} for t in tickets[:20]]
    tickets += [
        {**t, "id": f"{t['id']}-edit", "data": {**t["data"], "body": t["data"]["body"] + " ok"}}
        for t in tickets[20:40]
    ]
    for offset, ticket in enumerate(tickets):
        data = ticket["data"]
        record = records_pb2.Record(
            objective=objective,
            objective_version=3,
            source_id=f"{data['ticket_id']}-{offset}" if offset >= count else data["ticket_id"],
            text=f"{data['subject']}\n{data['body']}",
            fields_json='{"channel": "email"}',
            event_id=ticket["id"],
        )
        headers = [("ce_id", f"rec-{ticket['id']}".encode())]
        found.append(
            producing.Message(
                "tunewire.records", 0, offset, b"k", record.SerializeToString(), headers
            )
        )
    return found


def _comparable(outcome: labelling.Outcome | labelling.OverBudget) -> object:
    """An outcome without the moment it was decided (workers read their own clock)."""
    if isinstance(outcome, labelling.Labelled):
        return dataclasses.replace(outcome.example, labelled_at="")
    if isinstance(outcome, labelling.Queued):
        return dataclasses.replace(outcome.task, enqueued_at="")
    return outcome


def _in_workers(
    pool: parallel.LabelPool,
    messages: Sequence[producing.Message],
    current: Mapping[str, objectives.ObjectiveVersion],
) -> list[parallel.Result]:
    results: list[parallel.Result] = []
    for start in range(0, len(messages), 64):
        results += pool.submit(messages[start : start + 64], current).result(timeout=120)
    return results


def test_workers_give_the_outcomes_of_labelling_in_the_consumer(
    pool: parallel.LabelPool,
) -> None:
    objective = _objective()
    messages = _messages(objective.name)
    prepared = _in_workers(pool, messages, {objective.name: objective})

    here, there, announced = (
        labelling.Labeller(near_threshold=0.8, near_capacity=1000) for _ in range(3)
    )
    expected = []
    for message in messages:
        record = labelling.decode(message.value)
        record_id = (message.header("ce_id") or b"").decode()
        expected.append(here.label(record, record_id=record_id, objective=objective, now=NOW))
    got = []
    for result in prepared:
        assert result is not None
        got.append(there.admit(result, objective))
    # Announced a chunk at a time, as the consumer does (only objectives seen already are).
    got_announced = []
    for start in range(0, len(prepared), 64):
        chunk = prepared[start : start + 64]
        announced.expect(chunk)
        got_announced += [announced.admit(result, objective) for result in chunk if result]

    assert [_comparable(o) for o in got] == [_comparable(o) for o in expected]
    assert [_comparable(o) for o in got_announced] == [_comparable(o) for o in expected]
    reasons = {o.reason for o in got if isinstance(o, labelling.Dropped)}
    assert {"duplicate_text", "near_duplicate"} <= reasons, "the sample has copies to find"
    labelled = [o for o in got if isinstance(o, labelling.Labelled)]
    assert labelled and all(o.encoded.event and o.encoded.line for o in labelled)


def test_remembered_items_are_duplicates_whatever_batch_they_came_in() -> None:
    objective = _objective()
    prepared = [
        labelling.Preparer().prepare(
            labelling.decode(m.value), record_id=f"r{n}", objective=objective, now=NOW
        )
        for n, m in enumerate(_messages(objective.name, count=labelling.REMEMBER_BATCH + 100))
    ]
    originals = prepared[: labelling.REMEMBER_BATCH + 100]
    labeller = labelling.Labeller(near_threshold=0.8, near_capacity=5000)
    # The first 40, which the repeats and edits copy, are remembered in the second batch.
    remembered = originals[40:] + originals[:40]
    labeller.remember(objective.name, [(p.source_id, p.text) for p in remembered])
    outcomes = [labeller.admit(p, objective) for p in prepared]
    reasons = [o.reason if isinstance(o, labelling.Dropped) else "admitted" for o in outcomes]
    # Every original comes again as its source; the repeats and edits are an exact text and
    # a near-copy of remembered ones.
    assert set(reasons[: len(originals)]) == {"duplicate_source"}
    assert set(reasons[len(originals) :]) == {"duplicate_text", "near_duplicate"}


def test_records_a_worker_cannot_prepare_come_back_for_the_consumer(
    pool: parallel.LabelPool,
) -> None:
    objective = _objective()
    good = _messages(objective.name, count=3)[0]
    retired = objective.model_copy(update={"name": "gone", "status": "retired"})
    other = records_pb2.Record(objective="gone", source_id="x", text="a refund please")
    messages = [
        dataclasses.replace(good, value=b"\xff not a record"),
        dataclasses.replace(good, headers=[]),
        dataclasses.replace(good, value=records_pb2.Record(objective="nobody").SerializeToString()),
        dataclasses.replace(good, value=other.SerializeToString()),
        good,
    ]
    results = pool.submit(messages, {objective.name: objective, "gone": retired}).result(120)
    assert results[:4] == [None, None, None, None]
    assert isinstance(results[4], labelling.Prepared)


def test_a_dead_worker_hands_its_chunks_back_and_takes_no_more() -> None:
    objective = _objective()
    messages = _messages(objective.name, count=200)
    before = {p.pid for p in multiprocessing.active_children()}
    doomed = parallel.LabelPool(workers=1, preparer=labelling.Preparer())
    try:
        catalog = {objective.name: objective}
        assert len(doomed.submit(messages[:64], catalog).result(120)) == 64
        (worker,) = [p for p in multiprocessing.active_children() if p.pid not in before]
        os.kill(worker.pid or 0, signal.SIGKILL)
        worker.join(10)
        prefetch: pooling.Prefetch[parallel.Result] = pooling.Prefetch(
            doomed, chunk=64, what="testing"
        )
        prefetch.start(messages, lambda: catalog)
        # Nothing prepared: every record is the consumer's to do, none is lost...
        assert [prefetch.take(m) for m in messages] == [None] * len(messages)
        # ...and the pool is not used again.
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            doomed.submit(messages[:64], catalog)
    finally:
        doomed.close()


def test_a_prepared_record_of_another_version_is_refused() -> None:
    objective = _objective(version=3)
    message = _messages(objective.name, count=3)[0]
    prepared = labelling.Preparer().prepare(
        labelling.decode(message.value), record_id="r", objective=objective, now=NOW
    )
    labeller = labelling.Labeller(near_threshold=0.8, near_capacity=1000)
    with pytest.raises(ValueError, match="v3"):
        labeller.admit(prepared, _objective(version=4))


def test_a_record_over_the_rule_budget_is_refused_in_a_worker_as_in_the_consumer() -> None:
    objective = _objective()
    messages = _messages(objective.name, count=3)[:3]
    current = {objective.name: objective}
    tight = labelling.Preparer(rule_budget_s=1e-9)
    workers = parallel.LabelPool(workers=1, preparer=tight)
    try:
        there = workers.submit(messages, current).result(timeout=120)
    finally:
        workers.close()
    here = parallel.LocalPreparer(tight).submit(messages, current).result(timeout=0)
    labeller = labelling.Labeller(near_threshold=0.8, near_capacity=1000)
    for prepared in here + there:
        assert prepared is not None and isinstance(prepared.outcome, labelling.OverBudget)
        with pytest.raises(errors.InvalidEvent) as refused:
            labeller.admit(prepared, objective)
        assert refused.value.kind == "rule_budget"
        assert f"rules of objective {objective.name!r} (v3) took " in refused.value.message
        assert "over its budget of 1e-06 ms" in refused.value.message
    # A refused record is not remembered: within the budget it is labelled after all.
    record = labelling.decode(messages[0].value)
    outcome = labeller.label(record, record_id="again", objective=objective, now=NOW)
    assert isinstance(outcome, labelling.Labelled)


class _FailingPool:
    """A pool whose first chunk fails in its worker and whose later submits find it broken."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(
        self, messages: Sequence[producing.Message], current: pooling.Catalog
    ) -> concurrent.futures.Future[list[str]]:
        self.submitted += 1
        future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        if self.submitted == 1:
            future.set_exception(RuntimeError("worker died"))
        elif self.submitted == 2:
            future.set_result([f"done-{m.offset}" for m in messages])
        else:
            raise concurrent.futures.process.BrokenProcessPool("gone")
        return future


def test_worker_failures_leave_the_work_to_the_consumer_never_lose_it() -> None:
    fake = _FailingPool()
    prefetch: pooling.Prefetch[str] = pooling.Prefetch(fake, chunk=2, what="testing")
    batch = [producing.Message("t", 0, n, None, b"", []) for n in range(4)]
    prefetch.start(batch, dict)
    # The failed chunk's messages are the consumer's to do; the other chunk's results stand.
    assert [prefetch.take(m) for m in batch] == [None, None, "done-2", "done-3"]
    # A broken pool is given up: every later message is done in the consumer.
    prefetch.start(batch, dict)
    prefetch.start(batch, dict)
    assert fake.submitted == 3
    assert [prefetch.take(m) for m in batch] == [None, None, None, None]


def test_each_chunk_is_seen_once_before_its_first_result_is_taken() -> None:
    seen: list[list[str]] = []
    prefetch: pooling.Prefetch[str] = pooling.Prefetch(
        _FailingPool(), chunk=2, what="testing", on_chunk=seen.append
    )
    batch = [producing.Message("t", 0, n, None, b"", []) for n in range(4)]
    prefetch.start(batch, dict)
    taken = []
    for message in batch:
        taken.append(prefetch.take(message))
        assert len(seen) == (1 if message.offset >= 2 else 0)  # the failed chunk is not shown
    assert taken == [None, None, "done-2", "done-3"]
    assert seen == [["done-2", "done-3"]]


def test_what_the_pool_does_not_take_is_prepared_here_a_chunk_at_a_time() -> None:
    here = _EchoPool()
    small = [producing.Message("t", 0, n, None, b"", []) for n in range(6)]  # under two chunks
    large = [producing.Message("t", 0, n, None, b"", []) for n in range(10, 20)]
    for pool, batch in ((None, large), (_FailingPool(), small)):
        prefetch: pooling.Prefetch[str] = pooling.Prefetch(pool, chunk=4, what="testing", here=here)
        prefetch.start(batch, dict)
        assert [prefetch.take(m) for m in batch] == [f"done-{m.offset}" for m in batch]
    assert here.chunks == [4, 4, 2, 4, 2]


def test_the_consumer_prepares_records_as_a_worker_does(pool: parallel.LabelPool) -> None:
    objective = _objective()
    messages = _messages(objective.name, count=200)
    current = {objective.name: objective}
    here = parallel.LocalPreparer(labelling.Preparer())
    prepared_here = here.submit(messages, current).result(timeout=0)
    prepared_there = pool.submit(messages, current).result(timeout=120)
    assert [p.signature if p else None for p in prepared_here] == [
        p.signature if p else None for p in prepared_there
    ]
    assert [_comparable(p.outcome) for p in prepared_here if p] == [
        _comparable(p.outcome) for p in prepared_there if p
    ]
    assert here.submit(messages[:1], {}).result(timeout=0) == [None]  # objective unknown here
    # A failure comes back in the future, as from a worker: the consumer then takes over.
    failed = here.submit(messages[:1], {objective.name: "not an objective"})  # type: ignore[dict-item]
    assert isinstance(failed.exception(timeout=0), AttributeError)


def test_small_batches_stay_in_the_consumer() -> None:
    fake = _FailingPool()
    prefetch: pooling.Prefetch[str] = pooling.Prefetch(fake, chunk=64, what="testing")
    batch = [producing.Message("t", 0, n, None, b"", []) for n in range(10)]
    prefetch.start(batch, dict)
    assert fake.submitted == 0 and prefetch.take(batch[0]) is None


class _EchoPool:
    """A pool whose workers answer at once with each message's offset."""

    def __init__(self) -> None:
        self.chunks: list[int] = []

    def submit(
        self, messages: Sequence[producing.Message], current: pooling.Catalog
    ) -> concurrent.futures.Future[list[str]]:
        self.chunks.append(len(messages))
        future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        future.set_result([f"done-{m.offset}" for m in messages])
        return future


def test_a_batch_polled_ahead_keeps_the_one_being_handled_and_forgets_older_ones() -> None:
    prefetch: pooling.Prefetch[str] = pooling.Prefetch(_EchoPool(), chunk=2, what="testing")
    first, second, third = (
        [producing.Message("t", 0, n, None, b"", []) for n in range(start, start + 4)]
        for start in (0, 4, 8)
    )
    prefetch.start(first, dict)
    prefetch.start(second, dict)  # polled ahead while the first is handled
    assert [prefetch.take(m) for m in first[:2]] == ["done-0", "done-1"]
    prefetch.start(third, dict)  # the rest of the first was dropped (a rebalance)
    assert [prefetch.take(m) for m in first[2:]] == [None, None]
    assert [prefetch.take(m) for m in second + third] == [f"done-{n}" for n in range(4, 12)]
