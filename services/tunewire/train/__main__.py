"""Entry point: ``python -m tunewire.train`` (also ``tunewire train``)."""

from __future__ import annotations

import logging

from tunewire.core import bus, http, launching, logs, objectives, runner, store
from tunewire.train import api, config, consumer, handlers

log = logging.getLogger("tunewire.train")


def build(settings: config.TrainSettings) -> runner.Service:
    """Wire the train process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = bus.Producer(settings.kafka, client_id="tunewire-train")
    launcher = launching.build(settings.launcher, kind="train")
    controller = handlers.RunController(
        limits=settings.train,
        catalog=objectives.ObjectiveCatalog(artifacts),
        artifacts=artifacts,
        producer=producer,
        launcher=launcher,
        launcher_kind=settings.launcher.kind,
    )
    datasets_loop = consumer.loop(settings, controller, producer)
    auth = http.BearerAuth(settings.api_tokens)
    service: runner.Service

    probes = http.service_probes(
        artifacts_check=artifacts.check,
        kafka=settings.kafka,
        consumer_check=datasets_loop.check_ready,
        alive=lambda: service.alive(),
    )
    app = http.create_app(
        title="tunewire train",
        probes=probes,
        routers=[api.router(controller=controller, auth=auth)],
    )
    service = runner.Service(
        app=app,
        host=settings.http.host,
        port=settings.http.port,
        workers={
            "consumer": datasets_loop.run,
            **consumer.workers(settings, controller, launcher),
        },
        on_exit=producer.close,
    )
    return service


def main() -> None:
    """Build settings once, configure logs, run until SIGTERM."""
    settings = config.TrainSettings()
    logs.configure(settings.log_level)
    log.info(
        "starting train on port %d with the %s launcher",
        settings.http.port,
        settings.launcher.kind,
    )
    build(settings).run()


if __name__ == "__main__":
    main()
