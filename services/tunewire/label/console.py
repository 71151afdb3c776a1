"""The annotator view of the web console, served by the label service.

The page is a shell (:mod:`tunewire.core.console.pages`); its script works the queue through
the label API's own routes (claim, renew, answer, skip, status) with the signed-in person's
token, and asks one route of its own here: which objectives have a human queue, and their
labels (the buttons, in order: key 1 is the first label).
"""

from __future__ import annotations

from typing import Any

import fastapi

from tunewire.core.base.principals import Principal
from tunewire.core.console import pages
from tunewire.core.process import authorization
from tunewire.label import pipeline

VIEWS = (pages.View(slug="annotate", title="Annotate"),)


def router(*, flow: pipeline.LabelPipeline, auth: authorization.Authority) -> fastapi.APIRouter:
    """The annotator page under ``/console`` and ``/console/api/objectives``."""
    routes = fastapi.APIRouter()
    Caller = fastapi.Depends(auth)
    routes.include_router(
        pages.router(service="label", package="tunewire.label", views=VIEWS, auth=auth)
    )

    @routes.get("/console/api/objectives", include_in_schema=False)
    def objectives(_: Principal = Caller) -> dict[str, Any]:
        found = [
            {
                "name": version.name,
                "version": version.version,
                "labels": list(version.spec.labels),
                "labels_per_item": version.spec.labelling.labels_per_item,
            }
            for version in sorted(flow.objectives().values(), key=lambda v: v.name)
            if version.status == "active"
            and version.spec.labelling.human_queue
            and version.spec.labels
        ]
        return {"objectives": found}

    return routes
