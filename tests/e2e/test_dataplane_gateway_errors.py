"""Gateway-made upstream errors tell the client what kind of failure it was and nothing about the inside
(ARCHITECTURE §5): no target URL, address, port, OS error or TLS text in the body; that detail is in the
access log line with the same request id. A real data plane per transport, real failing upstreams."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.dataplane.processes import DataPlane, dataplane, seed, self_signed_certificate, tls_upstream, upstream
from tests.e2e.servers import eventually, free_port

pytestmark = pytest.mark.e2e

# What an error body must never contain: where the upstreams are, and how the OS or TLS put the failure.
REVEALING = ("127.0.0.1", "http://", "https://", "errno", "connect call failed", "ssl", "certificate", "_ssl.c")


class _GarbageHandler(socketserver.BaseRequestHandler):
    """Reads a request head and answers with bytes that are not HTTP."""

    def handle(self) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            received += chunk
        self.request.sendall(b"SPEAKING GARBAGE, NOT HTTP\r\n\r\n")


@pytest.fixture(scope="module")
def garbage_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _GarbageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Setup:
    node: DataPlane
    log: Path
    ports: dict[str, int]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, transport: str, garbage_port: int) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp(f"errors-{transport}")
    cert, key = self_signed_certificate(workdir)
    refused = free_port()
    with tls_upstream(workdir, cert, key) as secure, upstream(workdir, "slowpoke") as slow:
        document = seed(
            {"name": "refused", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{refused}/api"}]},
            {"name": "untrusted", "version": "v1", "targets": [{"url": f"https://127.0.0.1:{secure.port}"}]},
            {"name": "garbage", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{garbage_port}"}]},
            {"name": "slow", "version": "v1", "targets": [{"url": slow.url}], "timeout": 1},
            {"name": "none", "version": "v1", "targets": [{"url": slow.url, "enabled": False}]},
        )
        with dataplane(workdir, document, DATAPLANE_TRANSPORT=transport) as node:
            ports = {
                "refused": refused,
                "untrusted": secure.port,
                "garbage": garbage_port,
                "slow": slow.port,
                "none": slow.port,
            }
            yield Setup(node, workdir / "dataplane.log", ports)


def access_line(setup: Setup, request_id: str) -> str:
    def line() -> str | None:
        found = [x for x in setup.log.read_text().splitlines() if f"request_id={request_id} " in x]
        return found[0] if found else None

    eventually(lambda: line() is not None, f"the access log line of {request_id}")
    return line() or ""


@pytest.mark.parametrize(
    ("endpoint", "status", "error", "message", "detail"),
    [
        ("refused", 502, "upstream_unavailable", "the upstream refused the connection", "refused"),
        ("untrusted", 502, "upstream_unavailable", "the TLS handshake with the upstream failed", "CERTIFICATE_VERIFY"),
        ("garbage", 502, "upstream_protocol_error", "the upstream answered with a malformed response", "malformed"),
        ("slow", 504, "upstream_timeout", "the upstream sent no response head in time", "no response head"),
    ],
)
def test_an_upstream_failure_is_named_to_the_client_and_detailed_only_in_the_log(
    setup: Setup, transport: str, endpoint: str, status: int, error: str, message: str, detail: str
) -> None:
    request_id = f"failing-{endpoint}-{transport}"
    response = httpx.get(
        f"{setup.node.url}/v1/{endpoint}/slow?seconds=3", headers={"X-Request-ID": request_id}, timeout=10
    )
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.json()["message"] == message
    assert response.headers["x-request-id"] == request_id
    body = response.text.lower()
    assert str(setup.ports[endpoint]) not in body
    assert not [word for word in REVEALING if word in body], body

    line = access_line(setup, request_id)
    assert f"error={error}" in line
    assert f"127.0.0.1:{setup.ports[endpoint]}" in line  # which target, in the log
    assert detail in line


def test_no_routable_target_names_none_of_the_targets(setup: Setup) -> None:
    response = httpx.get(f"{setup.node.url}/v1/none/x", headers={"X-Request-ID": "no-target"})
    assert (response.status_code, response.json()["error"]) == (503, "no_healthy_target")
    body = response.text.lower()
    assert str(setup.ports["none"]) not in body
    assert not [word for word in REVEALING if word in body], body
