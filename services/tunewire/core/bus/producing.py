"""The Kafka producer every service publishes through.

Sends use ``acks=all`` and retries. Each send is kept in an outbox until the broker has
acknowledged it: :meth:`Producer.flush` waits for every acknowledgement and re-sends what
failed, so a broker outage of a few seconds delays events but never loses one. Callers
commit their input offsets only after ``flush`` returns.

The client is idempotent (kafka-python's default). A broker that lost its state (restarted
with memory storage) no longer knows the client's producer id and refuses it for good; the
client then fails every send, so :meth:`Producer.flush` replaces it with a new one.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import kafka
import kafka.errors
from google.protobuf import message as protobuf_message

from tunewire.core.base import errors, settings
from tunewire.core.bus import envelope

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Message:
    """One consumed Kafka message, detached from the client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]

    def header(self, name: str) -> bytes | None:
        """The first value of a header, or None."""
        return envelope.header(self.headers, name)


@dataclasses.dataclass
class _Pending:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    future: Any


class Publisher(abc.ABC):
    """What a service publishes through: sends queue, :meth:`flush` makes them durable.

    :class:`Producer` sends from the calling process; ``producer_process.ProducerProcess``
    from a child process, for a consumer whose own process is its bottleneck.
    """

    def send(
        self,
        topic: str,
        *,
        key: str | bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue one message; it is durable only after :meth:`flush`."""
        raw_key = key.encode() if isinstance(key, str) else key
        self._queue(topic, raw_key, value, list(headers))

    def publish(
        self,
        topic: str,
        payload: protobuf_message.Message,
        *,
        key: str,
        event: envelope.Envelope,
    ) -> None:
        """Queue a tunewire event: protobuf value, CloudEvents attributes in headers."""
        self.send(topic, key=key, value=payload.SerializeToString(), headers=event.headers())

    @abc.abstractmethod
    def _queue(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Queue one message as :meth:`send` normalised it."""

    @abc.abstractmethod
    def flush(self, *, timeout_s: float = 60.0) -> None:
        """Block until every queued message is acknowledged.

        Raises :class:`errors.Unavailable` when the broker has not taken them all in time;
        the unacknowledged messages are kept for the next call.
        """

    def close(self) -> None:
        """Flush what is queued, then let go of the broker.

        Sends the broker never acknowledged are given up here without an error: their input
        was not committed, so it is delivered again to the next consumer.
        """
        try:
            self.flush(timeout_s=10)
        except errors.Unavailable as exc:
            log.error(
                "closing with unacknowledged messages; their input is redelivered",
                extra={"error": str(exc)},
            )
        finally:
            self._disconnect()

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close the client (after :meth:`close`'s last flush)."""


class Producer(Publisher):
    """A thread-safe producer whose sends are durable once :meth:`flush` returns."""

    def __init__(self, config: settings.KafkaSettings, *, client_id: str) -> None:
        self._config = config
        self._client_id = client_id
        self._client = self._new_client()
        self._outbox: list[_Pending] = []
        self._lock = threading.Lock()

    def _queue(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        pending = _Pending(topic, key, value, headers, None)
        pending.future = self._dispatch(pending)
        with self._lock:
            self._outbox.append(pending)

    def flush(self, *, timeout_s: float = 60.0) -> None:
        """Block until every queued message is acknowledged; re-send failures.

        Raises :class:`errors.Unavailable` when the broker has not taken them all in time;
        the unacknowledged messages stay in the outbox for the next call.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                batch, self._outbox = self._outbox, []
            if not batch:
                return
            self._client.flush(timeout=max(0.1, deadline - time.monotonic()))
            failed = [p for p in batch if not _acknowledged(p)]
            with self._lock:
                self._outbox[:0] = failed
            if not failed:
                continue
            if time.monotonic() >= deadline:
                raise errors.Unavailable(f"Kafka did not acknowledge {len(failed)} messages")
            log.warning("re-sending unacknowledged messages", extra={"count": len(failed)})
            if any(_refused(p) for p in failed):
                self._renew_client()
            time.sleep(0.5)
            for pending in failed:
                pending.future = self._dispatch(pending)

    def _disconnect(self) -> None:
        self._client.close(timeout=5)

    def _new_client(self) -> kafka.KafkaProducer:
        return kafka.KafkaProducer(
            client_id=self._client_id,
            acks="all",
            retries=2_147_483_647,
            linger_ms=self._config.linger_ms,
            batch_size=256 * 1024,
            max_in_flight_requests_per_connection=5,
            **self._config.client_options(),
        )

    def _renew_client(self) -> None:
        """Replace a client that gave up on sends (retries are unbounded, so only a fatal
        error ends a send with a failure) with a fresh one: new connection, new producer id."""
        log.warning("the Kafka client refused sends; replacing it")
        old, self._client = self._client, self._new_client()
        old.close(timeout=1)

    def _dispatch(self, pending: _Pending) -> Any:
        try:
            return self._client.send(
                pending.topic, key=pending.key, value=pending.value, headers=pending.headers
            )
        except kafka.errors.KafkaError as exc:
            log.warning(
                "send failed; will retry", extra={"topic": pending.topic, "error": str(exc)}
            )
            return None


def _acknowledged(pending: _Pending) -> bool:
    future = pending.future
    if future is None or not future.is_done:
        return False
    return bool(future.succeeded())


def _refused(pending: _Pending) -> bool:
    """Whether the client ended this send with an error (as opposed to not yet)."""
    future = pending.future
    return future is not None and future.is_done and future.failed()


def check_reachable(config: settings.KafkaSettings, *, timeout_s: float = 1.0) -> None:
    """Raise :class:`errors.Unavailable` unless some bootstrap broker accepts a connection."""
    problems = []
    for server in config.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            problems.append(f"{server}: {exc}")
    raise errors.Unavailable("no Kafka broker is reachable: " + "; ".join(problems))
