"""Plugins in the control plane (ARCHITECTURE §11 "Control plane", §4 format versions): an endpoint's
`plugins` and `preserve_host`, and the document's global `plugins` at `plugins/`, through the API, the
services, revisions, audit, import/export, diff, rollback and what the nodes get.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from rest_framework.test import APIClient

from configdoc import canonical_json
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.core.revisions import current_document_bytes, revision_document_bytes
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.dataplanes.snapshot import load_snapshot
from controlplane.routing.models import Endpoint
from controlplane.snapshots.services import config_export, config_import, revision_rollback
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"
ACTOR = Actor.command("test")
CORS = {"origins": ["https://App.Example.com:443", "https://b.example.com"]}
FRAME = {"set": {"X-Frame-Options": "DENY"}}


def revisions() -> int:
    return ConfigRevision.objects.count()


def fields(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    return dict(body["fields"])


def create(client: APIClient, **extra: Any) -> dict[str, Any]:
    response = client.post(f"{API}/endpoints/", endpoint_body(**extra), format="json")
    assert response.status_code == 201, response.content
    return dict(response.json())


# --- an endpoint's plugins and preserve_host over the API -----------------------------------------


def test_an_endpoint_without_plugins_shows_none_and_the_document_stays_format_1(operator_client: APIClient) -> None:
    body = create(operator_client)
    assert body["plugins"] == {} and body["preserve_host"] is False
    assert json.loads(current_document_bytes())["format_version"] == 1
    assert "plugins" not in Endpoint.objects.get().document


def test_an_endpoint_with_plugins_is_stored_canonical_and_shown_with_every_default(operator_client: APIClient) -> None:
    body = create(operator_client, plugins={"cors": CORS, "response_headers": FRAME}, preserve_host=True)
    assert body["preserve_host"] is True
    assert body["plugins"]["cors"]["origins"] == ["https://app.example.com", "https://b.example.com"]
    assert body["plugins"]["cors"]["max_age"] == 600 and body["plugins"]["cors"]["enabled"] is True
    assert body["plugins"]["response_headers"] == {"set": FRAME["set"], "add": {}, "remove": [], "enabled": True}
    endpoint = Endpoint.objects.get()
    assert endpoint.document["plugins"] == {
        "cors": {"origins": ["https://app.example.com", "https://b.example.com"]},
        "response_headers": FRAME,
    }
    assert endpoint.plugins == endpoint.document["plugins"] and endpoint.preserve_host is True
    document = json.loads(current_document_bytes())
    assert document["format_version"] == 2
    assert canonical_json(document) == current_document_bytes()


def test_a_rate_limit_is_stored_canonical_shown_with_every_default_and_put_back_unchanged(
    operator_client: APIClient,
) -> None:
    limits = [{"requests": 1000, "per": "day"}, {"requests": 10, "per": "second"}]
    body = create(operator_client, plugins={"rate_limit": {"limits": limits, "policy": "redis"}})
    assert body["plugins"]["rate_limit"] == {
        "limits": [{"requests": 10, "per": "second"}, {"requests": 1000, "per": "day"}],
        "by": "consumer",
        "header_name": None,
        "policy": "redis",
        "fault_tolerant": True,
        "enabled": True,
        "mode": "enforce",
    }
    assert Endpoint.objects.get().document["plugins"] == {
        "rate_limit": {
            "limits": [{"requests": 10, "per": "second"}, {"requests": 1000, "per": "day"}],
            "policy": "redis",
        }
    }
    count = revisions()
    response = operator_client.put(f"{API}/endpoints/users:v1/", body, format="json")
    assert response.status_code == 200, response.content
    assert revisions() == count


def test_a_get_body_put_back_changes_nothing(operator_client: APIClient) -> None:
    body = create(operator_client, plugins={"cors": CORS, "ip_restriction": {"allow": ["10.1.2.3/8"]}})
    count = revisions()
    response = operator_client.put(f"{API}/endpoints/users:v1/", body, format="json")
    assert response.status_code == 200, response.content
    assert revisions() == count
    assert response.json()["plugins"] == body["plugins"]


def test_patching_plugins_records_the_change_in_the_revision_and_the_audit_diff(operator_client: APIClient) -> None:
    create(operator_client)
    response = operator_client.patch(
        f"{API}/endpoints/users:v1/", {"plugins": {"response_headers": FRAME}}, format="json"
    )
    assert response.status_code == 200, response.content
    event = AuditEvent.objects.filter(action="endpoint.update", object_key="users:v1").latest("id")
    assert "plugins" not in event.before and event.after["plugins"] == {"response_headers": FRAME}
    audit = operator_client.get(f"{API}/audit/{event.pk}/").json()
    assert json.dumps(FRAME["set"]) in json.dumps(audit)
    revision = ConfigRevision.objects.latest("number")
    assert [c["after"].get("plugins") for c in revision.changes] == [{"response_headers": FRAME}]
    # Taking them away again: format 1 once more, byte for byte what it was before.
    before = revision_document_bytes(revision.number - 1)
    response = operator_client.patch(f"{API}/endpoints/users:v1/", {"plugins": {}}, format="json")
    assert response.status_code == 200
    assert current_document_bytes() == before


@pytest.mark.parametrize(
    ("plugins", "path", "words"),
    [
        ({"cors": {"origins": ["not an origin"]}}, "plugins.cors.origins[0]", "is not an origin"),
        ({"nope": {}}, "plugins.nope", "unknown plugin 'nope'"),
        ({"request_headers": {"set": {"Connection": "close"}}}, "plugins.request_headers.set.Connection", "hop-by-hop"),
        ({"request_headers": {"remove": ["Transfer-Encoding"]}}, "plugins.request_headers.remove[0]", "hop-by-hop"),
        ({"response_headers": {"set": {"X-A": "a\x00b"}}}, "plugins.response_headers.set.X-A", "NUL"),
        ({"response_headers": {"set": {"X-A": "a\ud800"}}}, "plugins.response_headers.set.X-A", ""),
        ({"cors": {"max_age": {"a": {"b": {"c": [[[[1]]]]}}}}}, "plugins.cors.max_age", "must be an integer"),
        ({"cors": None}, "plugins.cors", "must be a mapping"),
        ({"cors": {"origins": "*"}}, "plugins.cors.origins", "must be a list"),
        ({"cors": {"bogus": 1}}, "plugins.cors.bogus", "unknown key"),
        ("cors", "plugins", "must be a mapping"),
        ({"rate_limit": {}}, "plugins.rate_limit.limits", "is required"),
        ({"rate_limit": {"limits": [{"requests": 0, "per": "minute"}]}}, "plugins.rate_limit.limits[0].requests", ""),
        ({"rate_limit": {"limits": [{"requests": 1, "per": "\x00"}]}}, "plugins.rate_limit.limits[0].per", ""),
        (
            {"rate_limit": {"limits": [{"requests": 1, "per": "minute"}], "by": "header"}},
            "plugins.rate_limit.header_name",
            "required when by is header",
        ),
    ],
)
def test_bad_plugins_are_400_naming_the_field_and_nothing_is_stored(
    operator_client: APIClient, plugins: Any, path: str, words: str
) -> None:
    count = revisions()
    # Sent as the bytes a client sends (`"\ud800"` escaped, which decodes to a lone surrogate).
    raw = json.dumps(endpoint_body(plugins=plugins))
    response = operator_client.post(f"{API}/endpoints/", raw, content_type="application/json")
    found = fields(response)
    assert path in found, found
    assert words in " ".join(found[path])
    assert revisions() == count and not Endpoint.objects.exists()


def test_a_lone_surrogate_or_nul_in_a_plugin_name_is_400_not_500(operator_client: APIClient) -> None:
    for name in ("a\ud800", "x\x00y"):
        raw = json.dumps(endpoint_body(plugins={name: {}}))
        response = operator_client.post(f"{API}/endpoints/", raw, content_type="application/json")
        found = fields(response)
        assert list(found) == ["plugins." + name.encode("unicode_escape").decode()], found


def test_preserve_host_must_be_a_boolean(operator_client: APIClient) -> None:
    found = fields(operator_client.post(f"{API}/endpoints/", endpoint_body(preserve_host="yes"), format="json"))
    assert "must be true or false" in found["preserve_host"][0]


# --- the document's global plugins ------------------------------------------------------------------


def test_global_plugins_are_read_by_readonly_and_changed_by_config_write(
    operator_client: APIClient, readonly_client: APIClient
) -> None:
    assert readonly_client.get(f"{API}/plugins/").json() == {}
    assert readonly_client.put(f"{API}/plugins/", {"cors": {}}, format="json").status_code == 403
    count = revisions()
    response = operator_client.put(f"{API}/plugins/", {"cors": CORS}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["cors"]["origins"] == ["https://app.example.com", "https://b.example.com"]
    assert response["ETag"]
    assert revisions() == count + 1
    event = AuditEvent.objects.latest("id")
    assert (event.action, event.object_key, event.before) == ("plugins.update", "plugins", {})
    assert event.after == {"cors": {"origins": ["https://app.example.com", "https://b.example.com"]}}
    document = json.loads(current_document_bytes())
    assert document["format_version"] == 2 and document["plugins"] == event.after
    # GET then PUT back: no change, no revision.
    shown = readonly_client.get(f"{API}/plugins/").json()
    assert operator_client.put(f"{API}/plugins/", shown, format="json").status_code == 200
    assert revisions() == count + 1


def test_patching_global_plugins_merges_by_name_and_null_removes(operator_client: APIClient) -> None:
    operator_client.put(f"{API}/plugins/", {"cors": {}}, format="json")
    response = operator_client.patch(f"{API}/plugins/", {"response_headers": FRAME}, format="json")
    assert set(response.json()) == {"cors", "response_headers"}
    response = operator_client.patch(f"{API}/plugins/", {"cors": None}, format="json")
    assert set(response.json()) == {"response_headers"}
    operator_client.patch(f"{API}/plugins/", {"response_headers": None}, format="json")
    assert json.loads(current_document_bytes())["format_version"] == 1
    actions = list(AuditEvent.objects.filter(object_type="plugins").values_list("action", flat=True))
    assert actions == ["plugins.update"] * 4


def test_bad_global_plugins_are_400_naming_the_path(operator_client: APIClient) -> None:
    count = revisions()
    found = fields(operator_client.put(f"{API}/plugins/", {"cors": {"origins": ["ftp:/x"]}}, format="json"))
    assert "plugins.cors.origins[0]" in found
    found = fields(operator_client.patch(f"{API}/plugins/", {"rate_limitx": {}}, format="json"))
    assert "plugins.rate_limitx" in found
    found = fields(operator_client.put(f"{API}/plugins/", ["cors"], format="json"))
    assert found
    assert revisions() == count


def test_a_stale_if_match_on_global_plugins_is_412(operator_client: APIClient) -> None:
    etag = operator_client.get(f"{API}/plugins/")["ETag"]
    operator_client.put(f"{API}/plugins/", {"cors": {}}, format="json")
    response = operator_client.put(f"{API}/plugins/", {}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 412


# --- import / export, diff, rollback ----------------------------------------------------------------


def test_export_then_import_round_trips_plugins_in_yaml(operator_client: APIClient) -> None:
    create(operator_client, plugins={"cors": CORS}, preserve_host=True)
    operator_client.put(f"{API}/plugins/", {"response_headers": FRAME}, format="json")
    text = operator_client.get(f"{API}/config/export/").content.decode()
    exported = yaml.safe_load(text)
    assert exported["format_version"] == 2
    assert exported["plugins"] == {"response_headers": FRAME}
    assert exported["endpoints"][0]["preserve_host"] is True
    count = revisions()
    response = operator_client.post(f"{API}/config/import/?prune=1", text, content_type="application/yaml")
    assert response.status_code == 200, response.content
    assert response.json()["summary"] == {"create": 0, "update": 0, "delete": 0}
    assert revisions() == count
    # Into an empty control plane: the same document, byte for byte.
    before = current_document_bytes()
    operator_client.delete(f"{API}/endpoints/users:v1/")
    operator_client.put(f"{API}/plugins/", {}, format="json")
    response = operator_client.post(f"{API}/config/import/", text, content_type="application/yaml")
    assert response.status_code == 200, response.content
    assert current_document_bytes() == before


def test_an_imported_format_1_document_with_plugins_is_refused_naming_the_key(operator_client: APIClient) -> None:
    document = {"format_version": 1, "plugins": {"cors": {}}, "endpoints": []}
    response = operator_client.post(f"{API}/config/import/", document, format="json")
    assert response.status_code == 400
    assert "format_version: 2" in response.json()["fields"]["plugins"][0]


def test_diff_and_rollback_of_a_plugin_change(operator_client: APIClient, readonly_client: APIClient) -> None:
    create(operator_client)
    start = ConfigRevision.objects.latest("number").number
    operator_client.patch(f"{API}/endpoints/users:v1/", {"plugins": {"response_headers": FRAME}}, format="json")
    operator_client.put(f"{API}/plugins/", {"cors": {}}, format="json")
    end = ConfigRevision.objects.latest("number").number
    diff = readonly_client.get(f"{API}/revisions/diff/?from={start}&to={end}").json()["changes"]
    by_kind = {(c["kind"], c["key"]): c for c in diff}
    endpoint_fields = {f["field"]: f for f in by_kind[("endpoint", "users:v1")]["fields"]}
    assert endpoint_fields["plugins.response_headers.set.X-Frame-Options"]["after"] == "DENY"
    assert by_kind[("plugins", "plugins")]["action"] == "create"

    plan = revision_rollback(number=start, actor=ACTOR)
    assert plan.revision is not None
    assert Endpoint.objects.get().plugins == {}
    assert config_export().get("plugins") is None
    assert current_document_bytes() == revision_document_bytes(start)
    assert json.loads(current_document_bytes())["format_version"] == 1
    # And forward again, to the revision with the plugins.
    revision_rollback(number=end, actor=ACTOR)
    assert current_document_bytes() == revision_document_bytes(end)


def test_every_revision_with_plugins_rebuilds_byte_for_byte(settings: Any, operator_client: APIClient) -> None:
    settings.GATEWAY_REVISION_CHECKPOINT_EVERY = 2
    create(operator_client)
    operator_client.put(f"{API}/plugins/", {"cors": {}}, format="json")
    operator_client.patch(f"{API}/endpoints/users:v1/", {"preserve_host": True}, format="json")
    operator_client.patch(f"{API}/plugins/", {"cors": None}, format="json")
    operator_client.patch(f"{API}/endpoints/users:v1/", {"preserve_host": False}, format="json")
    for revision in ConfigRevision.objects.order_by("number"):
        assert revision_document_bytes(revision.number)  # checks its sha256 itself


def test_import_config_service_applies_global_plugins() -> None:
    config_import(document={"format_version": 2, "plugins": {"cors": {}}, "endpoints": []}, actor=ACTOR)
    assert config_export()["plugins"] == {"cors": {}}
    assert AuditEvent.objects.filter(action="plugins.update").count() == 1


# --- what the nodes get -----------------------------------------------------------------------------


def test_the_snapshot_is_format_2_once_a_plugin_is_used_and_format_1_again_without(
    operator_client: APIClient,
) -> None:
    create(operator_client)
    assert load_snapshot().format_version == 1
    operator_client.patch(f"{API}/endpoints/users:v1/", {"plugins": {"response_headers": FRAME}}, format="json")
    snapshot = load_snapshot()
    assert snapshot.format_version == 2
    config = json.loads(snapshot.body)["config"]
    assert config["endpoints"][0]["plugins"] == {"response_headers": FRAME}
    operator_client.patch(f"{API}/endpoints/users:v1/", {"plugins": {}}, format="json")
    assert load_snapshot().format_version == 1


def test_a_format_1_node_keeps_syncing_until_a_plugin_is_added_then_gets_409(operator_client: APIClient) -> None:
    from tests.controlplane.test_dataplane_sync import bearer, get

    secret = dataplane_token_issue(name="edge-1", actor=ACTOR)[1]
    create(operator_client)
    assert get(**bearer(secret), **{"X-Gateway-Format": "1"}).status_code == 200
    operator_client.put(f"{API}/plugins/", {"cors": {}}, format="json")
    refused = get(**bearer(secret), **{"X-Gateway-Format": "1"})
    assert refused.status_code == 409 and refused.json()["error"] == "format_unsupported"
    assert get(**bearer(secret)).status_code == 409  # no header: format 1
    answer = get(**bearer(secret), **{"X-Gateway-Format": "2"})
    assert answer.status_code == 200 and answer.json()["config"]["plugins"] == {"cors": {}}
