"""Labelled examples and the append-only log that keeps them in S3.

Every example label decides (by rules or by people) is appended to an in-memory buffer and
written, on :meth:`ExampleLog.flush`, as one gzip JSON-lines segment per objective under
``labels/{objective}/examples/``. Segment keys start with a UTC timestamp, so listing the
prefix returns them in the order they were written and a snapshot can stream the whole log
back segment by segment without ever holding it in memory. Segments are immutable (written
only if absent), so two replicas flushing at once never overwrite each other.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import io
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from tunewire.contracts.v1 import examples_pb2
from tunewire.core.base import errors, store
from tunewire.core.bus import envelope, pooling
from tunewire.core.state import layout

LabelSourceName = Literal["rule", "human", "event"]
SplitName = Literal["train", "eval"]

SEGMENT_SUFFIX = ".jsonl.gz"
EVENT_SOURCE = "tunewire/label"
"""``ce_source`` of the ``tunewire.examples`` events."""

_LABEL_SOURCES: dict[str, examples_pb2.LabelSource] = {
    "rule": examples_pb2.LABEL_SOURCE_RULE,
    "human": examples_pb2.LABEL_SOURCE_HUMAN,
    "event": examples_pb2.LABEL_SOURCE_EVENT,
}
_SPLITS: dict[str, examples_pb2.Split] = {
    "train": examples_pb2.SPLIT_TRAIN,
    "eval": examples_pb2.SPLIT_EVAL,
}


@dataclasses.dataclass(frozen=True)
class Example(pooling.PickledAsArguments):
    """One labelled item, as stored in a segment line and announced on ``tunewire.examples``.

    The split is decided once, when the example is labelled, and stored with it: a snapshot
    never recomputes it, so an item stays in the same split in every snapshot.
    """

    example_id: str
    objective: str
    objective_version: int
    source_id: str
    record_id: str
    event_id: str
    text: str
    label: str
    label_source: LabelSourceName
    voters: tuple[str, ...]
    """Names of the rules that voted for the label, or the annotators who chose it."""
    split: SplitName
    labelled_at: str
    """ISO 8601 time the label was decided, with its UTC offset."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one segment line."""
        # By hand: dataclasses.asdict deep-copies every field, a hot spot at ingest rates.
        return {
            "example_id": self.example_id,
            "objective": self.objective,
            "objective_version": self.objective_version,
            "source_id": self.source_id,
            "record_id": self.record_id,
            "event_id": self.event_id,
            "text": self.text,
            "label": self.label,
            "label_source": self.label_source,
            "voters": list(self.voters),
            "split": self.split,
            "labelled_at": self.labelled_at,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Example:
        """Read a segment line back; :class:`ValueError` when a field is missing or wrong."""
        label_source = document["label_source"]
        split = document["split"]
        if label_source not in _LABEL_SOURCES:
            raise ValueError(f"unknown label_source {label_source!r}")
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}")
        return cls(
            example_id=str(document["example_id"]),
            objective=str(document["objective"]),
            objective_version=int(document["objective_version"]),
            source_id=str(document["source_id"]),
            record_id=str(document["record_id"]),
            event_id=str(document["event_id"]),
            text=str(document["text"]),
            label=str(document["label"]),
            label_source=label_source,
            voters=tuple(str(v) for v in document["voters"]),
            split=split,
            labelled_at=str(document["labelled_at"]),
        )

    def to_proto(self) -> examples_pb2.LabelledExample:
        """The ``tunewire.v1.LabelledExample`` event of this example.

        The proto keeps rule names and the annotator apart; several annotators who agreed
        on a human label are joined with commas in ``annotator``.
        """
        human = self.label_source == "human"
        return examples_pb2.LabelledExample(
            objective=self.objective,
            objective_version=self.objective_version,
            source_id=self.source_id,
            record_id=self.record_id,
            text=self.text,
            label=self.label,
            label_source=_LABEL_SOURCES[self.label_source],
            voting_rules=[] if human else list(self.voters),
            annotator=",".join(self.voters) if human else "",
            split=_SPLITS[self.split],
            labelled_at=envelope.timestamp(datetime.datetime.fromisoformat(self.labelled_at)),
        )


@dataclasses.dataclass(frozen=True)
class Encoded(pooling.PickledAsArguments):
    """An example as the bytes it is stored and announced as: its segment line and its event.

    Encoding is pure work: the label service's worker processes do it (see ``parallel.py``),
    so the consumer only hands the results on, to the log's buffer and to Kafka. Only what
    the consumer needs crosses the pipe; the whole :attr:`example` is read back from the
    line on demand.
    """

    objective: str
    label_source: LabelSourceName
    line: str
    """Its segment line: compact JSON, no newline."""
    event: bytes
    """Its serialised ``tunewire.v1.LabelledExample``."""
    headers: list[tuple[str, bytes]]
    """The event's CloudEvents headers: the id derived from the example id (a relabelled
    record is announced under the same id), ``ce_time`` the moment it was labelled."""

    @classmethod
    def of(cls, example: Example) -> Encoded:
        payload = example.to_proto()
        event = envelope.for_payload(
            payload,
            id=envelope.derived_id("example", example.example_id),
            source=EVENT_SOURCE,
            time=datetime.datetime.fromisoformat(example.labelled_at),
        )
        return cls(
            objective=example.objective,
            label_source=example.label_source,
            line=_LINE.encode(example.to_json()),
            event=payload.SerializeToString(),
            headers=event.headers(),
        )

    @property
    def example(self) -> Example:
        """The example, read back from its segment line."""
        return Example.from_json(json.loads(self.line))


