"""The console's pages: server-rendered shells, static files and the sign-in check.

A page is a Jinja2 template rendered with autoescaping on, so nothing a template prints can
become markup. Pages hold no data: a person signs in with an API token, which the console
script keeps in ``sessionStorage`` and sends as ``Authorization: Bearer`` on every ``fetch``
to the service's JSON routes, and the script inserts what comes back with ``textContent``
only. No cookie is ever set, so a page on another site cannot make the browser send an
authenticated request (there is no CSRF surface), and the Content-Security-Policy below
allows only this origin's own scripts and styles, with no inline code, as a second wall
should markup ever reach a page.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from collections.abc import Callable, Sequence
from typing import Any

import fastapi
import jinja2
from fastapi import responses

from tunewire.core.base.principals import Principal
from tunewire.core.process import authorization

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""Sent with every page and static file. ``form-action 'none'``: forms are handled by the
script; without it a form would never be sent anywhere (a token must not end up in a URL)."""

_SHELL = "tunewire.core.console"
_MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_STATIC_NAME = re.compile(r"^[a-z][a-z0-9-]*\.(css|js)$")


@dataclasses.dataclass(frozen=True)
class View:
    """One page of a service's console: ``/console/{slug}``, template ``{slug}.html``."""

    slug: str
    title: str


def router(
    *, service: str, package: str, views: Sequence[View], auth: authorization.Authority
) -> fastapi.APIRouter:
    """The pages of ``views``, the static files and ``/console/api/session``.

    ``package`` owns the views: its ``templates/`` holds ``{slug}.html`` and its ``static/``
    the page scripts; the shell (base template, stylesheet, sign-in script) comes from here.

    ``/console`` redirects to the first view. The session route answers the principal's
    name and roles for a valid token (the sign-in form's check) and 401 otherwise.
    """
    if not views:
        raise ValueError("a console needs at least one view")
    templates = _environment(package)
    static_dirs = [importlib.resources.files(p) / "static" for p in (package, _SHELL)]
    routes = fastapi.APIRouter(prefix="/console", include_in_schema=False)

    @routes.get("")
    def home() -> responses.RedirectResponse:
        return responses.RedirectResponse(f"/console/{views[0].slug}", status_code=307)

    for view in views:
        routes.add_api_route(
            f"/{view.slug}",
            _page_handler(templates, service=service, views=views, view=view),
        )

    @routes.get("/static/{name}")
    def static(name: str) -> responses.Response:
        found = [d / name for d in static_dirs if (d / name).is_file()]
        if not _STATIC_NAME.match(name) or not found:
            return responses.Response(status_code=404, headers=SECURITY_HEADERS)
        resource = found[0]
        media_type = _MEDIA_TYPES[name[name.rindex(".") :]]
        return responses.Response(
            resource.read_bytes(), media_type=media_type, headers=SECURITY_HEADERS
        )

    Caller = fastapi.Depends(auth)

    @routes.get("/api/session")
    def session(caller: Principal = Caller) -> dict[str, Any]:
        return {"service": service, "name": caller.name, "roles": sorted(caller.roles)}

    return routes


def _environment(package: str) -> jinja2.Environment:
    """Templates of ``package`` first, then the shell's, all autoescaped."""
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.PackageLoader(package, "templates"), jinja2.PackageLoader(_SHELL, "templates")]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page_handler(
    templates: jinja2.Environment, *, service: str, views: Sequence[View], view: View
) -> Callable[[], responses.HTMLResponse]:
    template = templates.get_template(f"{view.slug}.html")

    def page() -> responses.HTMLResponse:
        body = template.render(service=service, views=views, view=view)
        return responses.HTMLResponse(body, headers=SECURITY_HEADERS)

    page.__name__ = f"console_{view.slug}"
    return page
