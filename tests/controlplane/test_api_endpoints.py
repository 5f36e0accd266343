"""The endpoints and breaker-policies API, as a script or a person would use it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from controlplane.core.models import AuditEvent, ConfigRevision
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"
UNKNOWN_HEALTH = {
    "status": "unknown", "reason": "no_health_check", "consecutive_successes": 0, "consecutive_failures": 0,
    "last_checked_at": None, "last_error": "", "uptime": {"last_100": None, "24h": None},
}  # fmt: skip


def revisions() -> int:
    return ConfigRevision.objects.count()


def test_creating_an_endpoint_answers_201_with_its_key_and_every_default(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == f"{API}/endpoints/users:v1/"
    assert body["key"] == "users:v1"
    assert body["default"] is True
    assert body["methods"] == ["GET"]
    assert body["timeout"] == 30
    assert body["retries"] == {
        "attempts": 2,
        "on": ["connect_error"],
        "per_try_timeout": None,
        "retry_non_idempotent": False,
    }
    assert body["targets"] == [
        {"url": "http://127.0.0.1:8010/api", "weight": 100, "enabled": True, "health": UNKNOWN_HEALTH}
    ]
    assert body["breaker_policy"] == "default"
    assert {"id", "created_at", "updated_at"} <= set(body)


def test_an_endpoint_with_a_one_second_timeout_and_no_connect_timeout_is_created(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(timeout=1), format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["timeout"], response.json()["connect_timeout"]) == (1, 1)


def test_a_connect_timeout_over_the_timeout_is_refused_naming_the_field(operator_client: APIClient) -> None:
    count = revisions()
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(timeout=2, connect_timeout=3), format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"
    assert "must not exceed the endpoint's timeout" in response.json()["fields"]["connect_timeout"][0]
    assert revisions() == count


def test_the_new_revision_and_audit_event_name_the_user_and_the_endpoint(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json", HTTP_X_REQUEST_ID="deploy-42")
    revision = operator_client.get(f"{API}/revisions/").json()["results"][0]
    assert revision["number"] == 2
    assert revision["actor"] == "user:oscar"
    assert revision["changes"] == [{"kind": "endpoint", "key": "users:v1", "action": "create"}]
    event = operator_client.get(f"{API}/audit/", {"object": "users:v1"}).json()["results"][0]
    assert (event["actor"], event["action"], event["request_id"], event["revision"]) == (
        "user:oscar",
        "endpoint.create",
        "deploy-42",
        2,
    )


def test_a_get_then_put_round_trip_changes_nothing(operator_client: APIClient) -> None:
    created = operator_client.post(f"{API}/endpoints/", endpoint_body(paths=["/api/users/"]), format="json").json()
    count = revisions()
    response = operator_client.put(f"{API}/endpoints/users:v1/", created, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["paths"] == ["/api/users"]
    assert revisions() == count


def test_patch_changes_only_the_given_fields_and_targets_replace_the_set(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(timeout=12), format="json")
    response = operator_client.patch(
        f"{API}/endpoints/users:v1/",
        {"targets": [{"url": "http://127.0.0.1:8011", "weight": 5}, {"url": "http://127.0.0.1:8012"}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["timeout"] == 12
    assert [(t["url"], t["weight"]) for t in body["targets"]] == [
        ("http://127.0.0.1:8011", 5),
        ("http://127.0.0.1:8012", 100),
    ]


def test_a_validation_failure_names_every_bad_field(operator_client: APIClient) -> None:
    body = endpoint_body(timeout=0, methods=["GET", "BREW"], targets=[{"url": "ftp://127.0.0.1/x"}])
    response = operator_client.post(f"{API}/endpoints/", body, format="json", HTTP_X_REQUEST_ID="bad-1")
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "validation_error"
    assert error["request_id"] == "bad-1"
    assert {"timeout", "targets[0].url"} <= set(error["fields"])
    assert any(path.startswith("methods") for path in error["fields"])
    assert revisions() == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",
        # What the data plane's resolver (getaddrinfo: IDNA, NFKC) or inet_aton reads as 169.254.169.254.
        "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/latest",
        "http://169\u3002254\u3002169\u3002254/latest",
        "http://\u2460\u2465\u2468.254.169.254/",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://0xa9fea9fe/",
        "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41.google.internal/",
    ],
)
def test_a_metadata_address_target_is_refused(operator_client: APIClient, url: str) -> None:
    body = endpoint_body(targets=[{"url": url}])
    before = revisions()
    response = operator_client.post(f"{API}/endpoints/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error"] == "validation_error"
    assert list(error["fields"]) == ["targets[0].url"]
    assert "link-local or cloud metadata" in error["fields"]["targets[0].url"][0]
    assert revisions() == before
    assert operator_client.get(f"{API}/endpoints/").json()["count"] == 0


def test_an_unknown_breaker_policy_is_a_validation_error(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(breaker_policy="nope"), format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"breaker_policy": ["unknown breaker policy 'nope'"]}


def test_creating_an_existing_key_is_a_conflict(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


def test_deleting_an_endpoint_answers_204_and_is_audited(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert operator_client.delete(f"{API}/endpoints/users:v1/").status_code == 204
    assert operator_client.get(f"{API}/endpoints/users:v1/").status_code == 404
    assert AuditEvent.objects.filter(action="endpoint.delete", object_key="users:v1").count() == 1


def test_endpoints_list_filters_by_name_and_enabled(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    operator_client.post(f"{API}/endpoints/", endpoint_body("orders", enabled=False), format="json")
    names = [e["key"] for e in operator_client.get(f"{API}/endpoints/", {"enabled": "false"}).json()["results"]]
    assert names == ["orders:v1"]
    names = [e["key"] for e in operator_client.get(f"{API}/endpoints/", {"name": "users"}).json()["results"]]
    assert names == ["users:v1"]


def test_a_missing_endpoint_is_a_404_in_the_error_envelope(operator_client: APIClient) -> None:
    response = operator_client.get(f"{API}/endpoints/ghost:v1/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert response.json()["request_id"] == response["X-Request-ID"]


def test_breaker_policies_are_created_shown_with_defaults_and_updated(operator_client: APIClient) -> None:
    response = operator_client.post(
        f"{API}/breaker-policies/", {"name": "strict", "failure_threshold": 2}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["failure_threshold"] == 2
    assert response.json()["reset_timeout"] == 60
    response = operator_client.patch(f"{API}/breaker-policies/strict/", {"reset_timeout": 10}, format="json")
    assert (response.json()["failure_threshold"], response.json()["reset_timeout"]) == (2, 10)


def test_a_policy_in_use_cannot_be_deleted(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/breaker-policies/", {"name": "strict"}, format="json")
    operator_client.post(f"{API}/endpoints/", endpoint_body(breaker_policy="strict"), format="json")
    response = operator_client.delete(f"{API}/breaker-policies/strict/")
    assert response.status_code == 409
    assert "users:v1" in response.json()["message"]


def test_the_default_policy_cannot_be_deleted_or_renamed(operator_client: APIClient) -> None:
    assert operator_client.delete(f"{API}/breaker-policies/default/").status_code == 409
    response = operator_client.put(f"{API}/breaker-policies/default/", {"name": "other"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["name"]


def test_a_policy_with_the_redirect_fallback_is_refused_with_a_message(operator_client: APIClient) -> None:
    response = operator_client.post(
        f"{API}/breaker-policies/", {"name": "r", "fallback_strategy": "redirect"}, format="json"
    )
    assert response.status_code == 400
    assert "redirect" in response.json()["fields"]["fallback_strategy"][0]
