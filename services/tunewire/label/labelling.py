"""What becomes of one record: a labelled example, a task for humans, or nothing (and why).

The logic is pure except for the memory of what each objective has already seen (source
ids, exact texts, near-duplicate signatures), which the service rebuilds from S3 at start-up.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading

from tunewire.contracts.v1 import records_pb2
from tunewire.core import envelope, errors, objectives
from tunewire.label import examples, preprocess, queue, rules


@dataclasses.dataclass(frozen=True)
class Labelled:
    example: examples.Example


@dataclasses.dataclass(frozen=True)
class Queued:
    task: queue.Task


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A record kept out of the dataset, with the reason counted in metrics."""

    reason: str


Outcome = Labelled | Queued | Dropped


@dataclasses.dataclass
class _Seen:
    sources: set[str]
    texts: set[str]
    near: preprocess.NearDuplicates


class Labeller:
    """Labels records by the objective's rules; remembers what each objective has seen."""

    def __init__(self, *, near_threshold: float, near_capacity: int) -> None:
        self._near_threshold = near_threshold
        self._near_capacity = near_capacity
        self._seen: dict[str, _Seen] = {}
        self._rules: dict[tuple[str, int], rules.RuleSet] = {}
        self._lock = threading.Lock()

    def remember(self, objective: str, *, source_id: str, text: str) -> None:
        """Mark an item as seen (at start-up, from stored examples and queued tasks)."""
        with self._lock:
            seen = self._seen_for(objective)
            seen.sources.add(source_id)
            key = preprocess.content_key(text)
            if key not in seen.texts:
                seen.texts.add(key)
                seen.near.seen_or_add(key, text)

    def rules_for(self, objective: objectives.ObjectiveVersion) -> rules.RuleSet:
        """The objective's rules, compiled once per version."""
        key = (objective.name, objective.version)
        found = self._rules.get(key)
        if found is None:
            found = rules.RuleSet.compile(objective.spec)
            self._rules[key] = found
        return found

    def label(
        self,
        record: records_pb2.Record,
        *,
        record_id: str,
        objective: objectives.ObjectiveVersion,
        fields: dict[str, object],
        now: datetime.datetime,
    ) -> Outcome:
        """Decide one record's fate; raises InvalidEvent for a retired objective."""
        if objective.status != "active":
            raise errors.InvalidEvent(
                f"objective {objective.name!r} is retired", kind="retired_objective"
            )
        spec = objective.spec
        text = preprocess.normalise(record.text)[: spec.dataset.max_text_chars]
        if not text:
            return Dropped("empty")
        key = preprocess.content_key(text)
        with self._lock:
            seen = self._seen_for(objective.name)
            if record.source_id in seen.sources:
                return Dropped("duplicate_source")
            if key in seen.texts:
                return Dropped("duplicate_text")
            if seen.near.seen_or_add(key, text) is not None:
                return Dropped("near_duplicate")
            seen.sources.add(record.source_id)
            seen.texts.add(key)
        decision = rules.decide(
            self.rules_for(objective).votes(text, fields), spec.labelling.min_agreement
        )
        if decision.label is not None:
            return Labelled(
                examples.Example(
                    example_id=envelope.derived_id("example", objective.name, record.source_id),
                    objective=objective.name,
                    objective_version=objective.version,
                    source_id=record.source_id,
                    record_id=record_id,
                    event_id=record.event_id,
                    text=text,
                    label=decision.label,
                    label_source="rule",
                    voters=tuple(v.rule for v in decision.votes),
                    split=preprocess.split_of(record.source_id, spec.dataset.eval_fraction),
                    labelled_at=now.isoformat(),
                )
            )
        if not spec.labelling.human_queue:
            return Dropped(decision.reason)
        return Queued(
            queue.Task(
                task_id=task_id(objective.name, record.source_id),
                objective=objective.name,
                source_id=record.source_id,
                record_id=record_id,
                event_id=record.event_id,
                text=text,
                hints=tuple((v.rule, v.label) for v in decision.votes),
                reason=decision.reason,
                enqueued_at=now.isoformat(),
            )
        )

    def _seen_for(self, objective: str) -> _Seen:
        seen = self._seen.get(objective)
        if seen is None:
            seen = _Seen(
                sources=set(),
                texts=set(),
                near=preprocess.NearDuplicates(
                    threshold=self._near_threshold, capacity=self._near_capacity
                ),
            )
            self._seen[objective] = seen
        return seen


def task_id(objective: str, source_id: str) -> str:
    """A task's id: one task per source item, safe as an S3 path segment."""
    return envelope.derived_id("task", objective, source_id)


def human_example(
    resolution: queue.Resolution, objective: objectives.ObjectiveVersion, now: datetime.datetime
) -> examples.Example:
    """The example a resolved human task becomes."""
    task = resolution.task
    return examples.Example(
        example_id=envelope.derived_id("example", objective.name, task.source_id),
        objective=objective.name,
        objective_version=objective.version,
        source_id=task.source_id,
        record_id=task.record_id,
        event_id=task.event_id,
        text=task.text,
        label=resolution.label,
        label_source="human",
        voters=resolution.annotators,
        split=preprocess.split_of(task.source_id, objective.spec.dataset.eval_fraction),
        labelled_at=now.isoformat(),
    )
