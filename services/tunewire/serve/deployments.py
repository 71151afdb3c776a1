"""Keeps this replica's loaded adapters equal to the registry, and routes model names.

Each replica reconciles on its own (at start-up, on every approval, rollback and retirement
it hears of, and every ``reconcile_every_s``), so all replicas converge on the registry's
champions and a restarted one catches up by itself. An alias moves only once the champion's
adapter has loaded here; an adapter that will not load is never routed to, the alias stays
where it was, and a deployment-failed event says why. Beyond the backend's capacity the
least recently used adapter that no alias points at is unloaded first.

Model names: ``{objective}`` (the alias: its champion), ``{objective}@{run_id}`` (a pinned
approved version, loaded on demand), or the backend's base model name.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
import pathlib
import shutil
import threading
import time
from typing import Any

import prometheus_client

from tunewire.contracts.v1 import deployments_pb2
from tunewire.core.base import errors, store
from tunewire.core.bus import envelope, producing, topics
from tunewire.core.state import layout, model_input, objectives, registry
from tunewire.serve import backend as backends

log = logging.getLogger(__name__)

SOURCE = "tunewire/serve"
LOADED = prometheus_client.Gauge("tunewire_serve_adapters_loaded", "Adapters loaded now.")
LOAD_SECONDS = prometheus_client.Histogram(
    "tunewire_serve_adapter_load_seconds",
    "From deciding to load an adapter to the backend serving it (S3 sync included).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LOAD_FAILURES = prometheus_client.Counter(
    "tunewire_serve_adapter_load_failures_total",
    "Adapters that would not load, by objective.",
    ["objective"],
)
ALIAS_MOVES = prometheus_client.Counter(
    "tunewire_serve_alias_moves_total",
    "Alias moves this replica made, by objective and kind.",
    ["objective", "kind"],
)

_COMPLETE = ".complete"


def served_name(objective: str, run_id: str) -> str:
    """The backend's name of an adapter: ``{objective}@{run_id}``."""
    return f"{objective}@{run_id}"


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a model name goes."""

    target: str
    """The backend's name for it: an adapter's served name, or the base model."""
    objective: str | None
    run_id: str | None
    contract: model_input.InputContract | None = None
    """How its training input was prepared (redacting what the objective redacts now as
    well); None for the base model."""
    prepare: bool = False
    """Whether requests are prepared under :attr:`contract` (the objective's
    ``serving.prepare_input``); otherwise they pass as sent."""

    @property
    def preparation(self) -> model_input.InputContract | None:
        """The contract requests are prepared under; None: as sent."""
        return self.contract if self.prepare else None


class Deployments:
    """The registry's approved adapters on this replica's backend."""

    def __init__(
        self,
        *,
        backend: backends.Backend,
        registry_: registry.Registry,
        catalog: objectives.ObjectiveCatalog,
        artifacts: store.ArtifactStore,
        producer: producing.Producer,
        adapters_dir: pathlib.Path,
    ) -> None:
        self._backend = backend
        self._registry = registry_
        self._catalog = catalog
        self._store = artifacts
        self._producer = producer
        self._dir = adapters_dir
        self.aliases: dict[str, str] = {}
        """Objective → the run its alias serves on this replica."""
        self._champions: dict[str, str] = {}
        """Objective → the registry's champion at the last reconcile."""
        self._approved: dict[str, dict[str, str]] = {}
        """Objective → run id → adapter URI of its approved versions."""
        self._contracts: dict[str, model_input.InputContract] = {}
        """Served name → its :attr:`Route.contract`."""
        self._prepared: set[str] = set()
        """Objectives whose requests are prepared (``serving.prepare_input``)."""
        self._loaded: collections.OrderedDict[str, None] = collections.OrderedDict()
        """Loaded adapters, least recently used first."""
        self.failed: dict[str, str] = {}
        """Served name → why it would not load."""
        self._lock = asyncio.Lock()
        self.wake = threading.Event()
        self.reconciled_once = False
        self.backend_problem: str | None = None

    # -- routing --------------------------------------------------------------------------

    async def route(self, model: str) -> Route:
        """The backend target of a model name; :class:`errors.NotFound` for unknown ones."""
        if model == self._backend.base_model:
            return Route(target=model, objective=None, run_id=None)
        objective, _, run_id = model.partition("@")
        if not run_id:
            serving = self.aliases.get(objective)
            if serving is None:
                raise errors.NotFound(_unknown(model, "no approved adapter is served for it"))
            name = served_name(objective, serving)
            self._touch(name)
            return self._route(objective, serving)
        uri = self._approved.get(objective, {}).get(run_id)
        if uri is None:
            raise errors.NotFound(_unknown(model, "it is not an approved version"))
        name = served_name(objective, run_id)
        if name in self.failed:
            raise errors.NotFound(
                _unknown(model, f"its adapter failed to load: {self.failed[name]}")
            )
        if name not in self._loaded:
            async with self._lock:
                if not await self._ensure_loaded(objective, run_id, uri):
                    raise errors.NotFound(
                        _unknown(model, f"its adapter failed to load: {self.failed[name]}")
                    )
        self._touch(name)
        return self._route(objective, run_id)

    def _route(self, objective: str, run_id: str) -> Route:
        name = served_name(objective, run_id)
        contract = self._contracts.get(name)
        return Route(name, objective, run_id, contract, prepare=objective in self._prepared)

    def models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: the base model, every alias and every loaded version, with
        ``root`` (what serves the name: the base, or the adapter) and ``parent`` (the base
        an adapter runs on) as vLLM words them."""
        created = int(time.time())
        base = self._backend.base_model
        entries = [_model(base, created, root=base, parent=None)]
        for objective, run_id in sorted(self.aliases.items()):
            entries.append(
                _model(objective, created, root=served_name(objective, run_id), parent=base)
            )
        for name in sorted(self._loaded):
            entries.append(_model(name, created, root=name, parent=base))
        return entries

    def status(self) -> dict[str, Any]:
        """What this replica serves, for the admin API and the CLI."""
        return {
            "aliases": dict(sorted(self.aliases.items())),
            "champions": dict(sorted(self._champions.items())),
            "loaded": list(self._loaded),
            "failed": dict(self.failed),
            "capacity": self._backend.max_adapters,
        }

    def check_ready(self) -> None:
        """Ready once every champion is served here or was refused for good (bad files)."""
        if self.backend_problem is not None:
            raise RuntimeError(f"the model server is unavailable: {self.backend_problem}")
        if not self.reconciled_once:
            raise RuntimeError("the registry has not been reconciled yet")
        behind = [
            f"{objective}@{run_id}"
            for objective, run_id in self._champions.items()
            if self.aliases.get(objective) != run_id
            and served_name(objective, run_id) not in self.failed
        ]
        if behind:
            raise RuntimeError(f"champions not loaded yet: {', '.join(sorted(behind))}")

    # -- reconciling ----------------------------------------------------------------------

    async def run(self, stop: threading.Event, *, every_s: float) -> None:
        """Reconcile now, then on every wake-up (an event) or every ``every_s`` seconds."""
        while not stop.is_set():
            try:
                await self._backend.start()
                await self._backend.check()
                self.backend_problem = None
                await self.reconcile()
            except errors.Unavailable as exc:
                self.backend_problem = str(exc)
                log.warning("the model server is unavailable", extra={"error": str(exc)})
            except Exception as exc:
                log.warning("reconciling with the registry failed", extra={"error": repr(exc)})
            deadline = time.monotonic() + every_s
            while not stop.is_set() and not self.wake.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.wake.clear()

    async def reconcile(self) -> None:
        """Bring this replica to the registry's state."""
        async with self._lock:
            documents, current, contracts = await asyncio.to_thread(self._read_registry)
            self._contracts = contracts
            self._prepared = {
                name for name, now in current.items() if now.spec.serving.prepare_input
            }
            actual = await self._backend.loaded_adapters()  # the server's truth, not ours
            self._loaded = collections.OrderedDict.fromkeys(
                [n for n in self._loaded if n in actual] + sorted(actual - set(self._loaded))
            )
            self._approved = {
                name: {v.run_id: v.adapter_uri for v in document.approved()}
                for name, document in documents.items()
            }
            for name, document in documents.items():
                retired = current.get(name) is not None and current[name].status == "retired"
                if retired or document.champion is None:
                    self._champions.pop(name, None)
                    if retired:
                        await self._retire(name)
                    continue
                self._champions[name] = document.champion
                try:
                    await self._follow_champion(document)
                except errors.Conflict as full:
                    # The server is full of aliases: this champion waits (readiness says
                    # so) and the other objectives are still reconciled.
                    log.warning("champion not loaded: %s", full, extra={"objective": name})
            await self._unload_unapproved()
            await self._evict()
            LOADED.set(len(self._loaded))
            self.reconciled_once = True

    def _read_registry(
        self,
    ) -> tuple[
        dict[str, registry.RegistryDocument],
        dict[str, objectives.ObjectiveVersion],
        dict[str, model_input.InputContract],
    ]:
        documents = {name: self._registry.get(name) for name in self._registry.objectives()}
        current = dict(self._catalog.current())
        if not documents.keys() <= current.keys():
            # An objective registered since the catalog's cache was read: read it now, or
            # its champion would be served without its input contract until the cache ages.
            current = dict(self._catalog.current(fresher_than=time.monotonic()))
        contracts = {
            served_name(name, version.run_id): self._contract(version, current[name])
            for name, document in documents.items()
            if name in current
            for version in document.approved()
        }
        return documents, current, contracts

    def _contract(
        self, version: registry.Version, now: objectives.ObjectiveVersion
    ) -> model_input.InputContract:
        """How ``version``'s training input was prepared. A version registered before
        contracts were recorded gets the contract of the objective version it was trained
        under, derived as label derived its data."""
        trained = version.contract or self._contracts.get(served_name(now.name, version.run_id))
        if trained is None:
            try:
                spec = self._catalog.get(now.name, version.objective_version).spec
            except errors.NotFound:
                spec = now.spec
            trained = model_input.contract(spec)
        return model_input.with_redaction_of(trained, now.spec)

    async def _follow_champion(self, document: registry.RegistryDocument) -> None:
        objective, champion = document.objective, document.champion
        assert champion is not None
        name = served_name(objective, champion)
        version = document.version(champion)
        if name in self.failed or version is None:
            return
        if self.aliases.get(objective) == champion:
            if name not in self._loaded:  # the model server lost it (a restart): load again
                await self._ensure_loaded(objective, champion, version.adapter_uri)
            return
        if not await self._ensure_loaded(objective, champion, version.adapter_uri):
            await asyncio.to_thread(
                self._publish,
                objective,
                kind=deployments_pb2.DEPLOYMENT_CHANGE_KIND_FAILED,
                from_run_id=self.aliases.get(objective, ""),
                to_run_id=champion,
                actor="serve",
                reason=f"adapter {name} failed to load: {self.failed[name]}",
                event_id=envelope.derived_id("deployment-failed", objective, champion),
            )
            return
        previous = self.aliases.get(objective, "")
        self.aliases[objective] = champion
        moved_by = _last_move(document, champion)
        kind = (
            deployments_pb2.DEPLOYMENT_CHANGE_KIND_ROLLED_BACK
            if moved_by is not None and moved_by.action == "champion_set"
            else deployments_pb2.DEPLOYMENT_CHANGE_KIND_PROMOTED
        )
        ALIAS_MOVES.labels(objective, deployments_pb2.DeploymentChangeKind.Name(kind)).inc()
        log.info("alias %s now serves %s", objective, champion, extra={"from_run_id": previous})
        await asyncio.to_thread(
            self._publish,
            objective,
            kind=kind,
            from_run_id=previous,
            to_run_id=champion,
            actor=moved_by.actor if moved_by else "serve",
            reason=moved_by.reason if moved_by else "champion in the registry",
            event_id=envelope.derived_id(
                "deployment", objective, champion, str(len(document.history))
            ),
        )

    async def _retire(self, objective: str) -> None:
        previous = self.aliases.pop(objective, None)
        for name in [n for n in self._loaded if n.partition("@")[0] == objective]:
            await self._unload(name)
        if previous is not None:
            await asyncio.to_thread(
                self._publish,
                objective,
                kind=deployments_pb2.DEPLOYMENT_CHANGE_KIND_RETIRED,
                from_run_id=previous,
                to_run_id="",
                actor="serve",
                reason="the objective was retired",
                event_id=envelope.derived_id("deployment-retired", objective, previous),
            )

    async def _unload_unapproved(self) -> None:
        for name in list(self._loaded):
            objective, _, run_id = name.partition("@")
            if run_id not in self._approved.get(objective, {}):
                await self._unload(name)

    async def _evict(self, *, room_for: int = 0) -> None:
        serving = {served_name(o, r) for o, r in self.aliases.items()}
        while len(self._loaded) + room_for > self._backend.max_adapters:
            victim = next((n for n in self._loaded if n not in serving), None)
            if victim is None:
                return  # only aliases are loaded: they stay, over capacity if need be
            await self._unload(victim)

    async def _ensure_loaded(self, objective: str, run_id: str, uri: str) -> bool:
        name = served_name(objective, run_id)
        if name in self._loaded:
            return True
        started = time.perf_counter()
        try:
            self._check_source(objective, run_id, uri)
            path = await asyncio.to_thread(self._sync, name, uri)
            await self._evict(room_for=1)
            await self._backend.load_adapter(name, path)
        except (backends.AdapterLoadError, errors.NotFound, errors.InvalidRequest) as exc:
            self.failed[name] = str(exc)
            LOAD_FAILURES.labels(objective).inc()
            log.error("adapter %s will not be served: %s", name, exc)
            return False
        self._loaded[name] = None
        LOAD_SECONDS.observe(time.perf_counter() - started)
        log.info("loaded adapter %s in %.2fs", name, time.perf_counter() - started)
        return True

    async def _unload(self, name: str) -> None:
        await self._backend.unload_adapter(name)
        self._loaded.pop(name, None)
        log.info("unloaded adapter %s", name)

    def _touch(self, name: str) -> None:
        if name in self._loaded:
            self._loaded.move_to_end(name)

    def _check_source(self, objective: str, run_id: str, uri: str) -> None:
        """Load only what the trainer wrote where it writes adapters: a registry entry can
        name neither another bucket nor a path outside the adapters volume."""
        if not (layout.is_segment(objective) and layout.is_segment(run_id)):
            raise errors.InvalidRequest(f"{objective!r}@{run_id!r} is not a servable name")
        expected = self._store.uri(layout.adapter(objective, run_id))
        if uri != expected:
            raise errors.InvalidRequest(
                f"the registry names {uri} for {objective}@{run_id}; adapters are only loaded "
                f"from {expected}"
            )

    def _sync(self, name: str, uri: str) -> pathlib.Path:
        """Copy an adapter's files from S3 to the adapters volume (once; atomically)."""
        target = self._dir / name
        if (target / _COMPLETE).exists():
            return target
        bucket, prefix = store.split_uri(uri)
        source = self._store.for_bucket(bucket)
        keys = source.files_under(prefix)
        if not keys:
            raise errors.NotFound(f"no adapter files under {uri}")
        scratch = self._dir / f".{name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        source.download_tree(prefix, keys, scratch)
        (scratch / _COMPLETE).write_text(uri)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        return target

    def _publish(
        self,
        objective: str,
        *,
        kind: deployments_pb2.DeploymentChangeKind,
        from_run_id: str,
        to_run_id: str,
        actor: str,
        reason: str,
        event_id: str,
    ) -> None:
        change = deployments_pb2.DeploymentChange(
            objective=objective,
            alias=objective,
            from_run_id=from_run_id,
            to_run_id=to_run_id,
            kind=kind,
            actor=actor,
            reason=reason,
            changed_at=envelope.timestamp(datetime.datetime.now(datetime.UTC)),
        )
        self._producer.publish(
            topics.DEPLOYMENTS,
            change,
            key=objective,
            event=envelope.for_payload(change, id=event_id, source=SOURCE, subject=to_run_id),
        )
        self._producer.flush()


def _last_move(document: registry.RegistryDocument, run_id: str) -> registry.Event | None:
    for event in reversed(document.history):
        if event.run_id == run_id and event.action in ("promoted", "champion_set"):
            return event
    return None


def _model(name: str, created: int, *, root: str, parent: str | None) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "tunewire",
        "root": root,
        "parent": parent,
    }


def _unknown(model: str, why: str) -> str:
    return f"The model `{model}` does not exist: {why}."
