"""The train service's background work: dataset events in, runs started and followed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from tunewire.core import bus, consuming, launching, runner, topics
from tunewire.train import config, handlers

log = logging.getLogger(__name__)


class DatasetHandler:
    """A :class:`consuming.BatchHandler` that queues one run per dataset snapshot."""

    def __init__(self, controller: handlers.RunController) -> None:
        self._controller = controller

    def prefetch(self, messages: Sequence[bus.Message]) -> None:
        """Nothing to start early: a dataset event is one small S3 write."""

    def handle(self, message: bus.Message) -> None:
        self._controller.accept(message)

    def flush(self) -> None:
        """Runs are written to S3 as they are accepted; nothing is pending."""


def loop(
    settings: config.TrainSettings, controller: handlers.RunController, producer: bus.Producer
) -> consuming.ConsumerLoop:
    """The consumer loop of ``tunewire.datasets``."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.DATASETS],
        handler=DatasetHandler(controller),
        producer=producer,
        flush_interval_s=0.2,
    )


def scheduler(controller: handlers.RunController, limits: config.TrainLimits) -> runner.Worker:
    """A worker that starts queued runs as soon as they arrive or a slot frees up.

    When nothing woke it for a while it also asks the launcher about every open run, so a
    status report that could not be handled (S3 briefly down) is never lost for good.
    """

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            woken = controller.wake.wait(limits.reconcile_every_s)
            if stop.is_set():
                return
            controller.wake.clear()
            try:
                if not woken:
                    controller.poll_open()
                controller.start_due()
            except Exception as exc:
                log.warning("scheduling failed; retrying", extra={"error": repr(exc)})
                stop.wait(1.0)
                controller.wake.set()

    return run


def watcher(controller: handlers.RunController, launcher: launching.Launcher) -> runner.Worker:
    """A worker that settles runs left open by a previous process, then follows workloads."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                controller.recover()
                break
            except Exception as exc:
                log.warning("recovering runs failed; retrying", extra={"error": repr(exc)})
                stop.wait(2.0)
        launcher.watch(_guarded(controller), stop)

    return run


def _guarded(controller: handlers.RunController) -> launching.StatusCallback:
    def on_change(status: launching.JobStatus) -> None:
        try:
            controller.on_status(status)
        except Exception as exc:
            log.error(
                "handling a workload status failed; the next report retries it",
                extra={"workload": status.name, "error": repr(exc)},
            )

    return on_change
