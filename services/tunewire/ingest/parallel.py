"""Prepares raw events in worker processes, so ingest uses more than one core.

Validation and redaction are pure CPU work in Python, and one partition is consumed by one
process; without help, ingest is bound to a single core. The consumer hands each polled
batch to :class:`PreparePool` in chunks; worker processes normalise, validate and redact
them while the consumer publishes the chunks already done, in order. Everything with a side
effect (deduplication, publishing, archiving, commits) stays in the consumer process, so the
durability rules of :mod:`tunewire.ingest.pipeline` are unchanged. The pool, the catalog's
trip to the workers and the chunks in flight are :mod:`tunewire.core.bus.pooling`'s.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from tunewire.core.base import errors
from tunewire.core.bus import pooling, producing
from tunewire.core.state import objectives
from tunewire.ingest import handlers, normalising

RawMessage = tuple[bytes, Sequence[tuple[str, bytes]]]


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An event a worker refused (exceptions with keyword arguments do not pickle)."""

    kind: str
    message: str

    def error(self) -> errors.InvalidEvent:
        return errors.InvalidEvent(self.message, kind=self.kind)


Prepared = handlers.Accepted | Rejected


class PreparePool:
    """A pool of worker processes that turn raw messages into :class:`Prepared` results."""

    def __init__(self, *, workers: int, max_event_bytes: int, max_depth: int) -> None:
        self._pool = pooling.process_pool(
            workers=workers, initializer=_start_worker, initargs=(max_event_bytes, max_depth)
        )
        self._catalog = pooling.CatalogShipper()

    def submit(
        self,
        messages: Sequence[producing.Message],
        current: Mapping[str, objectives.ObjectiveVersion],
    ) -> concurrent.futures.Future[list[Prepared]]:
        """Prepare a chunk of messages in a worker; results come back in the same order."""
        key, catalog_json = self._catalog.ship(current)
        raw = [(m.value, m.headers) for m in messages]
        return self._pool.submit(_prepare_chunk, key, catalog_json, raw)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- inside a worker process ---------------------------------------------------------------

_limits: tuple[int, int] = (0, 0)


def _start_worker(max_event_bytes: int, max_depth: int) -> None:
    global _limits
    _limits = (max_event_bytes, max_depth)


def _prepare_chunk(
    catalog_key: int, catalog_json: Mapping[str, str], raw: Sequence[RawMessage]
) -> list[Prepared]:
    current = pooling.worker_catalog(catalog_key, catalog_json)
    max_event_bytes, max_depth = _limits
    now = datetime.datetime.now(datetime.UTC)
    results: list[Prepared] = []
    for value, headers in raw:
        message = producing.Message(
            topic="", partition=0, offset=0, key=None, value=value, headers=headers
        )
        try:
            event = normalising.from_message(message, max_bytes=max_event_bytes)
            results.append(handlers.prepare(event, current, max_depth=max_depth, now=now))
        except errors.InvalidEvent as exc:
            results.append(Rejected(kind=exc.kind, message=exc.message))
    return results
