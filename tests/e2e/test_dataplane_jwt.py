"""`jwt` (ARCHITECTURE §11) on real processes: a standalone data plane on a format-2 seed, a real echo
upstream, and a real OIDC-style provider on a loopback port that rotates its signing keys, spoken to
over raw sockets. Attacks: alg none, the RS256 → HS256 switch with the public key as the secret,
expired and not-yet-valid tokens, wrong issuer and audience, a tampered payload, a token in a chunked
trailer, two Authorization headers, garbage, NUL, non-UTF-8 and huge tokens; report mode counted as
would_deny; and no token or secret in the node's log."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dataplane.jwt_keys import (
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
from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import RawAnswer as Answer
from tests.e2e.servers import eventually, http_server

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.e2e.example"


@dataclass
class Provider:
    """What the loopback provider publishes now, and how often it was asked."""

    keys: list[dict[str, Any]] = field(default_factory=lambda: [jwk(RSA_KEY, "2026-a")])
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with state.lock:
                state.hits += 1
                body = json.dumps(
                    {"keys": state.keys} if self.path.startswith("/jwks") else {"jwks_uri": "/jwks"}
                ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/jwks"


def document(origin: str, jwks_url: str) -> dict[str, Any]:
    def endpoint(name: str, plugins: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "version": "v1",
            "methods": ["GET", "POST"],
            "targets": [{"url": origin}],
            "plugins": plugins,
        }

    return {
        "format_version": 2,
        "consumers": [
            {"username": "partner", "groups": ["partners"], "jwt": jwt_credentials()},
            {"username": "sso-user", "groups": ["staff"]},
        ],
        "endpoints": [
            endpoint("tokens", {"jwt": {"leeway": 5}}),
            endpoint("scoped", {"jwt": {"issuers": ["partner-idp"], "audiences": ["orders"]}}),
            endpoint("sso", {"jwt": {"jwks_url": jwks_url, "consumer_claim": "preferred_username"}}),
            endpoint("watched", {"jwt": {"mode": "report"}}),
        ],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jwt")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream, provider: tuple[Provider, str]) -> Iterator[DataPlane]:
    with dataplane(
        workdir, document(origin.url, provider[1]), DATAPLANE_LOG_LEVEL="debug", **{HS_ENV: HS_SECRET}
    ) as node:
        yield node


def send(gateway: DataPlane, head: str | bytes, body: bytes = b"") -> Answer:
    data = head.encode("latin-1") if isinstance(head, str) else head
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return Answer(raw)


def get(gateway: DataPlane, path: str, *lines: str | bytes) -> Answer:
    encoded = [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    head = f"GET {path} HTTP/1.1\r\nHost: gw.example\r\n".encode() + b"".join(line + b"\r\n" for line in encoded)
    return send(gateway, head + b"Connection: close\r\n\r\n")


def bearer(value: str) -> str:
    return f"Authorization: Bearer {value}"


def decisions(gateway: DataPlane, endpoint: str, plugin: str, decision: str) -> float:
    text = httpx.get(f"{gateway.admin}/-/metrics", timeout=10).text
    labels = f'decision="{decision}",endpoint="{re.escape(endpoint)}",plugin="{plugin}"'
    found = re.search(r"^gateway_policy_decisions_total\{" + labels + r"\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_valid_token_names_the_consumer_and_its_issuer(gateway: DataPlane) -> None:
    answer = get(gateway, "/tokens/echo", bearer(token()), "X-Consumer-Username: admin")
    assert answer.upstream_got("x-consumer-username") == ["partner"]
    assert answer.upstream_got("x-credential-identifier") == ["partner-idp"]
    hs = get(gateway, "/tokens/echo", bearer(token("mobile", key=HS_SECRET.encode(), algorithm="HS256")))
    assert hs.upstream_got("x-credential-identifier") == ["mobile"]


def test_no_token_is_401_unauthorized_with_a_bearer_challenge(gateway: DataPlane) -> None:
    answer = get(gateway, "/tokens/echo")
    assert (answer.status, answer.error()) == (401, "unauthorized")
    assert answer.header("www-authenticate") == ['Bearer realm="gateway"']


def _attacks() -> dict[str, str]:
    now = int(time.time())
    return {
        "alg none": forged({"alg": "none"}, {"iss": "partner-idp", "exp": now + 60}, None),
        "rs256 to hs256": forged(
            {"alg": "HS256"}, {"iss": "partner-idp", "exp": now + 60}, public_pem(RSA_KEY).encode()
        ),
        "expired": token(exp=now - 60),
        "nbf in the future": token(nbf=now + 600),
        "unknown issuer": token("stranger"),
        "tampered": tampered(token(), sub="root"),
        "garbage": "garbage",
        "signed by another key": token(key=OTHER_RSA_KEY),
    }


def test_token_attacks_are_401_invalid_credentials(gateway: DataPlane) -> None:
    for name, value in _attacks().items():
        answer = get(gateway, "/tokens/echo", bearer(value))
        assert (answer.status, answer.error()) == (401, "invalid_credentials"), name
        assert answer.header("www-authenticate") == ['Bearer realm="gateway", error="invalid_token"'], name
        assert value.encode() not in answer.body


def test_issuers_and_audiences_are_enforced(gateway: DataPlane) -> None:
    assert get(gateway, "/scoped/echo", bearer(token(aud="orders"))).status == 200
    for value in (
        token(aud="billing"),
        token(),
        token("mobile", key=HS_SECRET.encode(), algorithm="HS256", aud="orders"),
    ):
        answer = get(gateway, "/scoped/echo", bearer(value))
        assert (answer.status, answer.error()) == (401, "invalid_credentials")


def test_a_token_in_a_chunked_trailer_never_counts(gateway: DataPlane) -> None:
    head = (
        "POST /tokens/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = send(gateway, head, f"5\r\nhello\r\n0\r\n{bearer(token())}\r\n\r\n".encode())
    assert (answer.status, answer.error()) == (401, "unauthorized")


def test_two_authorization_headers_are_refused(gateway: DataPlane) -> None:
    good = token()
    for pair in ((bearer(good), bearer("x.y.z")), (bearer("x.y.z"), bearer(good)), (bearer(good), bearer(good))):
        answer = get(gateway, "/tokens/echo", *pair)
        assert (answer.status, answer.error()) == (401, "invalid_credentials")


def test_nul_non_utf8_and_huge_tokens_are_401_not_500(gateway: DataPlane) -> None:
    for raw in (b"\xff\xfe.a.b", b"\xc3\xa9.a.b", b"a" * 9000 + b"." + b"b" * 9000 + b".c"):
        answer = get(gateway, "/tokens/echo", b"Authorization: Bearer " + raw)
        assert (answer.status, answer.error()) == (401, "invalid_credentials"), raw[:20]
    # A NUL or another control byte in a header value is the server's 400 before any plugin runs.
    for raw in (b"a\x00b.c.d", b"a\x01b.c.d"):
        answer = get(gateway, "/tokens/echo", b"Authorization: Bearer " + raw)
        assert (answer.status, answer.error()) == (400, "bad_request")


def test_report_mode_lets_bad_tokens_through_and_counts_would_deny(gateway: DataPlane) -> None:
    before = decisions(gateway, "watched:v1", "jwt", "would_deny")
    answer = get(gateway, "/watched/echo", bearer(token(exp=int(time.time()) - 60)))
    assert answer.status == 200
    assert answer.upstream_got("x-consumer-username") == []
    assert decisions(gateway, "watched:v1", "jwt", "would_deny") == before + 1


def test_a_providers_token_maps_to_a_consumer_or_goes_anonymous(
    gateway: DataPlane, provider: tuple[Provider, str]
) -> None:
    state, _ = provider
    known = token(ISSUER, headers={"kid": "2026-a"}, preferred_username="sso-user")
    answer = get(gateway, "/sso/echo", bearer(known))
    assert answer.upstream_got("x-consumer-username") == ["sso-user"]
    assert answer.upstream_got("x-credential-identifier") == [ISSUER]
    stranger = get(gateway, "/sso/echo", bearer(token(ISSUER, headers={"kid": "2026-a"}, preferred_username="eve")))
    assert stranger.upstream_got("x-anonymous-consumer") == ["true"]
    assert stranger.upstream_got("x-consumer-username") == []
    switched = forged({"alg": "HS256", "kid": "2026-a"}, {"iss": ISSUER, "exp": int(time.time()) + 60}, b"k" * 32)
    assert get(gateway, "/sso/echo", bearer(switched)).status == 401


def test_the_provider_rotates_its_keys_and_unknown_kids_refetch_at_most_every_30s(
    gateway: DataPlane, provider: tuple[Provider, str]
) -> None:
    state, _ = provider
    assert get(gateway, "/sso/echo", bearer(token(ISSUER, headers={"kid": "2026-a"}))).status == 200
    with state.lock:
        state.keys = [jwk(OTHER_RSA_KEY, "2026-b")]  # rotated: the old key is gone
        hits = state.hits
    rotated = token(ISSUER, key=OTHER_RSA_KEY, headers={"kid": "2026-b"})
    # A flood of unknown kids costs the provider at most one fetch per 30 s.
    for index in range(20):
        get(gateway, "/sso/echo", bearer(token(ISSUER, key=OTHER_RSA_KEY, headers={"kid": f"made-up-{index}"})))
    assert state.hits <= hits + 1
    # Within the 30 s the new key is fetched, and the rotated token passes.
    eventually(lambda: get(gateway, "/sso/echo", bearer(rotated)).status == 200, "the rotated key", timeout=60)
    assert state.hits <= hits + 3
    old = get(gateway, "/sso/echo", bearer(token(ISSUER, headers={"kid": "2026-a"})))
    assert (old.status, old.error()) == (401, "invalid_credentials")


def test_the_nodes_log_never_holds_a_token_or_a_secret(gateway: DataPlane) -> None:
    good = token("mobile", key=HS_SECRET.encode(), algorithm="HS256")
    bad = tampered(good, sub="root")
    get(gateway, "/tokens/echo", bearer(bad))
    marker = get(gateway, "/tokens/echo", bearer(good)).json()["headers"]
    request_id = next(value for key, value in marker if key == "x-request-id")
    log = Path(gateway.seed).parent / "dataplane.log"
    eventually(lambda: request_id in log.read_text(), "the last access log line", timeout=10)
    text = log.read_text()
    assert 'detail="jwt: the signature does not verify"' in text
    for secret in (good, bad, good.split(".")[2], bad.split(".")[1], HS_SECRET):
        assert secret not in text
