"""The raw-topic consumer: Kafka messages into the ingest pipeline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from tunewire.core.base import errors
from tunewire.core.bus import consuming, pooling, producing, topics
from tunewire.core.process import runner
from tunewire.ingest import config, dead_letters, handlers, normalising, parallel, pipeline

log = logging.getLogger(__name__)

#: How often the flusher reloads seen ids written by other replicas.
SEEN_REFRESH_S = 30.0
#: Messages per worker task: small enough to overlap publishing with preparing.
PARALLEL_CHUNK = 64


class RawEventHandler:
    """A :class:`consuming.BatchHandler` over the pipeline, preparing in parallel if it can."""

    def __init__(
        self,
        flow: pipeline.Pipeline,
        limits: config.IngestLimits,
        pool: parallel.PreparePool | None = None,
    ) -> None:
        self._flow = flow
        self._limits = limits
        self._prefetch: pooling.Prefetch[parallel.Prepared] = pooling.Prefetch(
            pool, chunk=PARALLEL_CHUNK, what="preparing"
        )

    def prefetch(self, messages: Sequence[producing.Message]) -> None:
        """Send the batch to the worker processes in chunks (nothing to do without a pool)."""
        self._prefetch.start(messages, self._flow.objectives)

    def handle(self, message: producing.Message) -> None:
        prepared = self._prefetch.take(message)
        if prepared is None:
            prepared = self._prepare_here(message)
        elif isinstance(prepared, parallel.Rejected):
            if prepared.kind in handlers.STALE_CATALOG_KINDS:
                prepared = self._prepare_here(message)  # re-checks a fresh catalog
            else:
                self._flow.reject(via="kafka", kind=prepared.kind)
                raise prepared.error()
        self._flow.commit(prepared, via="kafka")

    def flush(self) -> None:
        self._flow.flush()

    def _prepare_here(self, message: producing.Message) -> handlers.Accepted:
        try:
            event = normalising.from_message(message, max_bytes=self._limits.max_event_bytes)
        except errors.InvalidEvent as exc:
            self._flow.reject(via="kafka", kind=exc.kind)
            raise
        return self._flow.prepare(event, via="kafka")


def loop(
    settings: config.IngestSettings,
    flow: pipeline.Pipeline,
    producer: producing.Producer,
    pool: parallel.PreparePool | None,
) -> consuming.ConsumerLoop:
    """The consumer loop of the raw topic; it commits with each pipeline flush."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.EVENTS_RAW],
        handler=RawEventHandler(flow, settings.ingest, pool),
        producer=producer,
        flush_interval_s=settings.ingest.flush_interval_s,
        flush_max_messages=settings.ingest.flush_max_events,
        on_assigned=lambda: flow.seen.refresh(),
        dead_letter_copy=dead_letters.sanitized,
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
