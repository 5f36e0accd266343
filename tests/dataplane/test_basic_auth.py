"""`basic_auth` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream): username and
password against PBKDF2 hashes, malformed credentials as 401 (never a 500), an unknown user costing the
same work, the verified-credential cache (one PBKDF2 per credential per minute, only successes,
bounded, invalidated by a new hash), hide_credentials, report mode, and no password in any log line."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from dataplane.plugins import basic_auth
from dataplane.plugins.basic_auth import VerifiedCache, parse_basic
from dataplane.snapshot import compile_document
from tests.dataplane.auth import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
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

BASIC: dict[str, Any] = {"basic_auth": {}}


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with nothing verified (the cache is per process)."""
    monkeypatch.setattr(basic_auth, "CACHE", VerifiedCache())
    yield


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stored hashes password_matches was asked to check, in order."""
    checked: list[str] = []
    real = basic_auth.password_matches

    def counting(password: str, password_hash: str) -> bool:
        checked.append(password_hash)
        return real(password, password_hash)

    monkeypatch.setattr(basic_auth, "password_matches", counting)
    return checked


def test_a_right_password_names_the_consumer_and_the_basic_username_to_the_upstream() -> None:
    gw = gateway(BASIC)
    response = call(gw, headers=[basic("alice@example.com", ALICE_PASSWORD), ("X-Consumer-Username", "bob")])
    assert response.status_code == 200, response.text
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["alice"]
    assert seen["x-credential-identifier"] == ["alice@example.com"]
    assert seen["x-consumer-groups"] == ["beta, partners"]
    assert call(gw, headers=[basic("bob", BOB_PASSWORD)]).status_code == 200  # UTF-8 password
    assert upstream_headers(gw)["x-consumer-username"] == ["bob"]


def test_the_scheme_name_compares_case_insensitively() -> None:
    token = base64.b64encode(f"bob:{BOB_PASSWORD}".encode()).decode()
    assert call(gateway(BASIC), headers=[("Authorization", f"bAsIc {token}")]).status_code == 200


def test_a_wrong_password_is_refused_with_the_basic_challenge() -> None:
    gw = gateway({"basic_auth": {"realm": "orders API"}})
    response = call(gw, headers=[basic("bob", "wrong")])
    assert refused(response, 401, "invalid_credentials")
    assert response.headers.get_list("www-authenticate") == ['Basic realm="orders API", charset="UTF-8"']
    assert gw.seen == []


def test_an_unknown_username_gets_the_same_answer_after_the_same_work(hashes: list[str]) -> None:
    gw = gateway(BASIC)
    wrong_password = call(gw, headers=[basic("bob", "wrong")])
    unknown_user = call(gw, headers=[basic("mallory", "wrong")])
    assert refused(unknown_user, 401, "invalid_credentials")
    assert unknown_user.json()["message"] == wrong_password.json()["message"]
    assert unknown_user.headers["www-authenticate"] == wrong_password.headers["www-authenticate"]
    # Both cost one PBKDF2 of the same iterations: the unknown user's against a dummy hash.
    assert len(hashes) == 2
    assert hashes[1].startswith("pbkdf2_sha256$100000$") and hashes[1] != hashes[0]


def test_no_basic_credential_is_401_unauthorized_or_the_anonymous_consumer() -> None:
    gw = gateway(BASIC)
    response = call(gw)
    assert refused(response, 401, "unauthorized")
    assert response.headers.get_list("www-authenticate") == ['Basic realm="gateway", charset="UTF-8"']
    anonymous = gateway({"basic_auth": {"anonymous": "guest"}})
    assert call(anonymous).status_code == 200
    assert upstream_headers(anonymous)["x-anonymous-consumer"] == ["true"]


def test_a_bearer_token_is_not_a_basic_credential_and_stays_on_the_request() -> None:
    gw = gateway({"basic_auth": {"hide_credentials": True, "anonymous": "guest"}})
    assert call(gw, headers=[("Authorization", "Bearer abc.def.ghi")]).status_code == 200
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["guest"]
    assert seen["authorization"] == ["Bearer abc.def.ghi"]


@pytest.mark.parametrize(
    "value",
    [
        b"Basic !!!not-base64!!!",
        b"Basic " + base64.b64encode(b"no-colon-here"),
        b"Basic " + base64.b64encode(b"bob:\xff\xfe"),
        b"Basic " + base64.b64encode(b"\xc3(:x"),
        b"Basic",
        b"Basic ",
        b"Basic " + base64.b64encode(b"bob:" + BOB_PASSWORD.encode())[:-2],
        b"Basic " + base64.b64encode(b"bob:x" * 2000),
        b"Basic " + base64.b64encode(b"bob\0:" + BOB_PASSWORD.encode()),
    ],
    ids=[
        "not-base64",
        "no-colon",
        "password-not-utf8",
        "user-not-utf8",
        "no-token",
        "empty-token",
        "cut",
        "long",
        "nul",
    ],
)
def test_a_malformed_credential_is_401_invalid_credentials_never_a_500(value: bytes) -> None:
    response = call(gateway(BASIC), headers=[(b"Authorization", value)])
    assert refused(response, 401, "invalid_credentials")
    assert response.headers["www-authenticate"] == 'Basic realm="gateway", charset="UTF-8"'


def test_two_authorization_headers_are_refused_never_picked() -> None:
    gw = gateway(BASIC)
    response = call(gw, headers=[basic("bob", BOB_PASSWORD), ("Authorization", "Bearer x")])
    assert refused(response, 401, "invalid_credentials")
    response = call(gw, headers=[basic("mallory", "x"), basic("bob", BOB_PASSWORD)])
    assert refused(response, 401, "invalid_credentials")


def test_a_credential_is_verified_once_then_served_from_the_cache(hashes: list[str]) -> None:
    gw = gateway(BASIC)
    for _ in range(3):
        assert call(gw, headers=[basic("bob", BOB_PASSWORD)]).status_code == 200
    assert len(hashes) == 1
    # Another endpoint with basic_auth shares the worker's cache.
    other = gateway({"basic_auth": {"realm": "elsewhere"}})
    assert call(other, headers=[basic("bob", BOB_PASSWORD)]).status_code == 200
    assert len(hashes) == 1


def test_wrong_passwords_are_never_cached(hashes: list[str]) -> None:
    gw = gateway(BASIC)
    for _ in range(3):
        assert refused(call(gw, headers=[basic("bob", "wrong")]), 401, "invalid_credentials")
    assert len(hashes) == 3
    assert len(basic_auth.CACHE) == 0


def test_a_new_hash_in_a_new_snapshot_is_verified_afresh(hashes: list[str]) -> None:
    gw = gateway(BASIC)
    assert call(gw, headers=[basic("alice@example.com", ALICE_PASSWORD)]).status_code == 200
    gw.runtime.apply(compile_document(document(BASIC, alice_password="rotated"), mount_prefix=""))
    assert refused(call(gw, headers=[basic("alice@example.com", ALICE_PASSWORD)]), 401, "invalid_credentials")
    assert call(gw, headers=[basic("alice@example.com", "rotated")]).status_code == 200
    assert len(hashes) == 3


def test_the_cache_forgets_after_its_time_and_holds_a_bounded_number_of_fingerprints() -> None:
    now = [1000.0]
    cache = VerifiedCache(seconds=60, entries=3, clock=lambda: now[0])
    prints = [cache.fingerprint("pbkdf2_sha256$1$salt$x", f"user{n}", "pw") for n in range(5)]
    for fingerprint in prints:
        cache.add(fingerprint)
    assert len(cache) == 3
    assert [fingerprint in cache for fingerprint in prints] == [False, False, True, True, True]
    now[0] += 59.9
    assert prints[4] in cache
    now[0] += 0.2
    assert prints[4] not in cache


def test_a_fingerprint_depends_on_the_stored_hash_and_never_holds_the_password() -> None:
    cache = VerifiedCache()
    one = cache.fingerprint("pbkdf2_sha256$1$a$x", "bob", "secret-password")
    assert one != cache.fingerprint("pbkdf2_sha256$1$b$x", "bob", "secret-password")
    assert one != cache.fingerprint("pbkdf2_sha256$1$a$x", "bob:", "secret-password"[1:])
    assert b"secret" not in one and one != VerifiedCache().fingerprint("pbkdf2_sha256$1$a$x", "bob", "secret-password")


def test_parse_basic_keeps_colons_in_the_password() -> None:
    assert parse_basic(base64.b64encode(b"u:p:q")) == ("u", "p:q")
    assert parse_basic(base64.b64encode(b":")) == ("", "")


def test_hide_credentials_removes_the_basic_authorization() -> None:
    gw = gateway({"basic_auth": {"hide_credentials": True}})
    assert call(gw, headers=[basic("bob", BOB_PASSWORD)]).status_code == 200
    seen = upstream_headers(gw)
    assert "authorization" not in seen and seen["x-consumer-username"] == ["bob"]
    shown = gateway(BASIC)
    assert call(shown, headers=[basic("bob", BOB_PASSWORD)]).status_code == 200
    assert upstream_headers(shown)["authorization"] == [basic("bob", BOB_PASSWORD)[1]]


def test_report_mode_lets_a_wrong_password_through_as_nobody(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dataplane.access")
    gw = gateway({"basic_auth": {"mode": "report"}}, access_log="json")
    assert call(gw, headers=[basic("bob", "wrong")]).status_code == 200
    assert "x-consumer-username" not in upstream_headers(gw)
    assert call(gw, headers=[basic("bob", BOB_PASSWORD)]).status_code == 200
    assert decisions(gw) == {
        ("users:v1", "basic_auth", "would_deny"): 1.0,
        ("users:v1", "basic_auth", "allow"): 1.0,
        ("users:v1", "authentication", "would_deny"): 1.0,
    }
    assert [line["detail"] for line in access_lines(gw, caplog)] == [
        "basic_auth (report mode) would refuse: wrong username or password",
        "",
    ]


def test_decisions_and_log_lines_say_why_and_never_hold_a_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway(BASIC, access_log="json")
    call(gw, headers=[basic("bob", BOB_PASSWORD)])
    call(gw, headers=[basic("bob", "wrong-password-1")])
    call(gw, headers=[basic("mallory", "wrong-password-2")])
    call(gw, headers=[("Authorization", "Basic " + base64.b64encode(b"no-colon-password-3").decode())])
    assert decisions(gw) == {("users:v1", "basic_auth", "allow"): 1.0, ("users:v1", "basic_auth", "deny"): 3.0}
    assert [(line["status"], line["detail"], line["consumer"]) for line in access_lines(gw, caplog)] == [
        (200, "", "bob"),
        (401, "basic_auth: wrong username or password", ""),
        (401, "basic_auth: wrong username or password", ""),
        (401, "basic_auth: the credential has no username:password", ""),
    ]
    logged = every_log_message(caplog)
    for secret in (BOB_PASSWORD, "wrong-password-1", "wrong-password-2", "no-colon-password-3", "mallory"):
        assert secret not in logged


def test_concurrent_requests_with_one_credential_share_one_verification(hashes: list[str]) -> None:
    gw = gateway(BASIC)

    async def go() -> list[int]:
        async with gw.client() as client:
            answers = await asyncio.gather(
                *(client.get("/users/x", headers=[basic("bob", BOB_PASSWORD)]) for _ in range(5))
            )
        return [answer.status_code for answer in answers]

    assert asyncio.run(go()) == [200] * 5
    assert len(hashes) == 1


def test_a_flood_of_fresh_credentials_beyond_the_waiting_bound_gets_503_at_once_and_a_cached_one_still_passes(
    hashes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(basic_auth, "MAX_WAITING", 3)
    gw = gateway(BASIC)

    async def go() -> tuple[list[int], list[str], int]:
        async with gw.client() as client:
            warm = await client.get("/users/x", headers=[basic("bob", BOB_PASSWORD)])
            assert warm.status_code == 200
            answers = await asyncio.gather(
                *(client.get("/users/x", headers=[basic("bob", f"wrong-{n}")]) for n in range(10)),
                client.get("/users/x", headers=[basic("bob", BOB_PASSWORD)]),
            )
        return (
            [answer.status_code for answer in answers[:10]],
            [answer.json()["error"] for answer in answers[:10] if answer.status_code == 503],
            answers[10].status_code,
        )

    statuses, errors, cached = asyncio.run(go())
    assert sorted(statuses) == [401] * 3 + [503] * 7
    assert errors == ["auth_unavailable"] * 7
    assert cached == 200  # verified a moment ago: answered from the cache, never queued
    assert len(hashes) == 1 + 3
    assert basic_auth._waiting == 0  # every slot given back


def test_the_plugins_after_a_password_check_run_once_whether_it_waited_or_came_from_the_cache(
    hashes: list[str],
) -> None:
    """basic_auth decides a cached credential without waiting and hands a fresh one to the pool; the
    phase then goes on with the plugins after it (acl here), and the ones before it (key_auth in
    report mode, which counts a wrong key) are not run twice."""
    gw = gateway({"key_auth": {"mode": "report"}, "basic_auth": {}, "acl": {"allow": ["partners"]}})
    wrong_key = ("apikey", "not-a-key")
    for _ in range(2):  # the first round verifies both passwords on the pool, the second is cached
        assert call(gw, headers=[wrong_key, basic("alice@example.com", ALICE_PASSWORD)]).status_code == 200
        assert upstream_headers(gw)["x-consumer-username"] == ["alice"]
        assert refused(call(gw, headers=[wrong_key, basic("bob", BOB_PASSWORD)]), 403, "forbidden")
    assert len(hashes) == 2
    assert decisions(gw) == {
        ("users:v1", "key_auth", "would_deny"): 4.0,
        ("users:v1", "basic_auth", "allow"): 4.0,
        ("users:v1", "acl", "allow"): 2.0,
        ("users:v1", "acl", "deny"): 2.0,
    }


def test_a_credential_in_steady_use_is_verified_again_in_the_background_before_its_minute_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the last REFRESH_SECONDS of its minute a cached credential is still answered at once while
    its PBKDF2 runs again on the pool (held here until the answer is in); the renewed entry then
    carries it past the first minute with no request waiting."""
    import threading

    now = [1000.0]
    monkeypatch.setattr(basic_auth, "CACHE", VerifiedCache(clock=lambda: now[0]))
    checks: list[str] = []
    release = threading.Event()
    real = basic_auth.password_matches

    def held(password: str, password_hash: str) -> bool:
        checks.append(password_hash)
        if len(checks) > 1:
            assert release.wait(10)
        return real(password, password_hash)

    monkeypatch.setattr(basic_auth, "password_matches", held)
    gw = gateway(BASIC)
    credential = [basic("bob", BOB_PASSWORD)]

    async def go() -> list[int]:
        statuses = []
        async with gw.client() as client:
            statuses.append((await client.get("/users/x", headers=credential)).status_code)  # verified
            now[0] += basic_auth.CACHE_SECONDS - basic_auth.REFRESH_SECONDS + 1
            # Answered while the refresh is held on the pool: no request waits for it.
            statuses.append((await asyncio.wait_for(client.get("/users/x", headers=credential), 5)).status_code)
            statuses.append((await asyncio.wait_for(client.get("/users/x", headers=credential), 5)).status_code)
            for _ in range(200):  # the pool's thread takes the refresh up in its own time
                if len(checks) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(checks) == 2  # one refresh, however many requests saw the entry due
            release.set()
            for _ in range(200):
                if basic_auth._waiting == 0:
                    break
                await asyncio.sleep(0.01)
            now[0] += basic_auth.REFRESH_SECONDS  # past the first verification's minute
            statuses.append((await client.get("/users/x", headers=credential)).status_code)
        return statuses

    assert asyncio.run(go()) == [200, 200, 200, 200]
    assert len(checks) == 2  # the renewed entry answered the last request
