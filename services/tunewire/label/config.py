"""Settings of the label service (``TUNEWIRE_LABEL__*`` on top of the shared ones)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tunewire.core.base import settings


class LabelLimits(BaseModel):
    """How the label service batches, leases and deduplicates."""

    flush_interval_s: float = Field(default=2.0, gt=0)
    """How often new examples are written to S3 (and offsets committed)."""
    flush_max_records: int = Field(default=20_000, ge=1)
    """Flush sooner once this many records were handled since the last flush."""
    lease_seconds: float = Field(default=300.0, ge=5)
    """How long a claimed task stays with its annotator before it returns to the queue."""
    queue_refresh_s: float = Field(default=10.0, gt=0)
    """How often the queue is reloaded from S3 (changes made through other replicas)."""
    near_duplicate_threshold: float = Field(default=0.8, gt=0, le=1)
    """Estimated Jaccard similarity above which a text counts as a near-duplicate."""
    near_duplicate_capacity: int = Field(default=50_000, ge=1000)
    """Texts kept in the near-duplicate index per objective; the oldest are forgotten first.
    Label's memory grows with it (the measured size a text is in ``bench/README.md``)."""
    prepare_workers: int | None = Field(default=None, ge=0, le=64)
    """Processes that prepare records (decode, normalise, MinHash, rules, encoding) beside
    the consumer; 0 turns them off. Default: one per usable core beyond the first, at most
    four. With any, Kafka's client also runs in a process of its own
    (:mod:`tunewire.core.bus.producer_process`)."""
    poll_records: int = Field(default=5_000, ge=1)
    """Records fetched per poll when workers prepare them. The workers prepare a whole
    poll ahead of the consumer, so a deep poll keeps them busy while the consumer flushes;
    the shared ``TUNEWIRE_KAFKA__MAX_POLL_RECORDS`` applies without workers."""
    rule_budget_ms: float = Field(default=200.0, gt=0)
    """How long an objective's rules may take on one record, checked after each rule; a
    record whose rules take longer is dead-lettered (kind ``rule_budget``) and the partition
    moves on."""
    snapshot_check_s: float = Field(default=5.0, gt=0)
    """How often the snapshot trigger is checked."""
    repeat_announcement_every_s: float = Field(default=60.0, gt=0)
    """How often each objective's newest snapshot is announced again (same event id), so
    that train still hears of it if a broker without storage lost the first event."""
    workdir: str | None = None
    """Scratch directory for snapshot files (default: the system temp dir)."""


class LabelSettings(settings.ServiceSettings):
    """Everything the label process needs."""

    label: LabelLimits = LabelLimits()
    """Label's own batching, queue and deduplication settings (``TUNEWIRE_LABEL__*``)."""
    consumer_group: str = "tunewire-label"
    """Consumer group of ``tunewire.records``; replicas share it."""
