"""How a service process is put together, once for all five.

Every service is the same shape: one consumer loop of its input topic, the HTTP app with the
probes every service has (S3, the broker, that consumer) and the service's own routers
(each route in the policy table, or the service refuses to start), a
few more named workers, and things to close on exit. A service's ``__main__`` builds its
domain objects and hands them here as :class:`Parts`; :func:`main` reads the settings,
configures logs and runs the result until SIGTERM.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import fastapi

from tunewire.core.base import logs, settings, store
from tunewire.core.bus import consuming
from tunewire.core.process import authorization, guard, http, runner

S = TypeVar("S", bound=settings.ServiceSettings)


@dataclasses.dataclass(frozen=True)
class Parts:
    """What one service process is made of."""

    name: str
    """The service's name: the app's title and the logger's."""
    settings: settings.ServiceSettings
    artifacts: store.ArtifactStore
    consumer: consuming.ConsumerLoop
    """The loop of the service's input topic; it runs as the ``consumer`` worker."""
    routers: Sequence[fastapi.APIRouter]
    authority: authorization.Authority
    """Who may call the routers' routes: its principals are also what the guard checks
    before any route, and its table must match the routes exactly."""
    workers: Mapping[str, runner.Worker] = dataclasses.field(default_factory=dict)
    """Further threads beside the consumer, by name."""
    async_workers: Mapping[str, runner.AsyncWorker] = dataclasses.field(default_factory=dict)
    checks: Mapping[str, http.Check] = dataclasses.field(default_factory=dict)
    """Readiness checks beside S3, the broker and the consumer."""
    on_exit: Sequence[Callable[[], None]] = ()
    """Called in order once every worker has stopped (pools, then producers)."""
    max_body_bytes: int = 0
    """The longest body a route of the service takes, when above ``http.max_body_bytes``."""
    refuse: guard.Refusal = guard.refusal
    """How a request refused before any route (401, 413) is answered."""


def assemble(parts: Parts) -> runner.Service:
    """The runnable service: probes, app and workers wired from ``parts``."""
    service: runner.Service
    probes = http.service_probes(
        artifacts_check=parts.artifacts.check,
        kafka=parts.settings.kafka,
        consumer_check=parts.consumer.check_ready,
        alive=lambda: service.alive(),
    )
    probes.checks.update(parts.checks)
    checked = guard.Guard(
        max_body_bytes=max(parts.max_body_bytes, parts.settings.http.max_body_bytes),
        principals=parts.authority.principals,
        refuse=parts.refuse,
    )
    app = http.create_app(
        title=f"tunewire {parts.name}", probes=probes, routers=parts.routers, guard=checked
    )
    authorization.check_routes(parts.name, authorization.routes_of(app), parts.authority.table)
    service = runner.Service(
        app=app,
        host=parts.settings.http.host,
        port=parts.settings.http.port,
        workers={"consumer": parts.consumer.run, **parts.workers},
        async_workers=parts.async_workers,
        on_exit=lambda: _close_all(parts.on_exit),
    )
    return service


def main(
    name: str,
    settings_type: type[S],
    build: Callable[[S], runner.Service],
    *,
    detail: Callable[[S], str] = lambda _: "",
) -> None:
    """Read settings once, configure logs, build the service and run it until SIGTERM."""
    loaded = settings_type()
    logs.configure(loaded.log_level)
    logging.getLogger(f"tunewire.{name}").info(
        "starting %s on port %d%s", name, loaded.http.port, detail(loaded)
    )
    build(loaded).run()


def _close_all(closers: Sequence[Callable[[], None]]) -> None:
    for close in closers:
        close()
