"""key_auth, basic_auth and acl (ARCHITECTURE §11) on real processes: a standalone data plane on a
format-2 seed with consumers, in front of a real echo upstream, spoken to over raw sockets. Attacks: a
key smuggled in a chunked trailer, a key header sent twice, an underscored key header, a spoofed
X-Consumer-Username, malformed basic credentials; and no key or password in the node's log."""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from configdoc.consumers import hash_key, make_password_hash
from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import RawAnswer as Answer
from tests.e2e.servers import eventually

pytestmark = pytest.mark.e2e

KEY = "e2e-key-7Hq2sN0pL4"
OTHER_KEY = "e2e-other-key-91xQ"
WRONG_KEY = "e2e-wrong-key-00aa"
PASSWORD = "e2e pass:word-ü-93"
WRONG_PASSWORD = "e2e-wrong-password-55"


def document(origin: str) -> dict[str, Any]:
    def endpoint(name: str, plugins: dict[str, Any] | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"plugins": plugins} if plugins else {}
        return {"name": name, "version": "v1", "methods": ["GET", "POST"], "targets": [{"url": origin}], **fields}

    key_auth = {"key_names": ["apikey"], "in": ["header", "query"]}
    return {
        "format_version": 2,
        "consumers": [
            {
                "username": "partner",
                "custom_id": "crm-1042",
                "groups": ["partners"],
                "key_auth": [{"key_sha256": hash_key(KEY), "label": "2026-q4"}],
                "basic_auth": [
                    {
                        "username": "partner-basic",
                        "password_hash": make_password_hash(PASSWORD, salt="e2esalt001", iterations=100_000),
                    }
                ],
            },
            {
                "username": "intern",
                "groups": ["staff"],
                "key_auth": [{"key_sha256": hash_key(OTHER_KEY), "label": "i"}],
            },
        ],
        "endpoints": [
            endpoint("keyed", {"key_auth": key_auth}),
            endpoint("hidden", {"key_auth": {**key_auth, "hide_credentials": True}}),
            endpoint("basic", {"basic_auth": {"realm": "e2e", "hide_credentials": True}}),
            endpoint("partners", {"key_auth": key_auth, "acl": {"allow": ["partners"]}}),
            endpoint("plain"),
        ],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream) -> Iterator[DataPlane]:
    with dataplane(workdir, document(origin.url), DATAPLANE_LOG_LEVEL="debug") as node:
        yield node


def send(gateway: DataPlane, head: str, body: bytes = b"") -> Answer:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return Answer(raw)


def get(gateway: DataPlane, path: str, *lines: str) -> Answer:
    head = f"GET {path} HTTP/1.1\r\nHost: gw.example\r\n" + "".join(f"{line}\r\n" for line in lines)
    return send(gateway, head + "Connection: close\r\n\r\n")


