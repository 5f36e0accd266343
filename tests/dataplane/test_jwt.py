"""`jwt` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream): tokens of every
algorithm family chosen by `iss`, what the upstream hears, and the attacks: alg none, the RS256 →
HS256 switch, expired and not-yet-valid tokens, a tampered payload, wrong issuer and audience, two
Authorization headers, garbage, NUL, non-UTF-8 and huge tokens; report mode and the decisions
metric; a JWKS on a loopback server with consumer_claim; no token or secret in any log line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt
import pytest

from configdoc import validate_document
from dataplane.plugins import close_plugins
from dataplane.plugins.jwks import JwksCache, cache_for, parse_jwks
from dataplane.snapshot import SnapshotError, compile_document, load_document_text
from tests.dataplane.auth import access_lines, basic, call, consumers, decisions, every_log_message, refused
from tests.dataplane.auth import upstream_headers as upstream
from tests.dataplane.harness import Gateway, endpoint, ok
from tests.dataplane.jwt_keys import (
    EC_KEY,
    ED_KEY,
    HS_ENV,
    HS_SECRET,
    OTHER_RSA_KEY,
    RSA_KEY,
    forged,
    jwk,
    jwt_credentials,
    public_pem,
    tampered,
    token,
)
from tests.e2e.servers import http_server

INVALID_TOKEN = 'Bearer realm="gateway", error="invalid_token"'


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HS_ENV, HS_SECRET)


def document(plugins: dict[str, Any]) -> dict[str, Any]:
    people = consumers()
    people[0]["jwt"] = jwt_credentials()
    data: dict[str, Any] = {
        "format_version": 2,
        "consumers": people,
        "endpoints": [endpoint("users", default=True, plugins=plugins), endpoint("open")],
    }
    canonical, problems = validate_document(data, max_format_version=2)
    assert problems == [], problems
    return canonical


def gateway(plugins: dict[str, Any] | None = None, **settings: Any) -> Gateway:
    return Gateway(document(plugins if plugins is not None else {"jwt": {}}), ok, **settings)


def bearer(value: str | bytes) -> tuple[str, bytes]:
    return ("Authorization", b"Bearer " + (value.encode() if isinstance(value, str) else value))


@pytest.mark.parametrize(
    ("issuer", "key", "algorithm"),
    [
        ("mobile", HS_SECRET.encode(), "HS256"),
        ("partner-idp", RSA_KEY, "RS256"),
        ("ec-idp", EC_KEY, "ES256"),
        ("ed-idp", ED_KEY, "EdDSA"),
    ],
)
def test_a_token_verified_with_its_issuers_credential_names_the_consumer(issuer: str, key: Any, algorithm: str) -> None:
    gw = gateway()
    response = call(gw, headers=[bearer(token(issuer, key=key, algorithm=algorithm)), ("X-Consumer-Username", "bob")])
    assert response.status_code == 200, response.text
    seen = upstream(gw)
    assert seen["x-consumer-username"] == ["alice"]
    assert seen["x-credential-identifier"] == [issuer]
    assert "x-anonymous-consumer" not in seen


def test_the_scheme_name_ignores_case_and_basic_is_not_a_token() -> None:
    gw = gateway()
    assert call(gw, headers=[("Authorization", "bEaReR " + token())]).status_code == 200
    response = call(gw, headers=[basic("alice", "pw")])
    assert refused(response, 401, "unauthorized")


def test_no_token_is_401_unauthorized_with_a_bearer_challenge() -> None:
    gw = gateway()
    response = call(gw)
    assert refused(response, 401, "unauthorized")
    assert response.headers.get_list("www-authenticate") == ['Bearer realm="gateway"']
    assert gw.seen == []


def _now() -> int:
    return int(time.time())


ATTACKS: dict[str, Any] = {
    "alg-none": lambda: forged({"alg": "none", "typ": "JWT"}, {"iss": "partner-idp", "exp": _now() + 60}, None),
    "alg-none-hs-issuer": lambda: forged({"alg": "none"}, {"iss": "mobile", "exp": _now() + 60}, None),
    "rs256-to-hs256-with-the-public-key": lambda: forged(
        {"alg": "HS256", "typ": "JWT"}, {"iss": "partner-idp", "exp": _now() + 60}, public_pem(RSA_KEY).encode()
    ),
    "hs384-for-an-hs256-credential": lambda: token("mobile", key=HS_SECRET.encode() * 2, algorithm="HS384"),
    "another-rsa-key": lambda: token(key=OTHER_RSA_KEY),
    "expired": lambda: token(exp=_now() - 120),
    "not-yet-valid": lambda: token(nbf=_now() + 120),
    "no-exp": lambda: token(exp=None),
    "unknown-issuer": lambda: token("stranger"),
    "no-issuer": lambda: token(None),
    "issuer-not-a-string": lambda: token(["partner-idp"]),  # type: ignore[arg-type]
    "tampered-payload": lambda: tampered(token(), sub="admin"),
    "tampered-issuer-to-hs": lambda: tampered(token(), iss="mobile"),
    "exp-not-a-number": lambda: token(exp="tomorrow"),
    "garbage": lambda: "not-a-token",
    "two-parts": lambda: "abc.def",
    "five-parts-jwe": lambda: "a.b.c.d.e",
    "header-not-json": lambda: "bm90anNvbg.e30.sig",
    "empty": lambda: "",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_bad_token_is_401_invalid_credentials_and_never_reaches_the_upstream(name: str) -> None:
    gw = gateway()
    response = call(gw, headers=[bearer(ATTACKS[name]())])
    # An empty `Bearer` too: a credential was presented, and it is wrong.
    assert refused(response, 401, "invalid_credentials")
    assert response.headers.get_list("www-authenticate") == [INVALID_TOKEN]
    assert gw.seen == []


@pytest.mark.parametrize(
    "raw",
    [
        b"abc\x00.def.ghi",
        "\udcff\udcfe.a.b".encode("utf-8", "surrogateescape"),
        "é.a.b".encode(),
        b"a" * 10_000 + b"." + b"b" * 10_000 + b".c",
    ],
    ids=["nul", "non-utf8", "non-ascii", "huge"],
)
def test_nul_non_utf8_and_huge_tokens_are_401_not_500(raw: bytes) -> None:
    gw = gateway()
    response = call(gw, headers=[("Authorization", b"Bearer " + raw)])
    assert refused(response, 401, "invalid_credentials")


def test_two_authorization_headers_are_refused_whichever_is_good() -> None:
    gw = gateway()
    good = token()
    for pair in ([bearer(good), bearer("x.y.z")], [bearer(good), bearer(good)], [bearer(good), basic("a", "b")]):
        response = call(gw, headers=pair)
        assert refused(response, 401, "invalid_credentials")
        assert response.headers["www-authenticate"] == 'Bearer realm="gateway", error="invalid_request"'
    assert gw.seen == []


def test_leeway_forgives_a_little_clock_skew() -> None:
    gw = gateway({"jwt": {"leeway": 60}})
    assert call(gw, headers=[bearer(token(exp=_now() - 20))]).status_code == 200
    assert call(gw, headers=[bearer(token(nbf=_now() + 20))]).status_code == 200
    assert refused(call(gw, headers=[bearer(token(exp=_now() - 120))]), 401, "invalid_credentials")


def test_claims_to_verify_empty_makes_exp_optional_but_an_expired_token_still_fails() -> None:
    gw = gateway({"jwt": {"claims_to_verify": []}})
    assert call(gw, headers=[bearer(token(exp=None))]).status_code == 200
    assert refused(call(gw, headers=[bearer(token(exp=_now() - 120))]), 401, "invalid_credentials")
    strict = gateway({"jwt": {"claims_to_verify": ["exp", "nbf"]}})
    response = call(strict, headers=[bearer(token())])
    assert refused(response, 401, "invalid_credentials")
    assert response.json()["message"] == "the token has no nbf claim"


def test_issuers_and_audiences_narrow_what_is_accepted() -> None:
    gw = gateway({"jwt": {"issuers": ["partner-idp"], "audiences": ["orders", "billing"]}})
    assert call(gw, headers=[bearer(token(aud="orders"))]).status_code == 200
    assert call(gw, headers=[bearer(token(aud=["x", "billing"]))]).status_code == 200
    for bad in (token(aud="shop"), token(), token("mobile", key=HS_SECRET.encode(), algorithm="HS256", aud="orders")):
        assert refused(call(gw, headers=[bearer(bad)]), 401, "invalid_credentials")


def test_report_mode_lets_a_bad_token_through_and_counts_would_deny(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    gw = gateway({"jwt": {"mode": "report"}}, access_log="json")
    assert call(gw, headers=[bearer(token(exp=_now() - 120))]).status_code == 200
    assert "x-consumer-username" not in upstream(gw)
    assert call(gw, headers=[bearer(token())]).status_code == 200
    assert call(gw).status_code == 200
    counts = decisions(gw)
    assert counts[("users:v1", "jwt", "would_deny")] == 1.0
    assert counts[("users:v1", "jwt", "allow")] == 1.0
    assert counts[("users:v1", "authentication", "would_deny")] == 2.0
    lines = access_lines(gw, caplog)
    assert lines[0]["detail"] == "jwt (report mode) would refuse: exp is past"


def test_the_token_and_the_secret_never_reach_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway(access_log="json")
    good = token("mobile", key=HS_SECRET.encode(), algorithm="HS256")
    bad = tampered(good, sub="admin")
    assert call(gw, headers=[bearer(good)]).status_code == 200
    response = call(gw, headers=[bearer(bad)])
    assert refused(response, 401, "invalid_credentials")
    assert bad not in response.text
    details = [line["detail"] for line in access_lines(gw, caplog)]
    assert "jwt: the signature does not verify" in details
    text = every_log_message(caplog)
    for secret in (good, bad, good.split(".")[2], HS_SECRET):
        assert secret not in text


def test_an_unset_secret_variable_or_a_pem_as_an_hmac_secret_refuses_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = document({"jwt": {}})
    monkeypatch.delenv(HS_ENV)
    with pytest.raises(SnapshotError, match=HS_ENV):
        compile_document(doc)
    monkeypatch.setenv(HS_ENV, public_pem(RSA_KEY))
    with pytest.raises(SnapshotError, match="not usable for HS256"):
        compile_document(doc)


# --- a JWKS on a loopback server -------------------------------------------------------------------


class Provider:
    """A tiny OIDC-style key server: `keys` is what it publishes now; `status` what it answers."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [jwk(RSA_KEY, "k1")]
        self.status = 200
        self.hits = 0


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.hits += 1
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/jwks-{id(state)}.json"  # a URL (a cache) per test


