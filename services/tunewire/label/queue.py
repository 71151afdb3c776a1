"""The human labelling queue, kept entirely in S3.

Items the objective's rules cannot decide (a conflict, an abstention, too few votes) wait
here for people. S3 is the only source of truth, so every replica of the label service
shares one queue and nothing is lost on a restart; what a replica holds in memory is a
cache that :meth:`HumanQueue.refresh` rebuilds.

Layout under ``labels/{objective}/queue/``:

``tasks/{task_id}.json``
    One item, as versions before task batches wrote each task; still read (such a copy wins
    over any batch copy), no longer written.
``batches/{time}-{uuid}.jsonl.gz``
    Many items, one JSON line each, written only if absent by
    :meth:`HumanQueue.enqueue_many` -- one PUT per flush instead of one per task. Two
    replicas may both write a task (a record redelivered after a rebalance); it is still one
    task, and every replica keeps the same copy of it: a ``tasks/`` object first, else the
    earliest batch (by key) and the first line in it.
``claims/{task_id}.json``
    A lease: who works on the task, with which ``claim_id``, until when. Taken with
    ``If-None-Match: *``, or, when the existing lease has expired, replaced with
    ``If-Match: <its etag>`` -- so of two replicas racing for a task exactly one wins,
    and the loser simply tries the next task.
``answers/{task_id}/{annotator}.json``
    One per task and annotator, written only if absent: the same answer twice is an
    idempotent retry, a different one is a conflict. Each answer records the
    ``labels_per_item`` it was given under, so whether (and by which answer) a task was
    resolved can be recomputed from S3 alone after a crash.
``skips/{task_id}/{annotator}.json``
    The annotator passed on the task; it is not offered to them again.
``done/{task_id}.json``
    The service has durably stored the resolved example (:meth:`HumanQueue.mark_done`).

The objects' formats are :mod:`tunewire.label.queue_records`. A task is *resolved* by its
answers as :mod:`tunewire.label.agreement` decides; from then on it is offered to nobody.
Resolved tasks without a done marker are what :meth:`HumanQueue.unfinished_resolutions`
hands back after a crash.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from tunewire.core.base import errors, store
from tunewire.core.state import layout
from tunewire.label import agreement, queue_records
from tunewire.label.queue_records import Task as Task  # the queue's item type, re-exported

_Rank = tuple[int, str, int]
"""Which stored copy of a task wins: the smallest. ``(0, "", 0)`` for a ``tasks/`` object,
``(1, batch key, line)`` for a batch line."""

_SINGLE: _Rank = (0, "", 0)

_READERS = 16
"""Parallel S3 reads when (re)loading many task objects or batches."""
_BATCH_LIST_OVERLAP = datetime.timedelta(minutes=10)
"""How far before the newest batch read a refresh lists again."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """A lease on a task: only its holder may submit an answer until ``expires_at``."""

    task: Task
    annotator: str
    claim_id: str
    expires_at: str


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The label people agreed on, and who gave it (in the order they answered)."""

    task: Task
    label: str
    annotators: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """What a submit did.

    ``recorded`` with a ``resolution`` means this very answer resolved the task: the
    caller stores the example, then calls :meth:`HumanQueue.mark_done`. ``unchanged`` is
    a retry of an answer already recorded; its ``resolution`` is the task's resolution
    while that is still waiting for :meth:`HumanQueue.mark_done` (so a retried request
    can finish the job a crashed one started), else None.
    """

    status: Literal["recorded", "unchanged"]
    resolution: Resolution | None


