"""One schema for every surface (ARCHITECTURE §11): a field of configdoc's schema (an endpoint's, or any
plugin's) missing from the API serializer, the OpenAPI document or the admin's endpoint form fails here.

The walk starts from configdoc (`ENDPOINT_FIELDS`, `PRESERVE_HOST`, `PLUGINS`), never from a surface, so
a plugin or field added to the contract is checked without touching this file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from django.test import Client
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.test import APIClient

from configdoc.plugins import ENDPOINT_FLAGS, PLUGINS, PRESERVE_HOST
from configdoc.schema import ENDPOINT_FIELDS, Field
from configdoc.splits import TRAFFIC_SPLIT
from controlplane.core.api.schema_fields import plugin_serializer_class
from controlplane.routing.api.serializers import EndpointSerializer
from tests.controlplane.admin_forms import form_data_from

pytestmark = pytest.mark.django_db
API = "/api/v1"

# The endpoint's fields as the contract has them: §3's, §11's, §12's canary and §13's (websocket).
ENDPOINT_SCHEMA: dict[str, Field] = {**ENDPOINT_FIELDS, **ENDPOINT_FLAGS, "traffic_split": TRAFFIC_SPLIT}


def object_paths(fields: Mapping[str, Field], prefix: str = "") -> Iterator[tuple[str, Field]]:
    """Every key of an object, nested objects' and list-of-objects' keys included, as dotted paths."""
    for name, spec in fields.items():
        path = f"{prefix}{name}"
        yield path, spec
        if spec.kind == "object":
            yield from object_paths(spec.fields, f"{path}.")
        elif spec.kind == "list" and spec.item is not None and spec.item.kind == "object":
            yield from object_paths(spec.item.fields, f"{path}[].")


def plugin_paths() -> Iterator[tuple[str, str, Field]]:
    for name, spec in sorted(PLUGINS.items()):
        for key, field in spec.fields.items():
            yield name, key, field


# --- the API serializer -------------------------------------------------------------------------------


def _serializer_field(root: serializers.Serializer, path: str) -> Any:  # type: ignore[type-arg]
    node: Any = root
    for step in path.split("."):
        if step.endswith("[]"):
            node = node.fields[step[:-2]]
            node = node.child
        else:
            node = node.fields[step]
    return node


def test_every_endpoint_field_is_in_the_api_serializer() -> None:
    root = EndpointSerializer()
    missing = []
    for path, _ in object_paths(ENDPOINT_SCHEMA):
        try:
            _serializer_field(root, path)
        except KeyError:
            missing.append(path)
    assert missing == []
    assert "plugins" in root.fields


def test_every_plugin_field_is_in_the_api_serializer_with_its_default_choices_and_help() -> None:
    plugins = EndpointSerializer().fields["plugins"]
    assert set(plugins.fields) == set(PLUGINS)
    for name, key, field in plugin_paths():
        described = plugins.fields[name].fields.get(key)
        assert described is not None, f"plugins.{name}.{key} is missing from the API serializer"
        if field.default is None and not field.nullable:  # a key the plugin requires (forward_auth.url)
            assert described.default is empty, f"plugins.{name}.{key}"
        else:
            assert described.default == field.default, f"plugins.{name}.{key}"
        if field.choices:
            assert list(described.choices) == list(field.choices)
        if field.help:
            assert field.help in (described.help_text or ""), f"plugins.{name}.{key}"
        assert bool(getattr(described, "allow_null", False)) == field.nullable


# --- the OpenAPI document -----------------------------------------------------------------------------


@pytest.fixture
def openapi(readonly_client: APIClient) -> dict[str, Any]:
    response = readonly_client.get(f"{API}/schema/?format=json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`, and drf-spectacular's `allOf: [$ref]` with the field's own keys (default,
    description) beside it, which are kept over the referenced component's."""
    own: dict[str, Any] = {}
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            own = {**{k: v for k, v in node.items() if k != "allOf"}, **own}
            node = node["allOf"][0]
        else:
            return {**node, **own}


def _openapi_property(schema: dict[str, Any], component: str, path: str) -> dict[str, Any] | None:
    node: dict[str, Any] = schema["components"]["schemas"][component]
    for step in path.split("."):
        node = _resolve(schema, node)
        is_list = step.endswith("[]")
        node = node.get("properties", {}).get(step.removesuffix("[]"))
        if node is None:
            return None
        if is_list:
            node = _resolve(schema, node)["items"]
    return _resolve(schema, node)


