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
        assert response.json()["error"] in {"not_authenticated", "permission_denied", "method_not_allowed"}


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
    client = client_in(role, make_user)
    method, path = HEALTH_ROUTES[route_index]
    with upstream() as server:
        check = {"path": "/health", "timeout": 2}
        body = endpoint_body("checked", targets=[{"url": f"{server.base}/api"}], health_check=check)
        endpoint_create(data=body, actor=Actor.system("test"))
        response = client.get(f"{API}/{path}") if method == "GET" else client.post(f"{API}/{path}")
    expected = HEALTH_EXPECTED[role][route_index]
    assert response.status_code == expected, response.content
    if response.status_code in (401, 403, 405):
        assert response.json()["error"] in {"not_authenticated", "permission_denied", "method_not_allowed"}
    # Only a permitted check probes the target.
    assert len(server.paths) == (1 if expected == 200 and path == "endpoints/checked:v1/check/" else 0)
