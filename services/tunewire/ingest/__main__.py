"""Entry point: ``python -m tunewire.ingest`` (also ``tunewire ingest``)."""

from __future__ import annotations

from tunewire.core.base import store
from tunewire.core.bus import pooling, producing
from tunewire.core.process import assembly, authorization, runner
from tunewire.core.state import objectives
from tunewire.ingest import api, config, consumer, objectives_api, parallel, pipeline


def build(settings: config.IngestSettings) -> runner.Service:
    """Wire the ingest process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = producing.Producer(settings.kafka, client_id="tunewire-ingest")
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
    auth = authorization.authority("ingest", settings)
    return assembly.assemble(
        assembly.Parts(
            name="ingest",
            authority=auth,
            settings=settings,
            artifacts=artifacts,
            consumer=consumer.loop(settings, flow, producer, pool),
            routers=[
                api.router(flow=flow, limits=settings.ingest, auth=auth),
                objectives_api.router(
                    catalog=catalog, producer=producer, auth=auth, source="tunewire/ingest"
                ),
            ],
            workers={"flusher": consumer.flusher(flow, settings.ingest.flush_interval_s)},
            max_body_bytes=settings.ingest.max_body_bytes,
            on_exit=[pool.close, producer.close] if pool else [producer.close],
        )
    )


def main() -> None:
    """Run the ingest service until SIGTERM."""
    assembly.main("ingest", config.IngestSettings, build)


if __name__ == "__main__":
    main()
