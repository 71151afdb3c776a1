"""Training runs as records in S3: the train service's whole state.

A run is ``runs/{objective}/{run_id}/run.json``, created only if absent (so a redelivered
dataset event finds the run it already made) and changed by compare-and-swap on its ETag (so
two replicas, or the scheduler and the watcher, never lose each other's writes). The trainer
writes ``progress.json`` beside it and the terminal ``outcome.json`` (see core/state/outcomes.py).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel

from tunewire.core.base import errors, store
from tunewire.core.launchers import launching
from tunewire.core.state import layout

log = logging.getLogger(__name__)

RunStatus = Literal["queued", "submitted", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Run(BaseModel):
    """One training run: what it trains on, where it runs and how it ended."""

    run_id: str
    objective: str
    objective_version: int
    dataset_id: str
    dataset_uri: str
    status: RunStatus = "queued"
    attempt: int = 1
    gpus: int = 0
    base_model: str = ""
    config: dict[str, Any] = {}
    """The LoRA and training settings the run uses (objective spec plus overrides)."""
    overrides: dict[str, Any] = {}
    requested_by: str = "datasets"
    """``datasets`` for a run started by a snapshot event, otherwise the person's name."""
    launcher: str = ""
    workload: str = ""
    """Name of the current attempt's Job (or local workload)."""
    logs: str = ""
    created_at: datetime.datetime
    submitted_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    failure_reason: str = ""
    message: str = ""
    adapter_uri: str = ""
    metrics: dict[str, float] = {}

    @property
    def finished(self) -> bool:
        """True once the run can change no more."""
        return self.status in TERMINAL

    def workload_name(self) -> str:
        """The idempotent name of this attempt's workload, derived from the run (and so
        from the dataset id): a redelivered event can never start a second one."""
        return launching.workload_name(
            "train", self.objective, self.run_id, f"attempt-{self.attempt}"
        )


def run_id_for(objective: str, dataset_id: str, *, nonce: str = "") -> str:
    """The id of the run that trains ``dataset_id``; a hand-submitted run adds a nonce."""
    digest = hashlib.sha256(f"{objective}\0{dataset_id}\0{nonce}".encode()).hexdigest()
    return f"ft-{digest[:12]}"


def now() -> datetime.datetime:
    """The current time, timezone-aware, for run timestamps."""
    return datetime.datetime.now(datetime.UTC)


class RunStore:
    """Reads and writes run records with conditional writes."""

    def __init__(self, artifacts: store.ArtifactStore) -> None:
        self._store = artifacts

    def create(self, run: Run) -> tuple[Run, bool]:
        """Store a new run; returns the stored run and False when it existed already."""
        try:
            self._store.put_json(_key(run.objective, run.run_id), _dump(run), only_if_absent=True)
        except errors.Conflict:
            return self.get(run.objective, run.run_id), False
        return run, True

    def get(self, objective: str, run_id: str) -> Run:
        """One run; :class:`errors.NotFound` when there is none."""
        try:
            return Run.model_validate(self._store.get_json(_key(objective, run_id)))
        except errors.NotFound:
            raise errors.NotFound(f"objective {objective!r} has no run {run_id!r}") from None

    def update(self, objective: str, run_id: str, change: Callable[[Run], Run | None]) -> Run:
        """Apply ``change`` by compare-and-swap; ``change`` returns None to leave it as is."""

        def changed(document: Any) -> Any:
            if document is None:
                raise errors.NotFound(f"objective {objective!r} has no run {run_id!r}")
            new = change(Run.model_validate(document))
            return None if new is None else _dump(new)

        return Run.model_validate(self._store.update_json(_key(objective, run_id), changed))

    def objectives(self) -> list[str]:
        """Objectives that have runs."""
        return [p[len(layout.RUNS) : -1] for p in self._store.list_prefixes(layout.RUNS)]

    def list(self, objective: str | None = None) -> list[Run]:
        """Runs, oldest first, of one objective or of all."""
        names = [objective] if objective else self.objectives()
        found = [run for name in names for run in self._runs_of(name)]
        found.sort(key=lambda run: (run.created_at, run.run_id))
        return found

    def progress(self, objective: str, run_id: str) -> dict[str, Any] | None:
        """The trainer's latest progress report, if it wrote one."""
        try:
            document: dict[str, Any] = self._store.get_json(
                layout.run(objective, run_id) + "progress.json"
            )
        except errors.NotFound:
            return None
        return document

    def _runs_of(self, objective: str) -> Iterator[Run]:
        for prefix in self._store.list_prefixes(layout.runs(objective)):
            run_id = prefix.rstrip("/").rsplit("/", 1)[-1]
            try:
                yield self.get(objective, run_id)
            except errors.NotFound:
                continue  # a run prefix holding only a trainer's files


def _key(objective: str, run_id: str) -> str:
    return layout.run(objective, run_id) + "run.json"


def _dump(run: Run) -> dict[str, Any]:
    return run.model_dump(mode="json")
