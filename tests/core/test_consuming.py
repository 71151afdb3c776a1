"""The consumer loop against the real broker: retries, DLQ, commits, outages, stop."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import kafka
import pytest
from kafka.structs import TopicPartition

from tests.support import kafka_io
from tests.support.waiting import eventually
from tunewire.core.base import errors, settings
from tunewire.core.bus import consuming, producing
from tunewire.stack import embedded


class Recorder:
    """A handler that records what it saw and fails on request."""

    def __init__(self, *, poison: bytes = b"", flaky_flushes: int = 0) -> None:
        self.handled: list[bytes] = []
        self.prefetched: list[bytes] = []
        self.flushed = 0
        self.poison = poison
        self.flaky_flushes = flaky_flushes

    def prefetch(self, messages: Sequence[producing.Message]) -> None:
        self.prefetched.extend(m.value for m in messages)

    def handle(self, message: producing.Message) -> None:
        assert message.value in self.prefetched, "every batch is shown to prefetch first"
        if message.value == self.poison:
            raise RuntimeError("boom")
        if message.value == b"invalid":
            raise errors.InvalidEvent("never valid", kind="test_invalid")
        self.handled.append(message.value)

    def flush(self) -> None:
        if self.flaky_flushes:
            self.flaky_flushes -= 1
            raise errors.Unavailable("S3 is down")
        self.flushed += 1


@pytest.fixture
def kafka_config(stack: embedded.EmbeddedStack) -> settings.KafkaSettings:
    return settings.KafkaSettings(
        bootstrap_servers=stack.bootstrap_servers,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
        retry_backoff_s=0.01,
    )


@pytest.fixture
def topic() -> str:
    return f"test.consuming.{uuid.uuid4().hex[:8]}"


class Sequencer(Recorder):
    """A recorder that also notes the order of prefetches, handling and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []

    def prefetch(self, messages: Sequence[producing.Message]) -> None:
        super().prefetch(messages)
        self.events += [("prefetch", m.value) for m in messages]

    def handle(self, message: producing.Message) -> None:
        super().handle(message)
        self.events.append(("handle", message.value))

    def flush(self) -> None:
        super().flush()
        self.events.append(("flush", b""))


def _running(
    config: settings.KafkaSettings,
    topic: str,
    group: str,
    handler: Recorder,
    **options: Any,
) -> Iterator[threading.Event]:
    producer = producing.Producer(config, client_id="test")
    loop = consuming.ConsumerLoop(
        config=config,
        group_id=group,
        topic_names=[topic],
        handler=handler,
        producer=producer,
        flush_interval_s=0.2,
        **options,
    )
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(20)
        producer.close()
        assert not thread.is_alive()


T = TypeVar("T")
HANDLED_S = 20
"""How long a running loop gets to handle, flush or commit what the test produced."""


def until(check: Callable[[], T], what: str, *, ready: Callable[[T], object] = bool) -> None:
    """Wait until ``ready`` accepts what ``check`` gives, polling as fast as the consumer
    loop changes things."""
    eventually(check, ready=ready, timeout_s=HANDLED_S, interval_s=0.05, what=what)


def test_poison_is_retried_then_dead_lettered_and_the_partition_moves_on(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    handler = Recorder(poison=b"poison")
    values = [b"a", b"poison", b"invalid", b"b"]
    kafka_io.produce(stack.bootstrap_servers, topic, ((b"k", v, []) for v in values))
    for _ in _running(kafka_config, topic, f"g-{topic}", handler):
        until(
            lambda: handler.handled,
            "the good messages handled",
            ready=lambda handled: handled == [b"a", b"b"],
        )
    assert handler.handled == [b"a", b"b"]
    assert handler.prefetched == values
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topic + ".dlq")
    try:
        dead = reader.read_until(lambda msgs: len(msgs) >= 2)
    finally:
        reader.close()
    by_value = {m.value: m for m in dead}
    assert kafka_io.header(by_value[b"poison"], "tunewire_error_kind") == b"handler_error"
    assert kafka_io.header(by_value[b"poison"], "tunewire_attempts") == b"3"
    assert b"boom" in (kafka_io.header(by_value[b"poison"], "tunewire_error") or b"")
    assert kafka_io.header(by_value[b"invalid"], "tunewire_error_kind") == b"test_invalid"
    assert kafka_io.header(by_value[b"invalid"], "tunewire_attempts") == b"1"


