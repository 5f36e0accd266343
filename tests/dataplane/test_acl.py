"""`acl` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream): the caller's consumer
groups against allow or deny, the anonymous consumer's groups, a caller without a consumer, report
mode and the decisions metric."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.dataplane.auth import (
    ALICE_KEY,
    BOB_KEY,
    access_lines,
    call,
    decisions,
    gateway,
    refused,
    upstream_headers,
)

KEY = {"key_names": ["X-API-Key"]}


def acl(rule: dict[str, Any], key: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key_auth": {**KEY, **(key or {})}, "acl": rule}


def test_an_allow_list_lets_only_its_groups_in() -> None:
    gw = gateway(acl({"allow": ["partners"]}))
    assert call(gw, headers=[("X-API-Key", ALICE_KEY)]).status_code == 200
    response = call(gw, headers=[("X-API-Key", BOB_KEY)])
    assert refused(response, 403, "forbidden")
    assert "bob" not in response.text and "staff" not in response.text  # who and why: the access log's
    assert len(gw.seen) == 1


def test_a_deny_list_refuses_its_groups() -> None:
    gw = gateway(acl({"deny": ["partners", "ops"]}))
    assert refused(call(gw, headers=[("X-API-Key", ALICE_KEY)]), 403, "forbidden")
    assert call(gw, headers=[("X-API-Key", BOB_KEY)]).status_code == 200
    assert upstream_headers(gw)["x-consumer-username"] == ["bob"]


def test_the_anonymous_consumer_is_judged_by_its_own_groups() -> None:
    allowed = gateway(acl({"allow": ["public"]}, {"anonymous": "guest"}))
    assert call(allowed).status_code == 200
    assert upstream_headers(allowed)["x-anonymous-consumer"] == ["true"]
    assert refused(call(allowed, headers=[("X-API-Key", ALICE_KEY)]), 403, "forbidden")
    denied = gateway(acl({"deny": ["public"]}, {"anonymous": "guest"}))
    assert refused(call(denied), 403, "forbidden")


def test_authentication_comes_first_a_wrong_key_is_401_not_403() -> None:
    gw = gateway(acl({"allow": ["partners"]}))
    assert refused(call(gw, headers=[("X-API-Key", "wrong")]), 401, "invalid_credentials")
    assert refused(call(gw), 401, "unauthorized")
    assert decisions(gw) == {
        ("users:v1", "key_auth", "deny"): 1.0,
        ("users:v1", "authentication", "deny"): 1.0,
    }


def test_a_caller_without_a_consumer_has_no_groups() -> None:
    # Authentication only reports: a request with no key goes on as nobody, which no allow list lets in
    # and no deny list names.
    allowed = gateway(acl({"allow": ["partners"]}, {"mode": "report"}))
    assert refused(call(allowed), 403, "forbidden")
    denied = gateway(acl({"deny": ["partners"]}, {"mode": "report"}))
    assert call(denied).status_code == 200


def test_report_mode_lets_a_refused_consumer_through_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dataplane.access")
    gw = gateway(acl({"allow": ["partners"], "mode": "report"}), access_log="json")
    assert call(gw, headers=[("X-API-Key", BOB_KEY)]).status_code == 200
    assert upstream_headers(gw)["x-consumer-username"] == ["bob"]
    assert call(gw, headers=[("X-API-Key", ALICE_KEY)]).status_code == 200
    assert decisions(gw) == {
        ("users:v1", "key_auth", "allow"): 2.0,
        ("users:v1", "acl", "would_deny"): 1.0,
        ("users:v1", "acl", "allow"): 1.0,
    }
    assert [line["detail"] for line in access_lines(gw, caplog)] == ["acl (report mode) would refuse consumer bob", ""]


def test_enforce_mode_counts_its_decisions_and_logs_who_was_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dataplane.access")
    gw = gateway(acl({"allow": ["partners"]}), access_log="json")
    call(gw, headers=[("X-API-Key", BOB_KEY)])
    call(gw, headers=[("X-API-Key", ALICE_KEY)])
    call(gw, "/open/x", headers=[("X-API-Key", BOB_KEY)])  # no plugin there: no decision
    assert decisions(gw) == {
        ("users:v1", "key_auth", "allow"): 2.0,
        ("users:v1", "acl", "deny"): 1.0,
        ("users:v1", "acl", "allow"): 1.0,
    }
    lines = access_lines(gw, caplog)
    assert [(line["status"], line["error"], line["detail"], line["consumer"]) for line in lines][0] == (
        403,
        "forbidden",
        "acl refused consumer bob",
        "bob",
    )
