"""The adapter registry: every evaluated adapter of an objective, its champion and its history.

One JSON document per objective, ``registry/{objective}.json``, modelled on MLflow's model
registry: *versions* (one per training run, with the dataset it learnt from, where its adapter
and metrics live, and the decision taken on it), a *champion* alias (the run serve routes the
objective's name to) and an append-only *history* of decisions and alias moves for the audit
trail. The evaluate service writes it; serve reads it and moves the alias back on rollback.

Every change goes through :meth:`Registry.update`, a compare-and-swap on the document's ETag,
so two evaluators deciding at the same moment never lose each other's writes; and every change
is idempotent (recording what is already recorded writes nothing), so a redelivered event or a
retried request changes nothing the second time.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tunewire.core.base import errors, store
from tunewire.core.state import layout, model_input

Status = Literal["pending", "approved", "rejected", "needs_review"]
Decision = Literal["approved", "rejected", "needs_review"]
Action = Literal["approved", "rejected", "needs_review", "promoted", "champion_set"]
UNDECIDED: tuple[Status, ...] = ("pending",)
"""What the evaluator decides: versions not decided yet."""
HELD: tuple[Status, ...] = ("needs_review",)
"""What a person decides: versions held for review."""


class Version(BaseModel):
    """One adapter: the outcome of one training run, and what was decided about it."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    dataset_id: str
    objective_version: int
    adapter_uri: str
    """``s3://`` prefix of the adapter files (what serve loads)."""
    metrics_uri: str
    """``s3://`` address of the evaluator's metrics.json (base, champion, candidate)."""
    contract: model_input.InputContract | None = None
    """How its training input was prepared, so serve prepares requests the same way (None
    for versions registered before contracts were recorded: serve derives it from the
    objective version)."""
    metrics: dict[str, float] = {}
    """The candidate's metric values on the held-out split, once evaluated."""
    status: Status = "pending"
    decided_by: str = ""
    """``evaluator`` for automatic gating, otherwise the person who decided."""
    reason: str = ""
    decided_at: datetime.datetime | None = None
    created_at: datetime.datetime


class Event(BaseModel):
    """One line of the audit trail: a decision or a move of the champion alias."""

    model_config = ConfigDict(frozen=True)

    at: datetime.datetime
    action: Action
    run_id: str
    from_run_id: str | None = None
    """For alias moves: the champion before the move (None when there was none)."""
    actor: str
    reason: str = ""


class RegistryDocument(BaseModel):
    """The registry of one objective, as stored."""

    model_config = ConfigDict(frozen=True)

    objective: str
    champion: str | None = None
    """Run id of the version serve routes the objective's name to."""
    versions: dict[str, Version] = {}
    """By run id; the CLI lists them by ``created_at``."""
    history: tuple[Event, ...] = ()

    def version(self, run_id: str) -> Version | None:
        """The version of one run, or None."""
        return self.versions.get(run_id)

    def champion_version(self) -> Version | None:
        """The champion's version, or None while there is no champion."""
        return self.versions.get(self.champion) if self.champion else None

    def approved(self) -> list[Version]:
        """Approved versions, oldest first: what serve keeps loaded."""
        found = [v for v in self.versions.values() if v.status == "approved"]
        return sorted(found, key=lambda v: (v.created_at, v.run_id))


Change = Callable[[RegistryDocument], RegistryDocument]
"""Returns the new document, or the one it was given to leave the registry as it is."""