def test_a_jwks_token_maps_to_a_consumer_by_claim_or_goes_anonymous_with_its_claims(
    provider: tuple[Provider, str],
) -> None:
    state, url = provider
    gw = gateway({"jwt": {"jwks_url": url, "consumer_claim": "username"}})
    signed = token("https://idp.example", headers={"kid": "k1"}, username="bob")
    assert call(gw, headers=[bearer(signed)]).status_code == 200
    seen = upstream(gw)
    assert (seen["x-consumer-username"], seen["x-credential-identifier"]) == (["bob"], ["https://idp.example"])
    nobody = token("https://idp.example", headers={"kid": "k1"}, username="nobody")
    assert call(gw, headers=[bearer(nobody)]).status_code == 200
    seen = upstream(gw)
    assert seen["x-anonymous-consumer"] == ["true"] and "x-consumer-username" not in seen
    # A JWKS never makes an HMAC key, and the key's type fixes its algorithm.
    switched = forged({"alg": "HS256", "kid": "k1"}, {"iss": "https://idp.example", "exp": _now() + 60}, b"x" * 32)
    assert refused(call(gw, headers=[bearer(switched)]), 401, "invalid_credentials")
    wrong_key = token("x", key=OTHER_RSA_KEY, headers={"kid": "k1"})
    assert refused(call(gw, headers=[bearer(wrong_key)]), 401, "invalid_credentials")
    # A provider-signed iss is still never written into a header with a line break in it.
    newline = token("https://idp.example\r\nX-Consumer-Username: admin", headers={"kid": "k1"})
    assert refused(call(gw, headers=[bearer(newline)]), 401, "invalid_credentials")
    # A consumer's own credential still wins for its issuer.
    assert call(gw, headers=[bearer(token())]).status_code == 200
    assert upstream(gw)["x-consumer-username"] == ["alice"]
    assert state.hits == 1


