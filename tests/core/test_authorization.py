"""Principals, roles and the policy table: who is who, who may do what, and no open route.

The whole matrix (every route of every running service, every role) is checked on the
stack in tests/stack/test_authorization_matrix.py; these tests pin the pieces.
"""

from __future__ import annotations

import collections.abc
import warnings

import fastapi
import pydantic
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from tunewire.core.base import principals
from tunewire.core.base.principals import Principal, Principals, Role
from tunewire.core.process import authorization, http

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from fastapi.testclient import TestClient

TOKENS = {name: f"{name}-token-for-the-authorization-tests" for name in ("rita", "olga", "vera")}
ROLES = {"rita": {Role.REVIEWER}, "olga": {Role.OPERATOR, Role.VIEWER}, "vera": {Role.VIEWER}}
TABLE = {
    ("GET", "/v1/things"): frozenset({Role.VIEWER, Role.REVIEWER}),
    ("POST", "/v1/things/{thing}/approve"): frozenset({Role.REVIEWER}),
}


def principal(name: str, token: str | None = None, **fields: object) -> Principal:
    token = token or TOKENS[name]
    return Principal(
        name=name,
        token_sha256=principals.token_digest(token),
        roles=frozenset(ROLES.get(name, {Role.VIEWER})),
        **fields,  # type: ignore[arg-type]
    )


KNOWN = Principals([principal(name) for name in TOKENS])


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def client() -> collections.abc.Iterator[TestClient]:
    authority = authorization.Authority(KNOWN, TABLE)
    Caller = fastapi.Depends(authority)
    router = fastapi.APIRouter()

    @router.get("/v1/things")
    def things(caller: Principal = Caller) -> dict[str, str]:
        return {"caller": caller.name}

    @router.post("/v1/things/{thing}/approve")
    def approve(thing: str, caller: Principal = Caller) -> dict[str, str]:
        return {"approved": thing, "by": caller.name}

    @router.get("/v1/forgotten")
    def forgotten(caller: Principal = Caller) -> dict[str, str]:
        return {"caller": caller.name}

    app = http.create_app(title="test", probes=http.Probes(), routers=[router])
    with TestClient(app) as test_client:
        yield test_client


# -- identity ----------------------------------------------------------------------------


def test_the_token_names_the_principal_and_the_secret_is_never_kept() -> None:
    found = KNOWN.authenticate(f"Bearer {TOKENS['rita']}")
    assert found.name == "rita"
    assert KNOWN.authenticate(f"bearer  {TOKENS['rita']} ").name == "rita"
    assert TOKENS["rita"] not in found.model_dump_json()


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKENS['rita']}", TOKENS["rita"]],
    ids=["none", "empty", "no-token", "blank-token", "basic", "no-scheme"],
)
def test_a_missing_or_malformed_header_is_401(header: str | None) -> None:
    with pytest.raises(principals.errors.Unauthorized, match="Authorization: Bearer"):
        KNOWN.authenticate(header)


@pytest.mark.parametrize(
    "token",
    [TOKENS["rita"] + "x", TOKENS["rita"][:-1], "short", "x" * 64],
    ids=["longer", "shorter", "below-minimum", "unknown"],
)
def test_a_wrong_token_is_401(token: str) -> None:
    with pytest.raises(principals.errors.Unauthorized, match="not valid"):
        KNOWN.authenticate(f"Bearer {token}")


def test_a_token_below_the_minimum_length_never_works_even_if_configured() -> None:
    short = "s" * (principals.MIN_TOKEN_LENGTH - 1)
    configured = Principals([principal("rita", short)])
    with pytest.raises(principals.errors.Unauthorized):
        configured.authenticate(f"Bearer {short}")


@pytest.mark.parametrize("name", sorted(principals.RESERVED_NAMES))
def test_the_services_own_names_are_reserved(name: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="reserved"):
        principal(name, "a-token-long-enough-to-be-accepted")


