"""The human labelling queue against the embedded S3 endpoint over HTTP, with a fake clock.

Several ``HumanQueue`` instances over one bucket stand for several replicas (or a restart).
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
import threading
import uuid
from collections.abc import Iterator

import pytest

from tunewire.core.base import errors, settings, store
from tunewire.core.state import layout
from tunewire.label import agreement, queue, queue_records
from tunewire.stack import embedded

LABELS = ("billing", "bug", "other")
START = 1_800_000_000.123_456_7  # sub-microsecond: ISO round trips are not exact


class Clock:
    """A clock the test moves by hand, so leases expire without sleeping."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def objective() -> str:
    return f"support-{uuid.uuid4().hex[:8]}"


def new_queue(artifacts: store.ArtifactStore, clock: Clock) -> queue.HumanQueue:
    return queue.HumanQueue(artifacts, lease_seconds=300.0, clock=clock)


@pytest.fixture
def hq(artifacts: store.ArtifactStore, clock: Clock) -> queue.HumanQueue:
    return new_queue(artifacts, clock)


def task(objective: str, n: int, *, minute: int | None = None) -> queue.Task:
    enqueued = datetime.datetime.fromtimestamp(START, tz=datetime.UTC) + datetime.timedelta(
        minutes=n if minute is None else minute
    )
    return queue.Task(
        task_id=f"t{n:03d}",
        objective=objective,
        source_id=f"src-{n}",
        record_id=f"rec-{n}",
        event_id=f"evt-{n}",
        text=f"ticket number {n}",
        hints=(("billing/keyword#0", "billing"), ("bug/keyword#1", "bug")),
        reason="conflict",
        enqueued_at=enqueued.isoformat(),
    )


def submit(
    hq: queue.HumanQueue, claim: queue.Claim, label: str, *, labels_per_item: int = 1
) -> queue.SubmitResult:
    return hq.submit(
        claim.task.objective,
        claim.task.task_id,
        claim.annotator,
        label,
        claim_id=claim.claim_id,
        labels=LABELS,
        labels_per_item=labels_per_item,
    )


def claim(hq: queue.HumanQueue, objective: str, annotator: str) -> queue.Claim:
    found = hq.claim(objective, annotator)
    assert found is not None, f"nothing offered to {annotator}"
    return found