class Registry:
    """Reads and changes the registry documents in S3."""

    def __init__(self, artifacts: store.ArtifactStore) -> None:
        self._store = artifacts

    def get(self, objective: str) -> RegistryDocument:
        """The objective's registry; an empty one when nothing was registered yet."""
        try:
            document: Any = self._store.get_json(layout.registry(objective))
        except errors.NotFound:
            return RegistryDocument(objective=objective)
        return RegistryDocument.model_validate(document)

    def objectives(self) -> list[str]:
        """Objectives that have a registry document, sorted."""
        return sorted(
            key[len(layout.REGISTRY) : -len(".json")]
            for key in self._store.list_keys(layout.REGISTRY)
            if key.endswith(".json")
        )

    def update(self, objective: str, change: Change) -> RegistryDocument:
        """Apply ``change`` by compare-and-swap and return the document that holds.

        ``change`` may run several times (after a lost race) and must have no side effects;
        an error it raises (say :class:`errors.Conflict`) aborts the update unwritten.
        """

        def apply(raw: Any) -> Any:
            current = (
                RegistryDocument(objective=objective)
                if raw is None
                else RegistryDocument.model_validate(raw)
            )
            changed = change(current)
            return None if changed == current else changed.model_dump(mode="json")

        stored = self._store.update_json(layout.registry(objective), apply)
        if stored is None:
            return RegistryDocument(objective=objective)
        return RegistryDocument.model_validate(stored)

    # -- the changes evaluate and serve make ----------------------------------------------

    def register(
        self,
        objective: str,
        *,
        run_id: str,
        dataset_id: str,
        objective_version: int,
        adapter_uri: str,
        metrics_uri: str,
        contract: model_input.InputContract | None = None,
        at: datetime.datetime | None = None,
    ) -> RegistryDocument:
        """Add a pending version for a run being evaluated (nothing when it is there)."""
        created = at or _now()

        def add(current: RegistryDocument) -> RegistryDocument:
            if run_id in current.versions:
                return current
            version = Version(
                run_id=run_id,
                dataset_id=dataset_id,
                objective_version=objective_version,
                adapter_uri=adapter_uri,
                metrics_uri=metrics_uri,
                contract=contract,
                created_at=created,
            )
            return current.model_copy(update={"versions": {**current.versions, run_id: version}})

        return self.update(objective, add)

    def decide(
        self,
        objective: str,
        run_id: str,
        *,
        decision: Decision,
        actor: str,
        reason: str,
        metrics: Mapping[str, float] | None = None,
        allowed_from: Collection[Status] = UNDECIDED,
        at: datetime.datetime | None = None,
    ) -> RegistryDocument:
        """Record a decision on a registered version; an approval also makes it champion.

        The same decision by the same actor again changes nothing. A version whose status is
        not in ``allowed_from`` is a :class:`errors.Conflict` (the evaluator decides pending
        versions; a person decides those held for review), and so is a version someone else
        decided meanwhile. An unregistered run is :class:`errors.NotFound`.
        """
        moment = at or _now()

        def record(current: RegistryDocument) -> RegistryDocument:
            version = _registered(current, run_id)
            if version.status == decision and version.decided_by == actor:
                return current
            if version.status not in allowed_from:
                by = f" by {version.decided_by}" if version.decided_by else ""
                raise errors.Conflict(
                    f"run {run_id} of {objective!r} is {version.status}{by}; "
                    f"it cannot become {decision} now"
                )
            decided = version.model_copy(
                update={
                    "status": decision,
                    "decided_by": actor,
                    "reason": reason,
                    "decided_at": moment,
                    "metrics": dict(metrics) if metrics is not None else version.metrics,
                }
            )
            events = [Event(at=moment, action=decision, run_id=run_id, actor=actor, reason=reason)]
            champion = current.champion
            if decision == "approved" and champion != run_id:
                events.append(
                    Event(
                        at=moment,
                        action="promoted",
                        run_id=run_id,
                        from_run_id=champion,
                        actor=actor,
                        reason=reason,
                    )
                )
                champion = run_id
            return current.model_copy(
                update={
                    "versions": {**current.versions, run_id: decided},
                    "champion": champion,
                    "history": (*current.history, *events),
                }
            )

        return self.update(objective, record)

    def set_champion(
        self,
        objective: str,
        run_id: str,
        *,
        actor: str,
        reason: str,
        at: datetime.datetime | None = None,
    ) -> RegistryDocument:
        """Point the champion alias at an approved version (a rollback, say).

        Only an approved version can be champion (:class:`errors.Conflict` otherwise); the
        current champion again changes nothing.
        """
        moment = at or _now()

        def move(current: RegistryDocument) -> RegistryDocument:
            version = _registered(current, run_id)
            if version.status != "approved":
                raise errors.Conflict(
                    f"run {run_id} of {objective!r} is {version.status}; only an approved "
                    "version can be champion"
                )
            if current.champion == run_id:
                return current
            event = Event(
                at=moment,
                action="champion_set",
                run_id=run_id,
                from_run_id=current.champion,
                actor=actor,
                reason=reason,
            )
            return current.model_copy(
                update={"champion": run_id, "history": (*current.history, event)}
            )

        return self.update(objective, move)


def _registered(document: RegistryDocument, run_id: str) -> Version:
    version = document.version(run_id)
    if version is None:
        raise errors.NotFound(
            f"objective {document.objective!r} has no adapter version of run {run_id!r}; "
            "check the run id with `tunewire adapters OBJECTIVE`"
        )
    return version


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
