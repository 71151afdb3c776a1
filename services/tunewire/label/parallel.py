"""Prepares records in worker processes, so label uses more than one core.

Decoding, normalising, the content key and MinHash signature, the rules' votes and the
encoding of each example are pure CPU work in Python, and one partition is consumed by one
process; without help, label is bound to a single core. The consumer hands each polled batch
to :class:`LabelPool` in chunks; worker processes prepare the records a chunk at a time
(:meth:`labelling.Preparer.prepare_many`) while the consumer admits the chunks already done,
in order. Everything that depends on other records or has a side effect — the seen ids, the
duplicate and near-duplicate index, the example log, the queue, publishing, commits — stays
in the consumer process, so duplicates are found exactly as without workers and the
durability order of :mod:`tunewire.label.pipeline` is unchanged. A record a worker cannot
prepare (undecodable, no id, an objective its catalog does not have or that is retired)
comes back as None and is handled in the consumer, which raises the right error.
"""

from __future__ import annotations

import concurrent.futures
import datetime
from collections.abc import Mapping, Sequence

from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import errors
from tunewire.core.bus import pooling, producing
from tunewire.core.state import objectives
from tunewire.label import labelling, preprocess

Result = labelling.Prepared | None


class LabelPool:
    """A pool of worker processes that turn records into :class:`labelling.Prepared`, each
    with a preparer like ``preparer`` (its MinHash parameters and rule budget)."""

    def __init__(self, *, workers: int, preparer: labelling.Preparer) -> None:
        hasher = preparer.hasher
        self._pool = pooling.process_pool(
            workers=workers,
            initializer=_start_worker,
            initargs=(hasher.num_perm, hasher.shingle_words, preparer.rule_budget_s),
        )
        self._catalog = pooling.CatalogShipper()

    def submit(
        self,
        messages: Sequence[producing.Message],
        current: Mapping[str, objectives.ObjectiveVersion],
    ) -> concurrent.futures.Future[list[Result]]:
        """Prepare a chunk of records in a worker; results come back in the same order."""
        key, catalog_json = self._catalog.ship(current)
        return self._pool.submit(_prepare_chunk, key, catalog_json, _raw(messages))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class LocalPreparer:
    """Prepares chunks in this process, as the pool's workers would: the consumer's way
    without workers (or for a batch too small to send), still a chunk at a time."""

    def __init__(self, preparer: labelling.Preparer) -> None:
        self._preparer = preparer

    def submit(
        self,
        messages: Sequence[producing.Message],
        current: Mapping[str, objectives.ObjectiveVersion],
    ) -> concurrent.futures.Future[list[Result]]:
        """The chunk prepared now, as a finished future (a failure in it, as in a worker)."""
        done: concurrent.futures.Future[list[Result]] = concurrent.futures.Future()
        try:
            done.set_result(prepare_records(self._preparer, current, _raw(messages)))
        except Exception as exc:  # the consumer then prepares each record itself, as ever
            done.set_exception(exc)
        return done


def _raw(messages: Sequence[producing.Message]) -> list[tuple[bytes, bytes | None]]:
    """What preparing a record needs of its message: the value and the ``ce_id`` header."""
    return [(m.value, m.header("ce_id")) for m in messages]


# -- inside a worker process ---------------------------------------------------------------

_preparer = labelling.Preparer()


def _start_worker(num_perm: int, shingle_words: int, rule_budget_s: float) -> None:
    global _preparer
    hasher = preprocess.MinHasher(num_perm=num_perm, shingle_words=shingle_words)
    _preparer = labelling.Preparer(hasher=hasher, rule_budget_s=rule_budget_s)


def _prepare_chunk(
    catalog_key: int,
    catalog_json: Mapping[str, str],
    raw: Sequence[tuple[bytes, bytes | None]],
) -> list[Result]:
    return prepare_records(_preparer, pooling.worker_catalog(catalog_key, catalog_json), raw)


def prepare_records(
    preparer: labelling.Preparer,
    current: Mapping[str, objectives.ObjectiveVersion],
    raw: Sequence[tuple[bytes, bytes | None]],
) -> list[Result]:
    """Each (record, ``ce_id``) prepared, or None when the consumer must see it itself."""
    results: list[Result] = [None] * len(raw)
    places: list[int] = []
    items: list[tuple[records_pb2.Record, str, objectives.ObjectiveVersion]] = []
    for place, (value, ce_id) in enumerate(raw):
        try:
            record = labelling.decode(value)
        except errors.InvalidEvent:
            continue
        objective = current.get(record.objective)
        if ce_id and objective is not None and objective.status == "active":
            places.append(place)
            items.append((record, ce_id.decode("utf-8", "replace"), objective))
    now = datetime.datetime.now(datetime.UTC)
    for place, prepared in zip(places, preparer.prepare_many(items, now=now), strict=True):
        results[place] = prepared
    return results