def basic(username: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("latin-1")


def decisions(gateway: DataPlane, endpoint: str, plugin: str, decision: str) -> float:
    text = httpx.get(f"{gateway.admin}/-/metrics", timeout=10).text
    labels = f'decision="{decision}",endpoint="{re.escape(endpoint)}",plugin="{plugin}"'
    found = re.search(r"^gateway_policy_decisions_total\{" + labels + r"\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_known_key_names_the_consumer_and_a_spoofed_identity_is_dropped(gateway: DataPlane) -> None:
    answer = get(gateway, "/keyed/echo", f"apikey: {KEY}", "X-Consumer-Username: admin", "X-Consumer-Groups: root")
    assert answer.upstream_got("x-consumer-username") == ["partner"]
    assert answer.upstream_got("x-consumer-custom-id") == ["crm-1042"]
    assert answer.upstream_got("x-consumer-groups") == ["partners"]
    assert answer.upstream_got("x-credential-identifier") == ["2026-q4"]
    assert answer.upstream_got("apikey") == [KEY]  # not hidden on this endpoint
    plain = get(gateway, "/plain/echo", "X-Consumer-Username: admin", "X-Anonymous-Consumer: true")
    assert plain.upstream_got("x-consumer-username") == []
    assert plain.upstream_got("x-anonymous-consumer") == []


def test_no_key_is_401_unauthorized_with_a_challenge(gateway: DataPlane) -> None:
    answer = get(gateway, "/keyed/echo")
    assert (answer.status, answer.error()) == (401, "unauthorized")
    assert answer.header("www-authenticate") == ['Key realm="gateway"']
    assert answer.header("content-type") == ["application/json"]


def test_a_wrong_key_is_401_invalid_credentials_with_a_challenge(gateway: DataPlane) -> None:
    answer = get(gateway, "/keyed/echo", f"apikey: {WRONG_KEY}")
    assert (answer.status, answer.error()) == (401, "invalid_credentials")
    assert answer.header("www-authenticate") == ['Key realm="gateway"']
    assert WRONG_KEY.encode() not in answer.body


def test_a_key_smuggled_in_a_chunked_trailer_never_counts(gateway: DataPlane) -> None:
    head = (
        "POST /keyed/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTrailer: apikey\r\n"
        "Connection: close\r\n\r\n"
    )
    body = f"5\r\nhello\r\n0\r\napikey: {KEY}\r\n\r\n".encode()
    answer = send(gateway, head, body)
    assert (answer.status, answer.error()) == (401, "unauthorized")


def test_a_key_header_sent_twice_is_refused_whichever_comes_first(gateway: DataPlane) -> None:
    for first, second in ((WRONG_KEY, KEY), (KEY, WRONG_KEY), (KEY, KEY)):
        answer = get(gateway, "/keyed/echo", f"apikey: {first}", f"APIKEY: {second}")
        assert (answer.status, answer.error()) == (401, "invalid_credentials")
    answer = get(gateway, f"/keyed/echo?apikey={KEY}", f"apikey: {WRONG_KEY}")
    assert (answer.status, answer.error()) == (401, "invalid_credentials")


def test_an_underscored_key_header_is_not_a_key_and_never_reaches_the_upstream(gateway: DataPlane) -> None:
    answer = get(gateway, "/keyed/echo", f"api_key: {KEY}")
    assert (answer.status, answer.error()) == (401, "unauthorized")
    passed = get(gateway, "/keyed/echo", f"apikey: {OTHER_KEY}", f"api_key: {KEY}")
    assert passed.upstream_got("x-consumer-username") == ["intern"]
    assert passed.upstream_got("api_key") == []


def test_a_key_with_nul_or_non_utf8_bytes_is_401_not_500(gateway: DataPlane) -> None:
    for query in ("apikey=%00", "apikey=%FF%FE", "apikey=", "apikey=" + "k" * 4000):
        answer = get(gateway, f"/keyed/echo?{query}")
        assert (answer.status, answer.error()) == (401, "invalid_credentials"), query
    answer = get(gateway, "/keyed/echo", "apikey: \udcff\udcfe".encode("utf-8", "surrogateescape").decode("latin-1"))
    assert (answer.status, answer.error()) == (401, "invalid_credentials")


def test_hide_credentials_keeps_the_key_from_the_upstream(gateway: DataPlane) -> None:
    answer = get(gateway, f"/hidden/echo?a=1&apikey={KEY}&b=2", "X-Other: 1")
    assert answer.upstream_got("x-consumer-username") == ["partner"]
    assert answer.json()["query"] == "a=1&b=2"
    header = get(gateway, "/hidden/echo", f"apikey: {KEY}")
    assert header.upstream_got("apikey") == []
    assert header.json()["query"] == ""


def test_basic_auth_accepts_the_password_and_hides_it(gateway: DataPlane) -> None:
    answer = get(gateway, "/basic/echo", basic("partner-basic", PASSWORD))
    assert answer.upstream_got("x-consumer-username") == ["partner"]
    assert answer.upstream_got("x-credential-identifier") == ["partner-basic"]
    assert answer.upstream_got("authorization") == []
    again = get(gateway, "/basic/echo", basic("partner-basic", PASSWORD))  # from the cache this time
    assert again.upstream_got("x-consumer-username") == ["partner"]


def test_basic_auth_refuses_wrong_unknown_and_malformed_credentials_with_its_challenge(gateway: DataPlane) -> None:
    for line in (
        basic("partner-basic", WRONG_PASSWORD),
        basic("nobody", WRONG_PASSWORD),
        "Authorization: Basic %%%",
        "Authorization: Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
        "Authorization: Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        answer = get(gateway, "/basic/echo", line)
        assert (answer.status, answer.error()) == (401, "invalid_credentials"), line
        assert answer.header("www-authenticate") == ['Basic realm="e2e", charset="UTF-8"']
    bearer = get(gateway, "/basic/echo", "Authorization: Bearer x.y.z")
    assert (bearer.status, bearer.error()) == (401, "unauthorized")


def test_acl_lets_the_partners_group_in_and_refuses_others(gateway: DataPlane) -> None:
    before = decisions(gateway, "partners:v1", "acl", "deny")
    assert get(gateway, "/partners/echo", f"apikey: {KEY}").status == 200
    refused = get(gateway, "/partners/echo", f"apikey: {OTHER_KEY}")
    assert (refused.status, refused.error()) == (403, "forbidden")
    assert decisions(gateway, "partners:v1", "acl", "deny") == before + 1
    assert decisions(gateway, "partners:v1", "key_auth", "allow") >= 2


def test_the_nodes_log_never_holds_a_key_or_a_password(gateway: DataPlane) -> None:
    get(gateway, "/keyed/echo", f"apikey: {WRONG_KEY}")
    get(gateway, f"/keyed/echo?apikey={WRONG_KEY}&apikey={KEY}")
    get(gateway, "/basic/echo", basic("partner-basic", WRONG_PASSWORD))
    marker = get(gateway, "/keyed/echo", f"apikey: {KEY}").json()["headers"]
    request_id = next(value for key, value in marker if key == "x-request-id")
    log = Path(gateway.seed).parent / "dataplane.log"
    eventually(lambda: request_id in log.read_text(), "the last access log line", timeout=10)
    text = log.read_text()
    assert 'detail="key_auth: no consumer has this key"' in text
    assert 'detail="key_auth: the key was sent 2 times"' in text
    assert 'detail="basic_auth: wrong username or password"' in text
    for secret in (KEY, OTHER_KEY, WRONG_KEY, PASSWORD, WRONG_PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in text
