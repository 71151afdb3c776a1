"""Prepares raw events in worker processes, so ingest uses more than one core.

Validation and redaction are pure CPU work in Python, and one partition is consumed by one
process; without help, ingest is bound to a single core. The consumer hands each polled
batch to :class:`PreparePool` in chunks; worker processes normalise, validate and redact
them while the consumer publishes the chunks already done, in order. Everything with a side
effect (deduplication, publishing, archiving, commits) stays in the consumer process, so the
durability rules of :mod:`tunewire.ingest.pipeline` are unchanged.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import multiprocessing
import os
from collections.abc import Mapping, Sequence

from tunewire.core import bus, errors, objectives
from tunewire.ingest import handlers, normalising

log = logging.getLogger(__name__)

RawMessage = tuple[bytes, Sequence[tuple[str, bytes]]]


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An event a worker refused (exceptions with keyword arguments do not pickle)."""

    kind: str
    message: str

    def error(self) -> errors.InvalidEvent:
        return errors.InvalidEvent(self.message, kind=self.kind)


Prepared = handlers.Accepted | Rejected


def default_workers() -> int:
    """One worker per usable core beyond the first, at most four; none on a single core."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (usable or 1) - 1)) if (usable or 1) > 1 else 0


class PreparePool:
    """A pool of worker processes that turn raw messages into :class:`Prepared` results."""

    def __init__(self, *, workers: int, max_event_bytes: int, max_depth: int) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(max_event_bytes, max_depth),
        )
        self._catalog: Mapping[str, objectives.ObjectiveVersion] | None = None
        self._catalog_key = 0
        self._catalog_json: dict[str, str] = {}

    def submit(
        self,
        messages: Sequence[bus.Message],
        current: Mapping[str, objectives.ObjectiveVersion],
    ) -> concurrent.futures.Future[list[Prepared]]:
        """Prepare a chunk of messages in a worker; results come back in the same order."""
        if current is not self._catalog:
            # The catalog swaps its mapping on every reload; serialise each version once.
            self._catalog = current
            self._catalog_key += 1
            self._catalog_json = {name: o.model_dump_json() for name, o in current.items()}
        raw = [(m.value, m.headers) for m in messages]
        return self._pool.submit(_prepare_chunk, self._catalog_key, self._catalog_json, raw)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- inside a worker process ---------------------------------------------------------------

_limits: tuple[int, int] = (0, 0)
_catalog: tuple[int | None, Mapping[str, objectives.ObjectiveVersion]] = (None, {})


def _start_worker(max_event_bytes: int, max_depth: int) -> None:
    global _limits
    _limits = (max_event_bytes, max_depth)
    _die_with_parent()


def _prepare_chunk(
    catalog_key: int, catalog_json: Mapping[str, str], raw: Sequence[RawMessage]
) -> list[Prepared]:
    global _catalog
    if _catalog[0] != catalog_key:
        parsed = {
            name: objectives.ObjectiveVersion.model_validate_json(text)
            for name, text in catalog_json.items()
        }
        _catalog = (catalog_key, parsed)
    max_event_bytes, max_depth = _limits
    now = datetime.datetime.now(datetime.UTC)
    results: list[Prepared] = []
    for value, headers in raw:
        message = bus.Message(
            topic="", partition=0, offset=0, key=None, value=value, headers=headers
        )
        try:
            event = normalising.from_message(message, max_bytes=max_event_bytes)
            results.append(handlers.prepare(event, _catalog[1], max_depth=max_depth, now=now))
        except errors.InvalidEvent as exc:
            results.append(Rejected(kind=exc.kind, message=exc.message))
    return results


def _die_with_parent() -> None:
    """Ask Linux to end this worker when the consumer process dies (even by SIGKILL)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        log.debug("cannot tie the worker's life to its parent on this platform")
