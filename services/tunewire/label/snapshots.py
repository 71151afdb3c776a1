"""Dataset snapshots: an objective's labelled examples frozen into files a trainer reads.

A snapshot is ``datasets/{objective}/{dataset_id}/`` holding ``train.jsonl`` and
``eval.jsonl`` (chat format), ``lineage.jsonl`` (where each example came from) and
``manifest.json``, written last: a prefix without a manifest is treated as absent. The
dataset id is derived from the content, so building the same examples twice gives the same
snapshot, and the second build changes nothing.

Building streams the example log through local files, never the dataset through memory:
examples go into an on-disk SQLite table keyed by example id (a later label of the same item
replaces the earlier one, as the ``LabelledExample`` contract says), then out in log order
into the split files, counting and hashing as they go.

Announcing on ``tunewire.datasets`` comes after the manifest, and an ``announced.json``
marker after the broker has acknowledged the event. A crash in between leaves a complete
snapshot without the marker; :meth:`SnapshotBuilder.announce_pending` (run at start-up)
announces it with the same event id, which consumers deduplicate on.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import hashlib
import json
import pathlib
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from tunewire.contracts.v1 import datasets_pb2
from tunewire.core.base import errors, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.state import layout, objectives
from tunewire.label import examples

MANIFEST = layout.MANIFEST
ANNOUNCED = "announced.json"
FILES = ("train", "eval", "lineage")
JSONL_CONTENT_TYPE = "application/jsonl"
# Rows written to the on-disk table per transaction: large enough to be fast, small enough
# that the pending rows never matter for memory.
_BATCH = 5_000


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """What :meth:`SnapshotBuilder.build` produced (or found already there)."""

    dataset_id: str
    objective: str
    uri: str
    manifest: dict[str, Any]
    created: bool
    """False when a snapshot of exactly these examples already existed."""


class SnapshotBuilder:
    """Builds, lists and announces an objective's dataset snapshots."""

    def __init__(
        self,
        artifacts: store.ArtifactStore,
        log: examples.ExampleLog,
        producer: producing.Publisher,
        *,
        source: str = "tunewire/label",
        workdir: pathlib.Path | None = None,
    ) -> None:
        self._store = artifacts
        self._log = log
        self._producer = producer
        self._source = source
        self._workdir = workdir

    # -- building ---------------------------------------------------------------------------

    def build(
        self, objective: objectives.ObjectiveVersion, *, rules: Sequence[str], reason: str
    ) -> SnapshotInfo:
        """Snapshot every labelled example of ``objective``, upload it and announce it.

        :class:`errors.InvalidRequest` when the objective has no labelled examples yet. A
        snapshot with the same content that already exists is returned with
        ``created=False`` (and announced, if an earlier attempt stopped short of that).
        """
        if self._workdir is not None:
            self._workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="snapshot-", dir=self._workdir) as scratch:
            folder = pathlib.Path(scratch)
            stats = _write_files(self._log.iter_examples(objective.name), objective.spec, folder)
            if stats.total == 0:
                raise errors.InvalidRequest(
                    f"objective {objective.name!r} has no labelled examples yet; "
                    "build a snapshot once rules or annotators have labelled some"
                )
            content_hash = _content_hash(folder)
            dataset_id = "ds-" + content_hash[:16]
            prefix = layout.dataset(objective.name, dataset_id)
            existing = self._manifest_or_none(prefix)
            if existing is not None:
                return self._finish_existing(existing)
            latest = self.latest(objective.name)
            keys = {name: f"{prefix}{name}.jsonl" for name in FILES}
            manifest: dict[str, Any] = {
                "dataset_id": dataset_id,
                "objective": objective.name,
                "objective_version": objective.version,
                "created_at": _now(),
                "reason": reason,
                "task": objective.spec.task,
                "instruction": objectives.instruction(objective.spec),
                "counts": {split: sum(stats.labels[split].values()) for split in ("train", "eval")},
                "labels": {split: dict(stats.labels[split]) for split in ("train", "eval")},
                "examples": stats.total,
                "dropped": dict(stats.dropped),
                "content_hash": f"sha256:{content_hash}",
                "parent": latest["dataset_id"] if latest else None,
                "rules": list(rules),
                "files": keys,
                "split": {"eval_fraction": objective.spec.dataset.eval_fraction},
            }
            for name in FILES:
                self._store.upload_file(
                    keys[name], folder / f"{name}.jsonl", content_type=JSONL_CONTENT_TYPE
                )
        try:
            self._store.put_json(prefix + MANIFEST, manifest, only_if_absent=True)
        except errors.Conflict:
            # Another replica finished the same snapshot first; its manifest stands.
            return self._finish_existing(self._store.get_json(prefix + MANIFEST))
        self._announce(manifest)
        return self._info(manifest, created=True)

    def _finish_existing(self, manifest: dict[str, Any]) -> SnapshotInfo:
        prefix = layout.dataset(manifest["objective"], manifest["dataset_id"])
        if not self._exists(prefix + ANNOUNCED):
            self._announce(manifest)
        return self._info(manifest, created=False)

    # -- reading ----------------------------------------------------------------------------

    def manifests(self, objective: str) -> list[dict[str, Any]]:
        """Every complete snapshot's manifest, oldest first (parts without one are ignored)."""
        return [manifest for manifest, _ in self._complete(objective)]

    def latest(self, objective: str) -> dict[str, Any] | None:
        """The manifest of the newest announced snapshot, or None before the first."""
        announced = [manifest for manifest, done in self._complete(objective) if done]
        return announced[-1] if announced else None

    def announce_pending(self, objective: str) -> int:
        """Announce complete snapshots whose announcement never happened; returns how many.

        Run at start-up: it repairs a crash between writing a manifest and the broker
        acknowledging its event. Oldest first, so consumers see snapshots in build order.
        """
        pending = [manifest for manifest, done in self._complete(objective) if not done]
        for manifest in pending:
            self._announce(manifest)
        return len(pending)

    def announce_latest_again(self, objective: str) -> str | None:
        """Publish the newest announced snapshot's event again, under the same event id.

        A broker restarted without storage loses the events on its topics; repeating the
        newest announcement now and then lets train still hear of it (train makes one run
        per dataset, however often it hears). Returns the dataset id, or None before the
        first snapshot.
        """
        latest = self.latest(objective)
        if latest is None:
            return None
        self._publish(latest)
        return str(latest["dataset_id"])

    def _complete(self, objective: str) -> list[tuple[dict[str, Any], bool]]:
        """(manifest, announced) of each complete snapshot, oldest first, from one listing."""
        manifest_keys: list[str] = []
        announced: set[str] = set()
        for key in self._store.list_keys(layout.datasets(objective)):
            folder, _, name = key.rpartition("/")
            if name == MANIFEST:
                manifest_keys.append(key)
            elif name == ANNOUNCED:
                announced.add(folder)
        found: list[tuple[dict[str, Any], bool]] = []
        for key in manifest_keys:
            with contextlib.suppress(errors.NotFound):
                found.append((self._store.get_json(key), key.rpartition("/")[0] in announced))
        # ISO timestamps with a fixed format and offset sort as the instants they name.
        found.sort(key=lambda item: (item[0]["created_at"], item[0]["dataset_id"]))
        return found

    # -- announcing -------------------------------------------------------------------------

    def _announce(self, manifest: dict[str, Any]) -> None:
        """Publish the snapshot event, wait for the broker, then mark it announced."""
        event_id = self._publish(manifest)
        prefix = layout.dataset(manifest["objective"], manifest["dataset_id"])
        self._store.put_json(prefix + ANNOUNCED, {"event_id": event_id, "announced_at": _now()})

    def _publish(self, manifest: dict[str, Any]) -> str:
        """Publish the snapshot's event and wait for the broker; returns the event id."""
        objective = manifest["objective"]
        dataset_id = manifest["dataset_id"]
        prefix = layout.dataset(objective, dataset_id)
        created_at = datetime.datetime.fromisoformat(manifest["created_at"])
        label_counts: collections.Counter[str] = collections.Counter()
        for per_split in manifest["labels"].values():
            label_counts.update(per_split)
        event = datasets_pb2.DatasetSnapshot(
            objective=objective,
            dataset_id=dataset_id,
            uri=self._store.uri(prefix),
            split_counts=manifest["counts"],
            label_counts=dict(label_counts),
            content_hash=manifest["content_hash"],
            parent_dataset_id=manifest["parent"] or "",
            objective_version=manifest["objective_version"],
            created_at=envelope.timestamp(created_at),
        )
        event_id = envelope.derived_id("dataset", objective, dataset_id)
        self._producer.publish(
            topics.DATASETS,
            event,
            key=objective,
            event=envelope.for_payload(event, id=event_id, source=self._source, subject=dataset_id),
        )
        self._producer.flush()
        return event_id

    # -- helpers ----------------------------------------------------------------------------

    def _info(self, manifest: dict[str, Any], *, created: bool) -> SnapshotInfo:
        prefix = layout.dataset(manifest["objective"], manifest["dataset_id"])
        return SnapshotInfo(
            dataset_id=manifest["dataset_id"],
            objective=manifest["objective"],
            uri=self._store.uri(prefix),
            manifest=manifest,
            created=created,
        )

    def _manifest_or_none(self, prefix: str) -> dict[str, Any] | None:
        try:
            manifest: dict[str, Any] = self._store.get_json(prefix + MANIFEST)
        except errors.NotFound:
            return None
        return manifest

    def _exists(self, key: str) -> bool:
        return any(found == key for found in self._store.list_keys(key))


