"""A Kafka producer whose client runs in a child process.

kafka-python partitions and encodes every message in Python, under the interpreter lock of
the process that sends. For a consumer whose own process is its bottleneck — label sends one
``tunewire.examples`` event for most records it handles, all at the end of a flush — that is
a noticeable share of its time per record (the figures are in ``bench/README.md``).
:class:`ProducerProcess` keeps sends in a list and hands each flush's messages to a child
process in one pickled batch; the child sends them through an ordinary :class:`producing.Producer`
on another core and answers once the broker has acknowledged every one.

The contract is :class:`producing.Publisher`'s: a message is durable once :meth:`flush` returns,
and a failed flush keeps what was not acknowledged for the next call. Every message handed
to the child is also kept here until a flush succeeds, so a child that dies or hangs is
replaced and the new one is handed all of them again (a message may then be sent twice,
as after any retried send; consumers deduplicate on ``ce_id``). The child ends when this
process does, even by SIGKILL: its end of the pipe then reads nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import threading
from typing import Any

from tunewire.core.base import errors, heap, logs, settings
from tunewire.core.bus import producing

log = logging.getLogger(__name__)

Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""Topic, key, value and headers of one message."""

ANSWER_GRACE_S = 10.0
"""How much longer than a flush's timeout the child may take to answer before it is
presumed hung and replaced."""


class ProducerProcess(producing.Publisher):
    """A thread-safe :class:`producing.Publisher` whose Kafka client lives in a child process."""

    def __init__(self, config: settings.KafkaSettings, *, client_id: str) -> None:
        self._config = config
        self._client_id = client_id
        self._outbox: list[Message] = []
        self._outbox_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        """One flush talks to the child at a time; it also guards the fields below."""
        self._unacknowledged: list[Message] = []
        """Handed to a child, not yet acknowledged: handed again to a replacement."""
        self._child: Any = None
        self._connection: multiprocessing.connection.Connection | None = None
        self._child_has_unacknowledged = False
        self._start_child()

    def _queue(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        with self._outbox_lock:
            self._outbox.append((topic, key, value, headers))

    def flush(self, *, timeout_s: float = 60.0) -> None:
        """Hand the queued messages to the child and wait until the broker has them all."""
        with self._flush_lock:
            with self._outbox_lock:
                batch, self._outbox = self._outbox, []
            # A new child gets everything not yet acknowledged.
            handed = batch if self._child_has_unacknowledged else self._unacknowledged + batch
            self._unacknowledged.extend(batch)
            if not self._unacknowledged:
                return
            answer = self._ask(("flush", handed, timeout_s), timeout_s + ANSWER_GRACE_S)
            if answer == "ok":
                self._unacknowledged.clear()
                return
            raise errors.Unavailable(answer)

    def _disconnect(self) -> None:
        """End the child (it closes its client first)."""
        with self._flush_lock:
            if self._connection is None:
                return
            with contextlib.suppress(errors.Unavailable):
                self._ask(("close",), 15.0)
            self._stop_child()

    def _ask(self, request: tuple[Any, ...], wait_s: float) -> str:
        """Send ``request`` to the child and return its answer; a child that died, or did
        not answer within ``wait_s``, is replaced and the call raises Unavailable."""
        connection = self._connection
        assert connection is not None
        try:
            connection.send(request)
            self._child_has_unacknowledged = True
            if connection.poll(wait_s):
                answer: str = connection.recv()
                return answer
            problem = f"the producer process did not answer within {wait_s:.0f} s"
        except (EOFError, OSError) as exc:
            problem = f"the producer process died ({exc!r})"
        if request[0] != "close":
            log.warning("replacing the producer process", extra={"error": problem})
            self._stop_child()
            self._start_child()
        raise errors.Unavailable(problem)

    def _start_child(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_serve,
            args=(theirs, self._config, self._client_id, logging.getLogger().level),
            name=f"{self._client_id}-producer",
            daemon=True,
        )
        child.start()
        theirs.close()
        self._child, self._connection = child, ours
        self._child_has_unacknowledged = False

    def _stop_child(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._child is not None:
            self._child.join(timeout=5)
            if self._child.is_alive():
                self._child.kill()
                self._child.join()
        self._child, self._connection = None, None


# -- inside the child process --------------------------------------------------------------


def _serve(
    connection: multiprocessing.connection.Connection,
    config: settings.KafkaSettings,
    client_id: str,
    log_level: int,
) -> None:
    """Send each batch handed over and answer ``ok`` or why not; end when told or orphaned.

    Orphaned means the parent's end of the pipe closed (the parent exited, even by
    SIGKILL): ``recv`` then fails. Linux's parent-death signal would not do here, since it
    follows the thread that started the child, and a replacement is started by whichever
    thread flushes.
    """
    logs.configure(logging.getLevelName(log_level))
    producer = producing.Producer(config, client_id=client_id)
    heap.settle()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if request[0] == "close":
            producer.close()
            connection.send("ok")
            break
        _, messages, timeout_s = request
        for topic, key, value, headers in messages:
            producer.send(topic, key=key, value=value, headers=headers)
        try:
            producer.flush(timeout_s=timeout_s)
        except errors.Unavailable as exc:
            connection.send(str(exc) or "Kafka did not acknowledge every message")
            continue
        connection.send("ok")
