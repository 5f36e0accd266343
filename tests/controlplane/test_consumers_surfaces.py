"""One schema for every surface (ARCHITECTURE §11): each field of configdoc's consumer schema is on the API
serializer, in the OpenAPI document and on the admin form, except credential material (`key_sha256`,
`password_hash`), which no surface shows. The walk starts from configdoc, never from a surface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from configdoc.consumers import CONSUMER_FIELDS
from controlplane.consumers.api.serializers import ConsumerSerializer
from controlplane.consumers.schema import HIDDEN, READ_ONLY, WRITE_ONLY
from tests.controlplane.test_consumers_admin import browser

pytestmark = pytest.mark.django_db


def credential_fields(kind: str) -> list[str]:
    item = CONSUMER_FIELDS[kind].item
    assert item is not None
    return [key for key in item.fields if key not in HIDDEN.get(kind, ())]


def test_every_consumer_field_is_on_the_serializer_and_hashes_are_not() -> None:
    fields = ConsumerSerializer().fields
    for name, spec in CONSUMER_FIELDS.items():
        assert name in fields, name
        if spec.kind == "list" and spec.item is not None and spec.item.kind == "object":
            nested = fields[name].child.fields
            assert sorted(nested) == sorted([*credential_fields(name), *WRITE_ONLY.get(name, {})]), name
            assert not set(HIDDEN.get(name, ())) & set(nested)


def test_every_consumer_field_is_in_the_openapi_document(admin_client: APIClient) -> None:
    schema = admin_client.get("/api/v1/schema/?format=json").json()
    components = schema["components"]["schemas"]
    consumer = components["Consumer"]["properties"]
    for name, spec in CONSUMER_FIELDS.items():
        assert name in consumer, name
        if spec.kind == "list" and spec.item is not None and spec.item.kind == "object":
            ref = consumer[name]["items"]["$ref"].rsplit("/", 1)[-1]
            assert sorted(components[ref]["properties"]) == sorted(
                [*credential_fields(name), *WRITE_ONLY.get(name, {})]
            ), name
    for name in READ_ONLY:
        assert consumer[name].get("readOnly") is True
    assert "/api/v1/consumers/{username}/keys/" in schema["paths"]
    assert "/api/v1/consumers/{username}/keys/{label}/" in schema["paths"]


def test_every_writable_consumer_field_is_on_the_admin_form(make_user: Callable[..., Any]) -> None:
    html = browser(make_user("alice", "admin")).get("/admin/consumers/consumer/add/").content.decode()
    for name in CONSUMER_FIELDS:
        if name not in READ_ONLY:
            assert f'name="{name}"' in html, name
    for kind in ("jwt", "basic_auth"):
        for key in [*credential_fields(kind), *WRITE_ONLY.get(kind, {})]:
            assert key in html, (kind, key)  # the JSON list's help names each credential field
