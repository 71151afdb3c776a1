"""Worker processes for the pure, CPU-bound part of a consumer's work.

One partition is consumed by one process, so a service whose per-message work is Python
code is bound to one core. A service can hand each polled batch (the
:meth:`consuming.BatchHandler.prefetch` hook) to a pool of worker processes in chunks, then
take each message's result, in order, as the loop handles it. Only pure work belongs in a
worker: everything with a side effect (deduplication, publishing, S3 writes, commits) stays
in the consumer process, so a service's durability rules do not change. Ingest prepares
raw events this way, label prepares records.

The parts here are the ones every such service needs: a pool of spawned workers that die
with their parent, the objective catalog shipped to them once per reload, and
:class:`Prefetch`, which tracks the chunks in flight and says when a message must be done
in the consumer instead (no pool, a small batch, a worker that failed).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, Protocol, TypeVar

from tunewire.core.base import errors, heap
from tunewire.core.bus import producing
from tunewire.core.state import objectives

log = logging.getLogger(__name__)

R = TypeVar("R")
Catalog = Mapping[str, objectives.ObjectiveVersion]


class PickledAsArguments:
    """A frozen dataclass that pickles as its constructor's arguments.

    Worker results cross the pipe once per message and are unpickled in the consumer, the
    process a pool relieves. By default a dataclass is rebuilt from its ``__dict__`` through
    ``copyreg``; calling the constructor instead unpickles faster (label's results; the
    figure is in ``bench/README.md``).
    """

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        cls: type = type(self)
        return cls, tuple([getattr(self, name) for name in _init_fields(cls)])


@functools.cache
def _init_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def default_workers() -> int:
    """One worker per usable core beyond the first, at most four; none on a single core."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (usable or 1) - 1)) if (usable or 1) > 1 else 0