def race(
    objective: str, contenders: list[tuple[queue.HumanQueue, str]]
) -> dict[str, queue.Claim | None]:
    """Each (replica, annotator) claims at the same moment, from its own thread."""
    barrier = threading.Barrier(len(contenders))
    won: dict[str, queue.Claim | None] = {}

    def contend(replica: queue.HumanQueue, annotator: str) -> None:
        barrier.wait()
        won[annotator] = replica.claim(objective, annotator)

    threads = [threading.Thread(target=contend, args=pair) for pair in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_enqueue_is_idempotent_on_task_id(
    hq: queue.HumanQueue, artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    assert hq.enqueue_many([task(objective, 1)]) == 1
    assert hq.enqueue_many([task(objective, 1)]) == 0
    other_replica = new_queue(artifacts, clock)
    assert other_replica.enqueue_many([task(objective, 1)]) == 0
    assert hq.counts(objective) == {"open": 1, "claimed": 0, "done": 0, "answers": 0}
    (batch,) = artifacts.list_keys(f"labels/{objective}/queue/batches/")
    (stored,) = [
        json.loads(line) for line in gzip.decompress(artifacts.get_bytes(batch)).splitlines()
    ]
    assert stored["hints"] == [["billing/keyword#0", "billing"], ["bug/keyword#1", "bug"]]


def test_unsafe_task_ids_and_names_are_refused(hq: queue.HumanQueue, objective: str) -> None:
    bad = task(objective, 1)
    for task_id in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(errors.InvalidRequest):
            hq.enqueue_many([queue.Task(**{**bad.__dict__, "task_id": task_id})])
    with pytest.raises(errors.InvalidRequest):
        hq.claim(objective, "eve/../../x")
    with pytest.raises(errors.InvalidRequest):
        hq.claim("bad/objective", "ann")


def test_claims_hand_out_the_oldest_open_task_first(hq: queue.HumanQueue, objective: str) -> None:
    hq.enqueue_many([task(objective, 3, minute=30)])
    hq.enqueue_many([task(objective, 1, minute=10)])
    hq.enqueue_many([task(objective, 2, minute=20)])
    assert [claim(hq, objective, name).task.task_id for name in ("ann", "bob", "cat")] == [
        "t001",
        "t002",
        "t003",
    ]
    assert hq.claim(objective, "dan") is None
    assert hq.counts(objective)["claimed"] == 3


def test_claiming_again_returns_the_lease_already_held(
    hq: queue.HumanQueue, objective: str
) -> None:
    hq.enqueue_many([task(objective, 1)])
    hq.enqueue_many([task(objective, 2)])
    first = claim(hq, objective, "ann")
    assert claim(hq, objective, "ann") == first


def test_two_replicas_racing_for_one_task_never_both_win(
    artifacts: store.ArtifactStore, clock: Clock
) -> None:
    for round_ in range(4):
        objective = f"race-{round_}-{uuid.uuid4().hex[:6]}"
        replicas = [new_queue(artifacts, clock) for _ in range(2)]
        replicas[0].enqueue_many([task(objective, 1)])
        for replica in replicas:
            replica.refresh(objective)
        won = race(objective, list(zip(replicas, ("ann", "bob"), strict=True)))
        winners = [c for c in won.values() if c is not None]
        assert len(winners) == 1, won

        # The loser of the race, asking again on its own replica, still gets nothing.
        loser = "bob" if winners[0].annotator == "ann" else "ann"
        assert replicas[1 if loser == "bob" else 0].claim(objective, loser) is None


def test_two_replicas_taking_over_an_expired_lease_never_both_win(
    artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    first = new_queue(artifacts, clock)
    first.enqueue_many([task(objective, 1)])
    claim(first, objective, "ann")
    clock.advance(301)
    replicas = [new_queue(artifacts, clock) for _ in range(2)]
    for replica in replicas:
        replica.refresh(objective)
    won = race(objective, list(zip(replicas, ("bob", "cat"), strict=True)))
    assert len([c for c in won.values() if c is not None]) == 1, won


def test_an_abandoned_claim_returns_after_its_lease_expires(
    hq: queue.HumanQueue, objective: str, clock: Clock
) -> None:
    hq.enqueue_many([task(objective, 1)])
    abandoned = claim(hq, objective, "ann")
    assert hq.claim(objective, "bob") is None
    clock.advance(299)
    assert hq.claim(objective, "bob") is None
    clock.advance(2)
    taken = claim(hq, objective, "bob")
    assert taken.task.task_id == "t001"
    assert taken.claim_id != abandoned.claim_id
    with pytest.raises(errors.Conflict, match="held by someone else"):
        submit(hq, abandoned, "bug")
    assert submit(hq, taken, "bug").status == "recorded"


def test_renew_extends_a_lease_and_fails_once_it_is_lost(
    hq: queue.HumanQueue, objective: str, clock: Clock
) -> None:
    hq.enqueue_many([task(objective, 1)])
    held = claim(hq, objective, "ann")
    clock.advance(200)
    renewed = hq.renew(objective, "t001", "ann", held.claim_id)
    assert renewed.claim_id == held.claim_id
    assert renewed.expires_at > held.expires_at
    clock.advance(200)  # past the first lease, within the renewed one
    assert hq.claim(objective, "bob") is None
    with pytest.raises(errors.Conflict):
        hq.renew(objective, "t001", "ann", "not-my-claim")
    clock.advance(101)
    with pytest.raises(errors.Conflict, match="expired"):
        hq.renew(objective, "t001", "ann", held.claim_id)
    with pytest.raises(errors.NotFound):
        hq.renew(objective, "t999", "ann", held.claim_id)


def test_submitting_on_an_expired_lease_is_a_conflict(
    hq: queue.HumanQueue, objective: str, clock: Clock
) -> None:
    hq.enqueue_many([task(objective, 1)])
    held = claim(hq, objective, "ann")
    clock.advance(300)
    with pytest.raises(errors.Conflict, match="expired") as caught:
        submit(hq, held, "bug")
    assert caught.value.status == 409
    assert hq.counts(objective)["answers"] == 0
    with pytest.raises(errors.Conflict, match="no lease"):
        hq.submit(
            objective,
            "t001",
            "bob",
            "bug",
            claim_id=None,
            labels=LABELS,
            labels_per_item=1,
        )


def test_submit_refuses_labels_outside_the_objective_and_unknown_tasks(
    hq: queue.HumanQueue, objective: str
) -> None:
    hq.enqueue_many([task(objective, 1)])
    held = claim(hq, objective, "ann")
    with pytest.raises(errors.InvalidRequest, match="billing, bug, other") as caught:
        submit(hq, held, "refund")
    assert caught.value.status == 422
    assert caught.value.details == {"allowed": list(LABELS)}
    with pytest.raises(errors.NotFound):
        hq.submit(
            objective,
            "t404",
            "ann",
            "bug",
            claim_id=held.claim_id,
            labels=LABELS,
            labels_per_item=1,
        )


def test_the_same_answer_twice_is_idempotent_and_a_different_one_a_conflict(
    hq: queue.HumanQueue, artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    hq.enqueue_many([task(objective, 1)])
    held = claim(hq, objective, "ann")
    first = submit(hq, held, "bug")
    assert first.status == "recorded"
    assert first.resolution is not None
    # The lease is released with the answer.
    assert list(artifacts.list_keys(f"labels/{objective}/queue/claims/")) == []
    # A retry (the lease is gone) is unchanged, and carries the resolution until done.
    again = submit(hq, held, "bug")
    assert again == queue.SubmitResult("unchanged", first.resolution)
    with pytest.raises(errors.Conflict, match="already answered 'bug'"):
        submit(hq, held, "billing")
    hq.mark_done(first.resolution)
    # A replica with a cold cache, after done: still unchanged, still a conflict.
    cold = new_queue(artifacts, clock)
    assert submit(cold, held, "bug") == queue.SubmitResult("unchanged", None)
    with pytest.raises(errors.Conflict):
        submit(new_queue(artifacts, clock), held, "other")
    assert hq.counts(objective)["answers"] == 1


def test_a_skipped_task_is_offered_to_others_but_not_again_to_the_skipper(
    hq: queue.HumanQueue, artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    hq.enqueue_many([task(objective, 1)])
    hq.enqueue_many([task(objective, 2)])
    other = new_queue(artifacts, clock)
    other.refresh(objective)  # loaded before the skip: its cache never sees it
    held = claim(hq, objective, "ann")
    hq.skip(objective, "t001", "ann", held.claim_id)
    assert claim(hq, objective, "ann").task.task_id == "t002"
    assert claim(hq, objective, "bob").task.task_id == "t001"
    # The other replica checks S3 before offering a task, so it respects the skip too.
    clock.advance(301)  # every lease expired: both tasks are free again
    assert claim(other, objective, "ann").task.task_id == "t002"


def test_two_answers_per_item_agreement_disagreement_and_a_deciding_third(
    hq: queue.HumanQueue, objective: str
) -> None:
    hq.enqueue_many([task(objective, 1)])
    hq.enqueue_many([task(objective, 2)])
    # t001: ann and bob agree -> resolved by bob's answer.
    assert submit(hq, claim(hq, objective, "ann"), "bug", labels_per_item=2).resolution is None
    assert claim(hq, objective, "ann").task.task_id == "t002"  # ann answered t001 already
    bob = claim(hq, objective, "bob")
    assert bob.task.task_id == "t001"
    resolved = submit(hq, bob, "bug", labels_per_item=2).resolution
    assert resolved is not None
    assert (resolved.label, resolved.annotators) == ("bug", ("ann", "bob"))

    # t002: ann (holding it) and bob disagree -> stays open for a third annotator.
    ann = claim(hq, objective, "ann")
    assert ann.task.task_id == "t002"
    assert submit(hq, ann, "billing", labels_per_item=2).resolution is None
    assert submit(hq, claim(hq, objective, "bob"), "bug", labels_per_item=2).resolution is None
    assert hq.claim(objective, "ann") is None and hq.claim(objective, "bob") is None
    cat = claim(hq, objective, "cat")
    assert cat.task.task_id == "t002"
    decided = submit(hq, cat, "billing", labels_per_item=2).resolution
    assert decided is not None
    assert (decided.label, decided.annotators) == ("billing", ("ann", "cat"))
    # Resolved tasks are offered to nobody, even before mark_done.
    assert hq.claim(objective, "dan") is None
    assert [r.task.task_id for r in hq.unfinished_resolutions(objective)] == ["t001", "t002"]


def test_a_restarted_queue_sees_everything_and_recovers_unfinished_resolutions(
    hq: queue.HumanQueue, artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    for n in range(1, 5):
        hq.enqueue_many([task(objective, n)])
    first = submit(hq, claim(hq, objective, "ann"), "bug")  # t001 resolved
    assert first.resolution is not None
    hq.mark_done(first.resolution)
    second = submit(hq, claim(hq, objective, "ann"), "other")  # t002 resolved, "crash"
    skipped = claim(hq, objective, "ann")  # t003
    hq.skip(objective, skipped.task.task_id, "ann", skipped.claim_id)
    held = claim(hq, objective, "bob")  # t003, still held at the restart
    assert held.task.task_id == "t003"

    restarted = new_queue(artifacts, clock)
    assert restarted.counts(objective) == {"open": 3, "claimed": 1, "done": 1, "answers": 2}
    assert restarted.unfinished_resolutions(objective) == [second.resolution]
    assert restarted.annotators(objective) == {"ann": 2}
    assert claim(restarted, objective, "ann").task.task_id == "t004"  # skipped t003
    assert submit(restarted, held, "bug").status == "recorded"  # bob's lease survived

    assert second.resolution is not None
    restarted.mark_done(second.resolution)
    restarted.mark_done(second.resolution)  # idempotent
    assert restarted.unfinished_resolutions(objective)[0].task.task_id == "t003"
    assert new_queue(artifacts, clock).counts(objective)["done"] == 2


def test_a_replica_learns_other_replicas_work_on_refresh(
    artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    one, two = new_queue(artifacts, clock), new_queue(artifacts, clock)
    one.enqueue_many([task(objective, 1)])
    assert two.counts(objective)["open"] == 1
    one.enqueue_many([task(objective, 2)])
    submit(one, claim(one, objective, "ann"), "bug")
    assert two.counts(objective)["open"] == 1  # cached until refreshed
    two.refresh(objective)
    assert two.counts(objective) == {"open": 2, "claimed": 0, "done": 0, "answers": 1}
    assert [r.task.task_id for r in two.unfinished_resolutions(objective)] == ["t001"]
    assert claim(two, objective, "bob").task.task_id == "t002"


def test_annotator_counts_and_agreement_on_a_hand_computed_example(
    hq: queue.HumanQueue, objective: str
) -> None:
    assert hq.agreement(objective) == {"items": 0}
    # Two answers on each of four items, one answer on a fifth (ignored):
    #   t001 bug,bug  t002 bug,billing  t003 billing,billing  t004 bug,bug  t005 bug
    # percent agreement = (1 + 0 + 1 + 1) / 4 = 75 %
    # pooled shares: bug 5/8, billing 3/8 -> chance = 25/64 + 9/64 = 34/64
    # kappa = (48/64 - 34/64) / (1 - 34/64) = 14/30 = 7/15
    answers = {
        "t001": ("bug", "bug"),
        "t002": ("bug", "billing"),
        "t003": ("billing", "billing"),
        "t004": ("bug", "bug"),
        "t005": ("bug",),
    }
    for n in range(1, 6):
        hq.enqueue_many([task(objective, n)])
    for task_id, given in answers.items():
        for annotator, label in zip(("ann", "bob"), given, strict=False):
            held = claim(hq, objective, annotator)
            assert held.task.task_id == task_id
            submit(hq, held, label, labels_per_item=2)
    assert hq.annotators(objective) == {"ann": 5, "bob": 4}
    result = hq.agreement(objective)
    assert result["items"] == 4
    assert math.isclose(result["percent_agreement"], 75.0)
    assert math.isclose(result["fleiss_kappa"], 7 / 15)


def test_agreement_generalises_to_items_with_different_numbers_of_answers() -> None:
    # Equal counts reduce to Fleiss' kappa; a three-answer item adds 1/3 agreement.
    result = agreement.agreement_of([{"a": 2}, {"a": 1, "b": 2}, {"b": 1}])
    assert result["items"] == 2
    observed = (1 + 1 / 3) / 2
    chance = (3 / 5) ** 2 + (2 / 5) ** 2
    assert math.isclose(result["percent_agreement"], 100 * observed)
    assert math.isclose(result["fleiss_kappa"], (observed - chance) / (1 - chance))
    # Every answer the same label: kappa is undefined and left out.
    assert "fleiss_kappa" not in agreement.agreement_of([{"a": 2}, {"a": 3}])


def variant(objective: str, n: int, text: str) -> queue.Task:
    return queue.Task(**{**task(objective, n).__dict__, "text": text})


def test_enqueue_many_writes_one_batch_per_objective_and_call(
    hq: queue.HumanQueue, artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    other = f"{objective}-b"
    assert hq.enqueue_many([task(objective, n) for n in (3, 1, 2)] + [task(other, 1)]) == 4
    keys = list(artifacts.list_keys(f"labels/{objective}/queue/"))
    assert len(keys) == 1
    assert keys[0].startswith(f"labels/{objective}/queue/batches/")
    assert keys[0].endswith(".jsonl.gz")
    assert len(list(artifacts.list_keys(f"labels/{other}/queue/batches/"))) == 1
    # Known ids are left out; repeats within a call count once, and the first one wins.
    clock.advance(1)
    assert (
        hq.enqueue_many(
            [task(objective, 1), variant(objective, 4, "a"), variant(objective, 4, "b")]
        )
        == 1
    )
    assert hq.enqueue_many([task(objective, 2)]) == 0
    assert hq.enqueue_many([]) == 0
    assert hq.enqueue_many([task(objective, 4)]) == 0
    assert len(list(artifacts.list_keys(f"labels/{objective}/queue/batches/"))) == 2
    assert list(artifacts.list_keys(f"labels/{objective}/queue/tasks/")) == []

    # A restarted replica reads the batches back: same tasks, oldest first, all usable.
    restarted = new_queue(artifacts, clock)
    assert restarted.counts(objective) == {"open": 4, "claimed": 0, "done": 0, "answers": 0}
    first = claim(restarted, objective, "ann")
    assert first.task == task(objective, 1)
    assert submit(restarted, first, "bug").status == "recorded"
    assert [claim(restarted, objective, a).task.task_id for a in ("bob", "cat", "dan")] == [
        "t002",
        "t003",
        "t004",
    ]
    assert restarted.claim(objective, "eve") is None  # every open task is leased
    assert hq.counts(other)["open"] == 1


def test_enqueue_many_checks_every_task_before_writing_any(
    hq: queue.HumanQueue, artifacts: store.ArtifactStore, objective: str
) -> None:
    bad = queue.Task(**{**task(objective, 2).__dict__, "reason": "bored"})
    with pytest.raises(errors.InvalidRequest):
        hq.enqueue_many([task(objective, 1), bad])
    with pytest.raises(errors.InvalidRequest):
        hq.enqueue_many([task(objective, 1), queue.Task(**{**bad.__dict__, "task_id": "a/b"})])
    assert list(artifacts.list_keys(f"labels/{objective}/queue/")) == []


def test_a_replica_finds_a_batched_task_it_has_not_loaded_yet(
    artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    one, two = new_queue(artifacts, clock), new_queue(artifacts, clock)
    assert two.counts(objective)["open"] == 0  # loaded before the batch exists
    one.enqueue_many([task(objective, 1), task(objective, 2)])
    held = claim(one, objective, "ann")
    # The answer reaches the other replica (a load balancer), which reads the new batch.
    assert submit(two, held, "bug").status == "recorded"
    assert two.counts(objective) == {"open": 2, "claimed": 0, "done": 0, "answers": 1}
    with pytest.raises(errors.NotFound):
        two.submit(objective, "t009", "ann", "bug", claim_id=None, labels=LABELS, labels_per_item=1)


def test_a_task_stored_twice_is_one_task_and_every_replica_keeps_the_first_copy(
    artifacts: store.ArtifactStore, clock: Clock, objective: str
) -> None:
    one, two, three = (new_queue(artifacts, clock) for _ in range(3))
    for replica in (one, two, three):
        assert replica.counts(objective)["open"] == 0  # each loaded before anything exists
    # Two replicas batch the same task (a redelivered record): the earlier batch wins.
    assert one.enqueue_many([variant(objective, 1, "first")]) == 1
    clock.advance(1)
    assert two.enqueue_many([variant(objective, 1, "second"), task(objective, 2)]) == 2
    assert claim(two, objective, "ann").task.text == "second"  # until it reads the first
    clock.advance(400)  # ann's lease expires
    two.refresh(objective)
    one.refresh(objective)
    for replica in (one, two, new_queue(artifacts, clock)):
        assert replica.counts(objective)["open"] == 2
        assert replica.unfinished_resolutions(objective) == []
    held = claim(one, objective, "bob")
    assert (held.task.task_id, held.task.text) == ("t001", "first")
    assert submit(two, held, "bug").resolution is not None
    assert two.unfinished_resolutions(objective)[0].task.text == "first"

    # A task object (as versions before batches wrote) wins over any batch copy, whichever a
    # replica read first.
    clock.advance(1)
    artifacts.put_json(
        f"labels/{objective}/queue/tasks/t001.json",
        queue_records.task_to_json(variant(objective, 1, "single")),
        only_if_absent=True,
    )
    for replica in (one, two, three):
        replica.refresh(objective)
    for replica in (one, two, three, new_queue(artifacts, clock)):
        assert replica.counts(objective)["open"] == 2
        assert [r.task.text for r in replica.unfinished_resolutions(objective)] == ["single"]


class ListingStore(store.ArtifactStore):
    """The stack's bucket, noting every prefix listed."""

    listed: list[str]

    def list_keys(self, prefix: str, *, start_after: str | None = None) -> Iterator[str]:
        self.listed.append(prefix)
        return super().list_keys(prefix, start_after=start_after)


def test_a_refresh_lists_the_whole_queue_once(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    clock: Clock,
    objective: str,
) -> None:
    # ``artifacts`` puts the stack's credentials in the environment.
    listing = ListingStore(
        settings.S3Settings(bucket=artifacts.bucket, endpoint_url=stack.s3_endpoint_url)
    )
    listing.listed = []
    writer = new_queue(artifacts, clock)
    writer.enqueue_many([task(objective, n) for n in range(3)])
    claim = writer.claim(objective, "a1")
    assert claim is not None
    submit(writer, claim, "billing")

    reader = queue.HumanQueue(listing, lease_seconds=300.0, clock=clock)
    reader.refresh(objective)
    assert listing.listed == [layout.label_queue(objective)]
    assert reader.counts(objective) == writer.counts(objective)
