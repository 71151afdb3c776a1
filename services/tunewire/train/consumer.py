"""The train service's background work: dataset events in, runs started and followed."""

from __future__ import annotations

import logging
import threading

from tunewire.core.bus import consuming, producing, topics
from tunewire.core.launchers import following, launching
from tunewire.core.process import runner
from tunewire.train import config
from tunewire.train.controller import RunController

log = logging.getLogger(__name__)


def loop(
    settings: config.TrainSettings, controller: RunController, producer: producing.Producer
) -> consuming.ConsumerLoop:
    """The consumer loop of ``tunewire.datasets``: one queued run per snapshot event."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.DATASETS],
        handler=consuming.EachMessage(controller.accept),
        producer=producer,
        flush_interval_s=0.2,
    )


def scheduler(controller: RunController) -> runner.Worker:
    """A worker that starts queued runs as soon as they arrive or a slot frees up."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            controller.wake.wait(1.0)
            if stop.is_set():
                return
            controller.wake.clear()
            try:
                controller.start_due()
            except Exception as exc:
                log.warning("scheduling failed; retrying", extra={"error": repr(exc)})
                stop.wait(1.0)
                controller.wake.set()

    return run


def workers(
    settings: config.TrainSettings,
    controller: RunController,
    launcher: launching.Launcher,
) -> dict[str, runner.Worker]:
    """The scheduler, the launcher's watch, the periodic re-check of open runs and the
    repeated announcement of the newest successes."""
    return {
        "scheduler": scheduler(controller),
        "watcher": following.watcher(
            recover=controller.recover,
            on_status=controller.on_status,
            launcher=launcher,
            what="training runs",
        ),
        "reconciler": following.reconciler(
            poll=controller.poll_open, every_s=settings.train.reconcile_every_s, what="runs"
        ),
        "repeater": following.reconciler(
            poll=controller.repeat_latest_successes,
            every_s=settings.train.repeat_success_every_s,
            what="successes to announce again",
        ),
    }