def test_a_jwks_that_cannot_be_fetched_is_503_auth_unavailable(provider: tuple[Provider, str]) -> None:
    state, url = provider
    state.status = 500
    gw = gateway({"jwt": {"jwks_url": url}})
    response = call(gw, headers=[bearer(token("https://idp.example", headers={"kid": "k1"}))])
    assert refused(response, 503, "auth_unavailable")


def test_a_remembered_token_still_expires_and_a_tampered_copy_is_checked_afresh() -> None:
    gw = gateway()
    expires = _now() + 2
    good = token(exp=expires)
    for _ in range(3):  # the second and third answers come from the verified-token cache
        assert call(gw, headers=[bearer(good)]).status_code == 200
    assert refused(call(gw, headers=[bearer(tampered(good))]), 401, "invalid_credentials")
    head, payload, signature = good.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert refused(call(gw, headers=[bearer(f"{head}.{payload}.{flipped}")]), 401, "invalid_credentials")
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    late = call(gw, headers=[bearer(good)])
    assert refused(late, 401, "invalid_credentials")
    assert late.json()["message"] == "the token has expired"


def test_a_token_remembered_from_a_jwks_key_is_refused_once_the_provider_rotates_that_key_out(
    provider: tuple[Provider, str],
) -> None:
    state, url = provider
    gw = gateway({"jwt": {"jwks_url": url}})
    signed = token("https://idp.example", headers={"kid": "k1"})
    assert call(gw, headers=[bearer(signed)]).status_code == 200
    assert call(gw, headers=[bearer(signed)]).status_code == 200  # remembered
    # What the periodic refresh does when the provider has rotated k1 out: the cache holds a new key set.
    state.keys = [jwk(OTHER_RSA_KEY, "k2")]
    cache_for(url).keys = parse_jwks(json.dumps({"keys": state.keys}).encode())
    response = call(gw, headers=[bearer(signed)])
    assert refused(response, 401, "invalid_credentials")
    assert response.json()["message"] == "the token's key is not known"


