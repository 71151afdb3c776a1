"""The launch path end to end with the real local launcher and a stand-in evaluator process."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

from tests.evaluate import fake_evaluator
from tests.support import evaluation
from tests.support.waiting import eventually
from tunewire.contracts.v1 import evaluations_pb2
from tunewire.core.launchers import following, launching, localjobs
from tunewire.stack import embedded

REPO = Path(__file__).resolve().parents[2]


class StandInEvaluator:
    """The local launcher, running the stand-in evaluator module instead of the real one."""

    def __init__(self, inner: localjobs.LocalLauncher) -> None:
        self._inner = inner

    def launch(self, spec: launching.WorkloadSpec) -> bool:
        return self._inner.launch(dataclasses.replace(spec, module=fake_evaluator.MODULE))

    def status(self, name: str) -> launching.JobStatus:
        return self._inner.status(name)

    def cancel(self, name: str) -> bool:
        return self._inner.cancel(name)

    def watch(self, on_change: launching.StatusCallback, stop: threading.Event) -> None:
        self._inner.watch(on_change, stop)


def test_a_local_evaluator_is_followed_to_a_published_decision(
    harness: evaluation.Harness, stack: embedded.EmbeddedStack, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TUNEWIRE_ENVIRONMENT": "development",  # the stack's Kafka is PLAINTEXT
        "TUNEWIRE_S3__ENDPOINT_URL": stack.s3_endpoint_url,
        "TUNEWIRE_S3__BUCKET": harness.artifacts.bucket,
        "FAKE_EVALUATOR_ACCURACY": "0.875",
    }
    launcher = StandInEvaluator(
        localjobs.LocalLauncher(
            launching.LocalLauncherSettings(workdir=str(tmp_path)),
            kind="evaluate",
            env=env,
            poll_s=0.05,
        )
    )
    controller = harness.controller_with(launcher)
    objective = harness.objective(gates=[{"metric": "accuracy", "min": 0.8}]).name
    stop = threading.Event()
    follow = following.watcher(
        recover=controller.poll_open,
        on_status=controller.on_status,
        launcher=launcher,
        what="evaluations",
    )
    watcher = threading.Thread(target=follow, args=(stop,))
    watcher.start()
    try:
        record = controller.accept(harness.succeeded(objective, "run-1"))
        assert record is not None
        workload = record.workload

        def evaluated() -> None:
            status = controller.records.get(objective, "run-1").status
            assert status != "evaluating", launcher.status(workload)

        eventually(evaluated, timeout_s=30, interval_s=0.1)
    finally:
        stop.set()
        watcher.join(10)

    final = controller.records.get(objective, "run-1")
    assert (final.decision, final.attempt, final.failures) == ("approved", 1, [])
    assert controller.registry.get(objective).champion == "run-1"
    assert launcher.status(record.workload).phase is launching.JobPhase.SUCCEEDED
    [(_, result)] = harness.results(objective, count=1)
    assert result.decision == evaluations_pb2.DECISION_APPROVED
    assert result.candidate.values["accuracy"] == 0.875
