"""`forward_auth` (ARCHITECTURE §11) through the real proxy app in-process (fake upstream) in front of
a real auth service on a loopback port: what the service is asked, a 2xx and its response_headers,
any other answer returned as is, a slow or absent service (503 auth_unavailable), report mode, and
the attacks: spoofed X-Forwarded-* and a spoofed copied header from the client."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from configdoc import validate_document
from tests.dataplane.auth import call, decisions, document, refused, upstream_headers
from tests.dataplane.harness import Gateway, ok
from tests.e2e.servers import free_port, http_server


@dataclass
class Service:
    """What the auth service answers next, and what it was asked."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("X-User-Id", "u-42")])
    body: bytes = b""
    delay: threading.Event | None = None  # set: answer; unset: hold the answer until the test ends
    asked: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    state = Service()
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.asked.append({"path": self.path, "headers": [(k.lower(), v) for k, v in self.headers.items()]})
            if state.delay is not None:
                release.wait(10)
            self.send_response(state.status)
            for name, value in state.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/check"
        release.set()


def gateway(url: str, **config: Any) -> Gateway:
    plugins = {
        "forward_auth": {
            "url": url,
            "request_headers": ["Authorization", "Cookie"],
            "response_headers": ["X-User-Id"],
            **config,
        }
    }
    return Gateway(document(plugins), ok)


def asked(state: Service, name: str) -> list[str]:
    return [value for key, value in state.asked[-1]["headers"] if key == name]


def test_a_2xx_forwards_the_request_with_the_services_response_headers(service: tuple[Service, str]) -> None:
    state, url = service
    gw = gateway(url)
    response = call(
        gw, "/users/orders?page=2", headers=[("Authorization", "Bearer abc"), ("Cookie", "s=1"), ("X-Other", "no")]
    )
    assert response.status_code == 200, response.text
    assert state.asked[-1]["path"] == "/check"
    assert asked(state, "x-forwarded-method") == ["GET"]
    assert asked(state, "x-forwarded-uri") == ["/users/orders?page=2"]
    assert asked(state, "x-forwarded-for") == ["127.0.0.1"]
    assert asked(state, "authorization") == ["Bearer abc"]
    assert asked(state, "cookie") == ["s=1"]
    assert asked(state, "x-other") == []
    seen = upstream_headers(gw)
    assert seen["x-user-id"] == ["u-42"]
    assert "x-consumer-username" not in seen
    assert decisions(gw)[("users:v1", "forward_auth", "allow")] == 1.0