def docs_example(heading: str) -> tuple[dict[str, Any], str]:
    """The first YAML example under `heading` in docs/dataplane.md, and the console block after it."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "dataplane.md").read_text(encoding="utf-8")
    section = page.split(heading, 1)[1]
    example = load_document_text(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    console = section.split("```console\n", 1)[1].split("```", 1)[0]
    return example, console


def test_the_docs_jwt_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    example, console = docs_example("### jwt: signed tokens")
    secret = re.search(r"export MOBILE_JWT_SECRET='([^']+)'", console)
    assert secret is not None
    monkeypatch.setenv("MOBILE_JWT_SECRET", secret.group(1))
    canonical, problems = validate_document(example, max_format_version=2)
    assert problems == [], problems
    gw = Gateway(canonical, ok)
    good = jwt.encode({"iss": "mobile", "aud": "orders", "exp": int(time.time()) + 300}, secret.group(1))
    assert call(gw, "/orders/items", headers=[bearer(good)]).status_code == 200
    seen = upstream(gw)
    assert (seen["x-consumer-username"], seen["x-credential-identifier"]) == (["mobile-app"], ["mobile"])
    wrong = call(gw, "/orders/items", headers=[bearer("x.y.z")])
    assert refused(wrong, 401, "invalid_credentials")
    assert wrong.headers["www-authenticate"] == INVALID_TOKEN
    nothing = call(gw, "/orders/items")
    assert refused(nothing, 401, "unauthorized")
    assert nothing.headers["www-authenticate"] == 'Bearer realm="gateway"'


def test_the_jwks_cache_fetches_once_for_concurrent_callers_and_refetches_unknown_kids_at_most_every_30s(
    provider: tuple[Provider, str],
) -> None:
    state, url = provider
    now = [1000.0]
    cache = JwksCache(url, clock=lambda: now[0])

    async def scenario() -> None:
        found = await asyncio.gather(*(cache.key_for("k1") for _ in range(20)))
        assert all(key is not None and key.algorithms == {"RS256", "RS384", "RS512"} for key in found)
        assert state.hits == 1
        state.keys = [jwk(OTHER_RSA_KEY, "k2")]  # the provider rotates
        assert await cache.key_for("k2") is None  # the first fetch was just now: no refetch yet
        assert state.hits == 1
        now[0] += 30
        assert await cache.key_for("k2") is not None  # one refetch, and the new key is there
        assert await cache.key_for("made-up") is None
        assert state.hits == 2
        assert await cache.key_for("k1") is None  # rotated out
        await close_plugins()  # the refresher task and the client end with the process

    asyncio.run(scenario())


def test_a_jwks_keeps_only_asymmetric_signing_keys_each_for_its_own_algorithms() -> None:
    body = json.dumps(
        {
            "keys": [
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {**jwk(RSA_KEY, "enc"), "use": "enc"},
                {**jwk(RSA_KEY, "pinned"), "alg": "RS384"},
                {**jwk(RSA_KEY, "bad-alg"), "alg": "HS256"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                jwk(RSA_KEY, "plain"),
            ]
        }
    ).encode()
    keys = parse_jwks(body)
    assert sorted(k for k in keys if k is not None) == ["pinned", "plain"]
    assert keys["pinned"].algorithms == {"RS384"}
    with pytest.raises(ValueError):
        parse_jwks(b"[]")
