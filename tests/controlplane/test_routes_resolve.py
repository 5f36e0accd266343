"""`routes/resolve/?path=`: the endpoint and upstream URLs a path goes to, by configdoc's matcher."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from controlplane.core.actors import Actor
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create, endpoint_update
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
URL = "/api/v1/routes/resolve/"
ACTOR = Actor.system("test")


@pytest.fixture
def endpoints() -> None:
    endpoint_create(
        data=endpoint_body(
            "users",
            default=True,
            methods=["GET", "POST"],
            targets=[
                {"url": "http://127.0.0.1:8010/api"},
                {"url": "http://127.0.0.1:8011/"},
                {"url": "http://127.0.0.1:8012/off", "enabled": False},
            ],
        ),
        actor=ACTOR,
    )
    endpoint_create(
        data=endpoint_body(
            "legacy", paths=["/old/api"], strip_path=False, targets=[{"url": "http://127.0.0.1:8013/l"}]
        ),
        actor=ACTOR,
    )


def test_a_path_resolves_to_its_endpoint_and_one_upstream_url_per_enabled_target(
    readonly_client: APIClient, endpoints: None
) -> None:
    response = readonly_client.get(URL, {"path": "/users/42?x=1", "method": "post"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["endpoint"] == {
        "key": "users:v1", "route": "/users", "strip_path": True, "enabled": True, "methods": ["GET", "HEAD", "POST"],
        "hosts": [], "match_headers": {},
    }  # fmt: skip
    assert body["method"] == "POST" and body["method_allowed"] is True
    assert body["decided_by"] == "path"
    assert body["targets"] == [
        {"url": "http://127.0.0.1:8010/api", "upstream_url": "http://127.0.0.1:8010/api/42?x=1"},
        {"url": "http://127.0.0.1:8011", "upstream_url": "http://127.0.0.1:8011/42?x=1"},
    ]


def test_the_longest_route_wins_and_an_unstripped_extra_path_is_kept(
    readonly_client: APIClient, endpoints: None
) -> None:
    body = readonly_client.get(URL, {"path": "/old/api/items"}).json()
    assert body["endpoint"]["key"] == "legacy:v1" and body["endpoint"]["route"] == "/old/api"
    assert body["targets"] == [
        {"url": "http://127.0.0.1:8013/l", "upstream_url": "http://127.0.0.1:8013/l/old/api/items"}
    ]
    versioned = readonly_client.get(URL, {"path": "/v1/users", "method": "DELETE"}).json()
    assert versioned["endpoint"]["route"] == "/v1/users" and versioned["method_allowed"] is False
    assert versioned["targets"][1]["upstream_url"] == "http://127.0.0.1:8011/"


def test_no_route_is_a_404_naming_the_path(readonly_client: APIClient, endpoints: None) -> None:
    response = readonly_client.get(URL, {"path": "/usersx/1"})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "no_route" and body["path"] == "/usersx/1" and body["request_id"]


@pytest.mark.parametrize("path", ["/users/../admin", "/users/%2E%2e/x", "/users/./1", "users/1"])
def test_paths_the_data_plane_refuses_are_a_400(readonly_client: APIClient, endpoints: None, path: str) -> None:
    response = readonly_client.get(URL, {"path": path})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request" and response.json()["path"] == path


def test_a_missing_path_or_a_bad_method_is_a_validation_error(readonly_client: APIClient) -> None:
    missing = readonly_client.get(URL)
    assert missing.status_code == 400 and "path" in missing.json()["fields"]
    bad = readonly_client.get(URL, {"path": "/users", "method": "GE T"})
    assert bad.status_code == 400 and "method" in bad.json()["fields"]


def test_a_config_change_is_seen_by_the_next_resolve(readonly_client: APIClient, endpoints: None) -> None:
    assert (
        readonly_client.get(URL, {"path": "/users/1"})
        .json()["targets"][0]["upstream_url"]
        .startswith("http://127.0.0.1:8010/api/")
    )
    users = Endpoint.objects.get(name="users")
    endpoint_update(endpoint=users, data={"targets": [{"url": "http://127.0.0.1:9000/new"}]}, partial=True, actor=ACTOR)
    body = readonly_client.get(URL, {"path": "/users/1"}).json()
    assert body["targets"] == [{"url": "http://127.0.0.1:9000/new", "upstream_url": "http://127.0.0.1:9000/new/1"}]


def test_the_route_table_is_built_once_per_revision(readonly_client: APIClient, endpoints: None) -> None:
    readonly_client.get(URL, {"path": "/users/1"})
    with CaptureQueriesContext(connection) as queries:
        readonly_client.get(URL, {"path": "/users/2"})
    assert not any("routing_endpoint" in q["sql"] for q in queries.captured_queries)


def test_a_disabled_endpoint_still_resolves_and_says_so(readonly_client: APIClient, endpoints: None) -> None:
    endpoint_update(endpoint=Endpoint.objects.get(name="legacy"), data={"enabled": False}, partial=True, actor=ACTOR)
    body: dict[str, Any] = readonly_client.get(URL, {"path": "/v1/legacy"}).json()
    assert body["endpoint"]["enabled"] is False