def test_the_clients_x_forwarded_headers_and_copied_headers_are_not_trusted(service: tuple[Service, str]) -> None:
    state, url = service
    state.headers = []  # the service says nothing about the user
    gw = gateway(url)
    spoofed = [
        ("X-Forwarded-Method", "DELETE"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-User-Id", "admin"),
    ]
    assert call(gw, "/users/x", headers=spoofed).status_code == 200
    assert asked(state, "x-forwarded-method") == ["GET"]
    assert asked(state, "x-forwarded-uri") == ["/users/x"]
    assert asked(state, "x-forwarded-for") == ["127.0.0.1"]
    assert "x-user-id" not in upstream_headers(gw)


def test_any_other_answer_is_returned_to_the_client_as_is(service: tuple[Service, str]) -> None:
    state, url = service
    state.status, state.body = 403, b'{"reason": "not your tenant"}'
    state.headers = [("Content-Type", "application/json"), ("X-Auth-Reason", "tenant")]
    gw = gateway(url)
    response = call(gw)
    assert response.status_code == 403
    assert response.json() == {"reason": "not your tenant"}
    assert response.headers["x-auth-reason"] == "tenant"
    assert response.headers["x-request-id"]  # the gateway's own headers are still there
    assert gw.seen == []
    state.status, state.body = 302, b""
    state.headers = [("Location", "https://login.example/?next=%2F")]
    redirect = call(gw)
    assert (redirect.status_code, redirect.headers["location"]) == (302, "https://login.example/?next=%2F")
    assert decisions(gw)[("users:v1", "forward_auth", "deny")] == 2.0


def test_an_answer_body_over_the_cap_is_503(service: tuple[Service, str]) -> None:
    state, url = service
    state.status, state.body = 401, b"x" * (128 * 1024)
    assert refused(call(gateway(url)), 503, "auth_unavailable")


def test_a_service_slower_than_the_timeout_is_503_auth_unavailable(service: tuple[Service, str]) -> None:
    state, url = service
    state.delay = threading.Event()
    gw = gateway(url, timeout=0.3)
    assert refused(call(gw), 503, "auth_unavailable")
    assert gw.seen == []


def test_an_unreachable_service_is_503_auth_unavailable() -> None:
    gw = gateway(f"http://127.0.0.1:{free_port()}/check")
    assert refused(call(gw), 503, "auth_unavailable")
    assert gw.seen == []


def test_report_mode_lets_a_refused_or_undecided_request_through(service: tuple[Service, str]) -> None:
    state, url = service
    state.status = 401
    gw = gateway(url, mode="report")
    assert call(gw).status_code == 200
    unreachable = gateway(f"http://127.0.0.1:{free_port()}/check", mode="report")
    assert call(unreachable).status_code == 200
    assert decisions(gw)[("users:v1", "forward_auth", "would_deny")] == 1.0
    assert decisions(unreachable)[("users:v1", "forward_auth", "would_deny")] == 1.0


def test_a_key_presented_first_decides_and_the_service_is_not_asked(service: tuple[Service, str]) -> None:
    from tests.dataplane.auth import BOB_KEY

    state, url = service
    plugins = {"key_auth": {}, "forward_auth": {"url": url, "response_headers": ["X-User-Id"]}}
    gw = Gateway(document(plugins), ok)
    assert call(gw, headers=[("apikey", BOB_KEY), ("X-User-Id", "admin")]).status_code == 200
    assert state.asked == []
    seen = upstream_headers(gw)
    assert seen["x-consumer-username"] == ["bob"] and "x-user-id" not in seen
    assert json.loads(call(gw).text)  # no key: the service decides
    assert len(state.asked) == 1


def test_the_docs_forward_auth_example_runs_with_a_live_service(service: tuple[Service, str]) -> None:
    from tests.dataplane.test_jwt import docs_example

    state, url = service
    example, _ = docs_example("### forward_auth: ask an auth service")
    assert example["endpoints"][0]["plugins"]["forward_auth"]["url"] == "http://127.0.0.1:9001/check"
    example["endpoints"][0]["plugins"]["forward_auth"]["url"] = url  # the service of this test
    canonical, problems = validate_document(example, max_format_version=2)
    assert problems == [], problems
    gw = Gateway(canonical, ok)
    state.headers = [("X-User-Id", "u-7")]
    assert call(gw, "/orders/items", headers=[("Cookie", "session=ok")]).status_code == 200
    assert upstream_headers(gw)["x-user-id"] == ["u-7"]
    assert asked(state, "cookie") == ["session=ok"]
    state.status, state.headers = 401, [("WWW-Authenticate", 'Bearer realm="sso"')]
    response = call(gw, "/orders/items")
    assert (response.status_code, response.headers["www-authenticate"]) == (401, 'Bearer realm="sso"')


def test_the_shared_client_is_closed_when_the_proxy_closes(service: tuple[Service, str]) -> None:
    from dataplane.plugins.forward_auth import CLIENT

    _, url = service
    gw = gateway(url)

    async def scenario() -> None:
        async with gw.client() as client:
            assert (await client.get("/users/x")).status_code == 200
        used = CLIENT.client
        assert used is not None and not used.is_closed
        await gw.proxy.aclose()
        assert used.is_closed and CLIENT.client is None

    asyncio.run(scenario())
