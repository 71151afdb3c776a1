"""Settings of the ingest service (``TUNEWIRE_INGEST__*`` on top of the shared ones)."""

from __future__ import annotations

import datetime

from pydantic import BaseModel, Field

from tunewire.core.base import settings


class IngestLimits(BaseModel):
    """What ingest accepts and how it batches its durable writes."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest ``POST /v1/events`` body; larger ones get 413."""
    max_events_per_request: int = Field(default=1000, ge=1)
    """Most events in one ``POST /v1/events`` batch; more get 413."""
    max_event_bytes: int = Field(default=256 * 1024, ge=256)
    """Largest single event (Kafka value or HTTP item); larger ones are rejected."""
    max_depth: int = Field(default=32, ge=2)
    """Deepest nesting of objects and lists allowed in event data."""
    flush_interval_s: float = Field(default=2.0, gt=0)
    """How often buffered archive lines and seen ids are written to S3 (and offsets committed)."""
    flush_max_events: int = Field(default=20_000, ge=1)
    """Flush sooner once this many events are buffered."""
    dedup_retention_hours: float = Field(default=24.0, gt=0)
    """How long a redelivered ``ce_id`` is still recognised as a duplicate."""
    dedup_capacity: int = Field(default=1_000_000, ge=1000)
    """Most ids kept in memory (~100 bytes each); the oldest are forgotten first."""
    prepare_workers: int | None = Field(default=None, ge=0, le=64)
    """Processes that validate and redact raw-topic events beside the consumer; 0 turns
    them off. Default: one per usable core beyond the first, at most four."""
    http_flush_timeout_s: float = Field(default=20.0, gt=0)
    """How long ``POST /v1/events`` waits out an S3 or broker outage before answering 503."""

    @property
    def dedup_retention(self) -> datetime.timedelta:
        return datetime.timedelta(hours=self.dedup_retention_hours)


class IngestSettings(settings.ServiceSettings):
    """Everything the ingest process needs."""

    ingest: IngestLimits = IngestLimits()
    """Ingest's own limits and flushing (``TUNEWIRE_INGEST__*``)."""
    consumer_group: str = "tunewire-ingest"
    """Consumer group of ``tunewire.events.raw``; replicas share it."""
