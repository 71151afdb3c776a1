"""Entry point: ``python -m tunewire.serve`` (also ``tunewire serve``)."""

from __future__ import annotations

import pathlib
import threading

import fastapi

from tunewire.core.base import store
from tunewire.core.bus import producing
from tunewire.core.process import assembly, authorization, runner
from tunewire.core.state import objectives, registry
from tunewire.serve import access, api, backend, config, consumer, deployments, gateway


def backend_routers(
    settings: config.ServeSettings, server: backend.Backend
) -> list[fastapi.APIRouter]:
    """Routes the chosen backend adds: vLLM's metrics, relayed (vLLM stays on loopback)."""
    if settings.serve.backend != "vllm":
        return []
    from tunewire.serve import vllm_metrics, vllm_server

    assert isinstance(server, vllm_server.VllmBackend)
    return [vllm_metrics.router(server)]


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
    producer = producing.Producer(settings.kafka, client_id="tunewire-serve")
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

    async def reconcile(stop: threading.Event) -> None:
        try:
            await deployed.run(stop, every_s=settings.serve.reconcile_every_s)
        finally:
            await server.close()

    authority = authorization.authority("serve", settings)
    return assembly.assemble(
        assembly.Parts(
            name="serve",
            authority=authority,
            settings=settings,
            artifacts=artifacts,
            consumer=consumer.loop(settings, deployed, producer),
            routers=[
                gateway.router(
                    deployed=deployed,
                    server=server,
                    gatekeeper=access.Gatekeeper(authority),
                    limits=settings.serve,
                ),
                api.router(
                    deployed=deployed,
                    registry_=adapter_registry,
                    auth=authority,
                ),
                *backend_routers(settings, server),
            ],
            async_workers={"reconciler": reconcile},
            checks={"adapters": deployed.check_ready},
            max_body_bytes=gateway.MAX_BODY_BYTES,
            refuse=gateway.refusal,
            on_exit=[producer.close],
        )
    )


def main() -> None:
    """Run the serve service until SIGTERM."""
    assembly.main(
        "serve",
        config.ServeSettings,
        build,
        detail=lambda settings: f" with the {settings.serve.backend} backend",
    )


if __name__ == "__main__":
    main()
