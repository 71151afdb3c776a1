"""The pipeline overview behind the console: one row per objective, from every stage.

The evaluate service owns the registry, so the champion and the runs waiting for review come
from here. The rest is asked of its owners, server-side, with the caller's own bearer token:
the label service's API for the queue and the latest snapshot, the train service's API for
the latest run and its progress (their URLs come from :class:`config.ConsoleSettings`;
a service not configured, or not answering, leaves its cells empty and is named in
``problems``). Events in are counted from ingest's raw archive in S3, the documented artifact
``raw/{objective}/dt=YYYY-MM-DD/part-*.jsonl.gz`` (one line per accepted event): parts are
written once and never change, so each is read once and only its line count is kept.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import gzip
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from tunewire.core.base import errors, store
from tunewire.core.state import layout, objectives, registry
from tunewire.evaluate import config

log = logging.getLogger(__name__)

_PART_SUFFIX = ".jsonl.gz"
_ACTIVE_RUNS = ("queued", "submitted", "running")
_WORKERS = 8
"""Objectives gathered in parallel: each needs a few calls to S3 and the other services."""


def _today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


class ArchiveCounter:
    """Events archived per objective over the last days, counted from the archive's parts."""

    def __init__(
        self,
        artifacts: store.ArtifactStore,
        *,
        days: int,
        today: Callable[[], datetime.date] = _today,
    ) -> None:
        self._artifacts = artifacts
        self._days = days
        self._today = today
        self._lines: dict[str, dict[str, int]] = {}
        """Line counts of the parts in the window, by objective and key."""
        self._lock = threading.Lock()

    def count(self, objective: str) -> dict[str, int]:
        """``today``, ``recent`` (the whole window) and ``days`` (its length)."""
        today = self._today()
        with self._lock:
            known = dict(self._lines.get(objective, {}))
        counted: dict[str, int] = {}
        by_day: dict[datetime.date, int] = {}
        for back in range(self._days):
            day = today - datetime.timedelta(days=back)
            prefix = layout.raw_day(objective, day)
            for key in self._artifacts.list_keys(prefix):
                if not key.endswith(_PART_SUFFIX):
                    continue
                lines = known.get(key)
                if lines is None:
                    lines = gzip.decompress(self._artifacts.get_bytes(key)).count(b"\n")
                counted[key] = lines
                by_day[day] = by_day.get(day, 0) + lines
        with self._lock:
            self._lines[objective] = counted  # parts that left the window are forgotten
        return {
            "today": by_day.get(today, 0),
            "recent": sum(by_day.values()),
            "days": self._days,
        }


class _Peers:
    """The other services' APIs during one overview, asked with the caller's token.

    A service that failed once is not asked again in the same overview: one slow service
    costs one timeout, not one per objective.
    """

    def __init__(
        self, client: httpx.Client, urls: Mapping[str, str], *, authorization: str
    ) -> None:
        self._client = client
        self._urls = {name: url.rstrip("/") for name, url in urls.items()}
        self._authorization = authorization
        self._down: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, service: str, path: str, **params: str) -> Any:
        """The JSON body of ``GET path`` on ``service``, or None (the reason is in problems)."""
        url = self._urls.get(service)
        if url is None:
            self._fail(service, "its URL is not configured (TUNEWIRE_CONSOLE__PEERS)")
            return None
        with self._lock:
            if service in self._down:
                return None
        try:
            response = self._client.get(
                url + path, params=params, headers={"Authorization": self._authorization}
            )
        except httpx.HTTPError as exc:
            self._fail(service, f"unreachable at {url} ({type(exc).__name__})")
            return None
        if response.status_code == 404:
            return None  # not known there (yet): an empty cell, not a problem
        if response.status_code != 200:
            self._fail(service, f"answered {response.status_code} at {url}")
            return None
        return response.json()

    def _fail(self, service: str, why: str) -> None:
        with self._lock:
            self._down.setdefault(service, why)

    def problems(self) -> list[str]:
        with self._lock:
            return [f"{service}: {why}" for service, why in sorted(self._down.items())]


class Overview:
    """Builds the overview; one instance per process (it keeps the archive's line counts)."""

    def __init__(
        self,
        *,
        catalog: objectives.ObjectiveCatalog,
        adapters: registry.Registry,
        artifacts: store.ArtifactStore,
        settings: config.ConsoleSettings,
    ) -> None:
        self._catalog = catalog
        self._registry = adapters
        self._settings = settings
        self._archive = ArchiveCounter(artifacts, days=settings.events_days)

    def build(self, *, authorization: str) -> dict[str, Any]:
        """Every objective's row, the problems met, and links to the other consoles."""
        current = sorted(self._catalog.current().values(), key=lambda v: v.name)
        archive_problems: list[str] = []
        with (
            httpx.Client(timeout=self._settings.peer_timeout_s) as client,
            concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool,
        ):
            peers = _Peers(client, self._settings.peers, authorization=authorization)
            rows = list(pool.map(lambda v: self._row(v, peers, archive_problems), current))
        links = {}
        if "label" in self._settings.peers:
            links["annotate"] = self._settings.peers["label"].rstrip("/") + "/console/annotate"
        return {
            "objectives": rows,
            "problems": peers.problems() + sorted(set(archive_problems)),
            "links": links,
        }

    def _row(
        self, version: objectives.ObjectiveVersion, peers: _Peers, archive_problems: list[str]
    ) -> dict[str, Any]:
        name = version.name
        try:
            events: dict[str, int] | None = self._archive.count(name)
        except errors.Unavailable as exc:
            archive_problems.append(f"events: {exc.message}")
            events = None
        document = self._registry.get(name)
        champion = document.champion_version()
        return {
            "name": name,
            "version": version.version,
            "status": version.status,
            "approval": version.spec.approval,
            "task": version.spec.task,
            "events": events,
            "queue": _queue(peers.get("label", f"/v1/queue/{name}")),
            "snapshot": _snapshot(peers.get("label", f"/v1/datasets/{name}")),
            "training": _training(peers.get("train", "/v1/runs", objective=name)),
            "champion": (
                {
                    "run_id": champion.run_id,
                    "decided_at": champion.decided_at.isoformat() if champion.decided_at else None,
                    "decided_by": champion.decided_by,
                    "metrics": champion.metrics,
                }
                if champion
                else None
            ),
            "waiting": sum(1 for v in document.versions.values() if v.status in registry.HELD),
        }


def _queue(status: Any) -> dict[str, Any] | None:
    if not status:
        return None
    counts = status.get("counts", {})
    return {
        "open": counts.get("open", 0),
        "claimed": counts.get("claimed", 0),
        "done": counts.get("done", 0),
        "examples": status.get("examples", 0),
    }


def _snapshot(listing: Any) -> dict[str, Any] | None:
    snapshots = listing.get("snapshots", []) if listing else []
    if not snapshots:
        return None
    latest = snapshots[-1]
    return {
        "dataset_id": latest.get("dataset_id"),
        "examples": latest.get("examples"),
        "counts": latest.get("counts", {}),
        "created_at": latest.get("created_at"),
    }


def _training(listing: Any) -> dict[str, Any] | None:
    """The newest run still going, else the newest run (runs are listed oldest first)."""
    runs = listing.get("runs", []) if listing else []
    if not runs:
        return None
    active = [run for run in runs if run.get("status") in _ACTIVE_RUNS]
    run = (active or runs)[-1]
    return {
        "run_id": run.get("run_id"),
        "status": run.get("status"),
        "progress": run.get("progress"),
        "created_at": run.get("created_at"),
        "finished_at": run.get("finished_at"),
    }
