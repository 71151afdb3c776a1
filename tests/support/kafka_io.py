"""Test helpers that talk to the embedded broker with the real client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence

import kafka
from kafka.structs import TopicPartition

from tests.support.waiting import eventually

Headers = Sequence[tuple[str, bytes]]


def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes, Headers]]
) -> int:
    """Send (key, value, headers) messages with acks=all; returns how many."""
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    count = 0
    for key, value, headers in messages:
        producer.send(topic, key=key, value=value, headers=list(headers))
        count += 1
    producer.flush(30)
    producer.close()
    return count


class TopicReader:
    """Reads a topic from the beginning, without a consumer group, across calls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = kafka.KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"test-reader-{uuid.uuid4().hex[:6]}",
        )
        partitions = self._wait_partitions()
        self._consumer.assign(partitions)
        self._consumer.seek_to_beginning(*partitions)
        self.messages: list[kafka.consumer.fetcher.ConsumerRecord] = []

    def _wait_partitions(self) -> list[TopicPartition]:
        def partitions() -> list[TopicPartition]:
            found = self._consumer.partitions_for_topic(self.topic)
            if not found:
                self._consumer.topics()  # refreshes the metadata for the next look
            assert found, f"topic {self.topic} never appeared"
            return [TopicPartition(self.topic, p) for p in sorted(found)]

        return eventually(partitions, timeout_s=15, interval_s=0.2)

    def read_until(
        self,
        done: Callable[[list[kafka.consumer.fetcher.ConsumerRecord]], bool],
        *,
        timeout_s: float = 30,
    ) -> list[kafka.consumer.fetcher.ConsumerRecord]:
        """Poll until ``done(all messages so far)``; all messages so far.

        Fails after ``timeout_s`` with how many messages were read by then.
        """

        def read() -> str:
            if not done(self.messages):
                for batch in self._consumer.poll(timeout_ms=200).values():
                    self.messages.extend(batch)
            return f"{len(self.messages)} messages read"

        # The poll itself waits up to 200 ms for messages: no pause between polls.
        eventually(
            read,
            ready=lambda _: done(self.messages),
            timeout_s=timeout_s,
            interval_s=0,
            what=f"the messages awaited on {self.topic}",
        )
        return self.messages

    def drain(self, *, quiet_s: float = 1.5) -> list[kafka.consumer.fetcher.ConsumerRecord]:
        """Read until nothing new arrives for ``quiet_s``.

        Not an ``eventually``: there is nothing to fail on and no deadline, only a quiet
        period to see out (a duplicate would arrive within it).
        """
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            polled = self._consumer.poll(timeout_ms=200)
            for batch in polled.values():
                self.messages.extend(batch)
                last = time.monotonic()
        return self.messages

    def close(self) -> None:
        self._consumer.close()


def header(record: kafka.consumer.fetcher.ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers or []:
        if key == name:
            return bytes(value)
    return None
