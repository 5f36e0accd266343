"""§12 in the control plane: endpoints with hosts and match_headers over the API, admin and import;
shared route keys; `routes/resolve/` and the admin's route-debug page answering with the matcher that
decided (both from configdoc's matcher, the data plane's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from controlplane.core.actors import Actor
from controlplane.core.errors import ConfigValidationError
from controlplane.core.revisions import current_document_bytes, latest_revision
from controlplane.routing.models import Endpoint, RouteKey
from controlplane.routing.services import endpoint_create, endpoint_update
from controlplane.snapshots.services import config_import
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
RESOLVE = "/api/v1/routes/resolve/"
DEBUG = "/admin/routing/endpoint/route-debug/"


@pytest.fixture
def shop() -> None:
    endpoint_create(data=endpoint_body("shop", paths=["/shop"], hosts=["shop.example.com"]), actor=ACTOR)
    endpoint_create(data=endpoint_body("wild", paths=["/shop"], hosts=["*.Example.com"]), actor=ACTOR)
    endpoint_create(data=endpoint_body("beta", paths=["/shop"], match_headers={"X-Beta": ["1"]}), actor=ACTOR)
    endpoint_create(data=endpoint_body("writes", paths=["/shop"], methods=["POST"]), actor=ACTOR)


def test_endpoints_share_a_key_when_their_matchers_tell_them_apart(shop: None) -> None:
    assert sorted(RouteKey.objects.filter(key="/shop").values_list("endpoint__name", flat=True)) == [
        "beta", "shop", "wild", "writes",
    ]  # fmt: skip
    assert Endpoint.objects.get(name="wild").document["hosts"] == ["*.example.com"]
    document = current_document_bytes().decode()
    assert '"format_version":2' in document and '"match_headers":{"X-Beta":["1"]}' in document


def test_an_ambiguous_endpoint_is_refused_naming_both(shop: None) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        endpoint_create(data=endpoint_body("twin", paths=["/shop"], hosts=["SHOP.example.com"]), actor=ACTOR)
    assert "/shop is already claimed by shop:v1" in str(caught.value)
    assert "twin:v1" in str(caught.value)
    with pytest.raises(ConfigValidationError):  # an edit that makes two endpoints ambiguous too
        endpoint_update(endpoint=Endpoint.objects.get(name="wild"), data={"hosts": ["shop.example.com"]},
                        partial=True, actor=ACTOR)  # fmt: skip
    assert not Endpoint.objects.filter(name="twin").exists()


@pytest.mark.parametrize(
    ("params", "endpoint", "decided_by"),
    [
        ({"host": "shop.example.com"}, "shop:v1", "host"),
        ({"host": "SHOP.EXAMPLE.COM:443"}, "shop:v1", "host"),
        ({"host": "eu.example.com"}, "wild:v1", "wildcard_host"),
        ({"headers": "X-Beta: 1\nX-Other: 2"}, "beta:v1", "match_headers"),
        ({"method": "POST"}, "writes:v1", "method"),
        ({"host": "a.b.example.com", "method": "post"}, "writes:v1", "method"),
    ],
)
def test_resolve_takes_host_method_and_headers_and_says_which_matcher_decided(
    readonly_client: APIClient, shop: None, params: dict[str, str], endpoint: str, decided_by: str
) -> None:
    response = readonly_client.get(RESOLVE, {"path": "/shop/1", **params})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["endpoint"]["key"] == endpoint and body["decided_by"] == decided_by
    assert body["method_allowed"] is True


def test_resolve_no_route_and_method_not_allowed(readonly_client: APIClient, shop: None) -> None:
    body = readonly_client.get(RESOLVE, {"path": "/shop/1", "method": "DELETE"}).json()
    assert body["method_allowed"] is False and body["allow"] == ["POST"]
    endpoint_create(data=endpoint_body("only", hosts=["only.test"]), actor=ACTOR)
    missing = readonly_client.get(RESOLVE, {"path": "/only", "host": "other.test"})
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"
    # Repeated: the proxy reads a header sent twice as matching nothing, and so does the resolver.
    twice = readonly_client.get(RESOLVE, {"path": "/shop", "headers": "X-Beta: 1\nx-beta: 1"}).json()
    assert twice["endpoint"]["key"] != "beta:v1"


@pytest.mark.parametrize(
    "query",
    [
        {"host": "a\x00b"},
        {"host": "a b"},
        {"host": "x" * 301},
        {"headers": "no colon"},
        {"headers": "X-A: \x00"},
        {"headers": "Bad Name: 1"},
        {"headers": "X-A: \u0100"},
        {"headers": "\n".join(f"X-{i}: 1" for i in range(33))},
        {"headers": "X-A: 1\r\nX-B: 2\x7f"},
    ],
)
def test_hostile_resolve_queries_are_a_validation_error_naming_the_field(
    readonly_client: APIClient, shop: None, query: dict[str, str]
) -> None:
    response = readonly_client.get(RESOLVE, {"path": "/shop", **query})
    assert response.status_code == 400, response.content
    assert next(iter(query)) in response.content.decode()


def test_an_import_with_conflicting_hosts_is_refused_whole(shop: None) -> None:
    before, number = current_document_bytes(), latest_revision().number  # type: ignore[union-attr]
    document = {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            endpoint_body("fresh", paths=["/fresh"]),
            endpoint_body("a", paths=["/api"], hosts=["api.example.com", "*.api.test"]),
            endpoint_body("b", paths=["/api"], hosts=["*.API.test"]),
        ],
    }
    with pytest.raises(ConfigValidationError) as caught:
        config_import(document=document, actor=ACTOR)
    assert "route key /api is claimed by both a:v1 (endpoints[1]) and b:v1 (endpoints[2])" in str(caught.value)
    assert current_document_bytes() == before and latest_revision().number == number  # type: ignore[union-attr]
    assert not Endpoint.objects.filter(name="fresh").exists()


def test_an_import_with_hosts_that_do_not_conflict_is_applied(shop: None) -> None:
    document = {
        "format_version": 2,
        "breaker_policies": [],
        "endpoints": [
            endpoint_body("a", paths=["/api"], hosts=["a.test"]),
            endpoint_body("b", paths=["/api"], hosts=["b.test"]),
        ],
    }
    config_import(document=document, actor=ACTOR)
    assert RouteKey.objects.filter(key="/api").count() == 2


def test_the_api_reads_and_writes_hosts_and_match_headers(operator_client: APIClient) -> None:
    body = endpoint_body("tenant", hosts=["Api.Example.com"], match_headers={"X-Tenant": ["acme"]})
    response = operator_client.post("/api/v1/endpoints/", body, format="json")
    assert response.status_code == 201, response.content
    shown = response.json()
    assert shown["hosts"] == ["api.example.com"] and shown["match_headers"] == {"X-Tenant": ["acme"]}
    bad = operator_client.post("/api/v1/endpoints/", endpoint_body("bad", hosts=["a.test:80"]), format="json")
    assert bad.status_code == 400 and "hosts" in bad.content.decode()
    plain = operator_client.post("/api/v1/endpoints/", endpoint_body("plain"), format="json").json()
    assert plain["hosts"] == [] and plain["match_headers"] == {}


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_route_debug_page_answers_like_the_api(make_user: Callable[..., Any], shop: None) -> None:
    client = browser(make_user("rita", "readonly"))
    page = client.get(DEBUG)
    assert page.status_code == 200 and b"Resolve" in page.content
    assert DEBUG.encode() in client.get("/admin/routing/endpoint/").content  # linked from the endpoint list
    answer = client.get(DEBUG, {"path": "/shop/1", "host": "eu.example.com:80", "method": "GET"})
    html = answer.content.decode()
    assert '<td class="endpoint">wild:v1</td>' in html and '<td class="decided-by">wildcard_host</td>' in html
    headers = client.get(DEBUG, {"path": "/shop/1", "headers": "X-Beta: 1"}).content.decode()
    assert '<td class="decided-by">match_headers</td>' in headers
    refused = client.get(DEBUG, {"path": "/shop/1", "method": "DELETE"}).content.decode()
    assert "not allowed (405; Allow: POST)" in refused
    missing = client.get(DEBUG, {"path": "/nothing"}).content.decode()
    assert "no_route" in missing
    hostile = client.get(DEBUG, {"path": "/shop", "host": "a\x00b", "headers": "nope"})
    assert hostile.status_code == 200 and b"errorlist" in hostile.content


def test_the_route_debug_page_needs_a_login() -> None:
    response = Client().get(DEBUG, {"path": "/shop"})
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_admin_form_saves_hosts_and_match_headers(make_user: Callable[..., Any]) -> None:
    from tests.controlplane.test_admin import endpoint_form

    client = browser(make_user("oscar", "operator"))
    response = client.post(
        "/admin/routing/endpoint/add/",
        endpoint_form(hosts="API.example.com, *.example.com", match_headers='{"X-Tenant": ["acme"]}'),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    document = Endpoint.objects.get(name="users").document
    assert document["hosts"] == ["api.example.com", "*.example.com"]
    assert document["match_headers"] == {"X-Tenant": ["acme"]}
    change = client.get(f"/admin/routing/endpoint/{Endpoint.objects.get(name='users').pk}/change/").content.decode()
    assert "api.example.com, *.example.com" in change and "X-Tenant" in change


def test_import_config_refuses_conflicting_hosts_with_both_yaml_lines(tmp_path: Any) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    path = tmp_path / "hosts.yaml"
    path.write_text(
        "format_version: 2\n"
        "endpoints:\n"
        "  - name: fresh\n"
        "    version: v1\n"
        "    targets: [{url: 'http://127.0.0.1:8010/'}]\n"
        "  - name: a\n"
        "    version: v1\n"
        "    paths: [/api]\n"
        "    hosts: ['*.example.com']\n"
        "    targets: [{url: 'http://127.0.0.1:8010/'}]\n"
        "  - name: b\n"
        "    version: v1\n"
        "    paths: [/api]\n"
        "    hosts: ['*.EXAMPLE.com', b.test]\n"
        "    targets: [{url: 'http://127.0.0.1:8011/'}]\n"
    )
    before = current_document_bytes()
    with pytest.raises(CommandError) as caught:
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
    message = str(caught.value)
    assert "nothing changed" in message
    assert "endpoints[2].paths (line 13): route key /api is claimed by both a:v1 (endpoints[1], line 6)" in message
    assert "b:v1 (endpoints[2], line 11)" in message
    assert current_document_bytes() == before and not Endpoint.objects.filter(name="fresh").exists()
