"""Prepares records in worker processes, so label uses more than one core.

Decoding, normalising, the content key and MinHash signature, the rules' votes and the
encoding of each example are pure CPU work in Python, and one partition is consumed by one
process; without help, label is bound to a single core. The consumer hands each polled batch
to :class:`LabelPool` in chunks; worker processes prepare the records
(:meth:`labelling.Preparer.prepare`) while the consumer admits the chunks already done, in
order. Everything that depends on other records or has a side effect — the seen ids, the
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

from tunewire.core import bus, errors, objectives, pooling
from tunewire.label import labelling, preprocess

Result = labelling.Prepared | None


class LabelPool:
    """A pool of worker processes that turn records into :class:`labelling.Prepared`."""

    def __init__(self, *, workers: int, hasher: preprocess.MinHasher) -> None:
        self._pool = pooling.process_pool(
            workers=workers,
            initializer=_start_worker,
            initargs=(hasher.num_perm, hasher.shingle_words),
        )
        self._catalog = pooling.CatalogShipper()

    def submit(
        self,
        messages: Sequence[bus.Message],
        current: Mapping[str, objectives.ObjectiveVersion],
    ) -> concurrent.futures.Future[list[Result]]:
        """Prepare a chunk of records in a worker; results come back in the same order."""
        key, catalog_json = self._catalog.ship(current)
        raw = [(m.value, m.header("ce_id")) for m in messages]
        return self._pool.submit(_prepare_chunk, key, catalog_json, raw)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- inside a worker process ---------------------------------------------------------------

_preparer = labelling.Preparer()


def _start_worker(num_perm: int, shingle_words: int) -> None:
    global _preparer
    hasher = preprocess.MinHasher(num_perm=num_perm, shingle_words=shingle_words)
    _preparer = labelling.Preparer(hasher=hasher)


def _prepare_chunk(
    catalog_key: int,
    catalog_json: Mapping[str, str],
    raw: Sequence[tuple[bytes, bytes | None]],
) -> list[Result]:
    current = pooling.worker_catalog(catalog_key, catalog_json)
    now = datetime.datetime.now(datetime.UTC)
    results: list[Result] = []
    for value, ce_id in raw:
        try:
            record = labelling.decode(value)
        except errors.InvalidEvent:
            results.append(None)
            continue
        objective = current.get(record.objective)
        if not ce_id or objective is None or objective.status != "active":
            results.append(None)
            continue
        record_id = ce_id.decode("utf-8", "replace")
        results.append(_preparer.prepare(record, record_id=record_id, objective=objective, now=now))
    return results
