"""If-Match, filtering, search and pagination on the config resources."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from controlplane.core.models import ConfigRevision
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"


def test_a_write_with_a_stale_if_match_gets_412_and_changes_nothing(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    etag = operator_client.get(f"{API}/endpoints/users:v1/")["ETag"]
    fresh = operator_client.patch(f"{API}/endpoints/users:v1/", {"timeout": 10}, format="json", HTTP_IF_MATCH=etag)
    assert fresh.status_code == 200
    assert fresh["ETag"] != etag
    revisions = ConfigRevision.objects.count()
    stale = operator_client.patch(f"{API}/endpoints/users:v1/", {"timeout": 20}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412
    assert stale.json()["error"] == "precondition_failed"
    assert operator_client.delete(f"{API}/endpoints/users:v1/", HTTP_IF_MATCH=etag).status_code == 412
    assert ConfigRevision.objects.count() == revisions
    assert operator_client.get(f"{API}/endpoints/users:v1/").json()["timeout"] == 10


def test_if_match_works_on_breaker_policies_too(operator_client: APIClient) -> None:
    etag = operator_client.get(f"{API}/breaker-policies/default/")["ETag"]
    stale = '"' + "0" * 64 + '"'
    assert (
        operator_client.patch(
            f"{API}/breaker-policies/default/", {"reset_timeout": 5}, format="json", HTTP_IF_MATCH=stale
        ).status_code
        == 412
    )
    assert (
        operator_client.patch(
            f"{API}/breaker-policies/default/", {"reset_timeout": 5}, format="json", HTTP_IF_MATCH=f"W/{etag}"
        ).status_code
        == 200
    )


def test_endpoints_filter_by_name_version_enabled_and_tag_and_search_the_description(
    operator_client: APIClient,
) -> None:
    for body in (
        endpoint_body("users", "v1", tags=["public"], description="people"),
        endpoint_body("users", "v2", enabled=False),
        endpoint_body("orders", "v1", tags=["internal", "public"], description="shop orders"),
    ):
        assert operator_client.post(f"{API}/endpoints/", body, format="json").status_code == 201

    def keys(query: str) -> list[str]:
        return [e["key"] for e in operator_client.get(f"{API}/endpoints/?{query}").json()["results"]]

    assert keys("name=users") == ["users:v1", "users:v2"]
    assert keys("version=v1") == ["orders:v1", "users:v1"]
    assert keys("enabled=false") == ["users:v2"]
    assert keys("tag=public") == ["orders:v1", "users:v1"]
    assert keys("tag=internal") == ["orders:v1"]
    assert keys("search=shop") == ["orders:v1"]


def test_pages_are_bounded_by_a_maximum_size(operator_client: APIClient) -> None:
    for index in range(3):
        operator_client.post(f"{API}/endpoints/", endpoint_body(f"svc{index}"), format="json")
    page = operator_client.get(f"{API}/endpoints/?limit=2").json()
    assert (page["count"], len(page["results"])) == (3, 2)
    assert page["next"] is not None
    assert len(operator_client.get(f"{API}/endpoints/?limit=100000").json()["results"]) == 3


def test_the_openapi_schema_describes_the_resources(operator_client: APIClient) -> None:
    schema = operator_client.get(f"{API}/schema/?format=json").json()
    for path in ("/api/v1/endpoints/{key}/", "/api/v1/users/{username}/", "/api/v1/roles/", "/api/v1/audit/"):
        assert path in schema["paths"], path
    assert "Endpoint" in schema["components"]["schemas"]


def test_the_schema_describes_the_routes_answered_before_django(operator_client: APIClient) -> None:
    """The sync long-poll, the status report and the rollout wait are async handlers in front of
    Django; a client generated from the schema still finds them, with their parameters and errors."""
    schema = operator_client.get(f"{API}/schema/?format=json").json()
    wait = schema["paths"]["/api/v1/revisions/{number}/wait/"]["get"]
    assert {p["name"] for p in wait["parameters"]} == {"number", "share", "timeout"}
    assert {"200", "404", "409"} <= set(wait["responses"])
    assert wait["security"] == [{"jwtAuth": []}]
    config = schema["paths"]["/api/v1/dataplane/config"]["get"]
    assert {"200", "304", "409"} <= set(config["responses"])
    status = schema["paths"]["/api/v1/dataplane/status"]["post"]
    assert status["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"] is False
    assert config["security"] == status["security"] == [{"dataPlaneToken": []}]


def test_probes_and_prometheus_metrics_answer_without_a_token(operator_client: APIClient) -> None:
    client = APIClient()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    operator_client.get(f"{API}/endpoints/")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert b"django_http_requests_total_by_method_total" in metrics.content


def test_the_openapi_schema_generates_without_errors_or_warnings(db: object, tmp_path: Path) -> None:
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/v1/endpoints/{key}/" in (tmp_path / "schema.yaml").read_text()
