"""The consumer loop every service runs: handle, make durable, then commit.

A handler sees one message at a time. Its side effects are made durable by
:meth:`BatchHandler.flush` (S3 writes) after the producer's sends are acknowledged, and only
then are the offsets committed — so a crash at any point redelivers, never loses. A message
whose handler raises :class:`errors.InvalidEvent` goes straight to the DLQ; any other error
is retried with back-off and then dead-lettered, so one poison message never blocks its
partition. An outage while flushing (S3 or Kafka down) is retried until it passes.

A :class:`SealingHandler` is made durable in the background: the loop seals what was
handled, goes on with the next batch while the sealed effects are written, and commits
their offsets once they are durable — before it seals the next batch, so at most one batch
is in flight and a crash still only redelivers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import kafka
import kafka.errors
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from tunewire.core.base import errors, metrics, retry, settings
from tunewire.core.bus import producing, topics

log = logging.getLogger(__name__)

#: After a stop is requested, how long to keep trying to make the last batch durable.
STOP_FLUSH_GRACE_S = 10.0
#: The first wait after a poll the broker did not answer (it doubles up to 5 s).
BROKER_BACKOFF_S = 0.2

MESSAGES = Counter(
    "tunewire_consumer_messages_total",
    "Messages consumed, by outcome (handled, dead_lettered).",
    ["group", "topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "tunewire_dlq_messages_total", "Messages sent to a DLQ, by error kind.", ["topic", "kind"]
)
LAG = Gauge(
    "tunewire_consumer_lag", "Messages behind the log end.", ["group", "topic", "partition"]
)
FLUSH_SECONDS = Histogram(
    "tunewire_consumer_flush_seconds", "Time to make a batch durable and commit it.", ["group"]
)
FLUSH_FAILURES = Counter(
    "tunewire_consumer_flush_failures_total", "Failed attempts to make a batch durable.", ["group"]
)


class BatchHandler(Protocol):
    """What a service plugs into the loop."""

    def prefetch(self, messages: Sequence[producing.Message]) -> None:
        """See a polled batch before its messages are handled one by one, in order.

        A handler may start work on them in parallel here, while the previous batch is
        still being made durable (or, in a loop that polls ahead, still being handled);
        nothing it does here may be durable (a batch the loop stops before handling, or
        drops after a rebalance, is redelivered).
        """

    def handle(self, message: producing.Message) -> None:
        """Process one message; raise InvalidEvent for input that can never succeed."""

    def flush(self) -> None:
        """Make the side effects of every handled message durable (called before commit)."""


@runtime_checkable
class SealingHandler(BatchHandler, Protocol):
    """A handler whose flush can run while the loop handles the next batch."""

    def seal(self) -> Callable[[], None]:
        """Set aside the effects of every message handled so far; return what makes them
        durable.

        Called on the loop's thread; the returned function runs on another one while later
        messages are handled, may be called again after it raised, and must make sealed
        effects durable in the order they were sealed, :meth:`flush` included.
        """


class EachMessage:
    """A :class:`BatchHandler` for handlers whose effects are durable when they return
    (one small S3 write per event): nothing to start early, nothing pending at a flush."""

    def __init__(self, handle: Callable[[producing.Message], object]) -> None:
        self._handle = handle

    def prefetch(self, messages: Sequence[producing.Message]) -> None:
        """Nothing to start early."""

    def handle(self, message: producing.Message) -> None:
        self._handle(message)

    def flush(self) -> None:
        """Nothing is pending."""


class DeadLetter(NamedTuple):
    """What a DLQ keeps of a message, and the reason given with it."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str


DeadLetterCopy = Callable[[producing.Message, str], DeadLetter]
"""What a DLQ may keep of a message and its error reason."""


