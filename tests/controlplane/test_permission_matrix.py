"""Every cell of role × method × resource (ARCHITECTURE §8), asserted against an explicit table.

The table is written out by hand rather than derived from the permission code, so a change to the
code that widens or narrows a role turns a cell red.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from controlplane.breakers.services import breaker_policy_create
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent
from controlplane.routing.services import endpoint_create
from tests.conftest import PASSWORD, client_for, endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"
METHODS = ("GET", "POST", "PATCH", "DELETE")
ROLES = ("admin", "operator", "readonly", "dataplane", "anonymous")

DENIED = (403, 403, 403, 403)
ANONYMOUS = (401, 401, 401, 401)
READ_ONLY_RESOURCE = (200, 405, 405, 405)

#            resource            admin                 operator              readonly              dataplane
EXPECTED: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "endpoints":        {"admin": (200, 201, 200, 204), "operator": (200, 201, 200, 204), "readonly": (200, 403, 403, 403), "dataplane": DENIED},  # noqa: E501
    "breaker-policies": {"admin": (200, 201, 200, 204), "operator": (200, 201, 200, 204), "readonly": (200, 403, 403, 403), "dataplane": DENIED},  # noqa: E501
    "revisions":        {"admin": READ_ONLY_RESOURCE,   "operator": READ_ONLY_RESOURCE,   "readonly": (200, 403, 403, 403), "dataplane": DENIED},  # noqa: E501
    "audit":            {"admin": READ_ONLY_RESOURCE,   "operator": READ_ONLY_RESOURCE,   "readonly": DENIED,               "dataplane": DENIED},  # noqa: E501
    "users":            {"admin": (200, 201, 200, 204), "operator": DENIED,               "readonly": DENIED,               "dataplane": DENIED},  # noqa: E501
    "roles":            {"admin": READ_ONLY_RESOURCE,   "operator": READ_ONLY_RESOURCE,   "readonly": (200, 403, 403, 403), "dataplane": DENIED},  # noqa: E501
}  # fmt: skip


def world(make_user: Callable[..., Any]) -> dict[str, str]:
    """Objects for the detail URLs; returns resource → detail path."""
    actor = Actor.system("test")
    endpoint_create(data=endpoint_body("users"), actor=actor)
    breaker_policy_create(data={"name": "strict"}, actor=actor)
    make_user("victim", "readonly")
    event = AuditEvent.objects.order_by("-pk").first()
    assert event is not None
    return {
        "endpoints": "endpoints/users:v1/",
        "breaker-policies": "breaker-policies/strict/",
        "revisions": "revisions/1/",
        "audit": f"audit/{event.pk}/",
        "users": "users/victim/",
        "roles": "roles/readonly/",
    }


CREATE = {
    "endpoints": endpoint_body("orders"),
    "breaker-policies": {"name": "lenient"},
    "users": {"username": "newbie", "password": PASSWORD, "roles": ["readonly"]},
}
PATCH = {
    "endpoints": {"description": "patched"},
    "breaker-policies": {"failure_threshold": 9},
    "users": {"email": "victim@example.test"},
}


def client_in(role: str, make_user: Callable[..., Any]) -> APIClient:
    if role == "anonymous":
        return APIClient()
    return client_for(make_user(f"{role}-user", role))


REFUSALS = {"not_authenticated", "permission_denied", "method_not_allowed"}


def answer(role: str, make_user: Callable[..., Any], method: str, path: str, expected: int, body: str = "{}") -> Any:
    """`method path` as `role`, asserting the expected status and, for a refusal, its error code."""
    response = client_in(role, make_user).generic(method, f"{API}/{path}", body, content_type="application/json")
    assert response.status_code == expected, response.content
    if expected in (401, 403, 405):
        assert response.json()["error"] in REFUSALS
    return response


@pytest.mark.parametrize("method_index", range(4), ids=METHODS)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", list(EXPECTED))
def test_each_role_gets_exactly_its_answer_for_each_method_on_each_resource(
    resource: str, role: str, method_index: int, make_user: Callable[..., Any]
) -> None:
    details = world(make_user)
    client = client_in(role, make_user)
    method = METHODS[method_index]
    if method == "GET":
        response = client.get(f"{API}/{resource}/")
    elif method == "POST":
        response = client.post(f"{API}/{resource}/", CREATE.get(resource, {}), format="json")
    elif method == "PATCH":
        response = client.patch(f"{API}/{details[resource]}", PATCH.get(resource, {}), format="json")
    else:
        response = client.delete(f"{API}/{details[resource]}")
    expected = ANONYMOUS if role == "anonymous" else EXPECTED[resource][role]
    assert response.status_code == expected[method_index], response.content
    if response.status_code >= 400:
        assert response.json()["error"] in REFUSALS


# --- health routes (ARCHITECTURE §8: `health/` is config:read, `endpoints/{key}/check/` config:write) ----
# Neither has detail URLs, so each is its own row of (method, path): the list answers only GET; the
# check answers only POST (409 for an endpoint without active checks, 200 with its probe results). A GET
# is a read, so config:read passes the permission check and meets the 405; a POST needs config:write.
HEALTH_ROUTES = (
    ("GET", "health/"),
    ("POST", "health/"),
    ("GET", "endpoints/checked:v1/check/"),
    ("POST", "endpoints/checked:v1/check/"),
    ("POST", "endpoints/users:v1/check/"),
)
#            role          GET health/  POST health/  GET check/  POST check/  POST check/ (no health path)
HEALTH_EXPECTED: dict[str, tuple[int, int, int, int, int]] = {
    "admin":     (200,         405,          405,        200,         409),
    "operator":  (200,         405,          405,        200,         409),
    "readonly":  (200,         403,          405,        403,         403),
    "dataplane": (403,         403,          403,        403,         403),
    "anonymous": (401,         401,          401,        401,         401),
}  # fmt: skip


@pytest.mark.parametrize("route_index", range(len(HEALTH_ROUTES)), ids=[f"{m} {p}" for m, p in HEALTH_ROUTES])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer_on_the_health_routes(
    role: str, route_index: int, make_user: Callable[..., Any]
) -> None:
    from .health_upstream import upstream

    world(make_user)
    method, path = HEALTH_ROUTES[route_index]
    expected = HEALTH_EXPECTED[role][route_index]
    with upstream() as server:
        check = {"path": "/health", "timeout": 2}
        body = endpoint_body("checked", targets=[{"url": f"{server.base}/api"}], health_check=check)
        endpoint_create(data=body, actor=Actor.system("test"))
        answer(role, make_user, method, path, expected)
    # Only a permitted check probes the target.
    assert len(server.paths) == (1 if expected == 200 and path == "endpoints/checked:v1/check/" else 0)


# --- stats routes (config:read; read-only, so a write by anyone allowed to read meets the 405) -----
STATS_ROUTES = (
    ("GET", "stats/"),
    ("POST", "stats/"),
    ("GET", "stats/endpoints/users:v1/"),
    ("GET", "stats/summary/"),
    ("DELETE", "stats/summary/"),
    ("GET", "stats/endpoints/users:v1/consumers/"),
    ("POST", "stats/endpoints/users:v1/consumers/"),
)
#            role          GET stats/  POST stats/  GET endpoint  GET summary  DELETE summary  GET consumers  POST …
STATS_EXPECTED: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "admin":     (200,        405,         200,          200,         405,            200,           405),
    "operator":  (200,        405,         200,          200,         405,            200,           405),
    "readonly":  (200,        403,         200,          200,         403,            200,           403),
    "dataplane": (403,        403,         403,          403,         403,            403,           403),
    "anonymous": (401,        401,         401,          401,         401,            401,           401),
}  # fmt: skip


@pytest.mark.parametrize("route_index", range(len(STATS_ROUTES)), ids=[f"{m} {p}" for m, p in STATS_ROUTES])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer_on_the_stats_routes(
    role: str, route_index: int, make_user: Callable[..., Any]
) -> None:
    world(make_user)
    method, path = STATS_ROUTES[route_index]
    response = answer(role, make_user, method, path, STATS_EXPECTED[role][route_index])
    if response.status_code == 200:
        wanted = {"stats/summary/": "status", "stats/endpoints/users:v1/consumers/": "consumers"}.get(path, "totals")
        assert wanted in response.json()


# --- operator tools: `routes/resolve/` is config:read and answers only GET ------------------------------
RESOLVE_ROUTES = (("GET", "routes/resolve/?path=/users/1"), ("POST", "routes/resolve/?path=/users/1"))
#            role          GET resolve  POST resolve
RESOLVE_EXPECTED: dict[str, tuple[int, int]] = {
    "admin":     (200,         405),
    "operator":  (200,         405),
    "readonly":  (200,         403),
    "dataplane": (403,         403),
    "anonymous": (401,         401),
}  # fmt: skip


@pytest.mark.parametrize("route_index", range(len(RESOLVE_ROUTES)), ids=[m for m, _ in RESOLVE_ROUTES])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer_on_routes_resolve(
    role: str, route_index: int, make_user: Callable[..., Any]
) -> None:
    world(make_user)
    method, path = RESOLVE_ROUTES[route_index]
    response = answer(role, make_user, method, path, RESOLVE_EXPECTED[role][route_index])
    if response.status_code == 200:
        assert response.json()["endpoint"]["key"] == "users:v1"


# --- breakers: `breakers/` and its detail are config:read; force and reset are config:write POSTs ---------
BREAKER_ROUTES = (
    ("GET", "breakers/"),
    ("POST", "breakers/"),
    ("GET", "breakers/users:v1/"),
    ("DELETE", "breakers/users:v1/"),
    ("GET", "breakers/users:v1/force/"),
    ("POST", "breakers/users:v1/force/"),
    ("POST", "breakers/users:v1/reset/"),
)
#            role          GET list  POST list  GET detail  DELETE detail  GET force  POST force  POST reset
BREAKER_EXPECTED: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "admin":     (200,      405,       200,        405,           405,       200,        200),
    "operator":  (200,      405,       200,        405,           405,       200,        200),
    "readonly":  (200,      403,       200,        403,           405,       403,        403),
    "dataplane": (403,      403,       403,        403,           403,       403,        403),
    "anonymous": (401,      401,       401,        401,           401,       401,        401),
}  # fmt: skip


@pytest.mark.parametrize("route_index", range(len(BREAKER_ROUTES)), ids=[f"{m} {p}" for m, p in BREAKER_ROUTES])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer_on_the_breaker_routes(
    role: str, route_index: int, make_user: Callable[..., Any]
) -> None:
    from controlplane.breakers.models import BreakerOverride

    world(make_user)
    method, path = BREAKER_ROUTES[route_index]
    expected = BREAKER_EXPECTED[role][route_index]
    answer(role, make_user, method, path, expected, '{"state": "open"}')
    # Only a permitted force or reset leaves an override behind.
    assert BreakerOverride.objects.exists() == (method == "POST" and expected == 200)


# --- data-plane nodes: `dataplanes/` and its detail are config:read and read-only; retiring a
# node (`dataplanes/{node_id}/retire/`, POST) is config:write --------------------------------------------
NODE_ROUTES = (
    ("GET", "dataplanes/"),
    ("POST", "dataplanes/"),
    ("GET", "dataplanes/edge-1/"),
    ("PATCH", "dataplanes/edge-1/"),
    ("DELETE", "dataplanes/edge-1/"),
    ("GET", "dataplanes/edge-1/retire/"),
    ("POST", "dataplanes/edge-1/retire/"),
)
#            role          GET list  POST list  GET detail  PATCH detail  DELETE detail  GET retire  POST retire
NODE_EXPECTED: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "admin":     (200,      405,       200,        405,          405,           405,        204),
    "operator":  (200,      405,       200,        405,          405,           405,        204),
    "readonly":  (200,      403,       200,        403,          403,           405,        403),
    "dataplane": (403,      403,       403,        403,          403,           403,        403),
    "anonymous": (401,      401,       401,        401,          401,           401,        401),
}  # fmt: skip


def _node() -> Any:
    from controlplane.dataplanes.models import DataPlaneNode

    return DataPlaneNode.objects.create(
        node_id="edge-1", boot_id="b", hostname="edge", version="0.1.0", revision=1, result="applied"
    )


@pytest.mark.parametrize("route_index", range(len(NODE_ROUTES)), ids=[f"{m} {p}" for m, p in NODE_ROUTES])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer_on_the_node_routes(
    role: str, route_index: int, make_user: Callable[..., Any]
) -> None:
    from controlplane.dataplanes.models import DataPlaneNode

    world(make_user)
    _node()
    method, path = NODE_ROUTES[route_index]
    expected = NODE_EXPECTED[role][route_index]
    answer(role, make_user, method, path, expected)
    # Only a permitted retire removes the node.
    assert DataPlaneNode.objects.filter(node_id="edge-1").exists() == (expected != 204)


# --- `revisions/{n}/wait/` (config:read, GET only) is an ASGI app in front of Django: driven in process ----
#            role          GET wait  POST wait
WAIT_EXPECTED: dict[str, tuple[int, int]] = {
    "admin":     (200,      405),
    "operator":  (200,      405),
    "readonly":  (200,      403),
    "dataplane": (403,      403),
    "anonymous": (401,      401),
}  # fmt: skip


@pytest.mark.parametrize("method_index", range(2), ids=["GET", "POST"])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer_on_revision_wait(
    role: str, method_index: int, make_user: Callable[..., Any]
) -> None:
    import httpx
    from asgiref.sync import async_to_sync
    from rest_framework_simplejwt.tokens import RefreshToken

    from controlplane.dataplanes.rollout import RolloutWaitApp

    world(make_user)
    _node()
    headers = {}
    if role != "anonymous":
        headers["Authorization"] = f"Bearer {RefreshToken.for_user(make_user(f'{role}-user', role)).access_token}"

    async def django(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the wait must not reach Django")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=RolloutWaitApp(django))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.request(
                ("GET", "POST")[method_index], f"{API}/revisions/1/wait/?timeout=1", headers=headers
            )

    response = async_to_sync(call)()
    expected = WAIT_EXPECTED[role][method_index]
    assert response.status_code == expected, response.content
    if response.status_code in (401, 403, 405):
        assert response.json()["error"] in REFUSALS
    else:
        assert response.json()["done"] is True
