"""§12's canary in the control plane: traffic_split over the API, the services' rules across versions
(a target that goes away, a default that moves), hostile input (400 with a code, never 500), import,
`routes/resolve/` and the admin's route-debug page, and the per-version share in `stats/`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from configdoc.splits import compile_split
from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.core.models import ConfigRevision
from controlplane.core.revisions import current_document_bytes
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from controlplane.snapshots.services import config_import
from controlplane.stats.services import stats_ingest
from tests.conftest import endpoint_body
from tests.controlplane.test_stats import entry, report

pytestmark = pytest.mark.django_db
API = "/api/v1"
ACTOR = Actor.system("test")
RESOLVE = f"{API}/routes/resolve/"
DEBUG = "/admin/routing/endpoint/route-debug/"
SPLIT = {"version": "v2", "percent": 10, "header": {"X-Canary": "1"}, "sticky": "cookie", "sticky_name": "session"}


@pytest.fixture
def versions() -> None:
    endpoint_create(data=endpoint_body("users", "v1"), actor=ACTOR)
    endpoint_create(data=endpoint_body("users", "v2", targets=[{"url": "http://127.0.0.1:8011/api"}]), actor=ACTOR)


@pytest.fixture
def split(versions: None) -> None:
    endpoint_create(data=endpoint_body("users", "v3"), actor=ACTOR)
    v1 = Endpoint.objects.get(name="users", version="v1")
    from controlplane.routing.services import endpoint_update

    endpoint_update(endpoint=v1, data={"traffic_split": SPLIT}, partial=True, actor=ACTOR)


def test_the_api_writes_and_shows_a_split(operator_client: APIClient, versions: None) -> None:
    response = operator_client.patch(f"{API}/endpoints/users:v1/", {"traffic_split": SPLIT}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["traffic_split"] == {**SPLIT, "header": {"X-Canary": ["1"]}}
    assert operator_client.get(f"{API}/endpoints/users:v2/").json()["traffic_split"] is None
    assert '"traffic_split":{"header":{"X-Canary":["1"]}' in current_document_bytes().decode()
    removed = operator_client.patch(f"{API}/endpoints/users:v1/", {"traffic_split": None}, format="json")
    assert removed.status_code == 200 and removed.json()["traffic_split"] is None


def test_a_split_to_a_version_that_does_not_exist_is_refused(operator_client: APIClient, versions: None) -> None:
    before = ConfigRevision.objects.count()
    body = {"traffic_split": {"version": "v7", "percent": 5}}
    response = operator_client.patch(f"{API}/endpoints/users:v1/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error"] == "validation_error"
    assert "users:v7, which does not exist (other versions of users: v2)" in error["fields"]["traffic_split.version"][0]
    assert ConfigRevision.objects.count() == before


def test_a_split_on_a_version_that_is_not_the_default_is_refused(operator_client: APIClient, versions: None) -> None:
    body = {"traffic_split": {"version": "v1", "percent": 5}}
    response = operator_client.patch(f"{API}/endpoints/users:v2/", body, format="json")
    assert response.status_code == 400
    assert "only the default version of users may split" in response.json()["fields"]["traffic_split"][0]


def test_removing_the_split_target_is_refused_naming_the_split(operator_client: APIClient, split: None) -> None:
    response = operator_client.delete(f"{API}/endpoints/users:v2/")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert "users:v1's traffic_split.version" in response.content.decode()
    assert Endpoint.objects.filter(name="users", version="v2").exists()
    renamed = operator_client.patch(f"{API}/endpoints/users:v2/", {"version": "v9"}, format="json")
    assert renamed.status_code == 400 and "users:v2, which does not exist" in renamed.content.decode()
    # Another version may go.
    assert operator_client.delete(f"{API}/endpoints/users:v3/").status_code == 204


def test_moving_the_default_away_from_a_splitting_version_is_refused(operator_client: APIClient, split: None) -> None:
    response = operator_client.patch(f"{API}/endpoints/users:v2/", {"default": True}, format="json")
    assert response.status_code == 400, response.content
    assert "users:v1's traffic_split" in response.content.decode()
    assert Endpoint.objects.get(name="users", is_default=True).version == "v1"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"version": "v2\\u0000", "percent": 5}', "traffic_split.version"),
        ('{"version": "v2", "percent": 1e400}', "traffic_split.percent"),
        ('{"version": "v2", "percent": 123456789012345678901234567890123456789}', "traffic_split.percent"),
        ('{"version": "v2", "percent": "ten"}', "traffic_split.percent"),
        ('{"version": "v2", "percent": [10]}', "traffic_split.percent"),
        ('{"version": "v2", "percent": 10.001}', "traffic_split.percent"),
        ('{"version": {"a": 1}}', "traffic_split.version"),
        ('{"version": "v2", "sticky": "header", "sticky_name": "X\\u0000"}', "traffic_split.sticky_name"),
        ('{"version": "v2", "sticky": true}', "traffic_split.sticky"),
        ('{"version": "v2", "header": {"X-C": "' + "a" * 5000 + '"}}', "traffic_split.header.X-C[0]"),
        ('{"version": "v2", "header": {"X\\u0000": "1"}}', "traffic_split.header.X\\x00"),
        ('{"version": "\\ud800"}', "traffic_split.version"),
        ('"v2"', "traffic_split"),
        ("[1, 2]", "traffic_split"),
    ],
)
def test_hostile_splits_are_a_400_with_a_code_never_a_500(
    operator_client: APIClient, versions: None, raw: str, field: str
) -> None:
    before = ConfigRevision.objects.count()
    body = '{"traffic_split": ' + raw + "}"
    response = operator_client.patch(f"{API}/endpoints/users:v1/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error"] == "validation_error"
    assert field in error["fields"], error
    assert ConfigRevision.objects.count() == before


def test_an_import_whose_split_target_is_missing_is_refused_whole(versions: None) -> None:
    before = current_document_bytes()
    document = {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            endpoint_body("fresh"),
            {**endpoint_body("users", "v1"), "default": True, "traffic_split": {"version": "v5", "percent": 1}},
        ],
    }
    with pytest.raises(ConfigValidationError) as caught:
        config_import(document=document, actor=ACTOR)
    assert "endpoints[1].traffic_split.version" in str(caught.value)
    assert current_document_bytes() == before and not Endpoint.objects.filter(name="fresh").exists()


def test_an_import_that_moves_the_default_off_a_split_is_refused(split: None) -> None:
    before = current_document_bytes()
    document = {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            {**endpoint_body("users", "v2", targets=[{"url": "http://127.0.0.1:8011/api"}]), "default": True}
        ],
    }
    with pytest.raises(ConfigValidationError) as caught:
        config_import(document=document, actor=ACTOR)
    assert "users:v1's traffic_split" in str(caught.value)
    assert current_document_bytes() == before


def test_an_import_with_a_split_is_applied(versions: None) -> None:
    document = json.loads(current_document_bytes())
    document["format_version"] = 2
    document["endpoints"][0]["traffic_split"] = {"version": "v2", "percent": 12.5}
    config_import(document=document, actor=ACTOR)
    assert Endpoint.objects.get(name="users", version="v1").document["traffic_split"] == {
        "version": "v2",
        "percent": 12.5,
    }


# --- the debuggers ------------------------------------------------------------------------------------


def test_resolve_says_which_version_a_sticky_cookie_takes(readonly_client: APIClient, split: None) -> None:
    compiled = compile_split("users", {**SPLIT, "header": {"X-Canary": ["1"]}})
    for session in ("a", "b", "c", "d", "e", "f"):
        body = readonly_client.get(RESOLVE, {"path": "/users/1", "headers": f"Cookie: session={session}"}).json()
        expected = "users:v2" if compiled.bucket(session) < 1000 else "users:v1"
        assert body["endpoint"]["key"] == expected and body["decided_by"] == "traffic_split"
        assert body["traffic_split"]["decided_by"] == "sticky"
        assert body["traffic_split"]["bucket"] == compiled.bucket(session)
    canary = readonly_client.get(RESOLVE, {"path": "/users", "headers": "X-Canary: 1"}).json()
    assert canary["endpoint"]["key"] == "users:v2" and canary["traffic_split"]["decided_by"] == "header"
    drawn = readonly_client.get(RESOLVE, {"path": "/users"}).json()
    assert drawn["endpoint"]["key"] == "users:v1" and drawn["decided_by"] == "path"
    assert drawn["traffic_split"]["decided_by"] == "random" and drawn["traffic_split"]["version"] is None
    assert readonly_client.get(RESOLVE, {"path": "/v1/users"}).json()["traffic_split"] is None


@pytest.mark.parametrize("client_ip", ["not-an-ip", "10.0.0.1\x00", "1" * 5000, "::g"])
def test_resolve_refuses_a_client_ip_that_is_not_an_address(
    readonly_client: APIClient, split: None, client_ip: str
) -> None:
    response = readonly_client.get(RESOLVE, {"path": "/users", "client_ip": client_ip})
    assert response.status_code == 400 and "client_ip" in response.json()["fields"]


def test_the_route_debug_page_shows_the_split(make_user: Callable[..., Any], split: None) -> None:
    client = Client()
    client.force_login(make_user("rita", "readonly"))
    html = client.get(DEBUG, {"path": "/users/1", "headers": "X-Canary: 1"}).content.decode()
    assert '<td class="endpoint">users:v2</td>' in html and '<td class="decided-by">traffic_split</td>' in html
    assert 'class="traffic-split"' in html and "canary header" in html
    drawn = client.get(DEBUG, {"path": "/users/1"}).content.decode()
    assert '<td class="endpoint">users:v1</td>' in drawn and "each request is drawn, 10 % go to v2" in drawn
    hostile = client.get(DEBUG, {"path": "/users", "client_ip": "nope"})
    assert hostile.status_code == 200 and b"errorlist" in hostile.content


# --- the share ----------------------------------------------------------------------------------------


def test_stats_show_the_share_of_each_version(readonly_client: APIClient, split: None) -> None:
    now = timezone.now()
    stats_ingest(report=report(users_v1=entry(0), users_v2=entry(0)), now=now - timedelta(seconds=1))
    stats_ingest(report=report(users_v1=entry(900), users_v2=entry(95, server=5)), now=now)
    body = readonly_client.get(f"{API}/stats/endpoints/users:v1/", {"window": "5m"}).json()
    shares = {row["endpoint"]: (row["requests"], row["share"]) for row in body["versions"]["versions"]}
    assert shares == {"users:v1": (900, 0.9), "users:v2": (100, 0.1), "users:v3": (0, 0.0)}
    assert body["versions"]["traffic_split"]["percent"] == 10
    assert body["versions"]["traffic_split"]["from"] == "users:v1"
