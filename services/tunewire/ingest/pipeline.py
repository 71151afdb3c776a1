"""The stateful half of ingest: deduplicate, publish records, archive, make it durable.

Both entry points — the raw-topic consumer and ``POST /v1/events`` — go through one
:class:`Pipeline`, so an event counts once however it arrives. Order of durability on
:meth:`Pipeline.flush`: records acknowledged by Kafka, then archive parts in S3, then the
seen ids — so an id is remembered only once everything it produced is safe.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Mapping
from typing import Literal

from prometheus_client import Counter

from tunewire.core.base import errors, metrics, retry, store
from tunewire.core.bus import producing, topics
from tunewire.core.state import idempotency, layout, objectives
from tunewire.ingest import archive, config, handlers, normalising

log = logging.getLogger(__name__)

Outcome = Literal["record", "duplicate"]

EVENTS = Counter(
    "tunewire_ingest_events_total",
    "Events that reached ingest, by entry point and outcome (record, duplicate, rejected).",
    ["via", "outcome"],
)
REJECTIONS = Counter(
    "tunewire_ingest_rejections_total", "Rejected events by reason.", ["via", "kind"]
)
REDACTIONS = Counter("tunewire_ingest_redactions_total", "PII values redacted, by kind.", ["kind"])


class Pipeline:
    """Turns validated events into records; thread-safe."""

    def __init__(
        self,
        *,
        limits: config.IngestLimits,
        catalog: objectives.ObjectiveCatalog,
        artifacts: store.ArtifactStore,
        producer: producing.Producer,
    ) -> None:
        self._limits = limits
        self._catalog = catalog
        self._producer = producer
        self._archive = archive.Archive(artifacts)
        self.seen = idempotency.SeenWindow(
            artifacts,
            prefix=layout.service_state("ingest", "seen"),
            retention=limits.dedup_retention,
            capacity=limits.dedup_capacity,
        )
        self._lock = threading.RLock()
        self._dirty_since: float | None = None

    def load_seen(self) -> None:
        """Load the seen-id window from S3 before taking events, waiting out an outage."""
        backoff = retry.Backoff(0.5, 10.0)
        while True:
            try:
                self.seen.refresh()
                log.info("seen-id window ready", extra={"count": len(self.seen)})
                return
            except Exception as exc:
                log.warning("cannot load seen ids yet; retrying", extra={"error": repr(exc)})
                backoff.sleep()

    # -- the two steps every event takes ------------------------------------------------

    def prepare(self, event: normalising.IncomingEvent, *, via: str) -> handlers.Accepted:
        """Resolve, validate and redact (no side effects); count and re-raise rejections."""
        received = time.monotonic()
        try:
            try:
                return self._prepare(event, self._catalog.current())
            except errors.InvalidEvent as exc:
                if exc.kind not in handlers.STALE_CATALOG_KINDS:
                    raise
                # Maybe the objective was registered (or changed) after our last reload.
                return self._prepare(event, self._catalog.current(fresher_than=received))
        except errors.InvalidEvent as exc:
            self.reject(via=via, kind=exc.kind)
            raise

    def _prepare(
        self,
        event: normalising.IncomingEvent,
        current: Mapping[str, objectives.ObjectiveVersion],
    ) -> handlers.Accepted:
        return handlers.prepare(
            event,
            current,
            max_depth=self._limits.max_depth,
            now=datetime.datetime.now(datetime.UTC),
        )

    def objectives(self) -> Mapping[str, objectives.ObjectiveVersion]:
        """The current objectives (cached by the catalog)."""
        return self._catalog.current()

    def commit(self, accepted: handlers.Accepted, *, via: str) -> Outcome:
        """Publish the record and buffer the archive line, unless the id was seen."""
        event_id = accepted.event_id
        with self._lock:
            if event_id in self.seen:
                metrics.child(EVENTS, via, "duplicate").inc()
                return "duplicate"
            self._producer.send(
                topics.RECORDS,
                key=accepted.objective,
                value=accepted.record_value,
                headers=accepted.record_headers,
            )
            self._archive.append(accepted.objective, accepted.day, accepted.archive_line)
            self.seen.add(event_id)
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
        for kind, count in accepted.redactions.items():
            metrics.child(REDACTIONS, kind).inc(count)
        metrics.child(EVENTS, via, "record").inc()
        return "record"

    def reject(self, *, via: str, kind: str) -> None:
        """Count an event that ended as an HTTP error or a DLQ entry."""
        metrics.child(EVENTS, via, "rejected").inc()
        metrics.child(REJECTIONS, via, kind).inc()

    # -- durability ----------------------------------------------------------------------

    def flush(self) -> None:
        """Make every committed event durable: records acked, archive written, ids saved."""
        with self._lock:
            self._producer.flush()
            self._archive.flush()
            self.seen.persist()
            self._dirty_since = None

    def flush_if_due(self) -> None:
        """Flush when something has waited for the flush interval (for HTTP-only traffic)."""
        since = self._dirty_since
        if since is not None and time.monotonic() - since >= self._limits.flush_interval_s:
            self.flush()

    def flush_patiently(self, *, timeout_s: float) -> None:
        """Flush, retrying through an outage for up to ``timeout_s``; then 503."""
        deadline = time.monotonic() + timeout_s
        backoff = retry.Backoff(0.2, 2.0)
        while True:
            try:
                self.flush()
                return
            except Exception as exc:
                if time.monotonic() + backoff.ceiling_s > deadline:
                    raise errors.Unavailable(
                        "accepted events could not be made durable yet (broker or S3 down); "
                        "they are kept and retried — resend later to be sure"
                    ) from exc
                log.warning("flush failed; retrying", extra={"error": repr(exc)})
                backoff.sleep()