def test_every_endpoint_field_is_in_the_openapi_document(openapi: dict[str, Any]) -> None:
    paths = [path for path, _ in object_paths(ENDPOINT_SCHEMA)]
    missing = [path for path in paths if _openapi_property(openapi, "Endpoint", path) is None]
    assert missing == []
    preserve_host = _openapi_property(openapi, "Endpoint", "preserve_host")
    assert preserve_host is not None and preserve_host["type"] == "boolean" and preserve_host["default"] is False
    assert PRESERVE_HOST.help in preserve_host["description"]


def test_every_plugin_field_is_in_the_openapi_document_with_its_rules(openapi: dict[str, Any]) -> None:
    component = "Endpoint"
    plugins = _openapi_property(openapi, component, "plugins")
    assert plugins is not None
    assert set(plugins["properties"]) == set(PLUGINS)
    for name, key, field in plugin_paths():
        described = _openapi_property(openapi, component, f"plugins.{name}.{key}")
        assert described is not None, f"plugins.{name}.{key} is missing from the OpenAPI document"
        assert described.get("default") == field.default, f"plugins.{name}.{key}"
        if field.choices:
            assert described["enum"] == list(field.choices)
        if field.help:
            assert field.help in described.get("description", ""), f"plugins.{name}.{key}"
        if field.kind == "list" and field.item is not None and field.item.choices:
            assert _resolve(openapi, described["items"])["enum"] == list(field.item.choices)
        if field.max_items is not None and field.kind == "list":
            assert described["maxItems"] == field.max_items


def test_the_global_plugins_route_is_in_the_openapi_document_with_the_same_schema(openapi: dict[str, Any]) -> None:
    operations = openapi["paths"][f"{API}/plugins/"]
    assert {"get", "put", "patch"} <= set(operations)
    body = operations["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(_resolve(openapi, body)["properties"]) == set(PLUGINS)
    for name in PLUGINS:
        component = plugin_serializer_class(PLUGINS[name]).__name__.removesuffix("Serializer")
        assert set(openapi["components"]["schemas"][component]["properties"]) == set(PLUGINS[name].fields)


# --- the admin's endpoint form ------------------------------------------------------------------------


@pytest.fixture
def admin_browser(make_user: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(make_user("alice", "admin"))
    return client


def test_every_endpoint_field_is_on_the_admin_endpoint_form(admin_browser: Client) -> None:
    page = admin_browser.get("/admin/routing/endpoint/add/")
    assert page.status_code == 200
    html = page.content.decode()
    inputs = set(form_data_from(html)) | {name for name in ENDPOINT_SCHEMA if f'name="{name}"' in html}
    target_fields = ENDPOINT_FIELDS["targets"].item.fields  # type: ignore[union-attr]
    missing = []
    for name in ENDPOINT_SCHEMA:
        if name == "targets":  # the inline: one row of inputs per target
            missing += [f"targets.{key}" for key in target_fields if f'name="targets-0-{key}"' not in html]
        elif name not in inputs:
            missing.append(name)
    assert missing == []
    assert 'name="plugins"' in html and 'type="checkbox" name="preserve_host"' in html


def test_every_plugin_and_its_fields_are_described_on_the_admin_endpoint_form(admin_browser: Client) -> None:
    html = admin_browser.get("/admin/routing/endpoint/add/").content.decode()
    missing = []
    for name, spec in sorted(PLUGINS.items()):
        start = html.find(f"{name} (")
        if start < 0:
            missing.append(name)
            continue
        listed = html[start : html.find(")", html.find("enabled:", start))]
        missing += [f"{name}.{key}" for key in spec.fields if f"{key}:" not in listed]
    assert missing == []


def test_a_patch_of_the_global_plugins_documents_null_as_removing_a_plugin(openapi: dict[str, Any]) -> None:
    body = openapi["paths"][f"{API}/plugins/"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    properties = _resolve(openapi, body)["properties"]
    assert set(properties) == set(PLUGINS)
    assert all(properties[name].get("nullable") is True for name in PLUGINS), properties
