"""Entry point: ``python -m tunewire.label`` (also ``tunewire label``)."""

from __future__ import annotations

import pathlib

from tunewire.core.base import store
from tunewire.core.bus import pooling, producer_process, producing
from tunewire.core.process import assembly, authorization, runner
from tunewire.core.state import objectives
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


def build(settings: config.LabelSettings) -> runner.Service:
    """Wire the label process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    workers = settings.label.prepare_workers
    workers = pooling.default_workers() if workers is None else workers
    # With cores to spare, Kafka's client encodes the examples in a process of its own too.
    producer: producing.Publisher
    if workers:
        producer = producer_process.ProducerProcess(settings.kafka, client_id="tunewire-label")
    else:
        producer = producing.Producer(settings.kafka, client_id="tunewire-label")
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
    pool = parallel.LabelPool(workers=workers, preparer=flow.preparer) if workers else None
    auth = authorization.authority("label", settings)
    return assembly.assemble(
        assembly.Parts(
            name="label",
            authority=auth,
            settings=settings,
            artifacts=artifacts,
            consumer=consumer.loop(settings, flow, producer, pool),
            routers=[
                api.router(flow=flow, auth=auth, artifacts=artifacts),
                console.router(flow=flow, auth=auth),
            ],
            workers={
                "snapshotter": consumer.snapshotter(flow, settings.label),
                "repeater": consumer.repeater(flow, settings.label),
            },
            on_exit=[pool.close, producer.close] if pool else [producer.close],
        )
    )


def main() -> None:
    """Run the label service until SIGTERM."""
    assembly.main("label", config.LabelSettings, build)


if __name__ == "__main__":
    main()
