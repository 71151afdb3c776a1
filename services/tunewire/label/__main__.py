"""Entry point: ``python -m tunewire.label`` (also ``tunewire label``)."""

from __future__ import annotations

import logging
import pathlib

from tunewire.core import bus, http, logs, objectives, pooling, producer_process, runner, store
from tunewire.label import (
    api,
    config,
    console,
    consumer,
    examples,
    parallel,
    pipeline,
    queue,
    snapshots,
)

log = logging.getLogger("tunewire.label")


def build(settings: config.LabelSettings) -> runner.Service:
    """Wire the label process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    workers = settings.label.prepare_workers
    workers = pooling.default_workers() if workers is None else workers
    # With cores to spare, Kafka's client encodes the examples in a process of its own too.
    producer: bus.Publisher
    if workers:
        producer = producer_process.ProducerProcess(settings.kafka, client_id="tunewire-label")
    else:
        producer = bus.Producer(settings.kafka, client_id="tunewire-label")
    catalog = objectives.ObjectiveCatalog(artifacts)
    example_log = examples.ExampleLog(artifacts)
    workdir = pathlib.Path(settings.label.workdir) if settings.label.workdir else None
    flow = pipeline.LabelPipeline(
        limits=settings.label,
        catalog=catalog,
        artifacts=artifacts,
        producer=producer,
        human_queue=queue.HumanQueue(artifacts, lease_seconds=settings.label.lease_seconds),
        builder=snapshots.SnapshotBuilder(artifacts, example_log, producer, workdir=workdir),
        log_=example_log,
    )
    flow.seen.refresh()
    pool = parallel.LabelPool(workers=workers, hasher=flow.preparer.hasher) if workers else None
    records_loop = consumer.loop(settings, flow, producer, pool)
    auth = http.BearerAuth(settings.api_tokens)
    service: runner.Service

    probes = http.service_probes(
        artifacts_check=artifacts.check,
        kafka=settings.kafka,
        consumer_check=records_loop.check_ready,
        alive=lambda: service.alive(),
    )
    app = http.create_app(
        title="tunewire label",
        probes=probes,
        routers=[api.router(flow=flow, auth=auth), console.router(flow=flow, auth=auth)],
    )
    service = runner.Service(
        app=app,
        host=settings.http.host,
        port=settings.http.port,
        workers={
            "consumer": records_loop.run,
            "snapshotter": consumer.snapshotter(flow, settings.label),
            "repeater": consumer.repeater(flow, settings.label),
        },
        on_exit=lambda: _close(producer, pool),
    )
    return service


def _close(producer: bus.Publisher, pool: parallel.LabelPool | None) -> None:
    if pool is not None:
        pool.close()
    producer.close()


def main() -> None:
    """Build settings once, configure logs, run until SIGTERM."""
    settings = config.LabelSettings()
    logs.configure(settings.log_level)
    log.info("starting label on port %d", settings.http.port)
    build(settings).run()


if __name__ == "__main__":
    main()
