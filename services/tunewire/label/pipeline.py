"""The stateful half of the label service: records in, examples, tasks and snapshots out.

Both entry points — the records consumer and the human queue's HTTP API — go through one
:class:`LabelPipeline`. Order of durability on :meth:`LabelPipeline.flush`: example segments
in S3, then their events on ``tunewire.examples``, then new human tasks, then the seen ids —
so an event never announces an example that S3 does not hold, and nothing is remembered as
seen before everything it produced is safe. The consumer seals each flush's worth
(:meth:`LabelPipeline.seal`) and labels on while it is made durable; sealed flushes become
durable one after another, in the order they were sealed.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import errors, metrics, store
from tunewire.core.bus import producing, topics
from tunewire.core.state import idempotency, layout, model_input, objectives
from tunewire.label import config, examples, labelling, queue, snapshots

log = logging.getLogger(__name__)

RECORDS = Counter(
    "tunewire_label_records_total",
    "Records by outcome: labelled, queued, or the reason they were kept out.",
    ["objective", "outcome"],
)
DECISIONS = Counter(
    "tunewire_label_rule_decisions_total",
    "What the rules decided per record (agreed = covered; conflict, abstain, too_few_votes).",
    ["objective", "decision"],
)
EXAMPLES = Counter(
    "tunewire_label_examples_total", "Labelled examples stored, by source.", ["objective", "source"]
)
QUEUE_DEPTH = Gauge("tunewire_label_queue_depth", "Open human tasks.", ["objective"])
SNAPSHOT_EXAMPLES = Gauge(
    "tunewire_label_snapshot_examples", "Examples in the latest snapshot.", ["objective", "split"]
)
SNAPSHOTS = Counter("tunewire_label_snapshots_total", "Snapshots built.", ["objective", "reason"])


@dataclasses.dataclass
class _Sealed:
    """What one flush makes durable, set aside from what is handled meanwhile."""

    number: int
    segments: dict[str, list[str]]
    """Segment lines by objective; each is removed once written."""
    events: list[examples.Encoded]
    tasks: list[queue.Task]
    seen_through: int
    """The seen window's :meth:`idempotency.SeenWindow.mark` when sealed."""