@dataclasses.dataclass
class _Objective:
    """The in-memory cache of one objective's queue (never more than what S3 says)."""

    tasks: dict[str, Task] = dataclasses.field(default_factory=dict)
    order: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    """``(enqueued_at, task_id)`` of the unresolved tasks, oldest first: claim's index."""
    answers: dict[str, dict[str, queue_records.Answer]] = dataclasses.field(default_factory=dict)
    skips: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    leases: dict[str, queue_records.Lease] = dataclasses.field(default_factory=dict)
    resolved: dict[str, Resolution] = dataclasses.field(default_factory=dict)
    done: set[str] = dataclasses.field(default_factory=set)
    rank: dict[str, _Rank] = dataclasses.field(default_factory=dict)
    """Where each cached task was read from (see :data:`_Rank`): a better copy replaces it."""
    batches: set[str] = dataclasses.field(default_factory=set)
    """Keys of the task batches already read (batches never change once written)."""


class HumanQueue:
    """The labelling queue of every objective, shared through S3 by all replicas.

    Every change is written to S3 before a method returns; the in-memory indexes only
    save round trips (claim walks a sorted index of open tasks instead of listing the
    bucket) and are reloaded by :meth:`refresh`, lazily on an objective's first use.
    Thread-safe: one lock guards the indexes and is never held across an S3 call.
    """

    def __init__(
        self,
        artifacts: store.ArtifactStore,
        *,
        lease_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._artifacts = artifacts
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._objectives: dict[str, _Objective] = {}
        self._last_stamp = 0.0

    # -- loading ---------------------------------------------------------------------------

    def refresh(self, objective: str) -> None:
        """(Re)load an objective's tasks, answers, skips, leases and done markers from S3.

        Tasks and answers never change once written, so only unknown ones are read; leases
        are read afresh. Called on first use, and periodically to see other replicas' work.
        """
        queue_records.check_segment(objective, "objective")
        prefix = layout.label_queue(objective)
        with self._lock:
            known = self._objectives.get(objective)
            # A task known only from a batch is read again if it has a tasks/ object: that wins.
            known_tasks = (
                {t for t, rank in known.rank.items() if rank == _SINGLE} if known else set()
            )
            known_answers = (
                {(t, a) for t, by in known.answers.items() for a in by} if known else set()
            )

        # One listing of the whole queue, split by folder (not one listing a folder).
        listed: dict[str, list[str]] = collections.defaultdict(list)
        for key in self._artifacts.list_keys(prefix):
            listed[key[len(prefix) :].partition("/")[0]].append(key)
        task_keys = [
            key
            for key in listed["tasks"]
            if (task_id := queue_records.key_name(key, f"{prefix}tasks/")) is not None
            and task_id not in known_tasks
        ]
        tasks = [
            (queue_records.task_from_json(body), _SINGLE)
            for body in _read_all(self._artifacts.get_json, task_keys)
        ]
        batch_keys, batch_tasks = self._read_batches(objective, listed=listed["batches"])
        tasks += batch_tasks

        answer_keys = {
            key: pair
            for key in listed["answers"]
            if (pair := queue_records.key_pair(key, f"{prefix}answers/")) is not None
            and pair not in known_answers
        }
        answers: list[tuple[str, queue_records.Answer]] = [
            (pair[0], queue_records.answer_from_json(body))
            for pair, body in zip(
                answer_keys.values(),
                _read_all(self._artifacts.get_json, list(answer_keys)),
                strict=True,
            )
        ]

        skips = [
            pair
            for key in listed["skips"]
            if (pair := queue_records.key_pair(key, f"{prefix}skips/")) is not None
        ]
        done = {
            task_id
            for key in listed["done"]
            if (task_id := queue_records.key_name(key, f"{prefix}done/")) is not None
        }
        leases: dict[str, queue_records.Lease] = {}
        for key in listed["claims"]:
            task_id = queue_records.key_name(key, f"{prefix}claims/")
            if task_id is None:
                continue
            try:
                leases[task_id] = queue_records.lease_from_json(self._artifacts.get_json(key))
            except errors.NotFound:
                continue  # released between the listing and the read

        with self._lock:
            state = self._objectives.setdefault(objective, _Objective())
            state.batches.update(batch_keys)
            for task, rank in tasks:
                self._add_task(state, task, rank)
            for task_id, answer in answers:
                state.answers.setdefault(task_id, {})[answer.annotator] = answer
            for task_id, annotator in skips:
                state.skips.setdefault(task_id, set()).add(annotator)
            state.done |= done
            state.leases = leases
            for task_id in {t for t, _ in answers} | done:
                self._update_resolution(state, task_id)

    def _read_batches(
        self, objective: str, *, listed: Sequence[str] | None = None
    ) -> tuple[list[str], list[tuple[Task, _Rank]]]:
        """The task batches not read yet: their keys, and their tasks with their ranks.

        ``listed`` are batch keys a listing of the whole queue found; without it, the batches
        are listed from a little before the newest one read.
        """
        prefix = f"{layout.label_queue(objective)}batches/"
        with self._lock:
            state = self._objectives.get(objective)
            known = set(state.batches) if state else set()
        if listed is not None:
            keys = [k for k in listed if k.endswith(queue_records.BATCH_SUFFIX) and k not in known]
            return keys, self._batch_tasks(keys)
        # Batch keys start with their UTC time: list only from a little before the newest
        # one read (replicas' clocks and slow writes), not every batch ever written.
        start_after = None
        if known:
            newest = max(known)[len(prefix) :].split("-", 1)[0]
            moment = datetime.datetime.strptime(newest, "%Y%m%dT%H%M%S%f")
            start_after = prefix + (moment - _BATCH_LIST_OVERLAP).strftime("%Y%m%dT%H%M%S%f")
        keys = [
            key
            for key in self._artifacts.list_keys(prefix, start_after=start_after)
            if key.endswith(queue_records.BATCH_SUFFIX) and key not in known
        ]
        return keys, self._batch_tasks(keys)

    def _batch_tasks(self, keys: Sequence[str]) -> list[tuple[Task, _Rank]]:
        """The tasks of the batches at ``keys``, with their ranks (batch key, line)."""
        found: list[tuple[Task, _Rank]] = []
        for key, data in zip(keys, _read_all(self._artifacts.get_bytes, keys), strict=True):
            found += [
                (task, (1, key, line)) for line, task in enumerate(queue_records.decode_batch(data))
            ]
        return found

    def _load_batches(self, objective: str, state: _Objective) -> None:
        """Read the batches written since the last load into the cache."""
        keys, found = self._read_batches(objective)
        with self._lock:
            state.batches.update(keys)
            for task, rank in found:
                self._add_task(state, task, rank)

    def _state(self, objective: str) -> _Objective:
        """The objective's cache, loaded from S3 on first use."""
        queue_records.check_segment(objective, "objective")
        with self._lock:
            state = self._objectives.get(objective)
        if state is None:
            self.refresh(objective)
            with self._lock:
                state = self._objectives[objective]
        return state

    # -- enqueueing --------------------------------------------------------------------------

    def enqueue_many(self, tasks: Sequence[Task]) -> int:
        """Add the tasks whose ids are not queued yet; returns how many this call added.

        One object (a batch) per objective and call, written only if absent, instead of one
        PUT per task. Idempotent on ``task_id``, so a redelivered record never queues an item
        twice: ids already known here, and repeats within ``tasks`` (the first wins), are left
        out. Two replicas that both write a task in the same moment store it twice, yet every
        replica reads it back as one task, the same copy (see the module docstring). Every
        task is checked before anything is written. Every objective is tried even when one
        fails; the first error is raised after the others were written, and a retry writes
        only what is missing.
        """
        by_objective: dict[str, list[Task]] = {}
        for task in tasks:
            queue_records.check_task(task)
            by_objective.setdefault(task.objective, []).append(task)
        added = 0
        failure: Exception | None = None
        for objective, batch in by_objective.items():
            try:
                added += self._enqueue_batch(objective, batch)
            except Exception as exc:  # the other objectives' tasks are still written
                failure = failure or exc
        if failure is not None:
            raise failure
        return added

    def _enqueue_batch(self, objective: str, tasks: Sequence[Task]) -> int:
        state = self._state(objective)
        fresh: dict[str, Task] = {}
        with self._lock:
            for task in tasks:
                if task.task_id not in state.tasks:
                    fresh.setdefault(task.task_id, task)
        if not fresh:
            return 0
        batch = f"{self._stamp()}-{uuid.uuid4().hex}{queue_records.BATCH_SUFFIX}"
        key = f"{layout.label_queue(objective)}batches/{batch}"
        data = queue_records.encode_batch(fresh.values())
        try:
            self._artifacts.put_bytes(
                key, data, content_type="application/gzip", only_if_absent=True
            )
        except errors.Conflict:
            # The key is random: a conflict means an earlier try of this very write succeeded
            # and only its answer was lost (a retried conditional PUT).
            if self._artifacts.get_bytes(key) != data:
                raise
        added = 0
        with self._lock:
            state.batches.add(key)
            for line, task in enumerate(fresh.values()):
                added += self._add_task(state, task, (1, key, line))
        return added

    def _stamp(self) -> str:
        """A UTC time for batch keys that never goes backwards within this process."""
        with self._lock:
            now = max(self._clock(), self._last_stamp + 1e-6)
            self._last_stamp = now
        return datetime.datetime.fromtimestamp(now, tz=datetime.UTC).strftime("%Y%m%dT%H%M%S%f")

    # -- leases ------------------------------------------------------------------------------

    def claim(self, objective: str, annotator: str) -> Claim | None:
        """Lease the oldest open task this annotator may work on, or None when there is none.

        Skips tasks that are resolved, that the annotator answered or skipped, and that
        someone else holds a valid lease on. When the oldest such task is one this annotator
        already holds, that lease is handed back as it is (a reloaded page gets its task
        again). Each candidate is verified in
        S3 after the lease is taken, so a stale cache costs a retry, never a wrong offer.
        """
        queue_records.check_annotator(annotator)
        state = self._state(objective)
        now = self._clock()
        cursor: tuple[float, str] | None = None
        while True:
            # Walk the index from a cursor, taking the lock only to find the next candidate,
            # so a long queue is neither copied nor locked while S3 answers.
            with self._lock:
                index = 0 if cursor is None else bisect.bisect_right(state.order, cursor)
                cursor = None
                for position in range(index, len(state.order)):
                    entry = state.order[position]
                    if self._may_offer(state, entry[1], annotator, now):
                        cursor = entry
                        break
            if cursor is None:
                return None
            found = self._try_claim(objective, state, cursor[1], annotator)
            if found is not None:
                return found

    def _may_offer(self, state: _Objective, task_id: str, annotator: str, now: float) -> bool:
        if task_id in state.resolved or task_id in state.done:
            return False
        if annotator in state.answers.get(task_id, {}) or annotator in state.skips.get(
            task_id, set()
        ):
            return False
        lease = state.leases.get(task_id)
        return lease is None or lease.annotator == annotator or lease.expires_at <= now

    def _try_claim(
        self, objective: str, state: _Objective, task_id: str, annotator: str
    ) -> Claim | None:
        """Take the lease on one task, or None when another annotator has it or won the race."""
        key = queue_records.claim_key(objective, task_id)
        now = self._clock()
        lease = queue_records.Lease(annotator, uuid.uuid4().hex, now + self._lease_seconds)
        try:
            self._artifacts.put_json(
                key, queue_records.lease_to_json(task_id, lease), only_if_absent=True
            )
        except errors.Conflict:
            try:
                raw, etag = self._artifacts.get_versioned(key)
            except errors.NotFound:
                return None  # released just now; the next claim will find it free
            held = queue_records.lease_from_json(json.loads(raw))
            if held.expires_at > now:
                with self._lock:
                    state.leases[task_id] = held
                if held.annotator == annotator:
                    return self._claim_of(state, task_id, held)
                return None
            try:
                self._artifacts.put_json(
                    key, queue_records.lease_to_json(task_id, lease), if_match=etag
                )
            except errors.Conflict:
                return None  # another replica took over the expired lease first
        with self._lock:
            state.leases[task_id] = lease
        # The lease is ours; make sure the task still needs this annotator (another replica
        # may have recorded answers or a skip that our cache has not seen yet).
        self._sync_answers(objective, state, task_id)
        self._sync_skips(objective, state, task_id)
        with self._lock:
            offer = not (
                task_id in state.resolved
                or annotator in state.answers.get(task_id, {})
                or annotator in state.skips.get(task_id, set())
            )
        if not offer:
            self._release(objective, state, task_id, lease)
            return None
        return self._claim_of(state, task_id, lease)

    def renew(self, objective: str, task_id: str, annotator: str, claim_id: str) -> Claim:
        """Extend a lease by ``lease_seconds`` from now; :class:`errors.Conflict` if it was lost.

        A lease that has expired counts as lost even if nobody took it yet, as at submit:
        once expired, any other annotator may have been offered the task.
        """
        queue_records.check_annotator(annotator)
        state = self._state(objective)
        self._task(objective, state, task_id)
        key = queue_records.claim_key(objective, task_id)
        _, etag = self._held_lease(objective, task_id, annotator, claim_id)
        lease = queue_records.Lease(annotator, claim_id, self._clock() + self._lease_seconds)
        try:
            self._artifacts.put_json(
                key, queue_records.lease_to_json(task_id, lease), if_match=etag
            )
        except errors.Conflict as exc:
            raise errors.Conflict(
                f"your lease on task {task_id!r} was taken over while renewing it; "
                "claim a task again"
            ) from exc
        with self._lock:
            state.leases[task_id] = lease
        return self._claim_of(state, task_id, lease)

    def skip(self, objective: str, task_id: str, annotator: str, claim_id: str) -> None:
        """Pass on a task: it is never offered to this annotator again, and the lease is freed.

        The skip is recorded even when the lease has meanwhile expired or moved on (the
        annotator's wish is clear); the lease is released only if it is still theirs.
        """
        queue_records.check_annotator(annotator)
        state = self._state(objective)
        self._task(objective, state, task_id)
        self._artifacts.put_json(
            f"{layout.label_queue(objective)}skips/{task_id}/{annotator}.json",
            {
                "annotator": annotator,
                "claim_id": claim_id,
                "skipped_at": queue_records.iso(self._clock()),
            },
        )
        with self._lock:
            state.skips.setdefault(task_id, set()).add(annotator)
        try:
            raw, _ = self._artifacts.get_versioned(queue_records.claim_key(objective, task_id))
        except errors.NotFound:
            return
        held = queue_records.lease_from_json(json.loads(raw))
        if held.annotator == annotator and held.claim_id == claim_id:
            self._release(objective, state, task_id, held)

    def _held_lease(
        self, objective: str, task_id: str, annotator: str, claim_id: str | None
    ) -> tuple[queue_records.Lease, str]:
        """The caller's valid lease and its etag, else :class:`errors.Conflict` saying why."""
        try:
            raw, etag = self._artifacts.get_versioned(queue_records.claim_key(objective, task_id))
        except errors.NotFound as exc:
            raise errors.Conflict(
                f"you hold no lease on task {task_id!r} (it expired and was released, or was "
                "never claimed); claim a task again"
            ) from exc
        held = queue_records.lease_from_json(json.loads(raw))
        expired = held.expires_at <= self._clock()
        if held.annotator == annotator and held.claim_id == claim_id:
            if expired:
                raise errors.Conflict(
                    f"your lease on task {task_id!r} expired at "
                    f"{queue_records.iso(held.expires_at)}; claim a task again"
                )
            return held, etag
        if held.annotator != annotator and not expired:
            raise errors.Conflict(
                f"the lease on task {task_id!r} is held by someone else (yours, if you had "
                "one, expired); claim a task again"
            )
        raise errors.Conflict(
            f"you hold no lease on task {task_id!r} (it expired, or was never claimed); "
            "claim a task again"
        )

    def _release(
        self, objective: str, state: _Objective, task_id: str, lease: queue_records.Lease
    ) -> None:
        """Free a lease we hold.

        The delete is unconditional (the store has no conditional delete), so it is sent
        only while the lease is still valid by our clock: until then nobody else may take
        it over, so we cannot delete someone else's lease. An expired lease is left in place
        -- it is already free for the next claimer's compare-and-swap.
        """
        if self._clock() < lease.expires_at:
            self._artifacts.delete(queue_records.claim_key(objective, task_id))
        with self._lock:
            cached = state.leases.get(task_id)
            if cached is not None and cached.claim_id == lease.claim_id:
                del state.leases[task_id]

    # -- answers -----------------------------------------------------------------------------

    def submit(
        self,
        objective: str,
        task_id: str,
        annotator: str,
        label: str,
        *,
        claim_id: str | None,
        labels: Sequence[str] | None,
        labels_per_item: int,
    ) -> SubmitResult:
        """Record an annotator's label for a task they hold a valid lease on (``labels``:
        the answers allowed; None takes any, checked by the caller).

        Repeating the same answer is idempotent (with or without a lease, even after the
        task is done); a different answer from the same annotator is a conflict. Returns
        the resolution when this answer resolved the task.
        """
        queue_records.check_annotator(annotator)
        if labels is not None and label not in labels:
            raise errors.InvalidRequest(
                f"label {label!r} is not one of the objective's labels: {', '.join(labels)}",
                details={"allowed": list(labels)},
            )
        if labels_per_item < 1:
            raise errors.InvalidRequest("labels_per_item must be at least 1")
        state = self._state(objective)
        self._task(objective, state, task_id)
        answer_key = f"{layout.label_queue(objective)}answers/{task_id}/{annotator}.json"

        with self._lock:
            cached = state.answers.get(task_id, {}).get(annotator)
        if cached is not None:
            return self._repeat(state, task_id, cached, label)
        try:
            lease, _ = self._held_lease(objective, task_id, annotator, claim_id)
        except errors.Conflict as no_lease:
            # Without a lease, only a repeat of an answer already recorded is accepted.
            try:
                previous = queue_records.answer_from_json(self._artifacts.get_json(answer_key))
            except errors.NotFound:
                raise no_lease from None
            self._remember_answer(state, task_id, previous)
            return self._repeat(state, task_id, previous, label)

        answer = queue_records.Answer(annotator, label, labels_per_item, self._clock())
        try:
            self._artifacts.put_json(
                answer_key, queue_records.answer_to_json(answer), only_if_absent=True
            )
        except errors.Conflict:
            previous = queue_records.answer_from_json(self._artifacts.get_json(answer_key))
            self._remember_answer(state, task_id, previous)
            return self._repeat(state, task_id, previous, label)
        self._remember_answer(state, task_id, answer)
        self._release(objective, state, task_id, lease)
        self._sync_answers(objective, state, task_id)
        with self._lock:
            resolution = state.resolved.get(task_id)
            decided_by_us = (
                resolution is not None
                and agreement.deciding_answer(state.answers.get(task_id, {}).values()) == annotator
            )
        return SubmitResult("recorded", resolution if decided_by_us else None)

    def _repeat(
        self, state: _Objective, task_id: str, previous: queue_records.Answer, label: str
    ) -> SubmitResult:
        if previous.label != label:
            raise errors.Conflict(
                f"you already answered {previous.label!r} for task {task_id!r}; "
                "an answer cannot be changed"
            )
        with self._lock:
            pending = None if task_id in state.done else state.resolved.get(task_id)
        return SubmitResult("unchanged", pending)

    def mark_done(self, resolution: Resolution) -> None:
        """Record that the service has durably stored the resolved example.

        Call it only after that write: a crash in between leaves the task in
        :meth:`unfinished_resolutions`, never lost. Idempotent.
        """
        task = resolution.task
        queue_records.check_segment(task.task_id, "task id")
        state = self._state(task.objective)
        # Conflict: already marked, by us or another replica.
        with contextlib.suppress(errors.Conflict):
            self._artifacts.put_json(
                f"{layout.label_queue(task.objective)}done/{task.task_id}.json",
                {
                    "task_id": task.task_id,
                    "label": resolution.label,
                    "annotators": list(resolution.annotators),
                    "done_at": queue_records.iso(self._clock()),
                },
                only_if_absent=True,
            )
        with self._lock:
            state.done.add(task.task_id)
            self._update_resolution(state, task.task_id)

    def unfinished_resolutions(self, objective: str) -> list[Resolution]:
        """Tasks resolved by answers but not marked done, oldest first (crash recovery)."""
        state = self._state(objective)
        with self._lock:
            pending = [
                resolution
                for task_id, resolution in state.resolved.items()
                if task_id not in state.done
            ]
        return sorted(
            pending, key=lambda r: (queue_records.parse_time(r.task.enqueued_at), r.task.task_id)
        )

    # -- reporting ---------------------------------------------------------------------------

    def counts(self, objective: str) -> dict[str, int]:
        """``open`` (not done), ``claimed`` (valid lease), ``done`` and ``answers``."""
        state = self._state(objective)
        now = self._clock()
        with self._lock:
            done = len(state.done & state.tasks.keys())
            return {
                "open": len(state.tasks) - done,
                "claimed": sum(
                    1
                    for task_id, lease in state.leases.items()
                    if lease.expires_at > now
                    and task_id not in state.resolved
                    and task_id not in state.done
                ),
                "done": done,
                "answers": sum(len(by) for by in state.answers.values()),
            }

    def tasks(self, objective: str) -> list[Task]:
        """Every task of an objective, open or resolved (as of the last refresh)."""
        state = self._state(objective)
        with self._lock:
            return list(state.tasks.values())

    def annotators(self, objective: str) -> dict[str, int]:
        """Answers given per annotator."""
        state = self._state(objective)
        with self._lock:
            tally = collections.Counter(a for by in state.answers.values() for a in by)
        return dict(sorted(tally.items()))

    def agreement(self, objective: str) -> dict[str, float | int]:
        """How much annotators agree, over the items with at least two answers.

        ``percent_agreement`` is the mean, over items, of the share of annotator pairs that
        gave the same label, as a percentage. ``fleiss_kappa`` corrects that for chance with
        Fleiss' formula, generalised to items with different numbers of answers (each item's
        agreement uses its own count; chance agreement uses the pooled label shares); it is
        exactly Fleiss' kappa when every item has the same number of answers. Keys whose
        value is undefined (no items; every answer the same label) are left out.
        """
        state = self._state(objective)
        with self._lock:
            items = [
                collections.Counter(a.label for a in by.values())
                for by in state.answers.values()
                if len(by) >= 2
            ]
        return agreement.agreement_of(items)

    # -- helpers -----------------------------------------------------------------------------

    def _task(self, objective: str, state: _Objective, task_id: str) -> Task:
        """The task (from the cache, else S3); :class:`errors.NotFound` when unknown."""
        queue_records.check_segment(task_id, "task id")
        with self._lock:
            task = state.tasks.get(task_id)
        if task is not None:
            return task
        try:
            task = queue_records.task_from_json(
                self._artifacts.get_json(f"{layout.label_queue(objective)}tasks/{task_id}.json")
            )
        except errors.NotFound as missing:
            # Perhaps in a batch another replica wrote since our last refresh.
            self._load_batches(objective, state)
            with self._lock:
                found = state.tasks.get(task_id)
            if found is None:
                raise missing from None
            return found
        with self._lock:
            self._add_task(state, task, _SINGLE)
            return state.tasks[task_id]

    def _claim_of(self, state: _Objective, task_id: str, lease: queue_records.Lease) -> Claim:
        with self._lock:
            task = state.tasks[task_id]
        return Claim(task, lease.annotator, lease.claim_id, queue_records.iso(lease.expires_at))

    def _sync_answers(self, objective: str, state: _Objective, task_id: str) -> None:
        """Bring one task's answers up to date: one listing, reads only for unknown ones."""
        prefix = f"{layout.label_queue(objective)}answers/{task_id}/"
        with self._lock:
            known = set(state.answers.get(task_id, {}))
        for key in self._artifacts.list_keys(prefix):
            annotator = queue_records.key_name(key, prefix)
            if annotator is None or annotator in known:
                continue
            try:
                self._remember_answer(
                    state, task_id, queue_records.answer_from_json(self._artifacts.get_json(key))
                )
            except errors.NotFound:
                continue

    def _sync_skips(self, objective: str, state: _Objective, task_id: str) -> None:
        prefix = f"{layout.label_queue(objective)}skips/{task_id}/"
        found = {
            annotator
            for key in self._artifacts.list_keys(prefix)
            if (annotator := queue_records.key_name(key, prefix)) is not None
        }
        with self._lock:
            state.skips.setdefault(task_id, set()).update(found)

    def _remember_answer(
        self, state: _Objective, task_id: str, answer: queue_records.Answer
    ) -> None:
        with self._lock:
            state.answers.setdefault(task_id, {})[answer.annotator] = answer
            self._update_resolution(state, task_id)

    @staticmethod
    def _add_task(state: _Objective, task: Task, rank: _Rank) -> bool:
        """Index a task; True when its id was new (caller holds the lock).

        A task already cached is replaced only by a copy that wins over it (a smaller
        ``rank``), so every replica ends with the same copy whatever order it read them in.
        """
        task_id = task.task_id
        known = state.rank.get(task_id)
        if known is not None and known <= rank:
            return False
        state.rank[task_id] = rank
        if known is not None:
            old = state.tasks[task_id]
            state.tasks[task_id] = task
            entry = (queue_records.parse_time(old.enqueued_at), task_id)
            index = bisect.bisect_left(state.order, entry)
            if index < len(state.order) and state.order[index] == entry:
                del state.order[index]
                bisect.insort(state.order, (queue_records.parse_time(task.enqueued_at), task_id))
            resolution = state.resolved.get(task_id)
            if resolution is not None:
                state.resolved[task_id] = dataclasses.replace(resolution, task=task)
            return False
        state.tasks[task_id] = task
        bisect.insort(state.order, (queue_records.parse_time(task.enqueued_at), task_id))
        HumanQueue._update_resolution(state, task_id)
        return True

    @staticmethod
    def _update_resolution(state: _Objective, task_id: str) -> None:
        """Recompute whether a task is resolved; drop it from the open index if so."""
        task = state.tasks.get(task_id)
        if task is None or task_id in state.resolved:
            return
        decided = agreement.resolve(state.answers.get(task_id, {}).values())
        if decided is None and task_id not in state.done:
            return
        if decided is not None:
            label, annotators = decided
            state.resolved[task_id] = Resolution(task, label, annotators)
        entry = (queue_records.parse_time(task.enqueued_at), task_id)
        index = bisect.bisect_left(state.order, entry)
        if index < len(state.order) and state.order[index] == entry:
            del state.order[index]


def _read_all(read: Callable[[str], Any], keys: Sequence[str]) -> list[Any]:
    """``read`` of every key, in order; in parallel when there are many (S3 round trips)."""
    if len(keys) < 4:
        return [read(key) for key in keys]
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(_READERS, len(keys)), thread_name_prefix="queue-read"
    ) as pool:
        return list(pool.map(read, keys))
