"""The reviewer, history and overview views of the web console, served by evaluate.

The pages are shells (:mod:`tunewire.core.console.pages`); their scripts read the JSON routes
here, built for people: the runs held for review with everything a decision needs beside
them, the decision history of every objective, and the pipeline overview. A decision itself
goes through the evaluate API's approve / reject routes, so the console and the CLI follow
one path (a reason required, recorded in the registry, published with the decision).
"""

from __future__ import annotations

from typing import Any

import fastapi

from tunewire.core.base import errors, store
from tunewire.core.base.principals import Principal
from tunewire.core.console import pages
from tunewire.core.process import authorization
from tunewire.core.state import layout, objectives, registry
from tunewire.evaluate import api, config, overview, records
from tunewire.evaluate.controller import EvaluationController

VIEWS = (
    pages.View(slug="review", title="Review"),
    pages.View(slug="history", title="History"),
    pages.View(slug="overview", title="Overview"),
)


def router(
    *,
    controller: EvaluationController,
    catalog: objectives.ObjectiveCatalog,
    artifacts: store.ArtifactStore,
    auth: authorization.Authority,
    settings: config.ConsoleSettings,
) -> fastapi.APIRouter:
    """The pages under ``/console`` and their JSON under ``/console/api``."""
    routes = fastapi.APIRouter(include_in_schema=False)
    routes.include_router(
        pages.router(service="evaluate", package="tunewire.evaluate", views=VIEWS, auth=auth)
    )
    Caller = fastapi.Depends(auth)
    board = overview.Overview(
        catalog=catalog, adapters=controller.registry, artifacts=artifacts, settings=settings
    )

    @routes.get("/console/api/reviews")
    def reviews(_: Principal = Caller) -> dict[str, Any]:
        found = []
        for name in controller.registry.objectives():
            document = controller.registry.get(name)
            held = sorted(
                (v for v in document.versions.values() if v.status in registry.HELD),
                key=lambda v: (v.created_at, v.run_id),
            )
            for version in held:
                record = controller.records.find(name, version.run_id)
                if record is not None and record.status == "needs_review":
                    found.append(_review(controller, artifacts, record, document))
        return {"reviews": found}

    @routes.get("/console/api/history")
    def history(_: Principal = Caller) -> dict[str, Any]:
        events = [
            (event, name)
            for name in controller.registry.objectives()
            for event in controller.registry.get(name).history
        ]
        events.sort(key=lambda pair: pair[0].at, reverse=True)
        return {
            "events": [
                {"objective": name, **event.model_dump(mode="json")} for event, name in events
            ]
        }

    @routes.get("/console/api/overview")
    def pipeline(request: fastapi.Request, _: Principal = Caller) -> dict[str, Any]:
        return board.build(authorization=request.headers["authorization"])

    return routes


def _review(
    controller: EvaluationController,
    artifacts: store.ArtifactStore,
    record: records.EvaluationRecord,
    document: registry.RegistryDocument,
) -> dict[str, Any]:
    """A held run with its metrics, the dataset's manifest and the champion it was measured
    against (the evaluator's champion, which may have been replaced since)."""
    report = controller.report(record)
    champion = document.version(record.champion_run_id) if record.champion_run_id else None
    return api.shown(
        {
            "record": record.model_dump(mode="json"),
            "metrics": report.model_dump(mode="json") if report else None,
            "manifest": _manifest(artifacts, record.dataset_uri),
            "champion": champion.model_dump(mode="json") if champion else None,
        }
    )


def _manifest(artifacts: store.ArtifactStore, dataset_uri: str) -> dict[str, Any] | None:
    """The snapshot's ``manifest.json`` (sizes, label distribution, lineage), if readable."""
    try:
        bucket, prefix = store.split_uri(dataset_uri)
        document = artifacts.for_bucket(bucket).get_json(prefix.rstrip("/") + "/" + layout.MANIFEST)
    except (errors.NotFound, errors.InvalidRequest):
        return None
    return document if isinstance(document, dict) else None
