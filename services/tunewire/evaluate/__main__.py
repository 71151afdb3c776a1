"""Entry point: ``python -m tunewire.evaluate`` (also ``tunewire evaluate``)."""

from __future__ import annotations

from tunewire.core.base import store
from tunewire.core.bus import producing
from tunewire.core.launchers import factory
from tunewire.core.process import assembly, authorization, runner
from tunewire.core.state import objectives
from tunewire.evaluate import api, config, console, consumer
from tunewire.evaluate.controller import EvaluationController


def build(settings: config.EvaluateSettings) -> runner.Service:
    """Wire the evaluate process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = producing.Producer(settings.kafka, client_id="tunewire-evaluate")
    launcher = factory.build(settings.launcher, kind="evaluate")
    catalog = objectives.ObjectiveCatalog(artifacts)
    controller = EvaluationController(
        limits=settings.evaluate,
        catalog=catalog,
        artifacts=artifacts,
        producer=producer,
        launcher=launcher,
    )
    auth = authorization.authority("evaluate", settings)
    return assembly.assemble(
        assembly.Parts(
            name="evaluate",
            authority=auth,
            settings=settings,
            artifacts=artifacts,
            consumer=consumer.loop(settings, controller, producer),
            routers=[
                api.router(controller=controller, catalog=catalog, auth=auth),
                console.router(
                    controller=controller,
                    catalog=catalog,
                    artifacts=artifacts,
                    auth=auth,
                    settings=settings.console,
                ),
            ],
            workers=consumer.workers(settings, controller, launcher),
            on_exit=[producer.close],
        )
    )


def main() -> None:
    """Run the evaluate service until SIGTERM."""
    assembly.main(
        "evaluate",
        config.EvaluateSettings,
        build,
        detail=lambda settings: f" with the {settings.launcher.kind} launcher",
    )


if __name__ == "__main__":
    main()
