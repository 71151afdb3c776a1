"""A durable window of seen event ids, so redeliveries are dropped even across restarts.

Ids are kept in memory (bounded) and persisted to S3 in one small object per flush, under a
time-ordered key. A service loads the recent window at start-up and refreshes it from the
objects other replicas wrote (after a rebalance, their partitions' ids matter to us).
"""

from __future__ import annotations

import collections
import datetime
import gzip
import logging
import threading
import uuid

from tunewire.core.base import store

log = logging.getLogger(__name__)

_KEY_TIME = "%Y%m%dT%H%M%S"
#: Listing restarts this far before the newest key seen, to catch a replica's late writes.
_REFRESH_OVERLAP = datetime.timedelta(minutes=2)


class SeenWindow:
    """Ids seen in the last ``retention``; :meth:`persist` makes new ones durable."""

    def __init__(
        self,
        artifacts: store.ArtifactStore,
        *,
        prefix: str,
        retention: datetime.timedelta,
        capacity: int,
    ) -> None:
        self._store = artifacts
        self._prefix = prefix.rstrip("/") + "/"
        self._retention = retention
        self._capacity = capacity
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._unsaved: list[str] = []
        self._saved_count = 0
        """Ids added and persisted, in order: ``_unsaved`` starts at this count."""
        self._loaded_keys: set[str] = set()
        self._newest_key: str | None = None
        self._lock = threading.Lock()

    def __contains__(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        """Remember an id; durable after the next :meth:`persist`."""
        with self._lock:
            self._remember(event_id)
            self._unsaved.append(event_id)

    def mark(self) -> int:
        """How many ids were added so far: :meth:`persist` can stop there."""
        with self._lock:
            return self._saved_count + len(self._unsaved)

    def persist(self, *, through: int | None = None) -> None:
        """Write the ids added since the last call as one object; with ``through`` (a
        :meth:`mark`), only those added before that mark."""
        with self._lock:
            end = len(self._unsaved) if through is None else through - self._saved_count
            batch = self._unsaved[: max(0, end)]
        if not batch:
            return
        now = datetime.datetime.now(datetime.UTC)
        key = f"{self._prefix}{now.strftime(_KEY_TIME)}-{uuid.uuid4().hex}.txt.gz"
        body = gzip.compress("\n".join(batch).encode(), compresslevel=1)
        self._store.put_bytes(key, body, content_type="text/plain", only_if_absent=True)
        with self._lock:
            del self._unsaved[: len(batch)]
            self._saved_count += len(batch)
            self._loaded_keys.add(key)

    def refresh(self) -> int:
        """Load ids persisted (by any replica) since the last refresh; returns how many keys."""
        horizon = datetime.datetime.now(datetime.UTC) - self._retention
        start_after = self._prefix + horizon.strftime(_KEY_TIME)
        if self._newest_key:
            overlap = _key_time(self._newest_key, self._prefix) - _REFRESH_OVERLAP
            start_after = max(start_after, self._prefix + overlap.strftime(_KEY_TIME))
        loaded = 0
        for key in self._store.list_keys(self._prefix, start_after=start_after):
            if key in self._loaded_keys:
                continue
            ids = gzip.decompress(self._store.get_bytes(key)).decode().split("\n")
            with self._lock:
                for event_id in ids:
                    if event_id:
                        self._remember(event_id)
                self._loaded_keys.add(key)
                if self._newest_key is None or key > self._newest_key:
                    self._newest_key = key
            loaded += 1
        if loaded:
            log.info("loaded seen ids from %d objects", loaded, extra={"count": len(self._ids)})
        return loaded

    def _remember(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


def _key_time(key: str, prefix: str) -> datetime.datetime:
    stamp = key[len(prefix) :].split("-", 1)[0]
    return datetime.datetime.strptime(stamp, _KEY_TIME).replace(tzinfo=datetime.UTC)
