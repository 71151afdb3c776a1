"""Entry point: ``python -m tunewire.evaluate`` (also ``tunewire evaluate``)."""

from __future__ import annotations

import logging

from tunewire.core import bus, http, launching, logs, objectives, runner, store
from tunewire.evaluate import api, config, console, consumer, handlers

log = logging.getLogger("tunewire.evaluate")


def build(settings: config.EvaluateSettings) -> runner.Service:
    """Wire the evaluate process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = bus.Producer(settings.kafka, client_id="tunewire-evaluate")
    launcher = launching.build(settings.launcher, kind="evaluate")
    catalog = objectives.ObjectiveCatalog(artifacts)
    controller = handlers.EvaluationController(
        limits=settings.evaluate,
        catalog=catalog,
        artifacts=artifacts,
        producer=producer,
        launcher=launcher,
    )
    training_loop = consumer.loop(settings, controller, producer)
    auth = http.BearerAuth(settings.api_tokens)
    service: runner.Service

    probes = http.service_probes(
        artifacts_check=artifacts.check,
        kafka=settings.kafka,
        consumer_check=training_loop.check_ready,
        alive=lambda: service.alive(),
    )
    app = http.create_app(
        title="tunewire evaluate",
        probes=probes,
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
    )
    service = runner.Service(
        app=app,
        host=settings.http.host,
        port=settings.http.port,
        workers={
            "consumer": training_loop.run,
            **consumer.workers(settings, controller, launcher),
        },
        on_exit=producer.close,
    )
    return service


def main() -> None:
    """Build settings once, configure logs, run until SIGTERM."""
    settings = config.EvaluateSettings()
    logs.configure(settings.log_level)
    log.info(
        "starting evaluate on port %d with the %s launcher",
        settings.http.port,
        settings.launcher.kind,
    )
    build(settings).run()


if __name__ == "__main__":
    main()
