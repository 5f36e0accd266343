"""`forward_auth` (ARCHITECTURE §11) on real processes: a standalone data plane in front of a real echo
upstream, asking a real auth service on a loopback port (a thread of this test), spoken to over raw
sockets: allow with response_headers copied, a 403 with its body passed through, a slow service and
an absent one (503 auth_unavailable), and the client's spoofed X-Forwarded-* and copied headers."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, upstream
from tests.e2e.servers import RawAnswer as Answer
from tests.e2e.servers import free_port, http_server

pytestmark = pytest.mark.e2e


@dataclass
class Service:
    """The auth service: the token `Authorization: Bearer let-me-in` passes, `slow` never answers in
    time, anything else is a 403 with a JSON body."""

    asked: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[Service, str]]:
    state = Service()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            headers = {name.lower(): value for name, value in self.headers.items()}
            state.asked.append(headers)
            authorization = headers.get("authorization", "")
            if authorization == "Bearer slow":
                state.release.wait(10)
            if authorization == "Bearer let-me-in":
                status, body, extra = 200, b"", [("X-User-Id", "u-7"), ("X-Not-Copied", "1")]
            else:
                status, body, extra = 403, b'{"reason":"no entry"}', [("Content-Type", "application/json")]
            self.send_response(status)
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/check"
        state.release.set()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forward_auth")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream, service: tuple[Service, str]) -> Iterator[DataPlane]:
    def endpoint(name: str, url: str) -> dict[str, Any]:
        config = {"url": url, "timeout": 0.5, "request_headers": ["Authorization"], "response_headers": ["X-User-Id"]}
        return {"name": name, "version": "v1", "targets": [{"url": origin.url}], "plugins": {"forward_auth": config}}

    document = {
        "format_version": 2,
        "endpoints": [endpoint("guarded", service[1]), endpoint("orphan", f"http://127.0.0.1:{free_port()}/check")],
    }
    with dataplane(workdir, document) as node:
        yield node


def get(gateway: DataPlane, path: str, *lines: str) -> Answer:
    head = f"GET {path} HTTP/1.1\r\nHost: gw.example\r\n" + "".join(f"{line}\r\n" for line in lines)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall((head + "Connection: close\r\n\r\n").encode("latin-1"))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return Answer(raw)


def decisions(gateway: DataPlane, decision: str) -> float:
    text = httpx.get(f"{gateway.admin}/-/metrics", timeout=10).text
    labels = f'decision="{decision}",endpoint="guarded:v1",plugin="forward_auth"'
    found = re.search(r"^gateway_policy_decisions_total\{" + re.escape(labels) + r"\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_an_allowed_request_goes_upstream_with_the_services_headers(
    gateway: DataPlane, service: tuple[Service, str]
) -> None:
    state, _ = service
    answer = get(gateway, "/guarded/echo?x=1", "Authorization: Bearer let-me-in", "X-User-Id: admin")
    assert answer.upstream_got("x-user-id") == ["u-7"]
    assert answer.upstream_got("x-not-copied") == []
    asked = state.asked[-1]
    assert (asked["x-forwarded-method"], asked["x-forwarded-uri"]) == ("GET", "/guarded/echo?x=1")
    assert asked["x-forwarded-for"] == "127.0.0.1"


def test_a_refusal_is_passed_through_with_its_status_and_body(gateway: DataPlane) -> None:
    before = decisions(gateway, "deny")
    answer = get(gateway, "/guarded/echo", "Authorization: Bearer wrong")
    assert answer.status == 403
    assert answer.json() == {"reason": "no entry"}
    assert answer.header("x-request-id")
    assert decisions(gateway, "deny") == before + 1


def test_spoofed_forwarded_headers_are_not_what_the_service_sees(
    gateway: DataPlane, service: tuple[Service, str]
) -> None:
    state, _ = service
    get(
        gateway,
        "/guarded/echo",
        "Authorization: Bearer let-me-in",
        "X-Forwarded-For: 10.9.9.9",
        "X-Forwarded-Method: DELETE",
        "X-Forwarded-Uri: /admin",
    )
    asked = state.asked[-1]
    assert (asked["x-forwarded-for"], asked["x-forwarded-method"], asked["x-forwarded-uri"]) == (
        "127.0.0.1",
        "GET",
        "/guarded/echo",
    )


def test_a_service_slower_than_the_timeout_is_503(gateway: DataPlane) -> None:
    answer = get(gateway, "/guarded/echo", "Authorization: Bearer slow")
    assert (answer.status, answer.error()) == (503, "auth_unavailable")


def test_an_unreachable_service_is_503(gateway: DataPlane) -> None:
    answer = get(gateway, "/orphan/echo", "Authorization: Bearer let-me-in")
    assert (answer.status, answer.error()) == (503, "auth_unavailable")
