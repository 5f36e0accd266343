"""Hostile input to every parser and text field of the control plane: each is a 400 (or a 404 for a URL
key) in the API's envelope naming what is wrong, never a 500, and nothing is stored.

- JSON nested 10,000 deep (a RecursionError in the parser) to the auth endpoints, the API's writes,
  `config/import/` and `dataplane/status`, and the same as YAML;
- lone surrogates (`"\\ud800"` decodes to one) in keys and values;
- NUL in every free-text field of the document, over the API, `config/import/` and `import_config`;
- control characters in a YAML document;
- `%00` in every detail route's key; bad `since` / `until` on `audit/`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from configdoc.untrusted import MAX_DEPTH
from controlplane.core.actors import Actor
from controlplane.core.models import ConfigRevision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.services import dataplane_token_issue
from controlplane.dataplanes.sync import STATUS_PATH, DataPlaneSyncApp
from controlplane.routing.models import Endpoint
from controlplane.routing.services import endpoint_create
from tests.conftest import endpoint_body

pytestmark = pytest.mark.django_db
API = "/api/v1"
ROOT = Path(__file__).resolve().parents[2]
ACTOR = Actor.command("test")
DEPTH = 10_000
DEEP_JSON = {
    "arrays": "[" * DEPTH + "]" * DEPTH,
    "objects": '{"a":' * DEPTH + "1" + "}" * DEPTH,
}
DEEP_YAML = {
    **DEEP_JSON,
    "block sequences": "- " * DEPTH + "x\n",
    "block mappings": "".join(f"{'  ' * level}a:\n" for level in range(500)) + "  " * 500 + "b: 1\n",
}
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"


def revisions() -> int:
    return ConfigRevision.objects.count()


def post_raw(client: APIClient, path: str, body: str | bytes, content_type: str = "application/json") -> Any:
    return client.post(f"{API}/{path}", body, content_type=content_type)


def document(**endpoint: Any) -> dict[str, Any]:
    """A v1 document with one endpoint (its fields overridden by `endpoint`)."""
    return {"format_version": 1, "endpoints": [endpoint_body(**endpoint)]}


def with_policy(**fallback: Any) -> dict[str, Any]:
    policy = {"name": "strict", "fallback_strategy": "default_response", "fallback": {"status": 200, **fallback}}
    return {"format_version": 1, "breaker_policies": [policy], "endpoints": []}


@pytest.fixture
def users_v1() -> None:
    endpoint_create(data=endpoint_body(), actor=ACTOR)


# --- nesting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", DEEP_JSON)
@pytest.mark.parametrize("path", ["auth/token/", "auth/token/refresh/", "auth/token/verify/", "auth/logout/"])
def test_deeply_nested_json_to_an_auth_endpoint_is_a_400_for_anyone(path: str, shape: str) -> None:
    response = post_raw(APIClient(), path, DEEP_JSON[shape])
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "parse_error"
    assert TOO_DEEP in body["message"]
    assert body["request_id"]


@pytest.mark.parametrize("shape", DEEP_JSON)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "endpoints/"),
        ("put", "endpoints/users:v1/"),
        ("patch", "endpoints/users:v1/"),
        ("post", "breaker-policies/"),
        ("patch", "breaker-policies/default/"),
        ("post", "users/"),
        ("post", "breakers/users:v1/force/"),
        ("post", "auth/password/"),
    ],
)
def test_deeply_nested_json_to_an_api_write_is_a_400_and_changes_nothing(
    admin_client: APIClient, users_v1: None, method: str, path: str, shape: str
) -> None:
    before, users = revisions(), get_user_model().objects.count()
    response = getattr(admin_client, method)(f"{API}/{path}", DEEP_JSON[shape], content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "parse_error"
    assert TOO_DEEP in response.json()["message"]
    assert (revisions(), get_user_model().objects.count()) == (before, users)


def nested_description(levels: int) -> str:
    """An endpoint body whose objects and lists nest `levels` deep (the body itself is the first)."""
    inner = "[" * (levels - 1) + "]" * (levels - 1)
    return json.dumps(endpoint_body())[:-1] + f', "description": {inner}}}'


def test_the_api_parses_a_body_nested_exactly_the_limit_and_refuses_one_level_more(admin_client: APIClient) -> None:
    at_limit = post_raw(admin_client, "endpoints/", nested_description(MAX_DEPTH))
    assert at_limit.status_code == 400
    assert at_limit.json()["fields"] == {"description": ["must be a string, not a list"]}
    past = post_raw(admin_client, "endpoints/", nested_description(MAX_DEPTH + 1))
    assert past.status_code == 400
    assert past.json()["error"] == "parse_error"


@pytest.mark.parametrize("shape", DEEP_YAML)
def test_config_import_refuses_a_deeply_nested_document_naming_the_line(admin_client: APIClient, shape: str) -> None:
    before = revisions()
    response = post_raw(admin_client, "config/import/", DEEP_YAML[shape], content_type="application/yaml")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    assert TOO_DEEP in body["fields"]["non_field_errors"][0]
    assert body["problems"][0]["line"] is not None
    assert revisions() == before


def test_config_import_refuses_aliases_that_nest_past_the_limit_together(admin_client: APIClient) -> None:
    half = MAX_DEPTH // 2 + 1
    text = f"a: &a {'[' * half}1{']' * half}\nb: &b {'[' * half}*a{']' * half}\nformat_version: 1\n"
    response = post_raw(admin_client, "config/import/", text, content_type="application/yaml")
    assert response.status_code == 400, response.content
    assert "with its aliases expanded" in response.json()["fields"]["non_field_errors"][0]


@pytest.mark.parametrize("shape", DEEP_YAML)
def test_import_config_refuses_a_deeply_nested_file_with_a_command_error(tmp_path: Path, shape: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(DEEP_YAML[shape])
    before = revisions()
    with pytest.raises(CommandError, match=TOO_DEEP):
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert revisions() == before


def test_import_config_on_a_deeply_nested_file_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(DEEP_JSON["arrays"])
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    finished = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "manage.py", "import_config", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr
    assert finished.stderr.startswith("CommandError: ")
    assert TOO_DEEP in finished.stderr


# --- lone surrogates -------------------------------------------------------------------------------

SURROGATE = "\ud800"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("auth/token/", {"username": "alice", "password": SURROGATE}, "password"),
        ("auth/token/", {SURROGATE: "x", "username": "alice", "password": "x"}, "\\ud800"),
        ("auth/token/refresh/", {"refresh": SURROGATE}, "refresh"),
        ("auth/token/verify/", {"token": "a" + SURROGATE}, "token"),
        ("auth/token/verify/", {"token": "x", SURROGATE: 1}, "\\ud800"),
    ],
)
def test_a_lone_surrogate_to_an_auth_endpoint_is_a_400_naming_it(path: str, body: dict[str, Any], field: str) -> None:
    response = post_raw(APIClient(), path, json.dumps(body))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("endpoints/", endpoint_body(description=SURROGATE), "description"),
        ("endpoints/", endpoint_body(description="caf\u00e9 " + SURROGATE), "description"),
        ("endpoints/", {**endpoint_body(), SURROGATE: 1}, "\\ud800"),
        ("endpoints/", endpoint_body(targets=[{"url": "http://127.0.0.1:8010/" + SURROGATE}]), "targets[0].url"),
        ("endpoints/", endpoint_body(tls={"server_name": "\udfff"}), "tls.server_name"),
        ("breaker-policies/", {"name": "strict", "fallback": {"body": SURROGATE}}, "fallback.body"),
        ("breaker-policies/", {"name": "strict", "fallback": {SURROGATE: "x"}}, "fallback.\\ud800"),
        ("users/", {"username": "bob" + SURROGATE, "password": "long-enough-password-42", "roles": []}, "username"),
        ("users/", {"username": "bob", "roles": [SURROGATE]}, "roles[0]"),
    ],
)
def test_a_lone_surrogate_in_an_api_write_is_a_400_naming_the_field_and_stores_nothing(
    admin_client: APIClient, path: str, body: dict[str, Any], field: str
) -> None:
    before, users = revisions(), get_user_model().objects.count()
    response = post_raw(admin_client, path, json.dumps(body))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"]
    assert (revisions(), get_user_model().objects.count()) == (before, users)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (document(description=SURROGATE), "endpoints[0].description"),
        (document(paths=["/x" + SURROGATE]), "endpoints[0].paths[0]"),
        ({**document(), SURROGATE: 1}, "\\ud800"),
        ({"format_version": 1, "endpoints": [{**endpoint_body(), SURROGATE: 1}]}, "endpoints[0].\\ud800"),
        (with_policy(body=SURROGATE), "breaker_policies[0].fallback.body"),
    ],
)
def test_config_import_refuses_a_lone_surrogate_in_json_naming_the_field(
    admin_client: APIClient, body: dict[str, Any], field: str
) -> None:
    before = revisions()
    response = post_raw(admin_client, "config/import/", json.dumps(body))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"]
    assert revisions() == before
    assert not Endpoint.objects.exists()


def test_config_import_refuses_a_lone_surrogate_escaped_in_yaml(admin_client: APIClient) -> None:
    text = 'format_version: 1\nendpoints:\n  - name: users\n    version: v1\n    description: "\\ud800"\n'
    text += "    targets: [{url: 'http://127.0.0.1:8010'}]\n"
    response = post_raw(admin_client, "config/import/", text, content_type="application/yaml")
    assert response.status_code == 400, response.content
    assert response.json()["problems"] == [
        {
            "path": "endpoints[0].description",
            "message": "must not contain a lone surrogate (\\ud800): text must be valid Unicode",
            "line": 5,
        }
    ]


# --- NUL in the document's free text ---------------------------------------------------------------

NUL = "a\x00b"
# (the field's path within an endpoint or a policy, the fields that put NUL there)
ENDPOINT_TEXT: list[tuple[str, dict[str, Any]]] = [
    ("description", {"description": NUL}),
    ("targets[0].url", {"targets": [{"url": "http://127.0.0.1:8010/" + NUL}]}),
    ("paths[0]", {"paths": ["/" + NUL]}),
    ("tags[0]", {"tags": [NUL]}),
    ("health_check.path", {"health_check": {"path": "/" + NUL}}),
    ("tls.ca_file", {"tls": {"ca_file": NUL}}),
    ("tls.server_name", {"tls": {"server_name": NUL}}),
]
POLICY_TEXT: list[tuple[str, dict[str, Any]]] = [
    ("fallback.body", {"body": NUL}),
    ("fallback.content_type", {"content_type": NUL}),
]
NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


@pytest.mark.parametrize(("field", "fields"), ENDPOINT_TEXT, ids=[f for f, _ in ENDPOINT_TEXT])
def test_nul_in_an_endpoints_text_over_the_api_is_a_400_naming_the_field(
    admin_client: APIClient, field: str, fields: dict[str, Any]
) -> None:
    before = revisions()
    response = post_raw(admin_client, "endpoints/", json.dumps(endpoint_body(**fields)))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert NUL_MESSAGE in response.json()["fields"][field]
    assert revisions() == before
    assert not Endpoint.objects.exists()


def test_nul_in_an_endpoints_description_over_patch_is_a_400(admin_client: APIClient, users_v1: None) -> None:
    before = revisions()
    response = admin_client.patch(f"{API}/endpoints/users:v1/", {"description": NUL}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["fields"] == {"description": [NUL_MESSAGE]}
    assert revisions() == before
    assert Endpoint.objects.get().description == ""


@pytest.mark.parametrize(("field", "fallback"), POLICY_TEXT, ids=[f for f, _ in POLICY_TEXT])
def test_nul_in_a_policys_fallback_over_the_api_is_a_400_naming_the_field(
    admin_client: APIClient, field: str, fallback: dict[str, Any]
) -> None:
    before = revisions()
    policy = {"name": "strict", "fallback_strategy": "default_response", "fallback": {"status": 200, **fallback}}
    response = post_raw(admin_client, "breaker-policies/", json.dumps(policy))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"]
    assert revisions() == before


IMPORT_TEXT = [(f"endpoints[0].{field}", document(**fields)) for field, fields in ENDPOINT_TEXT] + [
    (f"breaker_policies[0].{field}", with_policy(**fallback)) for field, fallback in POLICY_TEXT
]


@pytest.mark.parametrize(("field", "body"), IMPORT_TEXT, ids=[f for f, _ in IMPORT_TEXT])
def test_nul_in_the_documents_text_over_config_import_is_a_400_naming_the_field(
    admin_client: APIClient, field: str, body: dict[str, Any]
) -> None:
    before = revisions()
    response = post_raw(admin_client, "config/import/", json.dumps(body))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert response.json()["fields"][field] == [NUL_MESSAGE]
    assert revisions() == before


@pytest.mark.parametrize(("field", "body"), IMPORT_TEXT, ids=[f for f, _ in IMPORT_TEXT])
def test_nul_in_the_documents_text_in_an_import_config_file_is_a_command_error(
    tmp_path: Path, field: str, body: dict[str, Any]
) -> None:
    path = tmp_path / "nul.json"
    path.write_text(json.dumps(body))  # "\u0000" escapes: JSON is YAML, and YAML's "\0" means the same
    before = revisions()
    with pytest.raises(CommandError, match=re.escape(f"{field} (line 1): {NUL_MESSAGE}")):
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())
    assert revisions() == before


@pytest.mark.parametrize("text", ["0x10: x\n", "format_version: 1\n0x10: x\n"])
def test_config_import_answers_a_key_yaml_reads_as_a_number_instead_of_hanging(
    admin_client: APIClient, text: str
) -> None:
    # "0x10" loads as 16, a path with no line of its own: finding its line once looped forever.
    response = post_raw(admin_client, "config/import/", text, content_type="application/yaml")
    assert response.status_code == 400, response.content
    assert list(response.json()["fields"]) == ["16"]
    assert revisions() == 1


# --- control characters in YAML --------------------------------------------------------------------


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x08", "\x1b", "\x7f"])
def test_config_import_refuses_a_control_character_in_yaml_naming_its_line(
    admin_client: APIClient, character: str
) -> None:
    text = f"format_version: 1\nendpoints:\n  - name: users{character}\n"
    response = post_raw(admin_client, "config/import/", text.encode(), content_type="application/yaml")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["problems"] == [
        {"path": "", "message": f"not valid YAML: character U+{ord(character):04X} is not allowed", "line": 3}
    ]
    assert revisions() == 1


def test_import_config_refuses_a_control_character_with_a_command_error(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"format_version: 1\nendpoints: []\n# \x00\n")
    with pytest.raises(CommandError, match=r"\(line 3\): not valid YAML: character U\+0000 is not allowed"):
        call_command("import_config", str(path), stdout=StringIO(), stderr=StringIO())


# --- URL keys --------------------------------------------------------------------------------------

# Routes whose key pattern admits any character: the key reaches the view, which must not send a NUL
# to the database (PostgreSQL refuses it: a DataError, a 500).
OPEN_KEY_ROUTES = [
    ("get", "breakers/{}/"),
    ("post", "breakers/{}/force/"),
    ("post", "breakers/{}/reset/"),
    ("get", "dataplanes/{}/"),
    ("get", "stats/endpoints/{}/"),
    ("get", "roles/{}/"),
    ("post", "endpoints/{}/check/"),
    ("get", "audit/{}/"),
]
# Routes whose key pattern (name:version, a name, digits) never matches a control character: unrouted.
PATTERNED_KEY_ROUTES = [
    ("get", "endpoints/{}/"),
    ("put", "endpoints/{}/"),
    ("patch", "endpoints/{}/"),
    ("delete", "endpoints/{}/"),
    ("get", "breaker-policies/{}/"),
    ("delete", "breaker-policies/{}/"),
    ("get", "users/{}/"),
    ("patch", "users/{}/"),
    ("get", "revisions/{}/"),
    ("post", "revisions/{}/rollback/"),
    ("get", "health/{}/"),
]
KEYS = ["%00", "users%00:v1", "a%01b", "%1F"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("method", "route"), OPEN_KEY_ROUTES)
def test_a_control_character_in_a_url_key_is_a_404_in_the_envelope(
    admin_client: APIClient, users_v1: None, method: str, route: str, key: str
) -> None:
    response = getattr(admin_client, method)(f"{API}/{route.format(key)}", {}, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["error"] == "not_found"
    assert response.json()["request_id"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("method", "route"), PATTERNED_KEY_ROUTES)
def test_a_control_character_in_a_patterned_url_key_is_not_routed(
    admin_client: APIClient, users_v1: None, method: str, route: str, key: str
) -> None:
    admin_client.raise_request_exception = False
    response = getattr(admin_client, method)(f"{API}/{route.format(key)}", {}, format="json")
    assert response.status_code == 404


# --- audit/?since= and until= ----------------------------------------------------------------------

BAD_TIMES = [
    "2020-01-01T00:00:00+16:00",  # Python accepts offsets to ±23:59, PostgreSQL refuses past ±15:59
    "2020-01-01T00:00:00-23:59",
    "garbage",
    "99999-01-01T00:00:00",
    "9999-12-31T23:59:59-10:00",  # exists in its zone, not in UTC
    "0001-01-01T00:00:00+01:00",
    "\x00",
]


@pytest.mark.parametrize("value", BAD_TIMES)
@pytest.mark.parametrize("parameter", ["since", "until"])
def test_a_bad_audit_time_is_a_400_naming_the_parameter(admin_client: APIClient, parameter: str, value: str) -> None:
    response = admin_client.get(f"{API}/audit/", {parameter: value})
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert list(response.json()["fields"]) == [parameter]


def test_an_audit_time_in_any_real_time_zone_filters_by_the_instant(admin_client: APIClient) -> None:
    created = ConfigRevision.objects.get().created_at
    earlier = (created - timezone.timedelta(minutes=1)).astimezone(timezone.get_fixed_timezone(14 * 60))
    later = (created + timezone.timedelta(minutes=1)).astimezone(timezone.get_fixed_timezone(-12 * 60))
    assert admin_client.get(f"{API}/audit/", {"since": earlier.isoformat()}).json()["count"] == 1
    assert admin_client.get(f"{API}/audit/", {"since": later.isoformat()}).json()["count"] == 0
    assert admin_client.get(f"{API}/audit/", {"until": later.isoformat()}).json()["count"] == 1


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1\x00", "-1", "garbage"])
@pytest.mark.parametrize("parameter", ["from", "to"])
def test_a_bad_revision_number_for_diff_is_a_400_naming_the_parameter(
    admin_client: APIClient, parameter: str, value: str
) -> None:
    response = admin_client.get(f"{API}/revisions/diff/", {"from": "1", "to": "1", parameter: value})
    assert response.status_code == 400, response.content
    assert response.json()["fields"] == {parameter: ["must be a revision number"]}


# --- dataplane/status (before Django, data-plane token) --------------------------------------------


async def _not_django(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never reached
    raise AssertionError("the sync app answers dataplane/status itself")


def post_status(content: bytes) -> httpx.Response:
    secret = dataplane_token_issue(name="edge-1", actor=ACTOR)[1]

    async def run() -> httpx.Response:
        app = DataPlaneSyncApp(_not_django, poll_interval=0.02)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
                return await client.post(STATUS_PATH, content=content, headers=headers)
        finally:
            await app.aclose()

    return async_to_sync(run)()


def status_report(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": "edge-1-w0",
        "boot_id": "b0a7e2",
        "hostname": "edge-1.local",
        "version": "0.1.0",
        "revision": 1,
        "config_sha256": None,
        "state_seq": 0,
        "result": "applied",
        "error": None,
    }
    body.update(fields)
    return body


def breakers_keyed(key: str) -> dict[str, Any]:
    return {key: {"state": "open", "forced": None, "reset_generation": 0, "transitions": []}}


STATUS_CASES: list[tuple[str, bytes, str]] = [
    ("deep arrays", DEEP_JSON["arrays"].encode(), "non_field_errors"),
    ("deep objects", DEEP_JSON["objects"].encode(), "non_field_errors"),
    ("deep in a field", json.dumps(status_report(error="{}")).replace('"{}"', DEEP_JSON["arrays"]).encode(),
     "non_field_errors"),
    ("surrogate hostname", json.dumps(status_report(hostname=SURROGATE)).encode(), "hostname"),
    ("surrogate error", json.dumps(status_report(result="rejected", error="bad " + SURROGATE)).encode(), "error"),
    ("surrogate key", json.dumps({**status_report(), SURROGATE: 1}).encode(), "\\ud800"),
    ("surrogate breaker key", json.dumps(status_report(breakers=breakers_keyed("\udc00:v1"))).encode(),
     "breakers.\\udc00:v1"),
    ("NUL hostname", json.dumps(status_report(hostname=NUL)).encode(), "hostname"),
    ("NUL version", json.dumps(status_report(version=NUL)).encode(), "version"),
    ("NUL error", json.dumps(status_report(result="rejected", error=NUL)).encode(), "error"),
    ("NUL breaker key", json.dumps(status_report(breakers=breakers_keyed("users:v1\x00"))).encode(),
     "breakers.users:v1\\x00"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES])
def test_a_hostile_status_report_is_a_400_naming_the_field_and_stores_nothing(body: bytes, field: str) -> None:
    response = post_status(body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["fields"], response.json()
    assert not DataPlaneNode.objects.exists()


def test_a_clean_status_report_is_still_stored() -> None:
    response = post_status(json.dumps(status_report(breakers=breakers_keyed("users:v1"))).encode())
    assert response.status_code == 204, response.content
    assert DataPlaneNode.objects.get().hostname == "edge-1.local"
