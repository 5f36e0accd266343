"""Consumers in the control plane (ARCHITECTURE §11 "Control plane", "Secrets never enter…"; §8 roles):
`consumers/` CRUD by username, `consumers/{u}/keys/` (a key shown once), basic-auth passwords taken in clear
and stored hashed, the document the nodes get, and what each role sees.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from configdoc import canonical_json
from configdoc.consumers import hash_key, password_matches
from controlplane.consumers.models import Consumer, ConsumerIdentity
from controlplane.consumers.services import consumer_create
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent, ConfigRevision
from controlplane.core.revisions import current_document_bytes, revision_document_bytes
from controlplane.routing.services import endpoint_create
from tests.conftest import client_for, endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"
ACTOR = Actor.command("test")
PEM_HEADER = "-----BEGIN PUBLIC KEY-----"


def fields(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    return dict(body["fields"])


def create(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/consumers/", {"username": "mobile-app", **body}, format="json")
    assert response.status_code == 201, response.content
    return dict(response.json())


def issue(client: APIClient, username: str = "mobile-app", **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/consumers/{username}/keys/", body, format="json")
    assert response.status_code == 201, response.content
    return dict(response.json())


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(current_document_bytes())
    return loaded


# --- CRUD ---------------------------------------------------------------------------------------------


def test_a_created_consumer_is_shown_with_every_default_and_joins_the_document_as_format_2(
    operator_client: APIClient,
) -> None:
    body = create(operator_client, groups=["partners", "b", "partners"], custom_id="crm-1042")
    assert body["username"] == "mobile-app" and body["key"] == "mobile-app"
    assert body["groups"] == ["b", "partners"] and body["custom_id"] == "crm-1042"
    assert body["key_auth"] == [] and body["jwt"] == [] and body["basic_auth"] == []
    doc = document()
    assert doc["format_version"] == 2
    assert doc["consumers"] == [{"username": "mobile-app", "custom_id": "crm-1042", "groups": ["b", "partners"]}]
    assert canonical_json(doc) == current_document_bytes()


def test_without_consumers_the_document_keeps_format_1(operator_client: APIClient) -> None:
    create(operator_client)
    operator_client.delete(f"{API}/consumers/mobile-app/")
    assert "consumers" not in document() and document()["format_version"] == 1


def test_get_list_put_patch_and_delete_by_username(operator_client: APIClient) -> None:
    create(operator_client, username="a.b@c_d-1")
    assert operator_client.get(f"{API}/consumers/a.b@c_d-1/").json()["username"] == "a.b@c_d-1"
    listed = operator_client.get(f"{API}/consumers/").json()
    assert [c["username"] for c in listed["results"]] == ["a.b@c_d-1"]
    assert "username" in fields(operator_client.put(f"{API}/consumers/a.b@c_d-1/", {"groups": ["x"]}, format="json"))
    put = operator_client.put(f"{API}/consumers/a.b@c_d-1/", {"username": "a.b@c_d-1", "groups": ["x"]}, format="json")
    assert put.status_code == 200, put.content
    assert put.json()["groups"] == ["x"]
    patch = operator_client.patch(f"{API}/consumers/a.b@c_d-1/", {"custom_id": "c-1"}, format="json")
    assert patch.json()["groups"] == ["x"] and patch.json()["custom_id"] == "c-1"
    assert operator_client.delete(f"{API}/consumers/a.b@c_d-1/").status_code == 204
    assert operator_client.get(f"{API}/consumers/a.b@c_d-1/").status_code == 404


def test_a_get_body_put_back_changes_nothing(operator_client: APIClient) -> None:
    create(operator_client, groups=["g"], basic_auth=[{"username": "mob", "password": "s3cret-pass"}])
    issue(operator_client)
    body = operator_client.get(f"{API}/consumers/mobile-app/").json()
    count = ConfigRevision.objects.count()
    put = operator_client.put(f"{API}/consumers/mobile-app/", body, format="json")
    assert put.status_code == 200, put.content
    assert ConfigRevision.objects.count() == count
    assert len(Consumer.objects.get().document["key_auth"]) == 1


def test_a_second_consumer_with_the_same_username_is_a_conflict(operator_client: APIClient) -> None:
    create(operator_client)
    response = operator_client.post(f"{API}/consumers/", {"username": "mobile-app"}, format="json")
    assert response.status_code == 409 and response.json()["error"] == "conflict"


def test_the_username_cannot_change(operator_client: APIClient) -> None:
    create(operator_client)
    response = operator_client.patch(f"{API}/consumers/mobile-app/", {"username": "other"}, format="json")
    assert "username" in fields(response)


def test_a_consumer_named_as_anonymous_cannot_be_deleted(operator_client: APIClient) -> None:
    create(operator_client)
    endpoint_create(data=endpoint_body(plugins={"key_auth": {"anonymous": "mobile-app"}}), actor=ACTOR)
    response = operator_client.delete(f"{API}/consumers/mobile-app/")
    assert response.status_code == 409 and "users:v1" in response.json()["message"]
    assert Consumer.objects.exists()


def test_writes_make_revisions_and_audit_events(operator_client: APIClient) -> None:
    before = ConfigRevision.objects.count()
    create(operator_client)
    issue(operator_client, label="k1")
    operator_client.delete(f"{API}/consumers/mobile-app/keys/k1/")
    operator_client.delete(f"{API}/consumers/mobile-app/")
    assert ConfigRevision.objects.count() == before + 4
    actions = list(AuditEvent.objects.filter(object_type="consumer").order_by("pk").values_list("action", flat=True))
    assert actions == ["consumer.create", "consumer.update", "consumer.update", "consumer.delete"]
    for number in ConfigRevision.objects.values_list("number", flat=True):
        revision_document_bytes(number)  # each rebuilds to its recorded sha256


# --- keys ---------------------------------------------------------------------------------------------


def test_a_key_is_answered_once_and_only_its_hash_is_stored(operator_client: APIClient) -> None:
    create(operator_client)
    answer = issue(operator_client, label="2026-q4")
    key = answer["key"]
    assert answer["label"] == "2026-q4" and answer["consumer"] == "mobile-app" and len(key) >= 43
    stored = Consumer.objects.get().document["key_auth"]
    assert stored == [{"label": "2026-q4", "key_sha256": hash_key(key)}]
    assert document()["consumers"][0]["key_auth"] == stored
    shown = operator_client.get(f"{API}/consumers/mobile-app/keys/")
    assert shown.status_code == 200 and shown.json() == [{"label": "2026-q4"}]
    assert operator_client.get(f"{API}/consumers/mobile-app/").json()["key_auth"] == [{"label": "2026-q4"}]
    for response in (
        shown,
        operator_client.get(f"{API}/consumers/mobile-app/"),
        operator_client.get(f"{API}/consumers/"),
    ):
        assert key not in response.content.decode() and hash_key(key) not in response.content.decode()


def test_each_key_is_different_and_a_label_is_chosen_when_none_is_given(operator_client: APIClient) -> None:
    create(operator_client)
    first, second = issue(operator_client), issue(operator_client)
    assert first["key"] != second["key"]
    assert first["label"].startswith("key-") and second["label"] == first["label"] + "-2"


def test_a_key_answer_is_not_cached(operator_client: APIClient) -> None:
    create(operator_client)
    response = operator_client.post(f"{API}/consumers/mobile-app/keys/", {}, format="json")
    assert response["Cache-Control"] == "no-store"


def test_a_label_used_twice_is_a_conflict_and_a_bad_label_names_the_field(operator_client: APIClient) -> None:
    create(operator_client)
    issue(operator_client, label="k")
    response = operator_client.post(f"{API}/consumers/mobile-app/keys/", {"label": "k"}, format="json")
    assert response.status_code == 409
    assert "label" in fields(operator_client.post(f"{API}/consumers/mobile-app/keys/", {"label": "a b"}, format="json"))
    assert "label" in fields(operator_client.post(f"{API}/consumers/mobile-app/keys/", {"label": 7}, format="json"))
    assert "label" in fields(operator_client.post(f"{API}/consumers/mobile-app/keys/", {"label": None}, format="json"))
    assert "key" in fields(operator_client.post(f"{API}/consumers/mobile-app/keys/", {"key": "mine"}, format="json"))


def test_deleting_a_key_by_label(operator_client: APIClient) -> None:
    create(operator_client)
    issue(operator_client, label="old")
    issue(operator_client, label="new")
    assert operator_client.delete(f"{API}/consumers/mobile-app/keys/old/").status_code == 204
    assert operator_client.get(f"{API}/consumers/mobile-app/keys/").json() == [{"label": "new"}]
    assert operator_client.delete(f"{API}/consumers/mobile-app/keys/old/").status_code == 404
    assert ConsumerIdentity.objects.filter(kind="key_sha256").count() == 1


def test_keys_in_a_consumer_body_are_read_only(operator_client: APIClient) -> None:
    fake = {"label": "x", "key_sha256": "0" * 64}
    body = create(operator_client, key_auth=[fake])
    assert body["key_auth"] == []
    issue(operator_client, label="real")
    operator_client.put(f"{API}/consumers/mobile-app/", {"username": "mobile-app", "key_auth": []}, format="json")
    assert [c["label"] for c in Consumer.objects.get().document["key_auth"]] == ["real"]


def test_the_number_of_keys_is_bounded_by_the_schema(operator_client: APIClient) -> None:
    create(operator_client)
    for n in range(16):
        issue(operator_client, label=f"k{n}")
    assert "key_auth" in fields(operator_client.post(f"{API}/consumers/mobile-app/keys/", {}, format="json"))


# --- basic auth and jwt ---------------------------------------------------------------------------------


def test_a_basic_auth_password_is_stored_as_a_pbkdf2_hash_and_never_shown(operator_client: APIClient) -> None:
    body = create(operator_client, basic_auth=[{"username": "mob", "password": "open sesame 1"}])
    assert body["basic_auth"] == [{"username": "mob"}]
    stored = Consumer.objects.get().document["basic_auth"][0]
    assert stored["password_hash"].startswith("pbkdf2_sha256$") and password_matches(
        "open sesame 1", stored["password_hash"]
    )
    text = operator_client.get(f"{API}/consumers/mobile-app/").content.decode()
    assert "open sesame" not in text and "pbkdf2" not in text


def test_a_basic_auth_credential_given_by_username_keeps_its_password(operator_client: APIClient) -> None:
    create(operator_client, basic_auth=[{"username": "mob", "password": "first-pass"}])
    old = Consumer.objects.get().document["basic_auth"][0]["password_hash"]
    operator_client.patch(f"{API}/consumers/mobile-app/", {"groups": ["g"]}, format="json")
    assert Consumer.objects.get().document["basic_auth"][0]["password_hash"] == old
    operator_client.patch(
        f"{API}/consumers/mobile-app/", {"basic_auth": [{"username": "mob", "password": "second"}]}, format="json"
    )
    assert password_matches("second", Consumer.objects.get().document["basic_auth"][0]["password_hash"])
    response = operator_client.patch(
        f"{API}/consumers/mobile-app/", {"basic_auth": [{"username": "new"}]}, format="json"
    )
    assert "basic_auth[0].password" in fields(response)


def test_jwt_credentials_take_an_env_reference_or_a_public_key_never_a_secret(operator_client: APIClient) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    jwt = [
        {"issuer": "mobile", "algorithm": "HS256", "secret": {"env": "MOBILE_JWT_SECRET"}},
        {"issuer": "idp", "algorithm": "EdDSA", "public_key": pem},
    ]
    body = create(operator_client, jwt=jwt)
    assert {c["issuer"] for c in body["jwt"]} == {"idp", "mobile"}
    assert document()["consumers"][0]["jwt"][1]["secret"] == {"env": "MOBILE_JWT_SECRET"}
    assert body["jwt"][0]["public_key"].startswith(PEM_HEADER)
    refused = operator_client.post(
        f"{API}/consumers/",
        {"username": "x", "jwt": [{"issuer": "i2", "algorithm": "HS256", "secret": "hunter2-hunter2"}]},
        format="json",
    )
    assert "jwt[0].secret" in fields(refused) and "hunter2" not in refused.content.decode()


def test_what_selects_a_consumer_is_unique_across_consumers(operator_client: APIClient) -> None:
    create(operator_client, custom_id="c1", basic_auth=[{"username": "mob", "password": "pw-pw-pw"}],
           jwt=[{"issuer": "iss", "algorithm": "HS256", "secret": {"env": "S"}}])  # fmt: skip
    for body, field in (
        ({"custom_id": "c1"}, "custom_id"),
        ({"basic_auth": [{"username": "mob", "password": "other"}]}, "basic_auth[0].username"),
        ({"jwt": [{"issuer": "iss", "algorithm": "HS256", "secret": {"env": "T"}}]}, "jwt[0].issuer"),
    ):
        response = operator_client.post(f"{API}/consumers/", {"username": "second", **body}, format="json")
        assert field in fields(response), body
    assert Consumer.objects.count() == 1


# --- roles ----------------------------------------------------------------------------------------------

ROLES = ("admin", "operator", "readonly", "dataplane", "anonymous")
#                 GET list  POST  GET keys  POST key  DELETE key  PATCH  DELETE
EXPECTED = {
    "admin":     (200,      201,  200,      201,      204,        200,   204),
    "operator":  (200,      201,  200,      201,      204,        200,   204),
    "readonly":  (200,      403,  200,      403,      403,        403,   403),
    "dataplane": (403,      403,  403,      403,      403,        403,   403),
    "anonymous": (401,      401,  401,      401,      401,        401,   401),
}  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_answer(role: str, make_user: Callable[..., Any]) -> None:
    consumer_create(data={"username": "c"}, actor=ACTOR)
    from controlplane.consumers.services import consumer_key_create

    consumer_key_create(consumer=Consumer.objects.get(), label="k", actor=ACTOR)
    client = APIClient() if role == "anonymous" else client_for(make_user(f"{role}-user", role))
    requests = [
        ("get", "consumers/", None),
        ("post", "consumers/", {"username": "new"}),
        ("get", "consumers/c/keys/", None),
        ("post", "consumers/c/keys/", {"label": "k2"}),
        ("delete", "consumers/c/keys/k/", None),
        ("patch", "consumers/c/", {"groups": ["g"]}),
        ("delete", "consumers/c/", None),
    ]
    got = tuple(
        getattr(client, method)(f"{API}/{path}", body, format="json").status_code for method, path, body in requests
    )
    assert got == EXPECTED[role]


def test_readonly_sees_consumers_without_any_credential_material(
    operator_client: APIClient, readonly_client: APIClient
) -> None:
    create(operator_client, basic_auth=[{"username": "mob", "password": "pw-123456"}])
    key = issue(operator_client, label="k")["key"]
    secret_bits = [key, hash_key(key), Consumer.objects.get().document["basic_auth"][0]["password_hash"]]
    pages = [
        readonly_client.get(f"{API}/consumers/"),
        readonly_client.get(f"{API}/consumers/mobile-app/"),
        readonly_client.get(f"{API}/consumers/mobile-app/keys/"),
        readonly_client.get(f"{API}/config/export/?format=json"),
        readonly_client.get(f"{API}/config/export/"),
        readonly_client.get(f"{API}/revisions/"),
        readonly_client.get(f"{API}/revisions/{ConfigRevision.objects.order_by('-number').first().number}/"),  # type: ignore[union-attr]
        readonly_client.get(f"{API}/revisions/diff/?from=1&to={ConfigRevision.objects.count()}"),
    ]
    for page in pages:
        assert page.status_code == 200, page.content
        text = page.content.decode()
        assert not any(bit in text for bit in secret_bits), page.request["PATH_INFO"]
        assert "pbkdf2" not in text
    export = readonly_client.get(f"{API}/config/export/?format=json").json()
    assert export["consumers"][0]["key_auth"] == [{"label": "k"}]


def test_a_writer_exports_the_hashes_and_never_the_key(operator_client: APIClient) -> None:
    create(operator_client)
    key = issue(operator_client, label="k")["key"]
    export = operator_client.get(f"{API}/config/export/").content.decode()
    assert hash_key(key) in export and key not in export


def test_the_audit_log_holds_no_key_hash_or_password(operator_client: APIClient, admin_client: APIClient) -> None:
    create(operator_client, basic_auth=[{"username": "mob", "password": "pw-abcdef"}])
    key = issue(operator_client, label="k")["key"]
    stored = Consumer.objects.get().document
    audit = admin_client.get(f"{API}/audit/?page_size=100").content.decode()
    rows = json.dumps(list(AuditEvent.objects.values("before", "after", "object_key")))
    for text in (audit, rows):
        assert key not in text and hash_key(key) not in text
        assert stored["basic_auth"][0]["password_hash"] not in text and "pw-abcdef" not in text
    assert '"label": "k"' in rows


# --- hostile input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "a\x00b"}, "username"),
        ({"username": "ok", "custom_id": "x\x00y"}, "custom_id"),
        ({"username": "x" * 10_000}, "username"),
        ({"username": "ok", "custom_id": "c" * 10_000}, "custom_id"),
        ({"username": "ok", "groups": ["g" * 10_000]}, "groups[0]"),
        ({"username": "ok", "groups": [{"a": [{"b": {}}]}]}, "groups[0]"),
        ({"username": {"nested": {"deeper": [1, 2]}}}, "username"),
        ({"username": "ok", "basic_auth": [{"username": "u", "password": "p\x00w"}]}, "basic_auth[0].password"),
        ({"username": "ok", "basic_auth": [{"username": "u", "password": "p" * 10_000}]}, "basic_auth[0].password"),
        ({"username": "ok", "basic_auth": [{"username": "u", "password": {"a": 1}}]}, "basic_auth[0].password"),
        ({"username": "ok", "basic_auth": "mob"}, "basic_auth"),
        (
            {"username": "ok", "jwt": [{"issuer": "i" * 10_000, "algorithm": "HS256", "secret": {"env": "E"}}]},
            "jwt[0].issuer",
        ),
        ({"username": "ok", "jwt": [{"issuer": "i", "algorithm": "none"}]}, "jwt[0].algorithm"),
        ({"username": "ok", "password": "top-level"}, "password"),
    ],
)
def test_hostile_input_is_a_400_naming_the_field(operator_client: APIClient, body: dict[str, Any], field: str) -> None:
    response = operator_client.post(f"{API}/consumers/", body, format="json")
    assert field in fields(response), response.json()
    assert not Consumer.objects.exists()


def test_a_lone_surrogate_and_deep_nesting_are_refused_with_a_4xx(operator_client: APIClient) -> None:
    raw = '{"username": "a\\ud800"}'
    response = operator_client.generic("POST", f"{API}/consumers/", raw, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"
    deep = '{"username": "x", "groups": ' + "[" * 5000 + "]" * 5000 + "}"
    response = operator_client.generic("POST", f"{API}/consumers/", deep, content_type="application/json")
    assert response.status_code == 400
    for raw_password in ('"p\\ud800"', '"\\udfff"'):
        raw = '{"username": "a", "basic_auth": [{"username": "u", "password": ' + raw_password + "}]}"
        response = operator_client.generic("POST", f"{API}/consumers/", raw, content_type="application/json")
        assert response.status_code == 400
    assert not Consumer.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(operator_client: APIClient) -> None:
    for raw in ("[]", '"mobile"', "null", "7"):
        response = operator_client.generic("POST", f"{API}/consumers/", raw, content_type="application/json")
        assert response.status_code == 400, raw
    create(operator_client)
    for raw in ("[]", '"x"'):
        response = operator_client.generic(
            "POST", f"{API}/consumers/mobile-app/keys/", raw, content_type="application/json"
        )
        assert response.status_code == 400, raw


def test_hostile_paths_are_a_404(operator_client: APIClient) -> None:
    for path in ("consumers/a%00b/", "consumers/" + "x" * 100 + "/", "consumers/mobile-app/keys/a%20b/"):
        assert operator_client.get(f"{API}/{path}").status_code in (404, 405), path


def test_a_key_basic_auth_round_trip_uses_the_hash_configdoc_checks(operator_client: APIClient) -> None:
    create(operator_client, basic_auth=[{"username": "mob", "password": "pässwörd-ünïcode"}])
    password_hash = Consumer.objects.get().document["basic_auth"][0]["password_hash"]
    _, iterations, salt, digest = password_hash.split("$")
    assert int(iterations) >= 100_000 and len(base64.b64decode(digest)) == 32 and salt
    assert password_matches("pässwörd-ünïcode", password_hash)


def test_an_anonymous_that_names_no_consumer_is_refused_so_no_node_is_offered_it(operator_client: APIClient) -> None:
    body = endpoint_body(plugins={"key_auth": {"anonymous": "ghost"}})
    response = operator_client.post(f"{API}/endpoints/", body, format="json")
    assert "plugins.key_auth.anonymous" in fields(response)
    response = operator_client.put(f"{API}/plugins/", {"basic_auth": {"anonymous": "ghost"}}, format="json")
    assert "plugins.basic_auth.anonymous" in fields(response)
    create(operator_client, username="ghost")
    assert operator_client.post(f"{API}/endpoints/", body, format="json").status_code == 201
    assert (
        operator_client.put(f"{API}/plugins/", {"basic_auth": {"anonymous": "ghost"}}, format="json").status_code == 200
    )
    assert operator_client.delete(f"{API}/consumers/ghost/").status_code == 409
