"""The evaluate service's background work: training events in, evaluator workloads followed."""

from __future__ import annotations

from tunewire.core import bus, consuming, following, launching, runner, topics
from tunewire.evaluate import config, handlers


def loop(
    settings: config.EvaluateSettings,
    controller: handlers.EvaluationController,
    producer: bus.Producer,
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
    controller: handlers.EvaluationController,
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
