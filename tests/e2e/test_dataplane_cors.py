"""The `cors` plugin on a real standalone data plane (a format-2 seed) in front of a real upstream
that echoes what it received: preflights, allowed and refused origins over real HTTP, an Origin
smuggled in a chunked trailer or sent twice over a raw socket, and a gateway-made 502 and 404 that a page
from an allowed origin can still read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, raw_exchange, upstream
from tests.e2e.servers import free_port

pytestmark = pytest.mark.e2e

APP = "https://app.example.com"
EVIL = "https://evil.example"
CORS = {
    "origins": [APP],
    "methods": ["GET", "POST", "PUT"],
    "headers": ["Content-Type", "X-Custom"],
    "expose_headers": ["X-Request-ID"],
    "credentials": True,
    "max_age": 300,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cors")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream) -> Iterator[DataPlane]:
    document: dict[str, Any] = {
        "format_version": 2,
        "plugins": {"cors": CORS},
        "endpoints": [
            {"name": "users", "version": "v1", "methods": ["GET", "POST", "PUT"], "targets": [{"url": origin.url}]},
            {"name": "gone", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{free_port()}"}]},
            {
                "name": "open",
                "version": "v1",
                "targets": [{"url": origin.url}],
                "plugins": {"cors": {"enabled": False}},
            },
        ],
    }
    with dataplane(workdir, document) as node:
        yield node


def test_a_preflight_is_answered_by_the_gateway(gateway: DataPlane, origin: Upstream) -> None:
    headers = {"Origin": APP, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-custom"}
    response = httpx.options(f"{gateway.url}/users/echo", headers=headers)
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-methods"] == "GET, POST, PUT"
    assert response.headers["access-control-allow-headers"] == "Content-Type, X-Custom"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-max-age"] == "300"
    assert "Origin" in response.headers["vary"]
    assert "/echo" not in httpx.get(f"{origin.url}/_seen").text  # never went upstream


def test_a_preflight_for_a_method_or_header_not_allowed_is_refused(gateway: DataPlane) -> None:
    for asked in ({"Access-Control-Request-Method": "DELETE"}, {"Access-Control-Request-Method": "PUT",
                  "Access-Control-Request-Headers": "x-custom, authorization"}):  # fmt: skip
        response = httpx.options(f"{gateway.url}/users/echo", headers={"Origin": APP, **asked})
        assert response.status_code == 403 and response.json()["error"] == "cors_forbidden", asked
        assert "access-control-allow-origin" not in response.headers


def test_an_allowed_origin_reads_the_upstreams_answer(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/users/echo", headers={"Origin": "HTTPS://App.Example.com:443"})
    assert response.status_code == 200 and response.json()["name"] == "echo"
    assert response.headers["access-control-allow-origin"] == "HTTPS://App.Example.com:443"
    assert response.headers["access-control-expose-headers"] == "X-Request-ID"
    assert response.headers["vary"] == "Origin"


def test_an_origin_not_allowed_gets_the_json_403(gateway: DataPlane) -> None:
    for origin in (EVIL, "null", "https://app.example.com.evil.example", "https://" + "a" * 8000):
        response = httpx.get(f"{gateway.url}/users/echo", headers={"Origin": origin})
        assert response.status_code == 403, origin
        body = response.json()
        assert body["error"] == "cors_forbidden" and body["endpoint"] == "users:v1" and body["request_id"]
        assert "access-control-allow-origin" not in response.headers


def test_no_origin_passes_untouched_and_an_endpoint_may_turn_cors_off(gateway: DataPlane) -> None:
    plain = httpx.get(f"{gateway.url}/users/echo")
    assert plain.status_code == 200 and not [name for name in plain.headers if name.startswith("access-control")]
    assert "vary" not in plain.headers
    assert httpx.get(f"{gateway.url}/open/echo", headers={"Origin": EVIL}).status_code == 200


def test_a_gateway_made_502_is_readable_by_an_allowed_origin(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/gone/x", headers={"Origin": APP})
    assert response.status_code == 502 and response.json()["error"] == "upstream_unavailable"
    assert response.headers["access-control-allow-origin"] == APP
    missing = httpx.get(f"{gateway.url}/nowhere", headers={"Origin": APP})  # the global cors, no endpoint
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"
    assert missing.headers["access-control-allow-origin"] == APP


def raw(gateway: DataPlane, head: str, body: bytes = b"") -> tuple[bytes, bytes]:
    answer = raw_exchange(gateway.port, head.encode("latin-1") + body)
    status, _, rest = answer.partition(b"\r\n\r\n")
    return status, rest


def test_an_origin_in_a_chunked_trailer_does_not_count(gateway: DataPlane) -> None:
    for smuggled in (EVIL, APP):
        head = (
            "POST /users/echo HTTP/1.1\r\nHost: gw.example\r\nTransfer-Encoding: chunked\r\n"
            "Trailer: Origin\r\nConnection: close\r\n\r\n"
        )
        status, body = raw(gateway, head, f"5\r\nhello\r\n0\r\nOrigin: {smuggled}\r\n\r\n".encode())
        assert status.startswith(b"HTTP/1.1 200 "), status
        assert b"access-control-" not in status.lower()
        assert b'"origin"' not in body.lower()  # the upstream never heard of it either


def test_a_duplicated_origin_over_the_wire_is_refused(gateway: DataPlane) -> None:
    head = (
        f"GET /users/echo HTTP/1.1\r\nHost: gw.example\r\nOrigin: {APP}\r\nOrigin: {EVIL}\r\nConnection: close\r\n\r\n"
    )
    status, body = raw(gateway, head)
    assert status.startswith(b"HTTP/1.1 403 ") and b"cors_forbidden" in body
    assert b"access-control-allow-origin" not in status.lower()
