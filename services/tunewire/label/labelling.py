"""What becomes of one record: a labelled example, a task for humans, or nothing (and why).

Labelling has two halves. :class:`Preparer` is pure: decode, normalise, the content key and
the MinHash signature, the rules' votes and decision, the example or task encoded — the same
answer for the same record in any process, so the service runs it in worker processes
(``parallel.py``). The one exception is the rules' time budget: a record whose rules take
longer than it (on this machine, now) is refused, and :meth:`Labeller.admit` dead-letters it
with kind ``rule_budget``. :class:`Labeller` holds the memory of what each objective has
already seen (source ids, exact texts, the near-duplicate index), which the service rebuilds
from S3 at start-up, and admits each prepared record against it in the consumer, in order:
whether a record is a duplicate never depends on where it was prepared.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import threading
from collections.abc import Iterable, Sequence

from google.protobuf import message as protobuf_message

from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import errors
from tunewire.core.bus import envelope, pooling
from tunewire.core.state import model_input, objectives
from tunewire.label import examples, near_duplicates, preprocess, queue, rules


@dataclasses.dataclass(frozen=True)
class Labelled(pooling.PickledAsArguments):
    encoded: examples.Encoded

    @property
    def example(self) -> examples.Example:
        return self.encoded.example


@dataclasses.dataclass(frozen=True)
class Queued(pooling.PickledAsArguments):
    task: queue.Task


@dataclasses.dataclass(frozen=True)
class Dropped(pooling.PickledAsArguments):
    """A record kept out of the dataset, with the reason counted in metrics."""

    reason: str


@dataclasses.dataclass(frozen=True)
class OverBudget(pooling.PickledAsArguments):
    """A record whose rules took longer than the budget: it goes to the DLQ with the reason."""

    reason: str


Outcome = Labelled | Queued | Dropped

REMEMBER_BATCH = 512
"""Items remembered per announced batch at start-up."""


@dataclasses.dataclass
class _Seen:
    sources: set[str]
    texts: set[str]
    near: near_duplicates.NearDuplicates


@dataclasses.dataclass(frozen=True)
class Prepared(pooling.PickledAsArguments):
    """One record as far as it can go without knowing what the objective has seen.

    ``outcome`` is what becomes of the record unless it turns out to be a duplicate; only
    :meth:`Labeller.admit` can say that.
    """

    record_id: str
    objective: str
    objective_version: int
    """The version of the objective it was prepared against (its rules and limits)."""
    source_id: str
    text: str
    """What duplicates are judged on (:func:`judged_text`): the text normalised and cut to
    the objective's ``max_text_chars``, with its answer when the event gave one; empty when
    the record goes no further (dropped as empty, or over the rules' budget)."""
    key: str
    """:func:`preprocess.content_key` of the text."""
    signature: bytes
    """The text's MinHash signature (:class:`preprocess.MinHasher`)."""
    outcome: Outcome | OverBudget


def decode(value: bytes) -> records_pb2.Record:
    """A ``tunewire.v1.Record``; :class:`errors.InvalidEvent` when it is not one."""
    try:
        return records_pb2.Record.FromString(value)
    except protobuf_message.DecodeError as exc:
        raise errors.InvalidEvent(f"not a tunewire.v1.Record: {exc}", kind="malformed") from None


def fields_of(record: records_pb2.Record) -> dict[str, object]:
    """The record's data fields; none when they are not a JSON object."""
    try:
        fields = json.loads(record.fields_json) if record.fields_json else {}
    except json.JSONDecodeError:
        return {}
    return fields if isinstance(fields, dict) else {}


class Preparer:
    """The pure half of labelling, with what it compiles once (rules, MinHash permutations).

    ``rule_budget_s`` is how long an objective's rules may take on one record (no limit by
    default); a record over it is prepared as :class:`OverBudget`.
    """

    def __init__(
        self, *, hasher: preprocess.MinHasher | None = None, rule_budget_s: float = math.inf
    ) -> None:
        self.hasher = hasher or preprocess.MinHasher()
        self.rule_budget_s = rule_budget_s
        self._rules: dict[tuple[str, int], rules.RuleSet] = {}

    def rules_for(self, objective: objectives.ObjectiveVersion) -> rules.RuleSet:
        """The objective's rules, compiled once per version."""
        key = (objective.name, objective.version)
        found = self._rules.get(key)
        if found is None:
            found = rules.RuleSet.compile(objective.spec)
            self._rules[key] = found
        return found

    def prepare(
        self,
        record: records_pb2.Record,
        *,
        record_id: str,
        objective: objectives.ObjectiveVersion,
        now: datetime.datetime,
    ) -> Prepared:
        """Everything about one record that needs no memory of other records."""
        return self.prepare_many([(record, record_id, objective)], now=now)[0]

    def prepare_many(
        self,
        items: Sequence[tuple[records_pb2.Record, str, objectives.ObjectiveVersion]],
        *,
        now: datetime.datetime,
    ) -> list[Prepared]:
        """:meth:`prepare` of each (record, record id, objective), the MinHash signatures
        computed together (:meth:`preprocess.MinHasher.signatures`)."""
        decided = [
            self._outcome(record, record_id, objective, now)
            for record, record_id, objective in items
        ]
        signatures = iter(self.hasher.signatures([text for text, _ in decided if text]))
        return [
            Prepared(
                record_id=record_id,
                objective=objective.name,
                objective_version=objective.version,
                source_id=record.source_id,
                text=text,
                key=preprocess.content_key(text) if text else "",
                signature=next(signatures) if text else b"",
                outcome=outcome,
            )
            for (record, record_id, objective), (text, outcome) in zip(items, decided, strict=True)
        ]

    def _outcome(
        self,
        record: records_pb2.Record,
        record_id: str,
        objective: objectives.ObjectiveVersion,
        now: datetime.datetime,
    ) -> tuple[str, Outcome | OverBudget]:
        """A record's normalised text (empty: it goes no further) and its fate unless it is
        a duplicate."""
        spec = objective.spec
        text = model_input.model_text(record.text, spec.dataset.max_text_chars)
        if not text:
            return "", Dropped("empty")
        if spec.labelling.keep or spec.task != "classification":
            fields = fields_of(record)
            kept = all(rule.passes(fields) for rule in spec.labelling.keep)
            if spec.task != "classification":
                return self._answered(record, record_id, objective, now, text, fields, kept)
            if not kept:
                return text, Dropped("kept_out")
        ruleset = self.rules_for(objective)
        fields = fields_of(record) if ruleset.reads_fields else {}
        try:
            votes = ruleset.votes(text, fields, budget_s=self.rule_budget_s)
        except rules.OverBudget as over:
            return "", OverBudget(
                f"the rules of objective {objective.name!r} (v{objective.version}) took "
                f"{over.elapsed_s * 1000:.3f} ms on this record, over its budget of "
                f"{over.budget_s * 1000:g} ms (TUNEWIRE_LABEL__RULE_BUDGET_MS); "
                f"stopped after rule {over.rule}"
            )
        decision = rules.decide(votes, spec.labelling.min_agreement)
        if decision.label is not None:
            voters = tuple(v.rule for v in decision.votes)
            example = _example(record, record_id, objective, now, text, decision.label, voters)
            return text, Labelled(examples.Encoded.of(example))
        hints = tuple((v.rule, v.label) for v in decision.votes)
        return text, _for_people(record, record_id, objective, now, text, decision.reason, hints)

    def _answered(
        self,
        record: records_pb2.Record,
        record_id: str,
        objective: objectives.ObjectiveVersion,
        now: datetime.datetime,
        text: str,
        fields: dict[str, object],
        kept: bool,
    ) -> tuple[str, Outcome]:
        """A generation or extraction record: the answer its event holds becomes the
        example's; without one, people write it, and an answer the keep rules refuse is
        their draft to improve (or the record is left out)."""
        answer = model_input.target(objective.spec, fields)
        if answer is None or not kept:
            reason = "no_target" if answer is None else "kept_out"
            draft = () if answer is None else (("draft", answer),)
            return text, _for_people(record, record_id, objective, now, text, reason, draft)
        example = _example(record, record_id, objective, now, text, answer, ("event",))
        return judged_text(text, answer), Labelled(examples.Encoded.of(example))


class Labeller:
    """Admits prepared records by what each objective has seen; remembers what it admits."""

    def __init__(
        self, *, near_threshold: float, near_capacity: int, rule_budget_s: float = math.inf
    ) -> None:
        self._near_threshold = near_threshold
        self._near_capacity = near_capacity
        self.preparer = Preparer(rule_budget_s=rule_budget_s)
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def remember(self, objective: str, items: Iterable[tuple[str, str]]) -> None:
        """Mark items (source id, text) as seen: at start-up, from stored examples and tasks.

        Their near-duplicate index entries go in announced batches, so restoring a large
        dataset costs little more than hashing it.
        """
        pending = iter(items)
        while batch := list(itertools.islice(pending, REMEMBER_BATCH)):
            with self._lock:
                seen = self._seen_for(objective)
                new: dict[str, str] = {}
                for source_id, text in batch:
                    seen.sources.add(source_id)
                    key = preprocess.content_key(text)
                    if key not in seen.texts:
                        new.setdefault(key, text)
                signatures = self.preparer.hasher.signatures(list(new.values()))
                signed = list(zip(new, signatures, strict=True))
                seen.near.expect(signed)
                for key, signature in signed:
                    seen.texts.add(key)
                    seen.near.seen_or_add(key, "", signature=signature)

    def expect(self, prepared: Iterable[Prepared | None]) -> None:
        """Announce records about to be admitted, so their near-duplicates are looked up in one
        go (:meth:`near_duplicates.NearDuplicates.expect`); only for objectives seen already.

        The answers never depend on it: a record admitted without being announced is looked
        up on its own.
        """
        with self._lock:
            announced: dict[str, list[tuple[str, bytes]]] = {}
            for one in prepared:
                if one is None or not one.text or one.objective not in self._seen:
                    continue
                seen = self._seen[one.objective]
                if one.source_id not in seen.sources and one.key not in seen.texts:
                    announced.setdefault(one.objective, []).append((one.key, one.signature))
            for objective, items in announced.items():
                self._seen[objective].near.expect(items)

    def rules_for(self, objective: objectives.ObjectiveVersion) -> rules.RuleSet:
        """The objective's rules, compiled once per version."""
        return self.preparer.rules_for(objective)

    def label(
        self,
        record: records_pb2.Record,
        *,
        record_id: str,
        objective: objectives.ObjectiveVersion,
        now: datetime.datetime,
    ) -> Outcome:
        """Decide one record's fate here: :meth:`admit` of :meth:`Preparer.prepare`."""
        prepared = self.preparer.prepare(record, record_id=record_id, objective=objective, now=now)
        return self.admit(prepared, objective)

    def admit(self, prepared: Prepared, objective: objectives.ObjectiveVersion) -> Outcome:
        """A prepared record's fate: a duplicate of something seen, else its own outcome.

        ``prepared`` must come from this very version of ``objective``, and its signature
        from a hasher equal to :attr:`preparer`'s. Raises InvalidEvent for a retired objective
        and for a record over the rules' time budget (kind ``rule_budget``).
        """
        _check_active(objective)
        if (prepared.objective, prepared.objective_version) != (objective.name, objective.version):
            raise ValueError(
                f"prepared for {prepared.objective} v{prepared.objective_version}, "
                f"not {objective.name} v{objective.version}"
            )
        if isinstance(prepared.outcome, OverBudget):
            raise errors.InvalidEvent(prepared.outcome.reason, kind="rule_budget")
        if not prepared.text:
            return prepared.outcome
        with self._lock:
            seen = self._seen_for(objective.name)
            if prepared.source_id in seen.sources:
                return Dropped("duplicate_source")
            if prepared.key in seen.texts:
                return Dropped("duplicate_text")
            near = seen.near.seen_or_add(prepared.key, prepared.text, signature=prepared.signature)
            if near is not None:
                return Dropped("near_duplicate")
            seen.sources.add(prepared.source_id)
            seen.texts.add(prepared.key)
        return prepared.outcome

    def _seen_for(self, objective: str) -> _Seen:
        seen = self._seen.get(objective)
        if seen is None:
            hasher = self.preparer.hasher
            seen = _Seen(
                sources=set(),
                texts=set(),
                near=near_duplicates.NearDuplicates(
                    threshold=self._near_threshold,
                    capacity=self._near_capacity,
                    num_perm=hasher.num_perm,
                    shingle_words=hasher.shingle_words,
                ),
            )
            self._seen[objective] = seen
        return seen


def judged_text(text: str, answer: str | None) -> str:
    """What duplicates are judged on: an input with the answer its event gave (two tickets
    asking alike but answered differently are both worth learning), else the input alone."""
    return text if answer is None else f"{text}\n{answer}"


def _example(
    record: records_pb2.Record,
    record_id: str,
    objective: objectives.ObjectiveVersion,
    now: datetime.datetime,
    text: str,
    answer: str,
    voters: tuple[str, ...],
) -> examples.Example:
    return examples.Example(
        example_id=envelope.derived_id("example", objective.name, record.source_id),
        objective=objective.name,
        objective_version=objective.version,
        source_id=record.source_id,
        record_id=record_id,
        event_id=record.event_id,
        text=text,
        label=answer,
        label_source="rule" if objective.spec.task == "classification" else "event",
        voters=voters,
        split=preprocess.split_of(record.source_id, objective.spec.dataset.eval_fraction),
        labelled_at=now.isoformat(),
    )


def _for_people(
    record: records_pb2.Record,
    record_id: str,
    objective: objectives.ObjectiveVersion,
    now: datetime.datetime,
    text: str,
    reason: str,
    hints: tuple[tuple[str, str], ...],
) -> Outcome:
    """A task for the human queue, or the reason the record is left out without one."""
    if not objective.spec.labelling.human_queue:
        return Dropped(reason)
    return Queued(
        queue.Task(
            task_id=task_id(objective.name, record.source_id),
            objective=objective.name,
            source_id=record.source_id,
            record_id=record_id,
            event_id=record.event_id,
            text=text,
            hints=hints,
            reason=reason,
            enqueued_at=now.isoformat(),
        )
    )


def _check_active(objective: objectives.ObjectiveVersion) -> None:
    """Raise InvalidEvent unless ``objective`` takes records (a retired one does not)."""
    if objective.status != "active":
        raise errors.InvalidEvent(
            f"objective {objective.name!r} is retired", kind="retired_objective"
        )


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
