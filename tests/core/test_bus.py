"""The producer against a real broker that loses its state (a memory-storage restart)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import kafka_io
from tunewire.core import bus, settings
from tunewire.stack import broker


@pytest.fixture
def memory_broker(tmp_path: Path) -> Iterator[broker.Broker]:
    running = broker.Broker(log_path=tmp_path / "broker.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_broker_that_forgot_the_producer_gets_every_later_send(
    memory_broker: broker.Broker,
) -> None:
    topic = f"test.bus.{uuid.uuid4().hex[:8]}"
    config = settings.KafkaSettings(bootstrap_servers=memory_broker.bootstrap_servers)
    producer = bus.Producer(config, client_id="test-bus")
    try:
        producer.send(topic, key=b"k", value=b"before")
        producer.flush(timeout_s=30)

        memory_broker.stop()
        memory_broker.start()  # same port, a brand-new cluster: our producer id means nothing

        for number in range(5):
            producer.send(topic, key=b"k", value=f"after-{number}".encode())
        producer.flush(timeout_s=60)
    finally:
        producer.close()

    reader = kafka_io.TopicReader(memory_broker.bootstrap_servers, topic)
    try:
        reader.read_until(lambda messages: len(messages) >= 5, timeout_s=20)
        assert [m.value for m in reader.messages] == [f"after-{n}".encode() for n in range(5)]
    finally:
        reader.close()
