"""The raw archive: redacted events in compressed, date-partitioned JSON-lines files.

Lines are buffered per (objective, day) and written as one gzip part per flush:
``raw/{objective}/dt=YYYY-MM-DD/part-{HHMMSS}-{unique}.jsonl.gz``. Partitioning by the day
ingest received the event keeps late events out of already-closed partitions.
"""

from __future__ import annotations

import collections
import datetime
import gzip
import io
import uuid

from prometheus_client import Counter

from tunewire.core.base import store
from tunewire.core.state import layout

PARTS = Counter("tunewire_ingest_archive_parts_total", "Archive parts written to S3.")
BYTES = Counter("tunewire_ingest_archive_bytes_total", "Compressed archive bytes written to S3.")


class Archive:
    """Buffers archive lines until :meth:`flush` writes them."""

    def __init__(self, artifacts: store.ArtifactStore) -> None:
        self._store = artifacts
        self._buffers: dict[tuple[str, str], list[bytes]] = collections.defaultdict(list)

    def __len__(self) -> int:
        return sum(len(lines) for lines in self._buffers.values())

    def append(self, objective: str, day: datetime.date, line: bytes) -> None:
        """Buffer one redacted event, already encoded as a JSON line."""
        self._buffers[(objective, day.isoformat())].append(line)

    def flush(self) -> list[str]:
        """Write every buffer as one part; a failed write keeps its lines for the next try."""
        written: list[str] = []
        now = datetime.datetime.now(datetime.UTC)
        for (objective, day), lines in list(self._buffers.items()):
            part = f"part-{now:%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl.gz"
            key = layout.raw_day(objective, day) + part
            body = io.BytesIO()
            with gzip.GzipFile(fileobj=body, mode="wb", compresslevel=5, mtime=0) as gz:
                gz.write(b"\n".join(lines) + b"\n")
            data = body.getvalue()
            self._store.put_bytes(
                key,
                data,
                content_type="application/x-ndjson",
                content_encoding="gzip",
                only_if_absent=True,
            )
            del self._buffers[(objective, day)]
            PARTS.inc()
            BYTES.inc(len(data))
            written.append(key)
        return written
