"""The raw-topic consumer: Kafka messages into the ingest pipeline."""

from __future__ import annotations

import logging
import threading
import time

from tunewire.core import bus, consuming, errors, runner, topics
from tunewire.ingest import config, normalising, pipeline

log = logging.getLogger(__name__)

#: How often the flusher reloads seen ids written by other replicas.
SEEN_REFRESH_S = 30.0


class RawEventHandler:
    """A :class:`consuming.BatchHandler` over the pipeline."""

    def __init__(self, flow: pipeline.Pipeline, limits: config.IngestLimits) -> None:
        self._flow = flow
        self._limits = limits

    def handle(self, message: bus.Message) -> None:
        try:
            event = normalising.from_message(message, max_bytes=self._limits.max_event_bytes)
        except errors.InvalidEvent as exc:
            self._flow.reject(via="kafka", kind=exc.kind)
            raise
        self._flow.commit(self._flow.prepare(event, via="kafka"), via="kafka")

    def flush(self) -> None:
        self._flow.flush()


def loop(
    settings: config.IngestSettings, flow: pipeline.Pipeline, producer: bus.Producer
) -> consuming.ConsumerLoop:
    """The consumer loop of the raw topic; it commits with each pipeline flush."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.EVENTS_RAW],
        handler=RawEventHandler(flow, settings.ingest),
        producer=producer,
        flush_interval_s=settings.ingest.flush_interval_s,
        flush_max_messages=settings.ingest.flush_max_events,
        on_assigned=lambda: flow.seen.refresh(),
    )


def flusher(flow: pipeline.Pipeline, interval_s: float) -> runner.Worker:
    """A worker that flushes events accepted over HTTP while no Kafka traffic does.

    It also reloads the seen ids other replicas wrote, so an HTTP redelivery to another
    replica is recognised within :data:`SEEN_REFRESH_S`.
    """

    def run(stop: threading.Event) -> None:
        last_refresh = time.monotonic()
        while not stop.wait(interval_s / 2):
            try:
                flow.flush_if_due()
                if time.monotonic() - last_refresh >= SEEN_REFRESH_S:
                    flow.seen.refresh()
                    last_refresh = time.monotonic()
            except Exception as exc:
                log.warning("background flush failed; retrying", extra={"error": repr(exc)})
        flow.flush_patiently(timeout_s=10)

    return run
