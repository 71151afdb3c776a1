"""The evaluate service's background work: training events in, evaluator workloads followed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from tunewire.core import bus, consuming, launching, runner, topics
from tunewire.evaluate import config, handlers

log = logging.getLogger(__name__)


class TrainingHandler:
    """A :class:`consuming.BatchHandler` that starts one evaluation per succeeded run."""

    def __init__(self, controller: handlers.EvaluationController) -> None:
        self._controller = controller

    def prefetch(self, messages: Sequence[bus.Message]) -> None:
        """Nothing to start early: most training events (progress) are skipped at once."""

    def handle(self, message: bus.Message) -> None:
        self._controller.accept(message)

    def flush(self) -> None:
        """Evaluations are written to S3 as they are accepted; nothing is pending."""


def loop(
    settings: config.EvaluateSettings,
    controller: handlers.EvaluationController,
    producer: bus.Producer,
) -> consuming.ConsumerLoop:
    """The consumer loop of ``tunewire.training``."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.TRAINING],
        handler=TrainingHandler(controller),
        producer=producer,
        flush_interval_s=0.2,
    )


def watcher(
    controller: handlers.EvaluationController, launcher: launching.Launcher
) -> runner.Worker:
    """A worker that settles evaluations left open by a previous process, then follows
    the evaluator workloads as the launcher reports them."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                controller.poll_open()
                break
            except Exception as exc:
                log.warning("recovering evaluations failed; retrying", extra={"error": repr(exc)})
                stop.wait(2.0)
        launcher.watch(_guarded(controller), stop)

    return run


def reconciler(
    controller: handlers.EvaluationController, limits: config.EvaluateLimits
) -> runner.Worker:
    """A worker that re-checks every open evaluation now and then, so that a report the
    watch delivered while S3 was down, or one only another replica saw, is never lost."""

    def run(stop: threading.Event) -> None:
        while not stop.wait(limits.reconcile_every_s):
            try:
                controller.poll_open()
            except Exception as exc:
                log.warning("reconciling evaluations failed", extra={"error": repr(exc)})

    return run


def _guarded(controller: handlers.EvaluationController) -> launching.StatusCallback:
    def on_change(status: launching.JobStatus) -> None:
        try:
            controller.on_status(status)
        except Exception as exc:
            log.error(
                "handling an evaluator status failed; the reconciler retries it",
                extra={"workload": status.name, "error": repr(exc)},
            )

    return on_change
