"""Evaluation records in S3: the evaluate service's whole state.

An evaluation is ``evaluations/{objective}/{run_id}/evaluation.json``, created only if absent
(so a redelivered training event finds the evaluation it already started) and changed by
compare-and-swap (so the watch, the reconciler, the API and other replicas never lose each
other's writes). The evaluator writes ``metrics.json`` beside it. While an evaluation waits
for its evaluator, an empty marker ``state/evaluate/open/{objective}/{run_id}`` lists it, so
a restarted or second replica finds the open ones without reading every record ever made.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel

from tunewire.core.base import errors, store
from tunewire.core.launchers import launching
from tunewire.core.state import layout, registry

RecordStatus = Literal["evaluating", "needs_review", "decided"]
"""``evaluating`` until the evaluator's result is gated; ``needs_review`` while a person must
approve; ``decided`` once approved or rejected (final)."""

_OPEN = layout.service_state("evaluate", "open")


class GateRecord(BaseModel):
    """One gate's outcome as stored and shown (the contract's GateResult plus a note)."""

    metric: str
    rule: str
    threshold: float
    value: float
    passed: bool
    note: str


class EvaluationRecord(BaseModel):
    """One candidate adapter's evaluation, from launch to decision."""

    objective: str
    objective_version: int
    """The spec version the run trained with; its gates and approval policy apply."""
    run_id: str
    dataset_id: str
    dataset_uri: str
    adapter_uri: str
    champion_run_id: str | None = None
    """The champion when the evaluation was launched: the one measured beside the candidate."""
    champion_uri: str | None = None
    metrics_key: str
    metrics_uri: str
    gpus: int = 0
    status: RecordStatus = "evaluating"
    attempt: int = 1
    workload: str
    """Name of the current attempt's evaluator workload."""
    started_at: datetime.datetime | None = None
    """When the launcher first reported the current attempt running."""
    logs: str = ""
    failures: list[str] = []
    """What went wrong in earlier attempts, oldest first."""
    decision: registry.Decision | None = None
    decided_by: str = ""
    reason: str = ""
    decided_at: datetime.datetime | None = None
    gates: list[GateRecord] = []
    created_at: datetime.datetime

    def workload_spec(self) -> launching.WorkloadSpec:
        """The evaluator workload of the current attempt (the same every time it is built)."""
        args = [
            "--objective",
            self.objective,
            "--objective-version",
            str(self.objective_version),
            "--run-id",
            self.run_id,
            "--dataset-id",
            self.dataset_id,
            "--dataset-uri",
            self.dataset_uri,
            "--candidate-uri",
            self.adapter_uri,
        ]
        if self.champion_run_id and self.champion_uri:
            args += ["--champion-run-id", self.champion_run_id, "--champion-uri", self.champion_uri]
        args += ["--output-key", self.metrics_key]
        return launching.WorkloadSpec(
            name=self.workload,
            kind="evaluate",
            args=args,
            labels={"tunewire.io/objective": self.objective, "tunewire.io/run": self.run_id},
            gpus=self.gpus,
        )


def workload_name(objective: str, run_id: str, attempt: int) -> str:
    """The idempotent name of an evaluation attempt's workload."""
    return launching.workload_name("evaluate", objective, run_id, f"attempt-{attempt}")


def metrics_key(objective: str, run_id: str) -> str:
    """Where the evaluator writes a run's metrics.json."""
    return layout.evaluation(objective, run_id) + "metrics.json"


class RecordStore:
    """Reads and writes evaluation records and their open markers."""

    def __init__(self, artifacts: store.ArtifactStore) -> None:
        self._store = artifacts

    def create(self, record: EvaluationRecord) -> tuple[EvaluationRecord, bool]:
        """Store a new record; returns the stored one and False when it existed already."""
        try:
            self._store.put_json(
                _key(record.objective, record.run_id), _dump(record), only_if_absent=True
            )
        except errors.Conflict:
            return self.get(record.objective, record.run_id), False
        return record, True

    def find(self, objective: str, run_id: str) -> EvaluationRecord | None:
        """One record, or None."""
        try:
            document: Any = self._store.get_json(_key(objective, run_id))
        except errors.NotFound:
            return None
        return EvaluationRecord.model_validate(document)

    def get(self, objective: str, run_id: str) -> EvaluationRecord:
        """One record; :class:`errors.NotFound` when there is none."""
        found = self.find(objective, run_id)
        if found is None:
            raise errors.NotFound(
                f"objective {objective!r} has no evaluation of run {run_id!r}; "
                "list them with `tunewire evals list`"
            )
        return found

    def update(
        self,
        objective: str,
        run_id: str,
        change: Callable[[EvaluationRecord], EvaluationRecord | None],
    ) -> EvaluationRecord:
        """Apply ``change`` by compare-and-swap; ``change`` returns None to leave it as is."""

        def apply(raw: Any) -> Any:
            if raw is None:
                raise errors.NotFound(f"objective {objective!r} has no evaluation of {run_id!r}")
            changed = change(EvaluationRecord.model_validate(raw))
            return None if changed is None else _dump(changed)

        return EvaluationRecord.model_validate(
            self._store.update_json(_key(objective, run_id), apply)
        )

    def list_records(self, objective: str | None = None) -> list[EvaluationRecord]:
        """Records, oldest first, of one objective or of all."""
        names = [objective] if objective else self.objectives()
        found = [record for name in names for record in self._records_of(name)]
        found.sort(key=lambda r: (r.created_at, r.run_id))
        return found

    def objectives(self) -> list[str]:
        """Objectives that have evaluations."""
        return [
            p[len(layout.EVALUATIONS) : -1] for p in self._store.list_prefixes(layout.EVALUATIONS)
        ]

    # -- open markers ---------------------------------------------------------------------

    def mark_open(self, record: EvaluationRecord) -> None:
        """List the record among those waiting for their evaluator."""
        self._store.put_bytes(_open_key(record.objective, record.run_id), b"")

    def mark_closed(self, record: EvaluationRecord) -> None:
        """Take the record off the open list (it was gated)."""
        self._store.delete(_open_key(record.objective, record.run_id))

    def open(self) -> Iterator[tuple[str, str]]:
        """``(objective, run_id)`` of every evaluation marked open."""
        for key in self._store.list_keys(_OPEN):
            objective, _, run_id = key[len(_OPEN) :].partition("/")
            if objective and run_id:
                yield objective, run_id

    def _records_of(self, objective: str) -> Iterator[EvaluationRecord]:
        for prefix in self._store.list_prefixes(layout.evaluations(objective)):
            run_id = prefix.rstrip("/").rsplit("/", 1)[-1]
            found = self.find(objective, run_id)
            if found is not None:  # a prefix holding only the evaluator's metrics.json
                yield found


def _key(objective: str, run_id: str) -> str:
    return layout.evaluation(objective, run_id) + "evaluation.json"


def _open_key(objective: str, run_id: str) -> str:
    return f"{_OPEN}{objective}/{run_id}"


def _dump(record: EvaluationRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")