@dataclasses.dataclass
class _Stats:
    total: int = 0
    labels: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: {"train": collections.Counter(), "eval": collections.Counter()}
    )
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def _write_files(
    stream: Iterator[examples.Example], spec: objectives.ObjectiveSpec, folder: pathlib.Path
) -> _Stats:
    """Stream examples into ``train``/``eval``/``lineage`` files in ``folder``; count them.

    An on-disk table keeps the latest example of each id (memory stays bounded by SQLite's
    page cache, not by the dataset); its rowid keeps log order for the files.
    """
    stats = _Stats()
    system = objectives.instruction(spec)
    allowed = set(spec.labels) if spec.task == "classification" else None
    with contextlib.closing(sqlite3.connect(folder / "examples.db")) as db:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(
            "CREATE TABLE examples (seq INTEGER PRIMARY KEY, example_id TEXT UNIQUE,"
            " split TEXT, label TEXT, chat TEXT, lineage TEXT)"
        )
        seen = 0
        for batch in _batched(stream, _BATCH):
            rows = []
            for example in batch:
                if allowed is not None and example.label not in allowed:
                    # Labels the current objective no longer has must not be trained on.
                    stats.dropped["unknown_label"] += 1
                    continue
                rows.append(
                    (example.example_id, example.split, example.label, *_lines(example, system))
                )
            seen += len(rows)
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO examples"
                    " (example_id, split, label, chat, lineage) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
        with contextlib.ExitStack() as files:
            out = {
                name: files.enter_context((folder / f"{name}.jsonl").open("w", encoding="utf-8"))
                for name in FILES
            }
            for split, label, chat, lineage in db.execute(
                "SELECT split, label, chat, lineage FROM examples ORDER BY seq"
            ):
                out[split].write(chat)
                out["lineage"].write(lineage)
                stats.labels[split][label] += 1
                stats.total += 1
    if seen > stats.total:
        stats.dropped["superseded"] = seen - stats.total
    return stats


def _lines(example: examples.Example, system: str) -> tuple[str, str]:
    """The chat line and the lineage line of one example (newline-terminated)."""
    chat = {
        "id": example.example_id,
        "source_id": example.source_id,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": example.text},
            {"role": "assistant", "content": example.label},
        ],
    }
    lineage = {
        "example_id": example.example_id,
        "source_id": example.source_id,
        "record_id": example.record_id,
        "event_id": example.event_id,
        "label_source": example.label_source,
        "voters": list(example.voters),
    }
    return (
        json.dumps(chat, ensure_ascii=False) + "\n",
        json.dumps(lineage, ensure_ascii=False) + "\n",
    )


def _batched(stream: Iterator[examples.Example], size: int) -> Iterator[list[examples.Example]]:
    batch: list[examples.Example] = []
    for item in stream:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _content_hash(folder: pathlib.Path) -> str:
    """sha256 of ``train.jsonl`` followed by ``eval.jsonl``: ``cat train eval | sha256sum``."""
    digest = hashlib.sha256()
    for name in ("train", "eval"):
        with (folder / f"{name}.jsonl").open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