class LabelPipeline:
    """Labels records, keeps the human queue, stores examples and builds snapshots."""

    def __init__(
        self,
        *,
        limits: config.LabelLimits,
        catalog: objectives.ObjectiveCatalog,
        artifacts: store.ArtifactStore,
        producer: producing.Publisher,
        human_queue: queue.HumanQueue,
        builder: snapshots.SnapshotBuilder,
        log_: examples.ExampleLog,
    ) -> None:
        self._limits = limits
        self._catalog = catalog
        self._producer = producer
        self.queue = human_queue
        self.builder = builder
        self._log = log_
        self._labeller = labelling.Labeller(
            near_threshold=limits.near_duplicate_threshold,
            near_capacity=limits.near_duplicate_capacity,
            rule_budget_s=limits.rule_budget_ms / 1000,
        )
        self.seen = idempotency.SeenWindow(
            artifacts,
            prefix=layout.service_state("label", "seen"),
            retention=datetime.timedelta(hours=24),
            capacity=1_000_000,
        )
        self._pending_events: list[examples.Encoded] = []
        self._pending_tasks: list[queue.Task] = []
        self._example_counts: collections.Counter[str] = collections.Counter()
        self._not_due: dict[str, tuple[int, objectives.DatasetPolicy]] = {}
        """Per objective, the example count and dataset policy of the last check that found
        no snapshot due."""
        self._sealed: collections.deque[_Sealed] = collections.deque()
        self._seal_numbers = itertools.count()
        self._durability_lock = threading.Lock()
        self._restored: set[str] = set()
        self._lock = threading.RLock()
        self._snapshot_lock = threading.Lock()

    # -- start-up ----------------------------------------------------------------------------

    def restore(self, objective: str) -> None:
        """Rebuild what an objective has seen (examples and human tasks) and counted from S3
        (once per objective)."""
        with self._lock:
            if objective in self._restored:
                return
            count = 0

            def stored() -> Iterator[tuple[str, str]]:
                nonlocal count
                for example in self._log.iter_examples(objective):
                    count += 1
                    answer = example.label if example.label_source == "event" else None
                    yield example.source_id, labelling.judged_text(example.text, answer)
                self.queue.refresh(objective)
                for task in self.queue.tasks(objective):
                    yield task.source_id, task.text

            self._labeller.remember(objective, stored())
            self._example_counts[objective] = count
            self._restored.add(objective)
        self._finish_resolutions(objective)
        log.info("restored %d examples", count, extra={"objective": objective})

    # -- records -----------------------------------------------------------------------------

    def expect(self, prepared: Sequence[labelling.Prepared | None]) -> None:
        """Announce a worker's chunk before its records are handled one by one: admitting them
        then finds their near-duplicates at once (:meth:`labelling.Labeller.expect`)."""
        self._labeller.expect(prepared)

    def handle(
        self, message: producing.Message, prepared: labelling.Prepared | None = None
    ) -> None:
        """One record from ``tunewire.records``, perhaps already prepared by a worker.

        ``prepared`` is used when it was prepared against the objective version current
        here; otherwise the record is prepared again in this process. The outcome is the
        same either way: only the admission (duplicates, in order) happens here.
        """
        received = time.monotonic()
        record: records_pb2.Record | None = None
        if prepared is None:
            record_id = (message.header("ce_id") or b"").decode("utf-8", "replace")
            record = labelling.decode(message.value)
            if not record_id:
                raise errors.InvalidEvent(
                    "the record has no ce_id header", kind="missing_attribute"
                )
            objective_name = record.objective
        else:
            record_id, objective_name = prepared.record_id, prepared.objective
        if record_id in self.seen:
            metrics.child(RECORDS, objective_name, "redelivered").inc()
            return
        objective = self._catalog.lookup(objective_name, fresher_than=received)
        if objective is None:
            raise errors.InvalidEvent(
                f"objective {objective_name!r} is not registered", kind="unknown_objective"
            )
        self.restore(objective.name)
        if prepared is not None and prepared.objective_version == objective.version:
            outcome = self._labeller.admit(prepared, objective)
        else:  # not prepared, or against an older version than the catalog's now: here
            outcome = self._labeller.label(
                record or labelling.decode(message.value),
                record_id=record_id,
                objective=objective,
                now=datetime.datetime.now(datetime.UTC),
            )
        with self._lock:
            if isinstance(outcome, labelling.Labelled):
                self._add_example(outcome.encoded)
                metrics.child(DECISIONS, objective.name, "agreed").inc()
                metrics.child(RECORDS, objective.name, "labelled").inc()
            elif isinstance(outcome, labelling.Queued):
                self._pending_tasks.append(outcome.task)
                metrics.child(DECISIONS, objective.name, outcome.task.reason).inc()
                metrics.child(RECORDS, objective.name, "queued").inc()
            else:
                if outcome.reason in ("conflict", "abstain", "too_few_votes"):
                    metrics.child(DECISIONS, objective.name, outcome.reason).inc()
                metrics.child(RECORDS, objective.name, outcome.reason).inc()
            self.seen.add(record_id)

    def flush(self) -> None:
        """Make everything handled durable, in the order the module docstring gives."""
        self.seal()()

    def seal(self) -> Callable[[], None]:
        """Set aside everything handled so far; return what makes it durable.

        The consumer seals a flush's worth and goes on labelling while another thread
        writes it (see :class:`consuming.SealingHandler`). Sealed batches become durable in
        the order they were sealed, whichever thread asks.
        """
        with self._lock:
            sealed = _Sealed(
                number=next(self._seal_numbers),
                segments=self._log.take(),
                events=self._pending_events,
                tasks=self._pending_tasks,
                seen_through=self.seen.mark(),
            )
            self._pending_events, self._pending_tasks = [], []
            self._sealed.append(sealed)
        return lambda: self._make_durable_through(sealed.number)

    def _make_durable_through(self, number: int) -> None:
        with self._durability_lock:
            while self._sealed and self._sealed[0].number <= number:
                self._make_durable(self._sealed[0])
                self._sealed.popleft()

    def _make_durable(self, sealed: _Sealed) -> None:
        """Each step once, so a retry after a failure goes on where it stopped."""
        self._log.write(sealed.segments)
        for encoded in sealed.events:
            self._producer.send(
                topics.EXAMPLES, key=encoded.objective, value=encoded.event, headers=encoded.headers
            )
        sealed.events = []  # the producer keeps what it has not delivered yet
        self._producer.flush()
        # One batch object per objective for all the new tasks, not one PUT per task.
        self.queue.enqueue_many(sealed.tasks)
        sealed.tasks = []
        self.seen.persist(through=sealed.seen_through)

    # -- the human queue ---------------------------------------------------------------------

    def submit(
        self, objective_name: str, task_id: str, annotator: str, label: str, claim_id: str | None
    ) -> dict[str, Any]:
        """Record an annotator's answer; a resolved task becomes an example at once."""
        objective = self.objective(objective_name)
        self.restore(objective.name)
        spec = objective.spec
        classifies = spec.task == "classification"
        result = self.queue.submit(
            objective.name,
            task_id,
            annotator,
            label if classifies else model_input.human_answer(spec, label),
            claim_id=claim_id,
            labels=spec.labels if classifies else None,
            labels_per_item=spec.labelling.labels_per_item,
        )
        resolved = None
        if result.resolution is not None:
            if result.status == "recorded":
                # A repeated answer ("unchanged") never stores twice; a resolution a crash
                # left unfinished is completed by restore() instead.
                self._store_resolution(objective, result.resolution)
            resolved = {
                "label": result.resolution.label,
                "annotators": list(result.resolution.annotators),
            }
        return {"status": result.status, "resolved": resolved}

    def _finish_resolutions(self, objective_name: str) -> None:
        """Store examples for tasks resolved before a crash but never marked done."""
        objective = self._catalog.lookup(objective_name)
        if objective is None:
            return
        for resolution in self.queue.unfinished_resolutions(objective_name):
            self._store_resolution(objective, resolution)

    def _store_resolution(
        self, objective: objectives.ObjectiveVersion, resolution: queue.Resolution
    ) -> None:
        example = labelling.human_example(
            resolution, objective, datetime.datetime.now(datetime.UTC)
        )
        with self._lock:
            self._add_example(examples.Encoded.of(example))
            self.flush()
        self.queue.mark_done(resolution)

    # -- snapshots ---------------------------------------------------------------------------

    def maybe_snapshot(
        self, objective: objectives.ObjectiveVersion
    ) -> snapshots.SnapshotInfo | None:
        """Build a snapshot when the objective's trigger fires (min_examples, retrain_every).

        A check that found nothing due is not repeated (no S3 listing) until the objective has
        gained examples or changed its dataset policy: a snapshot another replica built in
        the meantime could only make one less due.
        """
        self.restore(objective.name)
        policy = objective.spec.dataset
        total = self._example_counts[objective.name]
        if self._not_due.get(objective.name) == (total, policy):
            return None
        latest = self.builder.latest(objective.name)
        if latest is None:
            due = total >= policy.min_examples
        else:
            due = total - int(latest.get("examples", 0)) >= policy.retrain_every
        if not due:
            self._not_due[objective.name] = (total, policy)
            return None
        return self.snapshot(objective, reason="trigger")

    def snapshot(
        self, objective: objectives.ObjectiveVersion, *, reason: str
    ) -> snapshots.SnapshotInfo:
        """Build (or find) the snapshot of every example stored so far, and announce it."""
        with self._snapshot_lock:
            self.flush()
            rules = list(self._labeller.rules_for(objective).names)
            info = self.builder.build(objective, rules=rules, reason=reason)
        if info.created:
            SNAPSHOTS.labels(objective.name, reason).inc()
        for split, count in info.manifest.get("counts", {}).items():
            SNAPSHOT_EXAMPLES.labels(objective.name, split).set(count)
        return info

    # -- helpers -----------------------------------------------------------------------------

    def objective(self, name: str) -> objectives.ObjectiveVersion:
        """The current version of an objective; 404 when unknown."""
        found = self._catalog.lookup(name, fresher_than=time.monotonic())
        if found is None:
            raise errors.NotFound(f"no objective named {name!r}")
        return found

    @property
    def preparer(self) -> labelling.Preparer:
        """The pure half of labelling; worker processes need an equal one."""
        return self._labeller.preparer

    def objectives(self) -> Mapping[str, objectives.ObjectiveVersion]:
        return self._catalog.current()

    def example_count(self, objective: str) -> int:
        return self._example_counts[objective]

    def update_queue_depth(self) -> None:
        """Refresh the queue-depth gauge for every objective seen so far."""
        for name in list(self._restored):
            QUEUE_DEPTH.labels(name).set(self.queue.counts(name).get("open", 0))

    def _add_example(self, encoded: examples.Encoded) -> None:
        self._log.append(encoded)
        self._pending_events.append(encoded)
        self._example_counts[encoded.objective] += 1
        metrics.child(EXAMPLES, encoded.objective, encoded.label_source).inc()
