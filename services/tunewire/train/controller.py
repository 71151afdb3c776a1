"""The life of a training run, from dataset event to its one terminal event.

:class:`RunController` is what the consumer, the scheduler, the launcher's watch and the
HTTP API all drive. A dataset event queues a run (its id derived from the dataset id); the
scheduler starts queued runs through the launcher when the GPU budget allows; the watch
reports how each workload ends. The terminal outcome is claimed once in S3 (the trainer
claims success or the failures it understands; this service claims what only the launcher
saw, and cancellations) and then published with an id derived from the run, so a repeat
after a crash publishes the same event again rather than a second one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import prometheus_client
import pydantic

from tunewire.contracts.v1 import datasets_pb2, training_pb2
from tunewire.core.base import errors, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.launchers import launching
from tunewire.core.state import layout, objectives, outcomes
from tunewire.train import config, runs, scheduling

log = logging.getLogger(__name__)

SOURCE = "tunewire/train"

RUNS = prometheus_client.Counter(
    "tunewire_train_runs_total",
    "Training runs by objective and what happened to them (queued, submitted, outcomes).",
    ["objective", "status"],
)
FAILURES = prometheus_client.Counter(
    "tunewire_train_failures_total",
    "Failed training runs by objective and classified reason.",
    ["objective", "reason"],
)
QUEUED = prometheus_client.Gauge(
    "tunewire_train_runs_queued", "Runs waiting for a slot in the GPU budget."
)
RUNNING = prometheus_client.Gauge(
    "tunewire_train_runs_running", "Runs submitted to the launcher and not finished."
)
GPUS = prometheus_client.Gauge("tunewire_train_gpus_in_use", "GPUs held by running runs.")
EVENT_TO_JOB = prometheus_client.Histogram(
    "tunewire_train_event_to_job_seconds",
    "From receiving a dataset event to the launcher having created the workload.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# Failures worth another attempt: the workload was lost or killed from outside, or could
# not reach S3, and the next attempt resumes from the last checkpoint. A user's mistake
# would only fail again.
_RETRYABLE = frozenset(
    {
        training_pb2.FAILURE_REASON_PREEMPTED,
        training_pb2.FAILURE_REASON_STORAGE,
        training_pb2.FAILURE_REASON_UNKNOWN,
        training_pb2.FAILURE_REASON_UNSPECIFIED,
    }
)


class RunController:
    """Queues, starts, follows, retries and cancels training runs."""

    def __init__(
        self,
        *,
        limits: config.TrainLimits,
        catalog: objectives.ObjectiveCatalog,
        artifacts: store.ArtifactStore,
        producer: producing.Producer,
        launcher: launching.Launcher,
        launcher_kind: str,
    ) -> None:
        self._limits = limits
        self._catalog = catalog
        self._artifacts = artifacts
        self._producer = producer
        self._launcher = launcher
        self._launcher_kind = launcher_kind
        self.runs = runs.RunStore(artifacts)
        self._open: dict[str, runs.Run] = {}
        """Runs not finished yet, by run id: the scheduler's view."""
        self._received: dict[str, float] = {}
        self._latest_success: dict[str, runs.Run] = {}
        """Each objective's newest succeeded run: its event is published again now and then."""
        self._lock = threading.Lock()
        self._concluding = threading.Lock()
        self.wake = threading.Event()

    # -- intake ---------------------------------------------------------------------------

    def accept(self, message: producing.Message) -> runs.Run | None:
        """Queue the run of a dataset snapshot event (once, however often it arrives)."""
        received = time.monotonic()
        snapshot = datasets_pb2.DatasetSnapshot()
        try:
            snapshot.ParseFromString(message.value)
        except Exception as exc:
            raise errors.InvalidEvent(f"not a DatasetSnapshot: {exc}", kind="malformed") from exc
        if not snapshot.objective or not snapshot.dataset_id or not snapshot.uri:
            raise errors.InvalidEvent(
                "a DatasetSnapshot needs objective, dataset_id and uri", kind="invalid"
            )
        objective = self._catalog.lookup(snapshot.objective, fresher_than=received)
        if objective is None:
            raise errors.InvalidEvent(
                f"dataset {snapshot.dataset_id} names unknown objective {snapshot.objective!r}",
                kind="unknown_objective",
            )
        if objective.status != "active":
            log.info(
                "objective retired; not training",
                extra={"objective": objective.name, "dataset_id": snapshot.dataset_id},
            )
            RUNS.labels(objective.name, "skipped_retired").inc()
            return None
        self._vouch(objective.name, snapshot)
        run = self._new_run(
            objective,
            dataset_id=snapshot.dataset_id,
            dataset_uri=snapshot.uri,
            run_id=runs.run_id_for(objective.name, snapshot.dataset_id),
            overrides={},
            requested_by="datasets",
        )
        stored, created = self.runs.create(run)
        if created:
            RUNS.labels(stored.objective, "queued").inc()
            log.info(
                "run queued",
                extra={"objective": stored.objective, "run_id": stored.run_id},
            )
        self._track(stored, received=received)
        return stored

    def _vouch(self, objective: str, snapshot: datasets_pb2.DatasetSnapshot) -> None:
        """Refuse a snapshot label did not build: only a dataset id whose manifest is in S3,
        at the URI the event names, is trained on. A forged event is dead-lettered with kind
        ``forged``, so nobody who can produce to the topic spends GPUs on data of their own."""
        if not layout.is_segment(snapshot.dataset_id):
            raise errors.InvalidEvent(
                f"the dataset id {snapshot.dataset_id!r} is not an id", kind="forged"
            )
        expected = self._artifacts.uri(layout.dataset(objective, snapshot.dataset_id))
        if snapshot.uri != expected:
            raise errors.InvalidEvent(
                f"dataset {snapshot.dataset_id} is at {expected}, not {snapshot.uri}",
                kind="forged",
            )
        if not self._has_snapshot(objective, snapshot.dataset_id):
            raise errors.InvalidEvent(
                f"objective {objective!r} has no dataset snapshot {snapshot.dataset_id!r}",
                kind="forged",
            )

    def _has_snapshot(self, objective: str, dataset_id: str) -> bool:
        try:
            self._artifacts.get_json(layout.dataset(objective, dataset_id) + layout.MANIFEST)
        except errors.NotFound:
            return False
        return True

    def submit_by_hand(
        self,
        *,
        objective_name: str,
        dataset_id: str,
        overrides: dict[str, Any],
        actor: str,
    ) -> runs.Run:
        """Queue a run of an existing snapshot with optional hyperparameter overrides."""
        objective = self._catalog.get(objective_name)
        if objective.status != "active":
            raise errors.Conflict(f"objective {objective_name!r} is retired")
        prefix = layout.dataset(objective.name, dataset_id)
        if not layout.is_segment(dataset_id) or not self._has_snapshot(objective.name, dataset_id):
            raise errors.NotFound(
                f"objective {objective.name!r} has no dataset snapshot {dataset_id!r}"
            )
        run = self._new_run(
            objective,
            dataset_id=dataset_id,
            dataset_uri=self._artifacts.uri(prefix),
            run_id=runs.run_id_for(objective.name, dataset_id, nonce=f"{actor}:{time.time_ns()}"),
            overrides=overrides,
            requested_by=actor,
        )
        stored, _ = self.runs.create(run)
        RUNS.labels(stored.objective, "queued").inc()
        self._track(stored, received=time.monotonic())
        return stored

    def _new_run(
        self,
        objective: objectives.ObjectiveVersion,
        *,
        dataset_id: str,
        dataset_uri: str,
        run_id: str,
        overrides: dict[str, Any],
        requested_by: str,
    ) -> runs.Run:
        spec = objective.spec
        settings = effective_config(spec, overrides)
        return runs.Run(
            run_id=run_id,
            objective=objective.name,
            objective_version=objective.version,
            dataset_id=dataset_id,
            dataset_uri=dataset_uri,
            gpus=settings["training"]["gpu"],
            base_model=spec.base_model,
            config=settings,
            overrides=overrides,
            requested_by=requested_by,
            created_at=runs.now(),
        )

    # -- scheduling -----------------------------------------------------------------------

    def start_due(self) -> list[runs.Run]:
        """Start the queued runs the budget allows now; returns those started."""
        with self._lock:
            queued = [r for r in self._open.values() if r.status == "queued"]
            active = [r for r in self._open.values() if r.status in ("submitted", "running")]
        started = []
        for run in scheduling.pick(
            queued,
            active,
            max_running=self._limits.max_running,
            gpu_budget=self._limits.gpu_budget,
        ):
            launched = self._launch(run)
            if launched is not None:
                started.append(launched)
        self._report_gauges()
        return started

    def _launch(self, run: runs.Run) -> runs.Run | None:
        def submitted(current: runs.Run) -> runs.Run | None:
            if current.status != "queued":
                return None
            return current.model_copy(
                update={
                    "status": "submitted",
                    "launcher": self._launcher_kind,
                    "submitted_at": runs.now(),
                    "workload": current.workload_name(),
                }
            )

        claimed = self.runs.update(run.objective, run.run_id, submitted)
        if claimed.status != "submitted" or claimed.workload != claimed.workload_name():
            self._track(claimed)  # another replica or a cancellation got there first
            return None
        try:
            self._launcher.launch(self.workload_spec(claimed))
        except Exception as exc:
            log.warning(
                "launch failed; the run stays queued",
                extra={"run_id": run.run_id, "error": repr(exc)},
            )
            back = self.runs.update(
                run.objective,
                run.run_id,
                lambda r: (
                    r.model_copy(update={"status": "queued"}) if r.status == "submitted" else None
                ),
            )
            self._track(back)
            return None
        received = self._received.pop(run.run_id, None)
        if received is not None:
            EVENT_TO_JOB.observe(time.monotonic() - received)
        self._publish(
            claimed,
            phase="submitted",
            event_id=envelope.derived_id(claimed.run_id, "submitted", str(claimed.attempt)),
            payload=training_pb2.TrainingEvent.Submitted(
                launcher=self._launcher_kind,
                job_name=claimed.workload,
                base_model=claimed.base_model,
                config_json=json.dumps(claimed.config, sort_keys=True),
            ),
        )
        RUNS.labels(claimed.objective, "submitted").inc()
        log.info(
            "run submitted",
            extra={"run_id": claimed.run_id, "workload": claimed.workload},
        )
        self._track(claimed)
        return claimed

    def workload_spec(self, run: runs.Run) -> launching.WorkloadSpec:
        """The trainer workload of a run's current attempt."""
        args = [
            "--objective",
            run.objective,
            "--objective-version",
            str(run.objective_version),
            "--run-id",
            run.run_id,
            "--dataset-id",
            run.dataset_id,
            "--dataset-uri",
            run.dataset_uri,
            "--attempt",
            str(run.attempt),
        ]
        if run.overrides:
            args += ["--overrides", json.dumps(run.overrides, sort_keys=True)]
        return launching.WorkloadSpec(
            name=run.workload_name(),
            kind="train",
            args=args,
            labels={"tunewire.io/objective": run.objective, "tunewire.io/run": run.run_id},
            gpus=run.gpus,
        )

    # -- following ------------------------------------------------------------------------

    def on_status(self, status: launching.JobStatus) -> None:
        """React to the launcher's report on one workload."""
        run = self._run_of_workload(status.name)
        if run is None:
            return
        if status.phase is launching.JobPhase.RUNNING and run.status == "submitted":
            self._track(
                self.runs.update(
                    run.objective,
                    run.run_id,
                    lambda r: (
                        r.model_copy(update={"status": "running", "logs": status.logs})
                        if r.status == "submitted"
                        else None
                    ),
                )
            )
        elif (
            status.phase is launching.JobPhase.SUCCEEDED
            or status.phase is launching.JobPhase.FAILED
        ):
            self._finish(run, status)
        elif status.phase is launching.JobPhase.MISSING:
            self._vanished(run, status.name)

    def _vanished(self, run: runs.Run, name: str) -> None:
        """A run's workload is gone without an ending.

        A submitted run whose workload never appeared (a crash between claiming the run and
        creating its Job) is launched again under the same name. A running one: on
        Kubernetes only tunewire deletes Jobs before they finish (a cancel), so someone
        deleted it by hand and the run fails as cancelled outside tunewire; a local workload
        is gone when the stack was stopped under it (``tunewire down``), and the run goes on
        where its checkpoint left it.
        """
        if run.status == "submitted":
            self._launcher.launch(self.workload_spec(run))
            return
        if self._launcher_kind == "kubernetes":
            reason = training_pb2.FAILURE_REASON_CANCELLED_BY_USER
            message = f"the Job {name} was deleted outside tunewire; cancel runs through tunewire"
        else:
            reason = training_pb2.FAILURE_REASON_UNKNOWN
            message = "the workload disappeared while running"
        self._finish(
            run,
            launching.JobStatus(
                name=name, phase=launching.JobPhase.FAILED, reason=reason, message=message
            ),
        )

    def _finish(self, run: runs.Run, status: launching.JobStatus) -> None:
        outcome = outcomes.read(self._artifacts, run.objective, run.run_id)
        if outcome is None and status.phase is launching.JobPhase.FAILED:
            if status.reason in launching.LEFT_BEHIND:
                self._launcher.cancel(status.name)
            if status.reason in _RETRYABLE and run.attempt < self._limits.max_attempts:
                self._retry(run, status)
                return
        if outcome is None:
            if status.phase is launching.JobPhase.SUCCEEDED:
                reason, message = (
                    training_pb2.FAILURE_REASON_TRAINER_ERROR,
                    "the trainer exited without reporting an outcome",
                )
            else:
                reason, message = status.reason, status.message
            outcome = outcomes.claim(
                self._artifacts,
                run.objective,
                run.run_id,
                outcomes.Outcome(
                    kind="failed",
                    decided_by="train",
                    reason=reason or training_pb2.FAILURE_REASON_UNKNOWN,
                    message=message,
                    at=runs.now(),
                ),
            )
        self.conclude(run, outcome)

    def _retry(self, run: runs.Run, status: launching.JobStatus) -> None:
        log.warning(
            "attempt lost; retrying from the last checkpoint",
            extra={"run_id": run.run_id, "attempt": run.attempt, "reason": status.message},
        )
        self._track(
            self.runs.update(
                run.objective,
                run.run_id,
                lambda r: (
                    r.model_copy(
                        update={"status": "queued", "attempt": r.attempt + 1, "workload": ""}
                    )
                    if r.workload == status.name and not r.finished
                    else None
                ),
            )
        )
        self.wake.set()

    def conclude(self, run: runs.Run, outcome: outcomes.Outcome) -> runs.Run:
        """Publish the run's terminal event (idempotent id) and record how it ended.

        Serialised, and skipped for a run already recorded as ended: the API's cancel and
        the watcher's report of the deleted workload both conclude the same run.
        """
        with self._concluding:
            current = self.runs.get(run.objective, run.run_id)
            if current.finished:
                self._track(current)
                return current
            return self._conclude(current, outcome)

    def _conclude(self, run: runs.Run, outcome: outcomes.Outcome) -> runs.Run:
        reason_name = training_pb2.FailureReason.Name(outcome.reason) if outcome.reason else ""
        if outcome.kind == "succeeded":
            self._publish_success(run, adapter_uri=outcome.adapter_uri, metrics=outcome.metrics)
        elif outcome.kind == "failed":
            self._publish(
                run,
                phase="failed",
                event_id=envelope.derived_id(run.run_id, "failed"),
                payload=training_pb2.TrainingEvent.Failed(
                    reason=training_pb2.FailureReason.Name(outcome.reason),
                    message=outcome.message,
                ),
            )
            FAILURES.labels(run.objective, reason_name).inc()
        else:
            self._publish(
                run,
                phase="cancelled",
                event_id=envelope.derived_id(run.run_id, "cancelled"),
                payload=training_pb2.TrainingEvent.Cancelled(
                    actor=outcome.decided_by, reason=outcome.message
                ),
            )

        def ended(current: runs.Run) -> runs.Run | None:
            if current.finished:
                return None
            return current.model_copy(
                update={
                    "status": outcome.kind,
                    "finished_at": outcome.at,
                    "failure_reason": reason_name,
                    "message": outcome.message,
                    "adapter_uri": outcome.adapter_uri,
                    "metrics": outcome.metrics,
                }
            )

        final = self.runs.update(run.objective, run.run_id, ended)
        if final.status == outcome.kind:
            RUNS.labels(run.objective, outcome.kind).inc()
        log.info(
            "run %s",
            final.status,
            extra={"run_id": run.run_id, "objective": run.objective, "reason": reason_name},
        )
        self._track(final)
        self.wake.set()
        return final

    # -- cancelling -----------------------------------------------------------------------

    def cancel(self, objective: str, run_id: str, *, actor: str, reason: str) -> runs.Run:
        """Cancel a queued or running run; :class:`errors.Conflict` once it has ended."""
        run = self.runs.get(objective, run_id)
        mine = outcomes.Outcome(
            kind="cancelled",
            decided_by=actor,
            reason=training_pb2.FAILURE_REASON_CANCELLED_BY_USER,
            message=reason,
            at=runs.now(),
        )
        outcome = outcomes.claim(self._artifacts, objective, run_id, mine)
        if outcome is not mine:
            raise errors.Conflict(f"run {run_id} has already ended: {outcome.kind}")
        if run.workload:
            self._launcher.cancel(run.workload)
        return self.conclude(run, outcome)

    # -- recovery -------------------------------------------------------------------------

    def poll_open(self) -> None:
        """Ask the launcher about every submitted or running run and act on what it says."""
        with self._lock:
            active = [r for r in self._open.values() if r.status in ("submitted", "running")]
        for run in active:
            self.on_status(self._launcher.status(run.workload))

    def recover(self) -> None:
        """Rebuild the open runs from S3 and settle what happened while we were away."""
        for run in self.runs.list():
            if run.finished:
                self._track(run)
                continue
            outcome = outcomes.read(self._artifacts, run.objective, run.run_id)
            if outcome is not None:
                self.conclude(run, outcome)
                continue
            self._track(run)
            if run.status in ("submitted", "running"):
                self.on_status(self._launcher.status(run.workload))
        self._report_gauges()
        self.wake.set()

    def repeat_latest_successes(self) -> int:
        """Publish each objective's newest succeeded run's event again, under the same id.

        A broker restarted without storage loses the events on its topics; this way the
        evaluate service still hears of the newest adapter (it ignores a run it has seen).
        Returns how many events were published.
        """
        with self._lock:
            latest = list(self._latest_success.values())
        for run in latest:
            self._publish_success(run, adapter_uri=run.adapter_uri, metrics=run.metrics)
        return len(latest)

    # -- helpers --------------------------------------------------------------------------

    def _track(self, run: runs.Run, *, received: float | None = None) -> None:
        with self._lock:
            if run.status == "succeeded":
                known = self._latest_success.get(run.objective)
                if known is None or (known.finished_at or run.created_at) <= (
                    run.finished_at or run.created_at
                ):
                    self._latest_success[run.objective] = run
            if run.finished:
                self._open.pop(run.run_id, None)
                self._received.pop(run.run_id, None)
            else:
                self._open[run.run_id] = run
                if received is not None and run.status == "queued":
                    self._received.setdefault(run.run_id, received)
        if run.status == "queued":
            self.wake.set()

    def _run_of_workload(self, name: str) -> runs.Run | None:
        with self._lock:
            for run in self._open.values():
                if run.workload == name:
                    return run
        return None

    def _report_gauges(self) -> None:
        with self._lock:
            open_runs = list(self._open.values())
        QUEUED.set(sum(1 for r in open_runs if r.status == "queued"))
        active = [r for r in open_runs if r.status in ("submitted", "running")]
        RUNNING.set(len(active))
        GPUS.set(sum(r.gpus for r in active))

    def _publish_success(
        self, run: runs.Run, *, adapter_uri: str, metrics: Mapping[str, float]
    ) -> None:
        self._publish(
            run,
            phase="succeeded",
            event_id=envelope.derived_id(run.run_id, "succeeded"),
            payload=training_pb2.TrainingEvent.Succeeded(adapter_uri=adapter_uri, metrics=metrics),
        )

    def _publish(
        self,
        run: runs.Run,
        *,
        phase: str,
        event_id: str,
        payload: Any,
    ) -> None:
        event = training_pb2.TrainingEvent(
            run_id=run.run_id,
            objective=run.objective,
            dataset_id=run.dataset_id,
            objective_version=run.objective_version,
            attempt=run.attempt,
            occurred_at=envelope.timestamp(runs.now()),
        )
        getattr(event, phase).CopyFrom(payload)
        self._producer.publish(
            topics.TRAINING,
            event,
            key=run.objective,
            event=envelope.for_payload(event, id=event_id, source=SOURCE, subject=run.run_id),
        )
        self._producer.flush()


def effective_config(spec: objectives.ObjectiveSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """The objective's LoRA and training settings with a hand-submitted run's overrides.

    Overrides are validated as the objective spec would be: a wrong name or value is a
    :class:`errors.InvalidRequest` naming it, before anything is queued.
    """
    unknown = sorted(set(overrides) - {"lora", "training"})
    if unknown:
        raise errors.InvalidRequest(f"overrides may set 'lora' and 'training', not {unknown}")
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for group, model in (("lora", objectives.Lora), ("training", objectives.Training)):
        current = getattr(spec, group).model_dump()
        try:
            merged[group] = model.model_validate(
                {**current, **overrides.get(group, {})}
            ).model_dump()
        except pydantic.ValidationError as exc:
            problems += [
                f"{group}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            ]
    if problems:
        raise errors.InvalidRequest(f"invalid overrides: {'; '.join(problems)}")
    return merged
