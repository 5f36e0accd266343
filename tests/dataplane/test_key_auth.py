"""`key_auth` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream): keys in headers
and query parameters, what the upstream hears about the caller, the gate's anonymous and 401, and the
attacks: a key sent twice, an underscored header name, empty, long, NUL and non-UTF-8 keys; report
mode, the decisions metric, and no key in any log line."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from configdoc import validate_document
from configdoc.consumers import hash_key, key_digest
from dataplane.snapshot import load_document_text
from tests.dataplane.auth import (
    ALICE_KEY,
    BOB_KEY,
    access_lines,
    basic,
    call,
    decisions,
    document,
    every_log_message,
    gateway,
    refused,
    upstream_headers,
)
from tests.dataplane.harness import Gateway, endpoint, ok

HEADER = {"key_auth": {"key_names": ["X-API-Key"]}}
BOTH = {"key_auth": {"key_names": ["apikey", "X-API-Key"], "in": ["header", "query"]}}


def test_a_known_key_in_a_header_names_the_consumer_to_the_upstream() -> None:
    gw = gateway(HEADER)
    response = call(gw, headers=[("X-API-Key", ALICE_KEY.encode())])
    assert response.status_code == 200, response.text
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["alice"]
    assert seen["x-consumer-custom-id"] == ["crm-1042"]
    assert seen["x-consumer-groups"] == ["beta, partners"]
    assert seen["x-credential-identifier"] == ["2026-q4"]
    assert "x-anonymous-consumer" not in seen
    # Without hide_credentials the key goes on to the upstream.
    assert seen["x-api-key"] == [ALICE_KEY]


def test_the_clients_own_identity_headers_never_reach_the_upstream() -> None:
    spoofed = [
        ("X-Consumer-Username", "admin"),
        ("X-Consumer-Groups", "root"),
        ("X-Credential-Identifier", "forged"),
        ("X-Anonymous-Consumer", "false"),
    ]
    gw = gateway(HEADER)
    assert call(gw, headers=[("X-API-Key", BOB_KEY), *spoofed]).status_code == 200
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["bob"]
    assert "x-consumer-groups" in seen and seen["x-consumer-groups"] == ["staff"]
    assert seen["x-credential-identifier"] == ["bob-1"]
    assert "x-anonymous-consumer" not in seen
    # On an endpoint without any plugin too.
    assert call(gw, "/open/x", headers=spoofed).status_code == 200
    seen = upstream_headers(gw)
    assert not {"x-consumer-username", "x-consumer-groups", "x-credential-identifier", "x-anonymous-consumer"} & set(
        seen
    )


def test_header_names_compare_case_insensitively() -> None:
    gw = gateway(HEADER)
    assert call(gw, headers=[("x-api-KEY", BOB_KEY)]).status_code == 200


def test_a_key_in_the_query_is_percent_decoded() -> None:
    gw = gateway(BOTH)
    response = call(gw, f"/users/x?apikey={quote(ALICE_KEY, safe='')}&page=2")
    assert response.status_code == 200, response.text
    assert upstream_headers(gw)["x-consumer-username"] == ["alice"]
    # Query parameter names are exact: APIKEY is not apikey.
    assert refused(call(gw, f"/users/x?APIKEY={quote(ALICE_KEY, safe='')}"), 401, "unauthorized")


def test_the_query_is_not_looked_at_unless_configured() -> None:
    gw = gateway(HEADER)
    assert refused(call(gw, params={"X-API-Key": BOB_KEY}), 401, "unauthorized")


def test_an_unknown_key_is_refused_with_a_key_challenge_and_never_reaches_the_upstream() -> None:
    gw = gateway(HEADER)
    response = call(gw, headers=[("X-API-Key", "not-a-key")])
    assert refused(response, 401, "invalid_credentials")
    assert response.headers.get_list("www-authenticate") == ['Key realm="gateway"']
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert "not-a-key" not in response.text
    assert gw.seen == []


def test_no_key_at_all_is_401_unauthorized_with_the_challenge() -> None:
    gw = gateway(HEADER)
    response = call(gw)
    assert refused(response, 401, "unauthorized")
    assert response.headers.get_list("www-authenticate") == ['Key realm="gateway"']
    assert gw.seen == []


def test_no_key_with_an_anonymous_consumer_goes_on_as_it() -> None:
    gw = gateway({"key_auth": {"key_names": ["X-API-Key"], "anonymous": "guest"}})
    assert call(gw, headers=[("X-Consumer-Username", "alice")]).status_code == 200
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["guest"]
    assert seen["x-anonymous-consumer"] == ["true"]
    # A wrong key is never passed over to the anonymous consumer.
    assert refused(call(gw, headers=[("X-API-Key", "wrong")]), 401, "invalid_credentials")
    assert decisions(gw) == {
        ("users:v1", "authentication", "anonymous"): 1.0,
        ("users:v1", "key_auth", "deny"): 1.0,
    }


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/users/x", [("X-API-Key", "wrong"), ("X-API-Key", BOB_KEY)]),
        ("/users/x", [("X-API-Key", BOB_KEY), ("x-api-key", "wrong")]),
        ("/users/x", [("X-API-Key", BOB_KEY), ("X-API-Key", BOB_KEY)]),
        ("/users/x", [("X-API-Key", BOB_KEY), ("apikey", BOB_KEY)]),
        (f"/users/x?apikey=wrong&apikey={BOB_KEY}", []),
        (f"/users/x?apikey={BOB_KEY}&ap%69key=wrong", []),
        (f"/users/x?apikey={BOB_KEY}", [("X-API-Key", "wrong")]),
    ],
    ids=[
        "header-twice",
        "header-twice-other-case",
        "same-key-twice",
        "two-names",
        "query-twice",
        "encoded-name",
        "both",
    ],
)
def test_a_key_sent_more_than_once_is_refused_never_picked(path: str, headers: list[tuple[str, str]]) -> None:
    gw = gateway(BOTH)
    response = call(gw, path, headers=headers)
    assert refused(response, 401, "invalid_credentials")
    assert gw.seen == []


def test_an_underscored_header_name_is_not_the_key_header_and_is_not_forwarded() -> None:
    gw = gateway({"key_auth": {"key_names": ["api-key"], "anonymous": "guest"}})
    assert call(gw, headers=[("api_key", BOB_KEY)]).status_code == 200
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["guest"]  # the underscored name did not count as a key
    assert "api_key" not in seen and "api-key" not in seen


def test_a_key_name_with_an_underscore_is_read_from_the_query_only() -> None:
    gw = gateway({"key_auth": {"key_names": ["api_key"], "in": ["header", "query"]}})
    assert refused(call(gw, headers=[("api_key", BOB_KEY)]), 401, "unauthorized")
    assert call(gw, params={"api_key": BOB_KEY}).status_code == 200


def test_a_key_name_with_an_underscore_looked_for_in_headers_only_is_a_validation_error() -> None:
    data: dict[str, Any] = {
        "format_version": 2,
        "endpoints": [endpoint("users", plugins={"key_auth": {"key_names": ["apikey", "api_key"]}})],
    }
    _, problems = validate_document(data, max_format_version=2)
    assert [problem.path for problem in problems] == ["endpoints[0].plugins.key_auth.key_names[1]"]
    assert "`_`" in problems[0].message


@pytest.mark.parametrize(
    "query",
    ["apikey=", "apikey", "apikey=%00", "apikey=%FF%FE", "apikey=" + "k" * 6000, "apikey=" + quote(BOB_KEY + "\0")],
    ids=["empty", "no-value", "nul", "not-utf8", "long", "key-and-nul"],
)
def test_an_empty_or_hostile_key_in_the_query_is_invalid_not_a_500(query: str) -> None:
    gw = gateway(BOTH)
    response = call(gw, "/users/x?" + query)
    assert refused(response, 401, "invalid_credentials")
    assert response.headers["www-authenticate"] == 'Key realm="gateway"'


@pytest.mark.parametrize(
    "value", [b"", b"\xff\xfe\x80", b"k" * 6000, b"  "], ids=["empty", "not-utf8", "long", "spaces"]
)
def test_an_empty_or_hostile_key_in_a_header_is_invalid_not_a_500(value: bytes) -> None:
    gw = gateway(HEADER)
    response = call(gw, headers=[(b"X-API-Key", value)])
    assert refused(response, 401, "invalid_credentials")


def test_hide_credentials_removes_the_key_header_and_parameter_and_keeps_the_rest() -> None:
    gw = gateway(
        {"key_auth": {"key_names": ["apikey", "X-API-Key"], "in": ["header", "query"], "hide_credentials": True}}
    )
    assert call(gw, headers=[("X-API-Key", BOB_KEY), ("X-Other", "1")]).status_code == 200
    seen = upstream_headers(gw)
    assert "x-api-key" not in seen and seen["x-other"] == ["1"]
    assert seen["x-consumer-username"] == ["bob"]

    assert call(gw, f"/users/x?a=1&apikey={BOB_KEY}&b=%20x&apikey2=z").status_code == 200
    assert gw.seen[-1].url.raw_path == b"/api/x?a=1&b=%20x&apikey2=z"
    assert call(gw, f"/users/x?apikey={BOB_KEY}").status_code == 200
    assert gw.seen[-1].url.raw_path == b"/api/x"


def test_without_hide_credentials_the_query_goes_upstream_as_sent() -> None:
    gw = gateway(BOTH)
    assert call(gw, f"/users/x?a=1&apikey={BOB_KEY}").status_code == 200
    assert gw.seen[-1].url.raw_path == f"/api/x?a=1&apikey={BOB_KEY}".encode()


def test_report_mode_lets_a_wrong_key_and_no_key_through_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dataplane.access")
    gw = gateway({"key_auth": {"key_names": ["X-API-Key"], "mode": "report"}}, access_log="json")
    assert call(gw, headers=[("X-API-Key", "wrong-key-123")]).status_code == 200
    assert "x-consumer-username" not in upstream_headers(gw)  # let through as nobody
    assert call(gw).status_code == 200
    assert call(gw, headers=[("X-API-Key", BOB_KEY)]).status_code == 200
    assert upstream_headers(gw)["x-consumer-username"] == ["bob"]
    assert decisions(gw) == {
        ("users:v1", "key_auth", "would_deny"): 1.0,
        ("users:v1", "key_auth", "allow"): 1.0,
        ("users:v1", "authentication", "would_deny"): 2.0,
    }
    details = [line["detail"] for line in access_lines(gw, caplog)]
    assert details == [
        "key_auth (report mode) would refuse: no consumer has this key",
        "authentication (report mode) would refuse: no credential",
        "",
    ]


def test_enforce_mode_counts_its_decisions_and_logs_why_never_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway(BOTH, access_log="json")
    call(gw, headers=[("X-API-Key", BOB_KEY)])
    call(gw, headers=[("X-API-Key", "wrong-key-123")])
    call(gw, params=[("apikey", "wrong-key-456"), ("apikey", BOB_KEY)])
    call(gw)
    assert decisions(gw) == {
        ("users:v1", "key_auth", "allow"): 1.0,
        ("users:v1", "key_auth", "deny"): 2.0,
        ("users:v1", "authentication", "deny"): 1.0,
    }
    lines = access_lines(gw, caplog)
    assert [(line["status"], line["error"], line["detail"], line["consumer"]) for line in lines] == [
        (200, "", "", "bob"),
        (401, "invalid_credentials", "key_auth: no consumer has this key", ""),
        (401, "invalid_credentials", "key_auth: the key was sent 2 times", ""),
        (401, "unauthorized", "", ""),
    ]
    logged = every_log_message(caplog)
    for secret in (BOB_KEY, "wrong-key-123", "wrong-key-456"):
        assert secret not in logged


def test_a_changed_key_hash_takes_effect_with_the_next_snapshot() -> None:
    gw = gateway(HEADER)
    assert call(gw, headers=[("X-API-Key", BOB_KEY)]).status_code == 200
    doc = document(HEADER)
    for consumer in doc["consumers"]:
        if consumer["username"] == "bob":
            consumer["key_auth"] = [{"key_sha256": hash_key("bob-key-rotated"), "label": "bob-2"}]
    from dataplane.snapshot import compile_document

    gw.runtime.apply(compile_document(doc, mount_prefix=gw.settings.mount_prefix))
    assert refused(call(gw, headers=[("X-API-Key", BOB_KEY)]), 401, "invalid_credentials")
    assert call(gw, headers=[("X-API-Key", "bob-key-rotated")]).status_code == 200
    assert upstream_headers(gw)["x-credential-identifier"] == ["bob-2"]


def test_a_key_is_looked_up_by_the_digest_hash_key_stores() -> None:
    assert key_digest("clé".encode()).hex() == hash_key("clé") == hashlib.sha256("clé".encode()).hexdigest()


def test_the_authentication_example_of_the_docs_does_what_they_say() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "dataplane.md").read_text(encoding="utf-8")
    section = page.split("## Authentication: key_auth, basic_auth and acl", 1)[1]
    example = load_document_text(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    canonical, problems = validate_document(example, max_format_version=2)
    assert problems == [], problems
    gw = Gateway(canonical, ok)

    assert call(gw, "/orders/items", headers=[("X-API-Key", "k-example-1")]).status_code == 200
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["mobile-app"] and "x-api-key" not in seen
    assert call(gw, "/orders/items?apikey=k-example-1&page=2").status_code == 200
    assert gw.seen[-1].url.raw_path == b"/api/items?page=2"
    assert call(gw, "/orders/items", headers=[basic("mobile", "s3cret pass")]).status_code == 200
    assert upstream_headers(gw)["x-credential-identifier"] == ["mobile"]
    wrong = call(gw, "/orders/items", headers=[("X-API-Key", "wrong")])
    assert refused(wrong, 401, "invalid_credentials")
    assert wrong.headers["www-authenticate"] == 'Key realm="gateway"'
    nothing = call(gw, "/orders/items")
    assert refused(nothing, 401, "unauthorized")
    assert sorted(nothing.headers.get_list("www-authenticate")) == [
        'Basic realm="orders", charset="UTF-8"',
        'Key realm="gateway"',
    ]

    example["endpoints"][0]["plugins"]["key_auth"]["anonymous"] = "guest"
    canonical, problems = validate_document(example, max_format_version=2)
    assert problems == [], problems
    assert refused(call(Gateway(canonical, ok), "/orders/items"), 403, "forbidden")
