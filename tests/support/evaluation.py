"""The evaluate tests' harness: an evaluation controller on a stack's S3 and Kafka, with a
launcher that records what it is asked to start, and the messages the tests feed it."""

from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from typing import Any

from tests.support import kafka_io
from tunewire import samples
from tunewire.contracts.v1 import evaluations_pb2, training_pb2
from tunewire.core.base import store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.launchers import launching
from tunewire.core.state import layout, objectives, outcomes
from tunewire.evaluate import config, records
from tunewire.evaluate.controller import EvaluationController
from tunewire.train import runs


class RecordingLauncher:
    """A :class:`launching.Launcher` that records what it is asked to start.

    The tests play the evaluator themselves (they write metrics.json) and report its end
    through :meth:`EvaluationController.on_status`, as the launcher's watch would.
    """

    def __init__(self) -> None:
        self.created: dict[str, launching.WorkloadSpec] = {}
        self.launch_calls = 0
        self.cancelled: list[str] = []
        self.unreachable = False
        """When True, launches fail as they do while the cluster's API is down."""

    def launch(self, spec: launching.WorkloadSpec) -> bool:
        self.launch_calls += 1
        if self.unreachable:
            raise ConnectionError("the launcher's API is unreachable")
        if spec.name in self.created:
            return False
        self.created[spec.name] = spec
        return True

    def status(self, name: str) -> launching.JobStatus:
        phase = launching.JobPhase.RUNNING if name in self.created else launching.JobPhase.MISSING
        return launching.JobStatus(name=name, phase=phase)

    def cancel(self, name: str) -> bool:
        self.cancelled.append(name)
        return self.created.pop(name, None) is not None

    def watch(self, on_change: launching.StatusCallback, stop: threading.Event) -> None:
        stop.wait()


@dataclasses.dataclass
class Harness:
    """The controller under test and the things around it."""

    controller: EvaluationController
    launcher: RecordingLauncher
    artifacts: store.ArtifactStore
    catalog: objectives.ObjectiveCatalog
    producer: producing.Producer
    bootstrap: str

    def controller_with(self, launcher: launching.Launcher) -> EvaluationController:
        """Another controller on the same bucket and broker, with another launcher."""
        return EvaluationController(
            limits=config.EvaluateLimits(max_attempts=2),
            catalog=self.catalog,
            artifacts=self.artifacts,
            producer=self.producer,
            launcher=launcher,
        )

    def objective(
        self, *, approval: str = "auto", gates: list[dict[str, Any]] | None = None
    ) -> objectives.ObjectiveVersion:
        """Register a fresh objective (unique name) with the given gates and approval."""
        spec = copy.deepcopy(samples.support_intent_spec())
        spec["name"] = f"eval-{uuid.uuid4().hex[:10]}"
        spec["approval"] = approval
        spec["training"]["gpu"] = 1
        if gates is not None:
            spec["gates"] = gates
        return self.catalog.register(objectives.parse_spec(spec), actor="test")

    def succeeded(self, objective: str, run_id: str, *, version: int = 1) -> producing.Message:
        """The training event that announces a run's adapter, the outcome the trainer
        records in S3 before train announces it, and (for a registered objective, unless a
        test wrote a real snapshot there) its dataset's manifest as label writes it."""
        dataset_id = f"ds-{run_id}"
        if objective in {o.name for o in self.catalog.latest_all()}:
            self.artifacts.put_json(
                layout.dataset(objective, dataset_id) + layout.MANIFEST,
                {
                    "dataset_id": dataset_id,
                    "objective": objective,
                    "objective_version": version,
                    "instruction": objectives.instruction(
                        self.catalog.get(objective, version).spec
                    ),
                },
                only_if_absent=True,
            )
        adapter_uri = self.artifacts.uri(layout.adapter(objective, run_id))
        outcomes.claim(
            self.artifacts,
            objective,
            run_id,
            outcomes.Outcome(
                kind="succeeded", decided_by="trainer", adapter_uri=adapter_uri, at=runs.now()
            ),
        )
        event = training_pb2.TrainingEvent(
            run_id=run_id,
            objective=objective,
            dataset_id=dataset_id,
            objective_version=version,
            attempt=1,
            succeeded=training_pb2.TrainingEvent.Succeeded(
                adapter_uri=adapter_uri,
                metrics={"train_loss": 0.4},
            ),
        )
        return message(event, event_id=envelope.derived_id(run_id, "succeeded"))

    def write_metrics(
        self,
        record: records.EvaluationRecord,
        *,
        candidate: dict[str, float],
        champion: dict[str, float] | None = None,
        base: dict[str, float] | None = None,
    ) -> None:
        """Play the evaluator: write metrics.json where the record says it goes."""

        def scores(ref: str, values: dict[str, float]) -> dict[str, Any]:
            return {"model_ref": ref, "values": values, "examples": 40}

        self.artifacts.put_json(
            record.metrics_key,
            {
                "objective": record.objective,
                "objective_version": record.objective_version,
                "run_id": record.run_id,
                "dataset_id": record.dataset_id,
                "task": "classification",
                "examples": 40,
                "base": scores("builtin://tiny-llama", base or {"accuracy": 0.25}),
                "champion": (
                    scores(str(record.champion_run_id), champion) if champion is not None else None
                ),
                "candidate": scores(record.run_id, candidate),
                "disagreements": [],
                "seconds": 1.5,
            },
        )

    def records_of(self, objective: str, run_id: str) -> records.EvaluationRecord:
        """The evaluation record as stored now."""
        return self.controller.records.get(objective, run_id)

    def finish(
        self, record: records.EvaluationRecord, phase: launching.JobPhase, **kw: Any
    ) -> None:
        """Report the end of the record's current workload, as the launcher's watch would."""
        self.controller.on_status(launching.JobStatus(name=record.workload, phase=phase, **kw))

    def results(
        self, objective: str, *, count: int, timeout_s: float = 20
    ) -> list[tuple[str, evaluations_pb2.EvaluationResult]]:
        """The objective's evaluation events (ce_id, payload), once ``count`` arrived and
        nothing more came for a moment."""
        reader = kafka_io.TopicReader(self.bootstrap, topics.EVALUATIONS)
        try:

            def mine(found: list[Any]) -> list[Any]:
                return [m for m in found if m.key == objective.encode()]

            reader.read_until(lambda found: len(mine(found)) >= count, timeout_s=timeout_s)
            reader.drain(quiet_s=1.0)
            return [
                (
                    (kafka_io.header(m, "ce_id") or b"").decode(),
                    evaluations_pb2.EvaluationResult.FromString(m.value),
                )
                for m in mine(reader.messages)
            ]
        finally:
            reader.close()


def message(payload: Any, *, event_id: str) -> producing.Message:
    """A consumed message carrying ``payload`` as tunewire publishes it."""
    headers = envelope.for_payload(payload, id=event_id, source="test").headers()
    return producing.Message(
        topic=topics.TRAINING,
        partition=0,
        offset=0,
        key=payload.objective.encode(),
        value=payload.SerializeToString(),
        headers=headers,
    )
