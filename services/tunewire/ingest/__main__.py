"""Entry point: ``python -m tunewire.ingest`` (also ``tunewire ingest``)."""

from __future__ import annotations

import logging

from tunewire.core import bus, http, logs, objectives, objectives_api, pooling, runner, store
from tunewire.ingest import api, config, consumer, parallel, pipeline

log = logging.getLogger("tunewire.ingest")


def build(settings: config.IngestSettings) -> runner.Service:
    """Wire the ingest process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = bus.Producer(settings.kafka, client_id="tunewire-ingest")
    catalog = objectives.ObjectiveCatalog(artifacts)
    flow = pipeline.Pipeline(
        limits=settings.ingest, catalog=catalog, artifacts=artifacts, producer=producer
    )
    flow.load_seen()
    workers = settings.ingest.prepare_workers
    workers = pooling.default_workers() if workers is None else workers
    pool = (
        parallel.PreparePool(
            workers=workers,
            max_event_bytes=settings.ingest.max_event_bytes,
            max_depth=settings.ingest.max_depth,
        )
        if workers
        else None
    )
    raw_loop = consumer.loop(settings, flow, producer, pool)
    auth = http.BearerAuth(settings.api_tokens)
    service: runner.Service

    probes = http.service_probes(
        artifacts_check=artifacts.check,
        kafka=settings.kafka,
        consumer_check=raw_loop.check_ready,
        alive=lambda: service.alive(),
    )
    app = http.create_app(
        title="tunewire ingest",
        probes=probes,
        routers=[
            api.router(flow=flow, limits=settings.ingest, auth=auth),
            objectives_api.router(
                catalog=catalog, producer=producer, auth=auth, source="tunewire/ingest"
            ),
        ],
    )
    service = runner.Service(
        app=app,
        host=settings.http.host,
        port=settings.http.port,
        workers={
            "consumer": raw_loop.run,
            "flusher": consumer.flusher(flow, settings.ingest.flush_interval_s),
        },
        on_exit=lambda: _close(producer, pool),
    )
    return service


def _close(producer: bus.Producer, pool: parallel.PreparePool | None) -> None:
    if pool is not None:
        pool.close()
    producer.close()


def main() -> None:
    """Build settings once, configure logs, run until SIGTERM."""
    settings = config.IngestSettings()
    logs.configure(settings.log_level)
    log.info("starting ingest on port %d", settings.http.port)
    build(settings).run()


if __name__ == "__main__":
    main()
