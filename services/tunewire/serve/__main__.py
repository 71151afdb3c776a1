"""Entry point: ``python -m tunewire.serve`` (also ``tunewire serve``)."""

from __future__ import annotations

import logging
import pathlib
import threading

from tunewire.core import bus, consuming, http, logs, objectives, registry, runner, store, topics
from tunewire.serve import access, api, backend, config, deployments, gateway

log = logging.getLogger("tunewire.serve")


def make_backend(settings: config.ServeSettings, artifacts: store.ArtifactStore) -> backend.Backend:
    """The backend the settings choose; only the chosen one's libraries are imported."""
    limits = settings.serve
    if limits.backend == "vllm":
        from tunewire.serve import vllm_server

        key = settings.vllm.api_key.get_secret_value() if settings.vllm.api_key else None
        return vllm_server.VllmBackend(
            base_url=settings.vllm.base_url,
            base_model=limits.base_name,
            max_adapters=limits.max_adapters,
            api_key=key,
        )
    from tunewire.serve import in_process

    return in_process.InProcessBackend(
        base_model=limits.base_model,
        artifacts=artifacts,
        cache_dir=pathlib.Path(settings.model_cache).expanduser(),
        max_adapters=limits.max_adapters,
        served_base_name=limits.base_name,
        threads=limits.threads,
    )


def build(settings: config.ServeSettings) -> runner.Service:
    """Wire the serve process from its settings."""
    artifacts = store.ArtifactStore(settings.s3)
    producer = bus.Producer(settings.kafka, client_id="tunewire-serve")
    server = make_backend(settings, artifacts)
    adapter_registry = registry.Registry(artifacts)
    deployed = deployments.Deployments(
        backend=server,
        registry_=adapter_registry,
        catalog=objectives.ObjectiveCatalog(artifacts),
        artifacts=artifacts,
        producer=producer,
        adapters_dir=pathlib.Path(settings.serve.adapters_dir).expanduser(),
    )
    changes = consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.EVALUATIONS, topics.DEPLOYMENTS, topics.OBJECTIVES],
        handler=consuming.EachMessage(lambda _: deployed.wake.set()),
        producer=producer,
        flush_interval_s=1.0,
    )
    service: runner.Service
    probes = http.service_probes(
        artifacts_check=artifacts.check,
        kafka=settings.kafka,
        consumer_check=changes.check_ready,
        alive=lambda: service.alive(),
    )
    probes.checks["adapters"] = deployed.check_ready
    app = http.create_app(
        title="tunewire serve",
        probes=probes,
        routers=[
            gateway.router(
                deployed=deployed,
                server=server,
                gatekeeper=access.Gatekeeper(settings.clients, settings.api_tokens),
                limits=settings.serve,
            ),
            api.router(
                deployed=deployed,
                registry_=adapter_registry,
                auth=http.BearerAuth(settings.api_tokens),
            ),
        ],
    )

    async def reconcile(stop: threading.Event) -> None:
        try:
            await deployed.run(stop, every_s=settings.serve.reconcile_every_s)
        finally:
            await server.close()

    service = runner.Service(
        app=app,
        host=settings.http.host,
        port=settings.http.port,
        workers={"consumer": changes.run},
        async_workers={"reconciler": reconcile},
        on_exit=producer.close,
    )
    return service


def main() -> None:
    """Build settings once, configure logs, run until SIGTERM."""
    settings = config.ServeSettings()
    logs.configure(settings.log_level)
    log.info(
        "starting serve on port %d with the %s backend", settings.http.port, settings.serve.backend
    )
    build(settings).run()


if __name__ == "__main__":
    main()
