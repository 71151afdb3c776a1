"""Who may call which route: one policy table for every service, enforced in one place.

Each service's routes are listed here with the roles that may call them; a service refuses
to start with a route that is neither in its table nor public (so a new route cannot ship
open), and :class:`Authority` refuses a request to a route it finds no policy for.
Answers: 401 without a valid token, 403 for a principal without any of the route's roles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import fastapi
from starlette import routing

from tunewire.core.base import errors, settings
from tunewire.core.base.principals import Principal, Principals, Role

Route = tuple[str, str]
"""``(METHOD, path template)`` as the app declares it, e.g. ``("GET", "/v1/runs/{objective}")``."""

READ = frozenset({Role.VIEWER, Role.ANNOTATOR, Role.REVIEWER, Role.OPERATOR, Role.ADMIN})
"""The people who may read lists, records and the overview."""
EVERYONE = frozenset(Role)

_CONSOLE: dict[Route, frozenset[Role]] = {
    ("GET", "/console/api/session"): EVERYONE,
}
"""The console shell's routes, in every service with a console."""

POLICY: Mapping[str, Mapping[Route, frozenset[Role]]] = {
    "ingest": {
        ("POST", "/v1/events"): frozenset({Role.PRODUCER}),
        ("GET", "/v1/objectives"): READ,
        ("GET", "/v1/objectives/{name}"): READ,
        ("GET", "/v1/objectives/{name}/versions"): READ,
        ("POST", "/v1/objectives"): frozenset({Role.ADMIN}),
        # Changes to approval, gates, redaction or the base model need admin as well.
        ("PUT", "/v1/objectives/{name}"): frozenset({Role.OPERATOR, Role.ADMIN}),
        ("POST", "/v1/objectives/{name}/retire"): frozenset({Role.ADMIN}),
    },
    "label": {
        ("GET", "/v1/queue/{objective}"): READ,
        ("POST", "/v1/queue/{objective}/claim"): frozenset({Role.ANNOTATOR}),
        ("POST", "/v1/queue/{objective}/tasks/{task_id}/renew"): frozenset({Role.ANNOTATOR}),
        ("POST", "/v1/queue/{objective}/tasks/{task_id}/answer"): frozenset({Role.ANNOTATOR}),
        ("POST", "/v1/queue/{objective}/tasks/{task_id}/skip"): frozenset({Role.ANNOTATOR}),
        ("GET", "/v1/datasets/{objective}"): READ,
        ("GET", "/v1/datasets/{objective}/{dataset_id}"): READ,
        ("GET", "/v1/datasets/{objective}/{dataset_id}/files/{split}"): READ,
        ("POST", "/v1/datasets/{objective}"): frozenset({Role.OPERATOR}),
        ("GET", "/console/api/objectives"): READ,
        **_CONSOLE,
    },
    "train": {
        ("GET", "/v1/runs"): READ,
        ("GET", "/v1/runs/{objective}/{run_id}"): READ,
        ("POST", "/v1/runs"): frozenset({Role.OPERATOR}),
        ("POST", "/v1/runs/{objective}/{run_id}/cancel"): frozenset({Role.OPERATOR}),
    },
    "evaluate": {
        ("GET", "/v1/evaluations"): READ,
        ("GET", "/v1/evaluations/{objective}/{run_id}"): READ,
        ("POST", "/v1/evaluations/{objective}/{run_id}/approve"): frozenset({Role.REVIEWER}),
        ("POST", "/v1/evaluations/{objective}/{run_id}/reject"): frozenset({Role.REVIEWER}),
        ("GET", "/v1/registry"): READ,
        ("GET", "/v1/registry/{objective}"): READ,
        ("GET", "/console/api/reviews"): READ,
        ("GET", "/console/api/history"): READ,
        ("GET", "/console/api/overview"): READ,
        **_CONSOLE,
    },
    "serve": {
        ("GET", "/v1/models"): READ | {Role.CLIENT},
        ("POST", "/v1/chat/completions"): frozenset({Role.CLIENT}),
        ("POST", "/v1/completions"): frozenset({Role.CLIENT}),
        ("POST", "/v1/objectives/{name}/predict"): frozenset({Role.CLIENT}),
        ("GET", "/v1/deployments"): READ,
        ("POST", "/v1/deployments/{objective}/rollback"): frozenset({Role.OPERATOR}),
    },
}
"""Every service's routes and the roles that may call each."""

AUTHENTICATED = "tunewire.principal"
"""Where the guard leaves the principal it authenticated in the request's scope, so that
the route's check does not hash and compare the token a second time."""

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/metrics/vllm", "/openapi.json", "/docs"}
    | {"/docs/oauth2-redirect"}
    | {"/redoc", "/console"}
)
"""Routes without a token: probes, metrics and the API's own description."""


def is_public(path: str) -> bool:
    """Whether a route is open to anyone: the public paths, and the console's pages and
    static files (shells that hold no data; their data routes under /console/api are not)."""
    if path in PUBLIC_PATHS:
        return True
    return path.startswith("/console/") and not path.startswith("/console/api/")


def routes_of(app: fastapi.FastAPI) -> set[Route]:
    """Every ``(METHOD, path)`` an app answers (HEAD, which Starlette adds, left out)."""
    found: set[Route] = set()
    for route in fastapi.routing.iter_route_contexts(app.routes):
        if route.path and route.methods:
            found |= {(m, route.path) for m in route.methods if m != "HEAD"}
    return found


def check_routes(
    service: str, routes: Iterable[Route], table: Mapping[Route, frozenset[Role]]
) -> None:
    """Refuse a service whose routes and policy table disagree, either way."""
    guarded = {r for r in routes if not is_public(r[1])}
    open_ = sorted(guarded - set(table))
    if open_:
        raise RuntimeError(
            f"{service} has routes without a policy: {open_}; add them to "
            "tunewire.core.process.authorization.POLICY"
        )
    stale = sorted(set(table) - guarded)
    if stale:
        raise RuntimeError(f"{service}'s policy lists routes it does not have: {stale}")


class Authority:
    """The FastAPI dependency that authenticates a request and applies the route's policy.

    Returns the :class:`Principal`, whose name is recorded as the actor of what it does.
    """

    def __init__(self, principals: Principals, table: Mapping[Route, frozenset[Role]]) -> None:
        self.principals = principals
        self.table = table

    def __call__(self, request: fastapi.Request) -> Principal:
        return self.check(request)

    def check(self, request: fastapi.Request) -> Principal:
        """The caller, if the route's policy admits it; 401 or 403 otherwise."""
        route = request.scope.get("route")
        path = route.path if isinstance(route, routing.Route) else request.url.path
        allowed = self.table.get((request.method, path))
        principal = request.scope.get(AUTHENTICATED)
        if not isinstance(principal, Principal):
            principal = self.principals.authenticate(request.headers.get("authorization"))
        if allowed is None:  # fail closed; check_routes keeps this from happening
            raise errors.Forbidden(f"{request.method} {path} has no policy")
        if not principal.may(allowed):
            needed = ", ".join(sorted(allowed))
            raise errors.Forbidden(
                f"{principal.name} may not {request.method} {path}; it needs one of the "
                f"roles {needed}"
            )
        return principal


def authority(service: str, configured: settings.ServiceSettings) -> Authority:
    """The :class:`Authority` of ``service`` over the configured principals."""
    return Authority(Principals(configured.principals), POLICY[service])
