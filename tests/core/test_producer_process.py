"""The producer whose Kafka client runs in a child process, against a real broker."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import kafka_io
from tests.support.waiting import eventually
from tunewire.core.base import errors, settings
from tunewire.core.bus import producer_process
from tunewire.stack import broker, embedded

pytestmark = pytest.mark.stack


def _read(bootstrap: str, topic: str, count: int) -> list[bytes]:
    reader = kafka_io.TopicReader(bootstrap, topic)
    try:
        reader.read_until(lambda messages: len(messages) >= count, timeout_s=30)
        return [m.value for m in reader.messages]
    finally:
        reader.close()


def _child(client_id: str) -> multiprocessing.process.BaseProcess:
    (child,) = [p for p in multiprocessing.active_children() if p.name == f"{client_id}-producer"]
    return child


@pytest.fixture
def producer(stack: embedded.EmbeddedStack) -> Iterator[producer_process.ProducerProcess]:
    config = settings.KafkaSettings(bootstrap_servers=stack.bootstrap_servers)
    running = producer_process.ProducerProcess(config, client_id=f"test-{uuid.uuid4().hex[:6]}")
    try:
        yield running
    finally:
        running.close()


def test_sends_are_in_the_topic_with_their_keys_and_headers_once_flush_returns(
    stack: embedded.EmbeddedStack, producer: producer_process.ProducerProcess
) -> None:
    topic = f"test.producer-process.{uuid.uuid4().hex[:8]}"
    for number in range(50):
        producer.send(
            topic, key="k", value=f"m-{number}".encode(), headers=[("ce_id", str(number).encode())]
        )
    producer.flush(timeout_s=30)
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topic)
    try:
        reader.read_until(lambda messages: len(messages) >= 50, timeout_s=30)
        assert [m.value for m in reader.messages] == [f"m-{n}".encode() for n in range(50)]
        assert {m.key for m in reader.messages} == {b"k"}
        assert [kafka_io.header(m, "ce_id") for m in reader.messages] == [
            str(n).encode() for n in range(50)
        ]
    finally:
        reader.close()


def test_a_child_that_dies_is_replaced_and_handed_everything_not_acknowledged(
    stack: embedded.EmbeddedStack, producer: producer_process.ProducerProcess
) -> None:
    topic = f"test.producer-process.{uuid.uuid4().hex[:8]}"
    producer.send(topic, key=b"k", value=b"first")
    producer.flush(timeout_s=30)
    first_child = _child(producer._client_id)
    os.kill(first_child.pid or 0, signal.SIGKILL)
    first_child.join(timeout=10)
    for number in range(3):
        producer.send(topic, key=b"k", value=f"later-{number}".encode())
    refused: list[Exception] = []

    def flush_twice() -> None:
        try:
            producer.flush(timeout_s=30)  # finds the child dead and starts another
        except errors.Unavailable as exc:
            refused.append(exc)
        producer.flush(timeout_s=30)  # the new child gets the three again

    # From a thread that ends afterwards, as a consumer loop's background flush does.
    flusher = threading.Thread(target=flush_twice)
    flusher.start()
    flusher.join()
    assert len(refused) == 1 and "died" in str(refused[0])
    replacement = _child(producer._client_id)
    assert replacement.pid != first_child.pid
    time.sleep(1)  # a child tied to the thread that started it would be gone by now
    assert replacement.is_alive()
    producer.send(topic, key=b"k", value=b"last")
    producer.flush(timeout_s=30)
    values = _read(stack.bootstrap_servers, topic, 5)
    assert values[0] == b"first" and values[-1] == b"last"
    assert set(values[1:-1]) == {f"later-{n}".encode() for n in range(3)}


ORPHANED = """
import multiprocessing, sys
from tunewire.core.bus import producer_process
from tunewire.core.base import settings

config = settings.KafkaSettings(bootstrap_servers=sys.argv[1])
producer = producer_process.ProducerProcess(config, client_id="test-orphan")
(child,) = multiprocessing.active_children()
print(child.pid, flush=True)
sys.stdin.readline()
"""


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie nobody reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_the_child_ends_when_its_parent_is_killed(stack: embedded.EmbeddedStack) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", ORPHANED, stack.bootstrap_servers],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not _gone(child_pid)
        parent.kill()
        parent.wait()

    def ended() -> None:
        assert _gone(child_pid), "the producer process outlived its parent"

    eventually(ended, timeout_s=20, interval_s=0.1)


def test_a_flush_while_the_broker_is_down_fails_and_keeps_the_messages_for_the_next(
    memory_broker: broker.Broker,
) -> None:
    config = settings.KafkaSettings(bootstrap_servers=memory_broker.bootstrap_servers)
    topic = f"test.producer-process.{uuid.uuid4().hex[:8]}"
    producer = producer_process.ProducerProcess(config, client_id="test-outage")
    try:
        producer.send(topic, key=b"k", value=b"before")
        producer.flush(timeout_s=30)
        memory_broker.stop()
        producer.send(topic, key=b"k", value=b"during")
        with pytest.raises(errors.Unavailable):
            producer.flush(timeout_s=3)
        memory_broker.start()  # memory storage: a new, empty cluster
        producer.flush(timeout_s=60)
    finally:
        producer.close()
    assert _read(memory_broker.bootstrap_servers, topic, 1) == [b"during"]
