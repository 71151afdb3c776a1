"""The producer against a real broker that loses its state (a memory-storage restart).

The producer runs in a child process: kafka-python 3.0 leaks the socket of each connection
the stopped broker refuses, and the garbage collector's ResourceWarning would otherwise land
in whichever test runs later.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.support import kafka_io
from tunewire.stack import broker

PRODUCER = """
import sys
from tunewire.core.bus import producing
from tunewire.core.base import settings

bootstrap, topic = sys.argv[1:3]
producer = producing.Producer(settings.KafkaSettings(bootstrap_servers=bootstrap), client_id="test")
producer.send(topic, key=b"k", value=b"before")
producer.flush(timeout_s=30)
print("sent", flush=True)
sys.stdin.readline()  # the broker restarts meanwhile
for number in range(5):
    producer.send(topic, key=b"k", value=f"after-{number}".encode())
producer.flush(timeout_s=60)
producer.close()
print("acknowledged", flush=True)
"""


def test_a_broker_that_forgot_the_producer_gets_every_later_send(
    memory_broker: broker.Broker,
) -> None:
    topic = f"test.bus.{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, memory_broker.bootstrap_servers, topic],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "sent"
        memory_broker.stop()
        memory_broker.start()  # same port, a brand-new cluster: the producer id means nothing
        child.stdin.write("go\n")
        child.stdin.flush()
        output, errors = child.communicate(timeout=90)
    finally:
        child.kill()
        child.wait()
    assert output.strip() == "acknowledged", errors[-3000:]

    reader = kafka_io.TopicReader(memory_broker.bootstrap_servers, topic)
    try:
        reader.read_until(lambda messages: len(messages) >= 5, timeout_s=20)
        assert [m.value for m in reader.messages] == [f"after-{n}".encode() for n in range(5)]
    finally:
        reader.close()