def process_pool(
    *,
    workers: int,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each ended when this process dies.

    Spawned, not forked: the consumer process has threads (Kafka's I/O, the HTTP server)
    whose locks a fork could copy while held. ``initializer(*initargs)`` runs once in each
    worker, after it is tied to its parent; then the worker's heap is settled
    (:func:`heap.settle`).
    """
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(initializer, initargs),
    )
    _widen_pipes(pool)
    return pool


PIPE_BYTES = 1 << 20
"""Room in each of a pool's pipes: enough for a chunk of label's results in one write."""


def _widen_pipes(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Give the pool's pipes room for a whole chunk or its results.

    A pipe holds 64 KiB by default. A larger message makes the writer wait while the
    reader takes it piece by piece, and in the consumer process the reader is a thread that
    needs the interpreter lock for every piece, so label's workers spent much of their time
    blocked on sending results (see ``bench/README.md``). The queues are the executor's own
    (CPython's ``_call_queue`` and ``_result_queue``); where they or Linux's
    ``F_SETPIPE_SZ`` are missing, or the size is refused, the pipes stay as they are.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    for queue in (getattr(pool, "_call_queue", None), getattr(pool, "_result_queue", None)):
        writer = getattr(queue, "_writer", None)
        if set_size is None or writer is None:
            continue
        try:
            fcntl.fcntl(writer.fileno(), set_size, PIPE_BYTES)
        except OSError as exc:
            log.debug("pipe left at its default size", extra={"error": repr(exc)})


class CatalogShipper:
    """Serialises the objective catalog for the workers, once per reload.

    The catalog swaps its mapping on every reload, so the mapping's identity says when the
    objectives changed; each chunk then carries a key the workers compare with the one they
    parsed last (see :func:`worker_catalog`).
    """

    def __init__(self) -> None:
        self._current: Catalog | None = None
        self._key = 0
        self._json: dict[str, str] = {}

    def ship(self, current: Catalog) -> tuple[int, dict[str, str]]:
        """``(key, {name: version JSON})`` of ``current``, serialised only when it changed."""
        if current is not self._current:
            self._current = current
            self._key += 1
            self._json = {name: o.model_dump_json() for name, o in current.items()}
        return self._key, self._json


_worker_catalog: tuple[int | None, Catalog] = (None, {})


def worker_catalog(key: int, catalog_json: Mapping[str, str]) -> Catalog:
    """Inside a worker: the catalog a :class:`CatalogShipper` shipped, parsed once per key."""
    global _worker_catalog
    if _worker_catalog[0] != key:
        parsed = {
            name: objectives.ObjectiveVersion.model_validate_json(text)
            for name, text in catalog_json.items()
        }
        _worker_catalog = (key, parsed)
    return _worker_catalog[1]


class Pool(Protocol[R]):
    """A service's pool: prepares a chunk of messages against the catalog, in order."""

    def submit(
        self, messages: Sequence[producing.Message], current: Catalog
    ) -> concurrent.futures.Future[list[R]]: ...


class Prefetch(Generic[R]):
    """One polled batch's chunks in flight, and each message's result as it is handled.

    :meth:`start` sends the batch to ``pool``, ``chunk`` messages per task (small enough for
    the consumer to work on the first chunks while later ones are prepared). :meth:`take`
    returns a message's result, or None when the consumer must do the work itself, a message
    at a time: there is no pool, the batch was too small to be worth sending, S3 was down so
    the catalog was not at hand, or the message's worker failed. A failure is logged and never
    loses the message; a broken pool is not used again. ``here``, when given, is a pool that
    works in this process: it takes the batches ``pool`` does not (every batch without one,
    batches too small to send), so they are still worked a chunk at a time. ``on_chunk``, when
    given, sees
    each chunk's results when the first of them is taken, before any is handled (label
    announces them to its near-duplicate index).
    """

    def __init__(
        self,
        pool: Pool[R] | None,
        *,
        chunk: int,
        what: str,
        here: Pool[R] | None = None,
        on_chunk: Callable[[list[R]], object] | None = None,
    ) -> None:
        self._pool = pool
        self._here = here
        self._chunk = chunk
        self._what = what
        self._on_chunk = on_chunk
        self._opened: concurrent.futures.Future[list[R]] | None = None
        self._ready: dict[
            tuple[str, int, int], tuple[concurrent.futures.Future[list[R]], int, int]
        ] = {}
        """Each message's chunk, its place in it and the number of its batch."""
        self._batch = 0

    def start(self, messages: Sequence[producing.Message], catalog: Callable[[], Catalog]) -> None:
        """Submit ``messages`` in chunks with ``catalog()``; forgets all but the previous
        batch (a loop that polls ahead handles that one meanwhile)."""
        self._batch += 1
        if self._ready:
            self._ready = {k: v for k, v in self._ready.items() if v[2] == self._batch - 1}
        pool = self._pool
        if pool is None or len(messages) < 2 * self._chunk:
            pool = self._here
        if pool is None:
            return
        try:
            current = catalog()
        except errors.Unavailable:
            return  # each message then waits for S3 in the consumer, as without a pool
        for start in range(0, len(messages), self._chunk):
            chunk = messages[start : start + self._chunk]
            try:
                future = pool.submit(chunk, current)
            except BrokenProcessPool as exc:
                log.error(
                    "worker pool broke; %s in the consumer from now on",
                    self._what,
                    extra={"error": repr(exc)},
                )
                self._pool = None
                return
            for index, message in enumerate(chunk):
                where = (message.topic, message.partition, message.offset)
                self._ready[where] = (future, index, self._batch)

    def take(self, message: producing.Message) -> R | None:
        """The worker's result for ``message``, or None: then do the work in the consumer."""
        slot = self._ready.pop((message.topic, message.partition, message.offset), None)
        if slot is None:
            return None
        future, index, _ = slot
        try:
            results = future.result()
        except Exception as exc:
            # A worker died or raised, or the pool broke: the consumer does the work instead.
            log.warning("worker failed; %s in the consumer", self._what, extra={"error": repr(exc)})
            return None
        if future is not self._opened:
            self._opened = future
            if self._on_chunk is not None:
                self._on_chunk(results)
        return results[index]


def _start_worker(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    _die_with_parent()
    if initializer is not None:
        initializer(*initargs)
    heap.settle()


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
