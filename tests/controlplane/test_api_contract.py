"""The API's contract at its edges: every error under /api/ in the envelope, PUT carrying the whole
representation, query parameters read strictly, and an OpenAPI schema that says what the views do.

tests/e2e/test_api_schemathesis.py checks every operation against the served schema on a live server;
these pin each defect it (or an outside audit) found, through the test client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

from controlplane.breakers.models import BreakerPolicy
from controlplane.core.models import ConfigRevision
from tests.conftest import endpoint_body
from tests.controlplane.test_dataplanes_api import new_revision, token_of, wait

pytestmark = pytest.mark.django_db
API = "/api/v1"


def is_envelope(response: Any, status: int, code: str) -> bool:
    body = response.json()
    return (
        response.status_code == status
        and response["Content-Type"].startswith("application/json")
        and body["error"] == code
        and isinstance(body["message"], str)
        and body["message"]
        and body["request_id"] == response["X-Request-ID"]
    )


# --- errors Django answers before (or without) a DRF view ---------------------------------------------------


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
@pytest.mark.parametrize("path", [f"{API}/nope/", f"{API}/endpoints/a/b/c/", "/api/v2/endpoints/"])
def test_a_path_no_route_matches_under_api_is_a_json_404(path: str, debug: bool) -> None:
    with override_settings(DEBUG=debug):
        response = Client().get(path, HTTP_X_REQUEST_ID="req-404")

    assert is_envelope(response, 404, "not_found")
    assert response.json()["request_id"] == "req-404"


def test_a_missing_page_outside_the_api_stays_html() -> None:
    response = Client().get("/admin-nope/")

    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_an_unexpected_exception_under_api_is_a_json_500_with_the_request_id(
    admin_client: APIClient, debug: bool
) -> None:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=admin_client._credentials["HTTP_AUTHORIZATION"])  # type: ignore[attr-defined]
    with (
        override_settings(DEBUG=debug),
        mock.patch("controlplane.routing.selectors.endpoint_list", side_effect=RuntimeError("boom")),
    ):
        response = client.get(f"{API}/endpoints/", HTTP_X_REQUEST_ID="req-500")

    assert is_envelope(response, 500, "server_error")
    assert response.json()["request_id"] == "req-500"
    assert "boom" not in response.content.decode()


@pytest.mark.parametrize("path", [f"{API}/schema/", f"{API}/docs/"])
def test_the_schema_and_docs_views_answer_errors_in_json_not_yaml_or_html(path: str) -> None:
    refused = Client().generic("TRACE", path)
    unknown = Client().get(f"{API}/schema/?format=bogus")

    assert is_envelope(refused, 405, "method_not_allowed") and "GET" in refused["Allow"]
    assert is_envelope(unknown, 404, "not_found")


def test_the_browsable_apis_error_page_stays_a_page_for_people(readonly_client: APIClient) -> None:
    response = readonly_client.get(f"{API}/endpoints/nope:v1/", HTTP_ACCEPT="text/html")

    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_query_parameter_given_twice_is_refused_naming_it(admin_client: APIClient) -> None:
    response = admin_client.get(f"{API}/endpoints/?limit=1&limit=5&name=a")

    assert is_envelope(response, 400, "validation_error")
    assert response.json()["fields"] == {"limit": ["give this parameter once"]}


# --- PUT carries the representation ---------------------------------------------------------------------------


def test_a_put_without_a_body_does_not_reset_a_breaker_policy(operator_client: APIClient) -> None:
    assert operator_client.patch(f"{API}/breaker-policies/default/", {"reset_timeout": 7}, format="json").status_code
    revisions = ConfigRevision.objects.count()

    response = operator_client.put(f"{API}/breaker-policies/default/")

    assert is_envelope(response, 400, "validation_error")
    assert "name" in response.json()["fields"]
    assert BreakerPolicy.objects.get(name="default").document["reset_timeout"] == 7
    assert ConfigRevision.objects.count() == revisions


def test_a_put_of_a_breaker_policy_with_its_name_replaces_it(operator_client: APIClient) -> None:
    operator_client.patch(f"{API}/breaker-policies/default/", {"reset_timeout": 7}, format="json")

    response = operator_client.put(f"{API}/breaker-policies/default/", {"name": "default"}, format="json")

    assert response.status_code == 200 and response.json()["reset_timeout"] != 7


def test_a_put_without_a_body_changes_no_endpoint(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(timeout=9), format="json")

    response = operator_client.put(f"{API}/endpoints/users:v1/")

    assert is_envelope(response, 400, "validation_error")
    assert {"name", "version", "targets"} <= set(response.json()["fields"])
    assert operator_client.get(f"{API}/endpoints/users:v1/").json()["timeout"] == 9


def test_a_put_of_a_user_must_carry_every_writable_field(
    admin_client: APIClient, make_user: Callable[..., Any]
) -> None:
    make_user("bob", "operator", email="bob@example.com")

    empty = admin_client.put(f"{API}/users/bob/")
    partial = admin_client.put(f"{API}/users/bob/", {"username": "bob", "roles": []}, format="json")

    assert is_envelope(empty, 400, "validation_error")
    assert set(empty.json()["fields"]) == {"username", "email", "is_active", "roles"}
    assert set(partial.json()["fields"]) == {"email", "is_active"}
    bob = admin_client.get(f"{API}/users/bob/").json()
    assert bob["roles"] == ["operator"] and bob["email"] == "bob@example.com"
    whole = {"username": "bob", "email": "", "is_active": True, "roles": ["readonly"]}
    assert admin_client.put(f"{API}/users/bob/", whole, format="json").json()["roles"] == ["readonly"]
    assert admin_client.patch(f"{API}/users/bob/", {"email": "b@example.com"}, format="json").status_code == 200


# --- query parameters: read strictly, or documented as read -----------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=%D9%A3", "limit"),  # an Arabic-Indic digit: int() would take it
        ("offset=null", "offset"),
        ("offset=-1", "offset"),
        ("offset=99999999999999999999", "offset"),
        ("enabled=maybe", "enabled"),
        ("default=TRUE", "default"),
    ],
)
def test_a_list_query_value_of_the_wrong_type_is_a_400_naming_it(
    readonly_client: APIClient, query: str, field: str
) -> None:
    response = readonly_client.get(f"{API}/endpoints/?{query}")

    assert is_envelope(response, 400, "validation_error")
    assert list(response.json()["fields"]) == [field]


def test_empty_query_values_are_no_values(operator_client: APIClient) -> None:
    operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")

    response = operator_client.get(f"{API}/endpoints/?limit=&offset=&enabled=&name=")

    assert response.status_code == 200 and response.json()["count"] == 1


def test_the_import_flags_refuse_unknown_words_and_store_nothing(operator_client: APIClient) -> None:
    revisions = ConfigRevision.objects.count()
    document = {"format_version": 1, "endpoints": [endpoint_body()]}

    response = operator_client.post(f"{API}/config/import/?dry_run=perhaps", document, format="json")

    assert is_envelope(response, 400, "validation_error")
    assert list(response.json()["fields"]) == ["dry_run"]
    assert ConfigRevision.objects.count() == revisions
    assert operator_client.post(f"{API}/config/import/?dry_run=yes", document, format="json").status_code == 200
    assert ConfigRevision.objects.count() == revisions


def test_a_diff_between_revisions_takes_ascii_numbers_only(readonly_client: APIClient) -> None:
    response = readonly_client.get(f"{API}/revisions/diff/?from=%D9%A1&to=1")

    assert is_envelope(response, 400, "validation_error") and list(response.json()["fields"]) == ["from"]


# --- the rollout wait, answered before Django ---------------------------------------------------------------


def test_the_wait_explains_a_refused_token_in_a_sentence() -> None:
    response = wait("revisions/1/wait/", {"Authorization": "Bearer not-a-jwt"})

    message = response.json()["message"]
    assert response.status_code == 401 and response.json()["error"] == "authentication_failed"
    assert message == "Given token not valid for any token type"


def test_the_wait_answers_an_unsupported_method_with_allow(make_user: Callable[..., Any]) -> None:
    latest = new_revision("users")

    response = wait(f"revisions/{latest.number}/wait/", token_of(make_user("oscar", "operator")), method="TRACE")

    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("query", ["share=1&share=0.5", "timeout=%201", "timeout=1_0", "share=inf"])
def test_the_wait_reads_its_numbers_strictly(make_user: Callable[..., Any], query: str) -> None:
    latest = new_revision("users")

    response = wait(f"revisions/{latest.number}/wait/?{query}", token_of(make_user("rita", "readonly")))

    assert response.status_code == 400 and response.json()["error"] == "validation_error"


# --- the OpenAPI schema says what the views do -----------------------------------------------------------------


@pytest.fixture
def schema(readonly_client: APIClient) -> dict[str, Any]:
    return readonly_client.get(f"{API}/schema/?format=json").json()  # type: ignore[no-any-return]


def test_a_roles_permissions_are_described_as_the_objects_they_are(
    schema: dict[str, Any], readonly_client: APIClient
) -> None:
    items = schema["components"]["schemas"]["Role"]["properties"]["permissions"]["items"]
    described = schema["components"]["schemas"][items["$ref"].rsplit("/", 1)[1]]
    served = readonly_client.get(f"{API}/roles/admin/").json()["permissions"][0]

    assert described["type"] == "object" and set(described["properties"]) == set(served)


def test_a_users_last_login_and_email_are_described_as_possibly_empty(schema: dict[str, Any]) -> None:
    user = schema["components"]["schemas"]["User"]["properties"]

    assert user["last_login"]["nullable"] is True
    assert {"type": "string", "maxLength": 0} in user["email"]["oneOf"]


def test_every_operation_documents_the_errors_it_answers_in_the_envelope(schema: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/GatewayError"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == error, (method, path, status)
    policy = schema["paths"][f"{API}/breaker-policies/{{name}}/"]
    assert {"400", "401", "403", "404", "412"} <= set(policy["put"]["responses"])
    assert {"404", "409", "412"} <= set(policy["delete"]["responses"])
    assert "409" in schema["paths"][f"{API}/users/"]["post"]["responses"]
    assert "404" in schema["paths"][f"{API}/revisions/diff/"]["get"]["responses"]
    assert set(schema["components"]["schemas"]["GatewayError"]["required"]) == {"error", "message", "request_id"}


def test_optional_query_parameters_say_an_empty_value_is_allowed(schema: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in schema["paths"][f"{API}/endpoints/"]["get"]["parameters"]}

    assert parameters["limit"]["allowEmptyValue"] is True
    assert parameters["limit"]["schema"]["minimum"] == 1
    assert parameters["enabled"]["schema"]["type"] == "string"
    assert {"true", "false"} <= set(parameters["enabled"]["schema"]["enum"])