@pytest.mark.parametrize("name", ["", "Alice", "a b", "-lead", "x" * 65])
def test_a_principal_name_must_be_a_plain_identifier(name: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="principal name"):
        principal(name, "a-token-long-enough-to-be-accepted")


def test_a_principal_needs_a_role_and_a_sha256() -> None:
    with pytest.raises(pydantic.ValidationError, match="roles"):
        Principal(name="x", token_sha256=principals.token_digest("t"), roles=frozenset())
    with pytest.raises(pydantic.ValidationError, match="token_sha256"):
        Principal(name="x", token_sha256="plaintext-token", roles=frozenset({Role.VIEWER}))


def test_names_and_tokens_are_unique() -> None:
    with pytest.raises(ValueError, match="unique: rita"):
        Principals([principal("rita"), principal("rita", "another-token-long-enough-here")])
    with pytest.raises(ValueError, match="share a token"):
        Principals([principal("rita"), principal("vera", TOKENS["rita"])])


# -- the policy --------------------------------------------------------------------------


def test_a_role_the_route_names_is_let_through_and_named(client: TestClient) -> None:
    assert client.get("/v1/things", headers=as_("vera")).json() == {"caller": "vera"}
    approved = client.post("/v1/things/t1/approve", headers=as_("rita"))
    assert approved.json() == {"approved": "t1", "by": "rita"}


def test_a_principal_without_the_role_is_403_naming_what_it_needs(client: TestClient) -> None:
    refused = client.post("/v1/things/t1/approve", headers=as_("olga"))
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "forbidden",
        "message": "olga may not POST /v1/things/{thing}/approve; it needs one of the roles "
        "reviewer",
    }


def test_no_token_is_401_with_a_bearer_challenge_before_any_policy(client: TestClient) -> None:
    for path in ("/v1/things", "/v1/forgotten"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"


def test_a_route_without_a_policy_is_refused_to_everyone(client: TestClient) -> None:
    refused = client.get("/v1/forgotten", headers=as_("rita"))
    assert refused.status_code == 403
    assert "has no policy" in refused.json()["message"]


def test_a_service_with_a_route_outside_its_policy_does_not_start(client: TestClient) -> None:
    routes = authorization.routes_of(client.app)  # type: ignore[arg-type]
    assert ("GET", "/v1/forgotten") in routes
    with pytest.raises(
        RuntimeError, match=r"routes without a policy: \[\('GET', '/v1/forgotten'\)"
    ):
        authorization.check_routes("test", routes, TABLE)
    with pytest.raises(RuntimeError, match="does not have"):
        authorization.check_routes(
            "test",
            routes,
            {**TABLE, ("GET", "/v1/forgotten"): frozenset(), ("GET", "/v1/gone"): frozenset()},
        )
    authorization.check_routes("test", routes, {**TABLE, ("GET", "/v1/forgotten"): frozenset()})


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/console", "/console/review"]
)
def test_probes_metrics_and_console_shells_are_public(path: str) -> None:
    assert authorization.is_public(path)


@pytest.mark.parametrize("path", ["/console/api/session", "/console/api/reviews", "/v1/models"])
def test_console_data_and_the_apis_are_not_public(path: str) -> None:
    assert not authorization.is_public(path)


def test_every_service_has_a_policy_table_and_only_known_roles() -> None:
    assert set(authorization.POLICY) == {"ingest", "label", "train", "evaluate", "serve"}
    for table in authorization.POLICY.values():
        for (method, path), roles in table.items():
            assert method in {"GET", "POST", "PUT", "DELETE"} and path.startswith("/")
            assert roles and roles <= set(Role)
    # Besides the console's session check (open to every role), only the model API.
    calls_model = {
        route
        for table in authorization.POLICY.values()
        for route, who in table.items()
        if Role.CLIENT in who
    } - {("GET", "/console/api/session")}
    assert sorted(calls_model) == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/objectives/{name}/predict"),
    ]
