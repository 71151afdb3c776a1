"""The evaluate service's background work: training events in, evaluator workloads followed."""

from __future__ import annotations

from tunewire.core.bus import consuming, producing, topics
from tunewire.core.launchers import following, launching
from tunewire.core.process import runner
from tunewire.evaluate import config
from tunewire.evaluate.controller import EvaluationController


def loop(
    settings: config.EvaluateSettings,
    controller: EvaluationController,
    producer: producing.Producer,
) -> consuming.ConsumerLoop:
    """The consumer loop of ``tunewire.training``: one evaluation per succeeded run (other
    training events are skipped at once)."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.TRAINING],
        handler=consuming.EachMessage(controller.accept),
        producer=producer,
        flush_interval_s=0.2,
    )


def workers(
    settings: config.EvaluateSettings,
    controller: EvaluationController,
    launcher: launching.Launcher,
) -> dict[str, runner.Worker]:
    """The launcher's watch (after settling what a previous process left open) and the
    periodic re-check of open evaluations."""
    return {
        "watcher": following.watcher(
            recover=controller.poll_open,
            on_status=controller.on_status,
            launcher=launcher,
            what="evaluations",
        ),
        "reconciler": following.reconciler(
            poll=controller.poll_open,
            every_s=settings.evaluate.reconcile_every_s,
            what="evaluations",
        ),
    }