class ConsumerLoop:
    """Consumes topics for a group and drives a :class:`BatchHandler`."""

    def __init__(
        self,
        *,
        config: settings.KafkaSettings,
        group_id: str,
        topic_names: list[str],
        handler: BatchHandler,
        producer: producing.Publisher,
        flush_interval_s: float = 1.0,
        flush_max_messages: int = 5_000,
        on_assigned: Callable[[], object] | None = None,
        max_poll_records: int | None = None,
        poll_ahead: bool = False,
        dead_letter_copy: DeadLetterCopy | None = None,
    ) -> None:
        self._config = config
        self._max_poll_records = max_poll_records or config.max_poll_records
        self._group = group_id
        self._topics = topic_names
        self._handler = handler
        self._producer = producer
        self._flush_interval_s = flush_interval_s
        self._flush_max_messages = flush_max_messages
        self._pending: dict[TopicPartition, int] = {}
        self._pending_count = 0
        self._last_flush = time.monotonic()
        self._on_assigned = on_assigned
        self._consumer: kafka.KafkaConsumer | None = None
        self.healthy_flush = True
        self.assigned = threading.Event()
        self.stop_requested = threading.Event()
        self.broker_reachable = True
        self._broker_backoff = retry.Backoff(BROKER_BACKOFF_S, 5.0)
        self._stop_seen: float | None = None
        self._in_flight: _InFlight | None = None
        self._poll_ahead = poll_ahead
        self._dead_letter_copy = dead_letter_copy
        self._rebalances = 0
        """Partitions revoked so far: a batch polled ahead of one is dropped."""
        self._gave_up = False
        """A batch was abandoned while stopping: nothing after it may be committed."""

    def check_ready(self) -> None:
        """A readiness check: raises with the reason unless the loop can do its job now."""
        if not self.assigned.is_set():
            raise RuntimeError(f"waiting for partitions of {', '.join(self._topics)}")
        if not self.broker_reachable:
            raise RuntimeError("the consumer cannot reach the broker")
        if not self.healthy_flush:
            raise RuntimeError("the last flush failed (broker or S3 down)")

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; the in-flight batch is finished and committed first."""
        self.stop_requested = stop
        consumer = kafka.KafkaConsumer(
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._config.session_timeout_ms,
            heartbeat_interval_ms=self._config.heartbeat_interval_ms,
            max_poll_records=self._max_poll_records,
            fetch_max_wait_ms=self._config.fetch_max_wait_ms,
            **self._config.client_options(),
        )
        self._consumer = consumer
        consumer.subscribe(self._topics, listener=_Rebalance(self))
        try:
            batch = self._poll(consumer, stop)
            while not stop.is_set():
                ahead: list[producing.Message] = []
                if self._poll_ahead and batch:
                    # What the client holds already reaches the handler's prefetch now, so
                    # its workers prepare it while this batch is handled.
                    rebalances = self._rebalances
                    ahead = self._poll(consumer, stop, timeout_ms=0)
                    if self._rebalances != rebalances:
                        batch = []  # polled before the partitions moved: redelivered
                try:
                    for message in batch:
                        self._process(message, stop)
                except _Stopping:
                    log.info("stopping during an outage; the unhandled rest is redelivered")
                    break
                # The next batch reaches the handler's prefetch before this one is made
                # durable, so its workers prepare it while the loop flushes and commits.
                batch = ahead or self._poll(consumer, stop)
                if self._in_flight is not None and self._in_flight.done.is_set():
                    self._finish_in_flight(stop)
                self._report_lag()
                if self._due():
                    self._make_durable(stop)
            self._make_durable(stop, wait=True)
        finally:
            self.assigned.clear()
            consumer.close(autocommit=False)
            self._consumer = None

    def _poll(
        self, consumer: kafka.KafkaConsumer, stop: threading.Event, *, timeout_ms: int = 200
    ) -> list[producing.Message]:
        """The next batch, already handed to the handler's prefetch; none when the broker is
        unreachable (after waiting a little longer each time; the client reconnects)."""
        try:
            polled = consumer.poll(timeout_ms=timeout_ms)
        except kafka.errors.KafkaError as exc:
            # kafka-python raises from the coordinator lookup when the broker is down.
            self.broker_reachable = False
            log.warning("cannot poll the broker; retrying", extra={"error": str(exc)})
            self._broker_backoff.sleep(stop)
            return []
        self._broker_backoff.reset()
        self.broker_reachable = True
        batch = [_detached(r) for records in polled.values() for r in records]
        if batch:
            self._handler.prefetch(batch)
        return batch

    def _process(self, message: producing.Message, stop: threading.Event) -> None:
        outcome = self._handle_with_retries(message, stop)
        metrics.child(MESSAGES, self._group, message.topic, outcome).inc()
        self._pending[TopicPartition(message.topic, message.partition)] = message.offset + 1
        self._pending_count += 1

    def _handle_with_retries(self, message: producing.Message, stop: threading.Event) -> str:
        """Handle one message; dead-letter it if it is bad, wait if a dependency is down."""
        first_s = self._config.retry_backoff_s
        backoff = retry.Backoff(first_s, max(first_s, 5.0))
        outage_backoff = retry.Backoff(first_s, max(first_s, 5.0))
        attempt = 0
        while True:
            try:
                self._handler.handle(message)
                return "handled"
            except errors.InvalidEvent as exc:
                self.dead_letter(message, kind=exc.kind, reason=exc.message, attempts=attempt + 1)
                return "dead_lettered"
            except errors.Unavailable as exc:
                # The dependency is down, not the message: hold the partition, never DLQ.
                self.healthy_flush = False
                log.warning(
                    "dependency down; waiting", extra={**_where(message), "error": str(exc)}
                )
                if outage_backoff.sleep(stop):
                    raise _Stopping from exc
            except Exception as exc:
                attempt += 1
                if attempt >= self._config.handler_attempts:
                    log.exception("handler failed; dead-lettering", extra=_where(message))
                    self.dead_letter(
                        message, kind="handler_error", reason=repr(exc), attempts=attempt
                    )
                    return "dead_lettered"
                log.warning(
                    "handler failed; retrying", extra={**_where(message), "error": repr(exc)}
                )
                backoff.sleep(stop)

    def dead_letter(
        self, message: producing.Message, *, kind: str, reason: str, attempts: int
    ) -> None:
        """Send a message to its topic's DLQ with the error in headers: as it was, or what
        the loop's ``dead_letter_copy`` says the DLQ may keep of it."""
        kept = DeadLetter(
            message.key,
            message.value,
            [h for h in message.headers if not h[0].startswith("tunewire_")],
            reason,
        )
        if self._dead_letter_copy is not None:
            kept = self._dead_letter_copy(message, reason)
        reason, headers = kept.reason, list(kept.headers)
        headers += [
            ("tunewire_error_kind", kind.encode()),
            ("tunewire_error", reason.encode("utf-8", "replace")[:4096]),
            ("tunewire_original_topic", message.topic.encode()),
            ("tunewire_original_partition", str(message.partition).encode()),
            ("tunewire_original_offset", str(message.offset).encode()),
            ("tunewire_attempts", str(attempts).encode()),
        ]
        self._producer.send(
            topics.dlq(message.topic), key=kept.key, value=kept.value, headers=headers
        )
        DEAD_LETTERS.labels(message.topic, kind).inc()
        log.warning("dead-lettered", extra={**_where(message), "error": f"{kind}: {reason}"})

    def _due(self) -> bool:
        if not self._pending:
            return False
        return (
            self._pending_count >= self._flush_max_messages
            or time.monotonic() - self._last_flush >= self._flush_interval_s
        )

    def _make_durable(self, stop: threading.Event, *, wait: bool = False) -> None:
        """Make what was handled durable, then commit it — retrying through outages.

        A :class:`SealingHandler`'s batch is made durable in the background unless ``wait``;
        the batch before it is finished and committed first.
        """
        self._finish_in_flight(stop)
        if not self._pending or self._gave_up:
            return
        offsets, started = dict(self._pending), time.monotonic()
        self._pending.clear()
        self._pending_count = 0
        self._last_flush = started
        handler = self._handler
        if not isinstance(handler, SealingHandler):
            if self._retry_until_durable(handler.flush, stop):
                self._commit(offsets, stop, started)
            return
        in_flight = _InFlight(offsets, started)
        complete = handler.seal()

        def finish() -> None:
            in_flight.durable = self._retry_until_durable(complete, stop)
            in_flight.done.set()

        threading.Thread(target=finish, name=f"{self._group}-flush", daemon=True).start()
        self._in_flight = in_flight
        if wait:
            self._finish_in_flight(stop)

    def _finish_in_flight(self, stop: threading.Event) -> None:
        """Wait for the batch being made durable in the background, then commit it."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        in_flight.done.wait()
        if in_flight.durable:
            self._commit(in_flight.offsets, stop, in_flight.started)

    def _retry_until_durable(self, flush: Callable[[], None], stop: threading.Event) -> bool:
        """Flush sends, then ``flush``, until both succeed; False if a stop cut it short."""
        backoff = retry.Backoff(0.2, 5.0)
        while True:
            try:
                self._producer.flush()
                flush()
                self.healthy_flush = True
                return True
            except Exception as exc:
                self.healthy_flush = False
                FLUSH_FAILURES.labels(self._group).inc()
                log.warning(
                    "could not make the batch durable; retrying", extra={"error": repr(exc)}
                )
                if self._past_stop_grace(stop):
                    log.error("stopping with an unflushed batch; it will be redelivered")
                    self._gave_up = True
                    return False
                backoff.sleep()

    def _commit(
        self, offsets: dict[TopicPartition, int], stop: threading.Event, started: float
    ) -> None:
        """Commit durable offsets (on the loop's thread: the client is not thread-safe)."""
        backoff = retry.Backoff(0.2, 5.0)
        while not self._gave_up:
            try:
                assert self._consumer is not None
                self._consumer.commit(
                    {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
                )
                FLUSH_SECONDS.labels(self._group).observe(time.monotonic() - started)
                return
            except kafka.errors.CommitFailedError as exc:
                # The partitions moved to another member, which will redeliver.
                log.warning("commit refused after a rebalance", extra={"error": str(exc)})
                return
            except Exception as exc:
                self.healthy_flush = False
                FLUSH_FAILURES.labels(self._group).inc()
                log.warning("could not commit; retrying", extra={"error": repr(exc)})
                if self._past_stop_grace(stop):
                    log.error("stopping with an uncommitted batch; it will be redelivered")
                    self._gave_up = True
                    return
                backoff.sleep()

    def _past_stop_grace(self, stop: threading.Event) -> bool:
        """Whether a stop was requested more than :data:`STOP_FLUSH_GRACE_S` ago."""
        if not stop.is_set():
            return False
        self._stop_seen = self._stop_seen or time.monotonic()
        return time.monotonic() - self._stop_seen > STOP_FLUSH_GRACE_S

    def _report_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            position = self._pending.get(tp)
            if position is None:
                try:
                    position = consumer.position(tp, timeout_ms=0)
                except Exception:
                    continue
            if position is not None:
                LAG.labels(self._group, tp.topic, str(tp.partition)).set(max(0, end - position))


@dataclasses.dataclass
class _InFlight:
    """A sealed batch being made durable in the background, and the offsets it covers."""

    offsets: dict[TopicPartition, int]
    started: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    durable: bool = False


class _Stopping(Exception):
    """Raised inside the loop when a stop is requested while waiting out an outage."""


class _Rebalance(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what was handled before partitions move, so the next owner starts after it."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._loop.assigned.clear()
        self._loop._rebalances += 1
        self._loop._make_durable(self._loop.stop_requested, wait=True)
        for tp in revoked or ():
            # Another member reports these partitions now; a stale value would mislead alerts.
            with contextlib.suppress(KeyError):
                LAG.remove(self._loop._group, tp.topic, str(tp.partition))

    def on_partitions_assigned(self, assigned: object) -> None:
        if self._loop._on_assigned is not None:
            self._loop._on_assigned()
        self._loop.assigned.set()


def _detached(record: Any) -> producing.Message:
    return producing.Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        headers=list(record.headers or []),
    )


def _where(message: producing.Message) -> dict[str, object]:
    ce_id = message.header("ce_id")
    return {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "ce_id": ce_id.decode("utf-8", "replace") if ce_id else None,
    }
