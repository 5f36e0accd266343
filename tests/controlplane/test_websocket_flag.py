"""An endpoint's `websocket` key (ARCHITECTURE §13, a format-2 key, default true) through the API: shown
with its default, stored only when false (the document then becomes format 2), refused when not a
boolean, and in what the nodes get."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from controlplane.core.revisions import current_document_bytes
from controlplane.routing.models import Endpoint
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"


def test_an_endpoint_takes_websockets_by_default_and_the_document_stays_format_1(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["websocket"] is True
    assert "websocket" not in Endpoint.objects.get().document
    assert json.loads(current_document_bytes())["format_version"] == 1


def test_websocket_false_is_stored_and_makes_the_document_format_2(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(websocket=False), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["websocket"] is False
    endpoint = Endpoint.objects.get()
    assert endpoint.document["websocket"] is False
    document = json.loads(current_document_bytes())
    assert document["format_version"] == 2
    assert document["endpoints"][0]["websocket"] is False
    # Turned back on: the key goes (it is the default) and so does format 2.
    patched = operator_client.patch(f"{API}/endpoints/{endpoint.key}/", {"websocket": True}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["websocket"] is True
    assert "websocket" not in Endpoint.objects.get().document
    assert json.loads(current_document_bytes())["format_version"] == 1


def test_websocket_must_be_a_boolean(operator_client: APIClient) -> None:
    response = operator_client.post(f"{API}/endpoints/", endpoint_body(websocket="sometimes"), format="json")
    assert response.status_code == 400, response.content
    assert "must be true or false" in response.json()["fields"]["websocket"][0]