class ExampleLog:
    """Buffers examples and writes them as immutable, time-ordered segments in S3.

    Thread-safe: the consumer loop (rule labels) and the HTTP API (human labels) append to
    the same log. A segment whose write fails goes back to the front of the buffer, so the
    caller can retry the flush (and must not commit its input offsets until one succeeds).
    """

    def __init__(self, artifacts: store.ArtifactStore) -> None:
        self._store = artifacts
        self._buffer: dict[str, list[str]] = {}
        """Segment lines (without their newline) by objective."""
        self._lock = threading.Lock()
        self._last_stamp = datetime.datetime.min.replace(tzinfo=datetime.UTC)

    def append(self, example: Example | Encoded) -> None:
        """Buffer one example in memory until the next :meth:`flush` (encoded here unless
        it comes :class:`Encoded` already)."""
        line = example.line if isinstance(example, Encoded) else _LINE.encode(example.to_json())
        with self._lock:
            self._buffer.setdefault(example.objective, []).append(line)

    def pending(self) -> int:
        """Examples buffered and not yet written."""
        with self._lock:
            return sum(len(batch) for batch in self._buffer.values())

    def flush(self) -> list[str]:
        """Write one segment per objective with buffered examples; returns the keys written.

        Every objective is tried even when one fails; the examples of a failed write stay
        buffered and the first error is raised after the others were written.
        """
        batches = self.take()
        try:
            return self.write(batches)
        except Exception:  # whatever went wrong, the examples must not be lost
            with self._lock:
                for objective, batch in batches.items():
                    self._buffer.setdefault(objective, [])[:0] = batch
            raise

    def take(self) -> dict[str, list[str]]:
        """The buffered segment lines by objective, now out of the buffer (for :meth:`write`)."""
        with self._lock:
            batches, self._buffer = self._buffer, {}
        return batches

    def write(self, batches: dict[str, list[str]]) -> list[str]:
        """Write one segment per objective of ``batches``; returns the keys written.

        Each objective written is removed from ``batches``. Every one is tried even when
        one fails; the first error is raised after the others were written, and what is
        left in ``batches`` can be written by calling again.
        """
        written: list[str] = []
        failure: Exception | None = None
        for objective, batch in list(batches.items()):
            try:
                written.append(self._write_segment(objective, batch))
            except Exception as exc:
                failure = failure or exc
                continue
            del batches[objective]
        if failure is not None:
            raise failure
        return written

    def segments(self, objective: str) -> list[str]:
        """The keys of an objective's segments, oldest first."""
        return list(self._segment_keys(objective))

    def iter_examples(self, objective: str, *, after: str | None = None) -> Iterator[Example]:
        """Stream an objective's examples in log order, one segment in memory at a time.

        ``after`` is a segment key: only segments written after it are read (for catching
        up from a known point instead of re-reading the whole log).
        """
        for key in self._segment_keys(objective, after=after):
            data = self._store.get_bytes(key)
            with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as lines:
                for line in lines:
                    if line.strip():
                        yield Example.from_json(json.loads(line))

    def _segment_keys(self, objective: str, *, after: str | None = None) -> Iterator[str]:
        for key in self._store.list_keys(layout.label_examples(objective), start_after=after):
            if key.endswith(SEGMENT_SUFFIX):
                yield key

    def _write_segment(self, objective: str, batch: list[str]) -> str:
        # One gzip member of all the lines at once, at level 3: about half the CPU of level 6
        # for somewhat larger segments, and compression is a visible share of the label
        # process's CPU (figures in bench/README.md). mtime=0: the bytes depend on the
        # examples only, which the conflict check relies on.
        text = "\n".join(batch) + "\n"
        data = gzip.compress(text.encode("utf-8"), compresslevel=_COMPRESSLEVEL, mtime=0)
        segment = f"{self._stamp()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        key = layout.label_examples(objective) + segment
        try:
            self._store.put_bytes(key, data, content_type="application/gzip", only_if_absent=True)
        except errors.Conflict:
            # The key is random, so a conflict almost surely means an earlier attempt of this
            # very write succeeded and only its answer was lost (a retried conditional PUT).
            if self._store.get_bytes(key) != data:
                raise
        return key

    def _stamp(self) -> str:
        """A UTC timestamp that never goes backwards within this process (key order)."""
        with self._lock:
            now = datetime.datetime.now(datetime.UTC)
            if now <= self._last_stamp:
                now = self._last_stamp + datetime.timedelta(microseconds=1)
            self._last_stamp = now
        return now.strftime("%Y%m%dT%H%M%S%f")


_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""One segment line: compact JSON, non-ASCII text kept as it is (UTF-8)."""
_COMPRESSLEVEL = 3
