"""The life of an evaluation, from a trained adapter to a published decision.

:class:`EvaluationController` is what the training consumer, the launcher's watch, the
reconciler and the HTTP API all drive. A training run's success starts an evaluation: a
record written only if absent, then the evaluator workload under an idempotent name, with the
registry's current champion measured beside the candidate. When the evaluator succeeds, its
``metrics.json`` is gated (:mod:`tunewire.evaluate.gating`) and the decision is made durable
in this order: the registry (compare-and-swap; an approval moves the champion), then the
``EvaluationResult`` event (its id derived from the run and the decision, so a repeat after a
crash is the same event), then the record. A failed evaluator is relaunched up to
``max_attempts`` and then rejected with the launcher's reason. With ``approval: manual`` a
candidate that passes its gates is held for review until a person approves or rejects it.
The evaluator's warnings (an adapter that answered exactly as the base model) join the
decision's reason; they change no decision.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Collection, Sequence

import prometheus_client
from google.protobuf import message as protobuf_message

from tunewire.contracts.v1 import evaluations_pb2, training_pb2
from tunewire.core.base import errors, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.launchers import launching
from tunewire.core.state import layout, model_input, objectives, outcomes, registry
from tunewire.evaluate import config, gating, records, reports

log = logging.getLogger(__name__)

SOURCE = "tunewire/evaluate"
EVALUATOR = "evaluator"
"""``decided_by`` of automatic decisions."""

DECISIONS = prometheus_client.Counter(
    "tunewire_evaluate_decisions_total",
    "Decisions on candidate adapters (approved, rejected, needs_review), by objective.",
    ["objective", "decision"],
)
GATE_FAILURES = prometheus_client.Counter(
    "tunewire_evaluate_gate_failures_total",
    "Gates that rejected a candidate, by objective and metric.",
    ["objective", "metric"],
)
EVALUATION_SECONDS = prometheus_client.Histogram(
    "tunewire_evaluate_evaluation_seconds",
    "From a training run's success to the evaluator's decision (retries included).",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800),
)
RUNNING = prometheus_client.Gauge(
    "tunewire_evaluate_workloads_running",
    "Evaluator workloads this replica follows that are pending or running.",
)

_DECISIONS: dict[registry.Decision, evaluations_pb2.Decision] = {
    "approved": evaluations_pb2.DECISION_APPROVED,
    "rejected": evaluations_pb2.DECISION_REJECTED,
    "needs_review": evaluations_pb2.DECISION_NEEDS_REVIEW,
}


class EvaluationController:
    """Starts, follows, gates and records the evaluation of each trained adapter."""

    def __init__(
        self,
        *,
        limits: config.EvaluateLimits,
        catalog: objectives.ObjectiveCatalog,
        artifacts: store.ArtifactStore,
        producer: producing.Producer,
        launcher: launching.Launcher,
    ) -> None:
        self._limits = limits
        self._catalog = catalog
        self._producer = producer
        self._launcher = launcher
        self.records = records.RecordStore(artifacts)
        self.registry = registry.Registry(artifacts)
        self._artifacts = artifacts
        self._workloads: dict[str, tuple[str, str]] = {}
        """Open evaluations this replica follows: workload name → (objective, run id)."""
        self._phases: dict[str, launching.JobPhase] = {}
        self._lock = threading.RLock()

    # -- intake ---------------------------------------------------------------------------

    def accept(self, message: producing.Message) -> records.EvaluationRecord | None:
        """Start evaluating the adapter of a succeeded training run (once per run)."""
        event = training_pb2.TrainingEvent()
        try:
            event.ParseFromString(message.value)
        except protobuf_message.DecodeError as exc:
            raise errors.InvalidEvent(f"not a TrainingEvent: {exc}", kind="malformed") from None
        if event.WhichOneof("phase") != "succeeded":
            return None
        if not (event.objective and event.run_id and event.dataset_id):
            raise errors.InvalidEvent(
                "a succeeded TrainingEvent needs objective, run_id and dataset_id",
                kind="invalid",
            )
        if not event.succeeded.adapter_uri:
            raise errors.InvalidEvent(
                f"run {event.run_id} succeeded without an adapter_uri", kind="invalid"
            )
        try:
            objective = self._catalog.get(event.objective, event.objective_version or None)
        except errors.NotFound as exc:
            raise errors.InvalidEvent(exc.message, kind="unknown_objective") from None
        self._vouch(objective.name, event)
        record = self.records.find(objective.name, event.run_id)
        if record is None:
            record, _ = self.records.create(self._new_record(objective, event))
        if record.status != "evaluating":
            # Train announces its newest success again now and then: quiet at info level.
            log.debug(
                "already evaluated; nothing to launch",
                extra={"objective": record.objective, "run_id": record.run_id},
            )
            return record
        self.records.mark_open(record)
        self.registry.register(
            record.objective,
            run_id=record.run_id,
            dataset_id=record.dataset_id,
            objective_version=record.objective_version,
            adapter_uri=record.adapter_uri,
            metrics_uri=record.metrics_uri,
            contract=self._contract(record),
            at=record.created_at,
        )
        self._launch(record)
        return record

    def _vouch(self, objective: str, event: training_pb2.TrainingEvent) -> None:
        """Refuse a success that train did not record: the event names a run id, a dataset
        and an adapter, and only the run's own outcome in S3 (written by the trainer before
        the event) says they are real. A forged event is dead-lettered with kind ``forged``."""
        run_id, adapter_uri = event.run_id, event.succeeded.adapter_uri
        for what, value in (("run id", run_id), ("dataset id", event.dataset_id)):
            if not layout.is_segment(value):
                raise errors.InvalidEvent(f"the {what} {value!r} is not an id", kind="forged")
        expected = self._artifacts.uri(layout.adapter(objective, run_id))
        if adapter_uri != expected:
            raise errors.InvalidEvent(
                f"run {run_id} names the adapter {adapter_uri}, not where its adapter is "
                f"written ({expected})",
                kind="forged",
            )
        outcome = outcomes.read(self._artifacts, objective, run_id)
        if outcome is None or outcome.kind != "succeeded" or outcome.adapter_uri != adapter_uri:
            raise errors.InvalidEvent(
                f"objective {objective!r} has no succeeded run {run_id} with that adapter",
                kind="forged",
            )

    def _contract(self, record: records.EvaluationRecord) -> model_input.InputContract:
        """How the adapter's training data was prepared: the objective version the dataset
        was cut from and the instruction its manifest records (what the examples carry)."""
        manifest = self._artifacts.get_json(
            layout.dataset(record.objective, record.dataset_id) + layout.MANIFEST
        )
        version = self._catalog.get(record.objective, int(manifest["objective_version"]))
        prepared = model_input.contract(version.spec)
        return prepared.model_copy(update={"instruction": manifest["instruction"]})

    def _new_record(
        self, objective: objectives.ObjectiveVersion, event: training_pb2.TrainingEvent
    ) -> records.EvaluationRecord:
        champion = self.registry.get(objective.name).champion_version()
        key = records.metrics_key(objective.name, event.run_id)
        return records.EvaluationRecord(
            objective=objective.name,
            objective_version=objective.version,
            run_id=event.run_id,
            dataset_id=event.dataset_id,
            dataset_uri=self._artifacts.uri(layout.dataset(objective.name, event.dataset_id)),
            adapter_uri=event.succeeded.adapter_uri,
            champion_run_id=champion.run_id if champion else None,
            champion_uri=champion.adapter_uri if champion else None,
            metrics_key=key,
            metrics_uri=self._artifacts.uri(key),
            gpus=objective.spec.training.gpu,
            workload=records.workload_name(objective.name, event.run_id, 1),
            created_at=_now(),
        )

    def _launch(self, record: records.EvaluationRecord) -> None:
        """Start the record's current workload; a failure is left to the reconciler."""
        self._track(record)
        context = {"objective": record.objective, "run_id": record.run_id}
        try:
            created = self._launcher.launch(record.workload_spec())
        except Exception as exc:
            log.warning(
                "launching the evaluator failed; the reconciler retries",
                extra={**context, "error": repr(exc)},
            )
            return
        log.info(
            "evaluator %s (attempt %d)",
            "launched" if created else "already launched",
            record.attempt,
            extra={**context, "workload": record.workload},
        )

    # -- following ------------------------------------------------------------------------

    def on_status(self, status: launching.JobStatus) -> None:
        """React to the launcher's report on one evaluator workload."""
        with self._lock:
            located = self._workloads.get(status.name)
            if located is None:
                return
            record = self.records.find(*located)
            if record is None or record.status != "evaluating" or record.workload != status.name:
                self._forget(status.name)
                return
            self._phases[status.name] = status.phase
            self._report_running()
            phase = status.phase
            if phase is launching.JobPhase.RUNNING and record.started_at is None:
                self.records.update(
                    record.objective,
                    record.run_id,
                    lambda r: (
                        r.model_copy(update={"started_at": _now(), "logs": status.logs})
                        if r.workload == status.name and r.started_at is None
                        else None
                    ),
                )
            elif phase is launching.JobPhase.SUCCEEDED:
                self._gate(record)
            elif phase is launching.JobPhase.FAILED:
                self._failed(record, status)
            elif phase is launching.JobPhase.MISSING:
                if record.started_at is None:
                    self._launch(record)  # never created, or lost before it ran
                else:
                    self._failed(
                        record,
                        launching.JobStatus(
                            name=status.name,
                            phase=launching.JobPhase.FAILED,
                            reason=training_pb2.FAILURE_REASON_UNKNOWN,
                            message="the evaluator workload disappeared while running",
                        ),
                    )

    def poll_open(self) -> None:
        """Re-read the open evaluations from S3 and ask the launcher about each.

        Catches up with what finished while this process was down, with reports a failure
        kept us from handling, and with evaluations another replica started.
        """
        for objective, run_id in list(self.records.open()):
            context = {"objective": objective, "run_id": run_id}
            try:
                record = self.records.find(objective, run_id)
                if record is None or record.status != "evaluating":
                    if record is not None:
                        self.records.mark_closed(record)
                    continue
                self._track(record)
                self.on_status(self._launcher.status(record.workload))
            except Exception as exc:
                log.warning(
                    "checking an open evaluation failed; retrying later",
                    extra={**context, "error": repr(exc)},
                )

    def _gate(self, record: records.EvaluationRecord) -> None:
        try:
            report = reports.read(
                self._artifacts,
                record.metrics_key,
                objective=record.objective,
                run_id=record.run_id,
            )
        except reports.UNREADABLE as exc:
            self._failed(
                record,
                launching.JobStatus(
                    name=record.workload,
                    phase=launching.JobPhase.FAILED,
                    reason=training_pb2.FAILURE_REASON_TRAINER_ERROR,
                    message=f"the evaluator exited without a usable metrics.json: {exc}",
                ),
            )
            return
        spec = self._catalog.get(record.objective, record.objective_version).spec
        champion = report.champion.values if report.champion else None
        if champion is None and record.champion_run_id:
            champion = {}  # measured without the champion it was asked to: margins fail
        verdict = gating.check(spec.gates, candidate=report.candidate.values, champion=champion)
        reason = "; ".join([verdict.reason(), *(f"warning: {w}" for w in report.warnings)])
        decision: registry.Decision
        if not verdict.passed:
            decision = "rejected"
        elif spec.approval == "manual":
            decision = "needs_review"
            reason += "; waiting for a person to approve or reject it (approval: manual)"
        else:
            decision = "approved"
        self._settle(
            record,
            decision=decision,
            actor=EVALUATOR,
            reason=reason,
            gates=[_gate_record(c) for c in verdict.checks],
            report=report,
            allowed_from=registry.UNDECIDED,
        )

    def _failed(self, record: records.EvaluationRecord, status: launching.JobStatus) -> None:
        reason_name = training_pb2.FailureReason.Name(
            status.reason or training_pb2.FAILURE_REASON_UNKNOWN
        )
        what = f"attempt {record.attempt} failed ({reason_name}): {status.message or 'no detail'}"
        context = {"objective": record.objective, "run_id": record.run_id}
        if status.reason in launching.LEFT_BEHIND:
            self._launcher.cancel(status.name)
        if record.attempt >= self._limits.max_attempts:
            log.warning("evaluator failed for the last time; rejecting", extra=context)
            self._settle(
                record,
                decision="rejected",
                actor=EVALUATOR,
                reason=f"the evaluator failed {record.attempt} time(s); last: {what}",
                gates=[],
                report=None,
                allowed_from=registry.UNDECIDED,
            )
            return
        following = records.workload_name(record.objective, record.run_id, record.attempt + 1)

        def retried(current: records.EvaluationRecord) -> records.EvaluationRecord | None:
            if current.status != "evaluating" or current.workload != status.name:
                return None
            return current.model_copy(
                update={
                    "attempt": current.attempt + 1,
                    "workload": following,
                    "started_at": None,
                    "logs": "",
                    "failures": [*current.failures, what],
                }
            )

        log.warning("evaluator failed; retrying", extra={**context, "error": what})
        updated = self.records.update(record.objective, record.run_id, retried)
        self._forget(status.name)
        if updated.status == "evaluating" and updated.workload == following:
            self._launch(updated)

    # -- reviewing ------------------------------------------------------------------------

    def review(
        self, objective: str, run_id: str, *, approve: bool, actor: str, reason: str
    ) -> records.EvaluationRecord:
        """A person's decision on a candidate held for review (``approval: manual``).

        :class:`errors.NotFound` for an unknown evaluation; :class:`errors.Conflict` unless
        it is waiting for review (including when someone else decided it first).
        """
        record = self.records.get(objective, run_id)
        if record.status != "needs_review":
            decided = f" ({record.decision} by {record.decided_by})" if record.decision else ""
            raise errors.Conflict(
                f"run {run_id} of {objective!r} is {record.status}{decided}, not waiting for "
                "review; only a candidate held for review (approval: manual) can be approved "
                "or rejected"
            )
        return self._settle(
            record,
            decision="approved" if approve else "rejected",
            actor=actor,
            reason=reason,
            gates=record.gates,
            # Without a readable report the decision stands on the record's gates alone.
            report=self.report(record),
            allowed_from=registry.HELD,
        )

    def report(self, record: records.EvaluationRecord) -> reports.MetricsReport | None:
        """The evaluator's metrics of a record, or None while there is no usable one."""
        try:
            return reports.read(
                self._artifacts,
                record.metrics_key,
                objective=record.objective,
                run_id=record.run_id,
            )
        except reports.UNREADABLE:
            return None

    # -- deciding -------------------------------------------------------------------------

    def _settle(
        self,
        record: records.EvaluationRecord,
        *,
        decision: registry.Decision,
        actor: str,
        reason: str,
        gates: Sequence[records.GateRecord],
        report: reports.MetricsReport | None,
        allowed_from: Collection[registry.Status],
    ) -> records.EvaluationRecord:
        """Registry, then event, then record: each step idempotent, so a repeat is safe."""
        document = self.registry.decide(
            record.objective,
            record.run_id,
            decision=decision,
            actor=actor,
            reason=reason,
            metrics=report.candidate.values if report else None,
            allowed_from=allowed_from,
        )
        version = document.versions[record.run_id]
        decided_at = version.decided_at or _now()
        self._publish(
            record,
            decision=decision,
            actor=actor,
            reason=reason,
            gates=gates,
            report=report,
            decided_at=decided_at,
        )
        from_status = "evaluating" if actor == EVALUATOR else "needs_review"
        to_status: records.RecordStatus = (
            "needs_review" if decision == "needs_review" else "decided"
        )
        changed = False

        def settled(current: records.EvaluationRecord) -> records.EvaluationRecord | None:
            nonlocal changed
            changed = False
            if current.status != from_status:
                return None
            changed = True
            return current.model_copy(
                update={
                    "status": to_status,
                    "decision": decision,
                    "decided_by": actor,
                    "reason": reason,
                    "decided_at": decided_at,
                    "gates": list(gates),
                }
            )

        final = self.records.update(record.objective, record.run_id, settled)
        if final.status != "evaluating":
            self.records.mark_closed(final)
            self._forget(record.workload)
        if changed:
            DECISIONS.labels(record.objective, decision).inc()
            if actor == EVALUATOR:
                EVALUATION_SECONDS.observe((_now() - record.created_at).total_seconds())
                for gate in gates:
                    if not gate.passed:
                        GATE_FAILURES.labels(record.objective, gate.metric).inc()
            log.info(
                "candidate %s by %s: %s",
                decision,
                actor,
                reason,
                extra={"objective": record.objective, "run_id": record.run_id},
            )
        return final

    def _publish(
        self,
        record: records.EvaluationRecord,
        *,
        decision: registry.Decision,
        actor: str,
        reason: str,
        gates: Sequence[records.GateRecord],
        report: reports.MetricsReport | None,
        decided_at: datetime.datetime,
    ) -> None:
        result = evaluations_pb2.EvaluationResult(
            objective=record.objective,
            objective_version=record.objective_version,
            run_id=record.run_id,
            dataset_id=record.dataset_id,
            metrics_uri=record.metrics_uri,
            gates=[
                evaluations_pb2.GateResult(
                    metric=g.metric,
                    rule=g.rule,
                    threshold=g.threshold,
                    value=g.value,
                    passed=g.passed,
                )
                for g in gates
            ],
            decision=_DECISIONS[decision],
            decided_by=actor,
            reason=reason,
            decided_at=envelope.timestamp(decided_at),
        )
        if report is not None:
            result.base.CopyFrom(report.base.message())
            result.candidate.CopyFrom(report.candidate.message())
            if report.champion is not None:
                result.champion.CopyFrom(report.champion.message())
        event_id = envelope.derived_id(
            record.objective, record.run_id, "evaluation", decision, actor
        )
        self._producer.publish(
            topics.EVALUATIONS,
            result,
            key=record.objective,
            event=envelope.for_payload(result, id=event_id, source=SOURCE, subject=record.run_id),
        )
        self._producer.flush()

    # -- helpers --------------------------------------------------------------------------

    def _track(self, record: records.EvaluationRecord) -> None:
        with self._lock:
            self._workloads[record.workload] = (record.objective, record.run_id)

    def _forget(self, workload: str) -> None:
        with self._lock:
            self._workloads.pop(workload, None)
            self._phases.pop(workload, None)
            self._report_running()

    def _report_running(self) -> None:
        active = (launching.JobPhase.PENDING, launching.JobPhase.RUNNING)
        RUNNING.set(sum(1 for phase in self._phases.values() if phase in active))


def _gate_record(checked: gating.Check) -> records.GateRecord:
    result = checked.result
    return records.GateRecord(
        metric=result.metric,
        rule=result.rule,
        threshold=result.threshold,
        value=result.value,
        passed=result.passed,
        note=checked.note,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
