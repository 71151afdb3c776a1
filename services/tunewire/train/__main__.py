"""Entry point: ``python -m tunewire.train`` (also ``tunewire train``)."""

from __future__ import annotations

from tunewire.core.base import store
from tunewire.core.bus import producing
from tunewire.core.launchers import factory
from tunewire.core.process import assembly, authorization, runner
from tunewire.core.state import objectives
from tunewire.train import api, config, consumer
from tunewire.train.controller import RunController


def build(settings: config.TrainSettings) -> runner.Service:
    """Wire the train process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = producing.Producer(settings.kafka, client_id="tunewire-train")
    launcher = factory.build(settings.launcher, kind="train")
    controller = RunController(
        limits=settings.train,
        catalog=objectives.ObjectiveCatalog(artifacts),
        artifacts=artifacts,
        producer=producer,
        launcher=launcher,
        launcher_kind=settings.launcher.kind,
    )
    auth = authorization.authority("train", settings)
    return assembly.assemble(
        assembly.Parts(
            name="train",
            authority=auth,
            settings=settings,
            artifacts=artifacts,
            consumer=consumer.loop(settings, controller, producer),
            routers=[api.router(controller=controller, auth=auth)],
            workers=consumer.workers(settings, controller, launcher),
            on_exit=[producer.close],
        )
    )


def main() -> None:
    """Run the train service until SIGTERM."""
    assembly.main(
        "train",
        config.TrainSettings,
        build,
        detail=lambda settings: f" with the {settings.launcher.kind} launcher",
    )


if __name__ == "__main__":
    main()
