"""The records of the human labelling queue as S3 holds them.

The queue (:mod:`tunewire.label.queue`) decides what to store and when; this module is what
the stored objects look like: the task, answer and lease records, their JSON and gzipped
batch encodings, the rules for names that become key segments (objectives, task ids,
annotators), and how names are read back out of listed keys. Kept apart so every replica
reads and writes byte-compatible records whatever the queue's in-memory state does.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tunewire.core.base import errors
from tunewire.core.bus import pooling
from tunewire.core.state import layout

REASONS = ("conflict", "abstain", "too_few_votes")
"""Why a task needs a human, as :func:`tunewire.label.rules.decide` reports it."""

BATCH_SUFFIX = ".jsonl.gz"
"""How a task batch's key ends (see :func:`encode_batch`)."""

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""Objective names and task ids: one safe S3 path segment, no ``/``, no ``..`` tricks."""

_ANNOTATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""Annotator names: as segments, plus ``@`` and ``+`` so e-mail addresses work."""


@dataclasses.dataclass(frozen=True)
class Task(pooling.PickledAsArguments):
    """One item waiting for a human label."""

    task_id: str
    objective: str
    source_id: str
    record_id: str
    event_id: str
    text: str
    hints: tuple[tuple[str, str], ...]
    """``(rule name, label)`` votes of the rules, shown to annotators as hints."""
    reason: str
    """Why it needs a human: ``conflict``, ``abstain`` or ``too_few_votes``."""
    enqueued_at: str
    """ISO 8601 time; the queue hands out the oldest task first."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One annotator's label for a task, and the ``labels_per_item`` it was given under."""

    annotator: str
    label: str
    labels_per_item: int
    answered_at: float


@dataclasses.dataclass(frozen=True)
class Lease:
    """Who works on a task, with which claim id, until when (seconds since the epoch)."""

    annotator: str
    claim_id: str
    expires_at: float


# -- validation ------------------------------------------------------------------------------


def check_segment(value: str, what: str) -> None:
    """:class:`errors.InvalidRequest` unless ``value`` is safe as one S3 key segment."""
    if not _SEGMENT.fullmatch(value):
        raise errors.InvalidRequest(
            f"{what} {value!r} is not valid: use up to 200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def check_annotator(value: str) -> None:
    """:class:`errors.InvalidRequest` unless ``value`` is a valid annotator name."""
    if not _ANNOTATOR.fullmatch(value):
        raise errors.InvalidRequest(
            f"annotator {value!r} is not valid: use up to 128 letters, digits, '.', '_', '-', "
            "'@' or '+', starting with a letter or digit"
        )


def check_task(task: Task) -> None:
    """:class:`errors.InvalidRequest` unless the task can be stored as it is."""
    check_segment(task.objective, "objective")
    check_segment(task.task_id, "task id")
    if task.reason not in REASONS:
        raise errors.InvalidRequest(
            f"task reason {task.reason!r} is not one of {', '.join(REASONS)}"
        )
    parse_time(task.enqueued_at, "enqueued_at")


# -- keys ------------------------------------------------------------------------------------


def claim_key(objective: str, task_id: str) -> str:
    """The key of a task's lease."""
    return f"{layout.label_queue(objective)}claims/{task_id}.json"


def key_name(key: str, prefix: str) -> str | None:
    """``{prefix}{name}.json`` -> name (None for anything else under the prefix)."""
    rest = key[len(prefix) :]
    if "/" in rest or not rest.endswith(".json"):
        return None
    return rest[: -len(".json")]


def key_pair(key: str, prefix: str) -> tuple[str, str] | None:
    """``{prefix}{task_id}/{annotator}.json`` -> (task_id, annotator)."""
    task_id, _, rest = key[len(prefix) :].partition("/")
    if not task_id or "/" in rest or not rest.endswith(".json"):
        return None
    return task_id, rest[: -len(".json")]


# -- times -----------------------------------------------------------------------------------


def iso(epoch: float) -> str:
    """The ISO 8601 UTC form of seconds since the epoch, as records store times."""
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).isoformat()


def parse_time(value: str, what: str = "time") -> float:
    """Seconds since the epoch of an ISO 8601 time (UTC when it has no offset)."""
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise errors.InvalidRequest(f"{what} {value!r} is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


# -- codecs ----------------------------------------------------------------------------------


def task_to_json(task: Task) -> dict[str, Any]:
    """A task as its JSON object (a ``tasks/`` object, or one line of a batch)."""
    return {
        "task_id": task.task_id,
        "objective": task.objective,
        "source_id": task.source_id,
        "record_id": task.record_id,
        "event_id": task.event_id,
        "text": task.text,
        "hints": [list(hint) for hint in task.hints],
        "reason": task.reason,
        "enqueued_at": task.enqueued_at,
    }


def task_from_json(body: Mapping[str, Any]) -> Task:
    """The task a :func:`task_to_json` object holds."""
    return Task(
        task_id=body["task_id"],
        objective=body["objective"],
        source_id=body["source_id"],
        record_id=body["record_id"],
        event_id=body["event_id"],
        text=body["text"],
        hints=tuple((str(rule), str(label)) for rule, label in body["hints"]),
        reason=body["reason"],
        enqueued_at=body["enqueued_at"],
    )


def encode_batch(tasks: Iterable[Task]) -> bytes:
    """A batch object: one JSON line per task, gzipped (mtime 0: the bytes depend on the tasks)."""
    lines = "".join(
        json.dumps(task_to_json(task), ensure_ascii=False, separators=(",", ":")) + "\n"
        for task in tasks
    )
    return gzip.compress(lines.encode("utf-8"), compresslevel=6, mtime=0)


def decode_batch(data: bytes) -> list[Task]:
    """The tasks of a batch object, in the order they were written."""
    return [task_from_json(json.loads(line)) for line in gzip.decompress(data).splitlines() if line]


def answer_to_json(answer: Answer) -> dict[str, Any]:
    """An answer as its ``answers/`` object."""
    return {
        "annotator": answer.annotator,
        "label": answer.label,
        "labels_per_item": answer.labels_per_item,
        "answered_at": iso(answer.answered_at),
    }


def answer_from_json(body: Mapping[str, Any]) -> Answer:
    """The answer an ``answers/`` object holds."""
    return Answer(
        annotator=body["annotator"],
        label=body["label"],
        labels_per_item=int(body["labels_per_item"]),
        answered_at=parse_time(body["answered_at"]),
    )


def lease_to_json(task_id: str, lease: Lease) -> dict[str, Any]:
    """A lease on a task as its ``claims/`` object."""
    return {
        "task_id": task_id,
        "annotator": lease.annotator,
        "claim_id": lease.claim_id,
        "expires_at": iso(lease.expires_at),
        # Exact seconds as well: the ISO form is rounded to microseconds, and replicas must
        # agree to the last digit on whether a lease has expired.
        "expires_epoch": lease.expires_at,
    }


def lease_from_json(body: Mapping[str, Any]) -> Lease:
    """The lease a ``claims/`` object holds."""
    epoch = body.get("expires_epoch")
    return Lease(
        annotator=body["annotator"],
        claim_id=body["claim_id"],
        expires_at=float(epoch) if epoch is not None else parse_time(body["expires_at"]),
    )