def test_commits_only_after_flush_and_resumes_after_them(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    group = f"g-{topic}"
    first = Recorder(flaky_flushes=3)
    kafka_io.produce(stack.bootstrap_servers, topic, ((b"k", b"m%d" % n, []) for n in range(5)))
    for _ in _running(kafka_config, topic, group, first):
        until(
            lambda: first.flushed,
            "a flush through the outage",
            ready=lambda flushed: flushed >= 1,
        )
    assert first.flushed >= 1, "the flush was retried through the outage"
    assert first.handled == [b"m%d" % n for n in range(5)]

    kafka_io.produce(stack.bootstrap_servers, topic, [(b"k", b"after", [])])
    second = Recorder()
    for _ in _running(kafka_config, topic, group, second):
        until(lambda: second.handled, "the message produced after the commit")
        time.sleep(1)  # time for a redelivery of the committed messages, which must not come
    assert second.handled == [b"after"], "committed messages are not delivered again"


def test_an_unflushed_batch_is_redelivered(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    group = f"g-{topic}"
    down = Recorder(flaky_flushes=10_000)
    kafka_io.produce(stack.bootstrap_servers, topic, [(b"k", b"x", [])])
    stopped_at = time.monotonic()
    for stop in _running(kafka_config, topic, group, down):
        until(lambda: down.handled, "the message handled before the endless outage")
        stopped_at = time.monotonic()
        stop.set()
    assert time.monotonic() - stopped_at < 40, "stopping gives up on an endless outage"
    again = Recorder()
    for _ in _running(kafka_config, topic, group, again):
        until(lambda: again.handled, "the redelivered message")
    assert again.handled == [b"x"]


def _produce_six(stack: embedded.EmbeddedStack, topic: str) -> list[bytes]:
    """Six messages, m0 to m5, on one partition: three batches of two."""
    values = [b"m%d" % n for n in range(6)]
    kafka_io.produce(stack.bootstrap_servers, topic, ((b"k", v, []) for v in values))
    return values


def test_the_next_batch_is_prefetched_before_the_last_is_made_durable(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    handler = Sequencer()
    values = _produce_six(stack, topic)
    for _ in _running(
        kafka_config, topic, f"g-{topic}", handler, max_poll_records=2, flush_max_messages=2
    ):
        until(
            lambda: (handler.handled, handler.flushed),
            "(handled, flushes) to reach all six and three",
            ready=lambda seen: seen[0] == values and seen[1] >= 3,
        )
    assert handler.handled == values
    first_flush = handler.events.index(("flush", b""))
    # Workers would prepare the second batch while the first is flushed and committed...
    assert ("prefetch", b"m2") in handler.events[:first_flush]
    # ...and it is handled only after that flush.
    assert handler.events.index(("handle", b"m2")) > first_flush


def test_a_loop_that_polls_ahead_prefetches_the_next_batch_before_handling_this_one(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    handler = Sequencer()
    values = _produce_six(stack, topic)
    for _ in _running(
        kafka_config, topic, f"g-{topic}", handler, max_poll_records=2, poll_ahead=True
    ):
        until(
            lambda: (handler.handled, handler.flushed),
            "(handled, flushes) to reach all six and one",
            ready=lambda seen: seen[0] == values and seen[1] >= 1,
        )
    assert handler.handled == values
    assert handler.prefetched == values, "each batch is prefetched once"
    # The second batch is already with the workers while the first is handled.
    assert handler.events.index(("prefetch", b"m2")) < handler.events.index(("handle", b"m0"))
    assert handler.events.index(("prefetch", b"m4")) < handler.events.index(("handle", b"m2"))


class SealingSequencer(Sequencer):
    """A sequencer whose sealed batches are made durable only when the test lets them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.sealed: list[list[bytes]] = []
        self.durable: list[list[bytes]] = []
        self._since_seal: list[bytes] = []

    def handle(self, message: producing.Message) -> None:
        super().handle(message)
        self._since_seal.append(message.value)

    def seal(self) -> Callable[[], None]:
        batch, self._since_seal = self._since_seal, []
        self.sealed.append(batch)

        def make_durable() -> None:
            if not self.release.wait(0.5):
                raise errors.Unavailable("held by the test")
            self.durable.append(batch)

        return make_durable


def test_a_sealed_batch_is_made_durable_while_the_next_is_handled_and_only_then_committed(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    group = f"g-{topic}"
    handler = SealingSequencer()
    values = [b"m%d" % n for n in range(4)]
    kafka_io.produce(stack.bootstrap_servers, topic, ((b"k", v, []) for v in values))
    watcher = kafka.KafkaConsumer(
        bootstrap_servers=stack.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    partition = TopicPartition(topic, 0)
    try:
        for _ in _running(
            kafka_config, topic, group, handler, max_poll_records=2, flush_max_messages=2
        ):
            until(
                lambda: handler.handled,
                "all four messages handled",
                ready=lambda handled: handled == values,
            )
            # The first batch is sealed and held; the loop went on with the second.
            assert handler.sealed[0] == [b"m0", b"m1"]
            assert handler.handled == values
            assert handler.durable == []
            assert not watcher.committed(partition), "nothing is committed before it is durable"
            handler.release.set()
            until(
                lambda: watcher.committed(partition) or 0,
                "the commit of all four once durable",
                ready=lambda committed: committed >= 4,
            )
            assert watcher.committed(partition) == 4
        assert handler.durable == handler.sealed
        assert [v for batch in handler.durable for v in batch] == values
        assert handler.flushed == 0, "a sealing handler is made durable through seal() only"
    finally:
        watcher.close()


def test_a_sealed_batch_that_never_becomes_durable_is_redelivered(
    kafka_config: settings.KafkaSettings, topic: str, stack: embedded.EmbeddedStack
) -> None:
    group = f"g-{topic}"
    held = SealingSequencer()
    kafka_io.produce(stack.bootstrap_servers, topic, [(b"k", b"x", [])])
    for stop in _running(kafka_config, topic, group, held):
        until(lambda: held.sealed, "a sealed batch")
        stop.set()  # S3 stays "down": the stop's grace runs out with the batch not durable
    assert held.durable == []
    again = Recorder()
    for _ in _running(kafka_config, topic, group, again):
        until(lambda: again.handled, "the redelivered message")
    assert again.handled == [b"x"]
