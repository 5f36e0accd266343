"""An endpoint's `protocol` key (ARCHITECTURE §13, a format-2 key: http or grpc, default http) through
the API and the contract: shown with its default, stored only when grpc (the document then becomes
format 2), refused when another word or in a format-1 document."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from configdoc.validate import validate_document
from controlplane.core.revisions import current_document_bytes
from controlplane.routing.models import Endpoint
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"


def test_an_endpoint_is_http_by_default_and_the_document_stays_format_1(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["protocol"] == "http"
    assert "protocol" not in Endpoint.objects.get().document
    assert json.loads(current_document_bytes())["format_version"] == 1


def test_protocol_grpc_is_stored_and_makes_the_document_format_2(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(protocol="grpc"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["protocol"] == "grpc"
    endpoint = Endpoint.objects.get()
    document = json.loads(current_document_bytes())
    assert document["format_version"] == 2
    assert document["endpoints"][0]["protocol"] == "grpc"
    patched = operator_client.patch(f"{API}/endpoints/{endpoint.key}/", {"protocol": "http"}, format="json")
    assert patched.status_code == 200, patched.content
    assert "protocol" not in Endpoint.objects.get().document
    assert json.loads(current_document_bytes())["format_version"] == 1


def test_protocol_must_be_http_or_grpc(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(protocol="http2"), format="json")
    assert response.status_code == 400, response.content
    assert "must be one of http, grpc" in response.json()["fields"]["protocol"][0]


def test_protocol_needs_format_2_in_a_document() -> None:
    document = {
        "format_version": 1,
        "breaker_policies": [],
        "endpoints": [
            {"name": "calls", "version": "v1", "protocol": "grpc", "targets": [{"url": "http://127.0.0.1:9"}]}
        ],
    }
    _, problems = validate_document(document, max_format_version=2)
    assert any("protocol needs format_version: 2" in problem.message for problem in problems)
    document["format_version"] = 2
    canonical, problems = validate_document(document, max_format_version=2)
    assert not problems and canonical["endpoints"][0]["protocol"] == "grpc"
