"""Breakers, retries, failover and deadlines with a real `python -m dataplane` and real upstreams."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dataplane.process import uvicorn_config
from dataplane.settings import Settings
from tests.dataplane.processes import DataPlane, Upstream, dataplane, seed, upstream
from tests.e2e.servers import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resilience")


@pytest.fixture(scope="module")
def alpha(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "alpha") as server:
        yield server


@pytest.fixture(scope="module")
def beta(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "beta") as server:
        yield server


class RawServer:
    """A TCP server on 127.0.0.1 that answers every connection with fixed bytes, then closes it."""

    def __init__(self, reply: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    if self.reply:
                        conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def raw_servers() -> Iterator[tuple[RawServer, RawServer]]:
    garbage, hangup = RawServer(b"this is not HTTP at all\r\n\r\n"), RawServer(b"")
    yield garbage, hangup
    garbage.close()
    hangup.close()


@pytest.fixture(scope="module")
def gateway(
    workdir: Path, alpha: Upstream, beta: Upstream, raw_servers: tuple[RawServer, RawServer], transport: str
) -> Iterator[DataPlane]:
    dead = f"http://127.0.0.1:{free_port()}"
    garbage, hangup = raw_servers
    document = seed(
        {"name": "garbage", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{garbage.port}"}]},
        {"name": "hangup", "version": "v1", "targets": [{"url": f"http://127.0.0.1:{hangup.port}"}]},
        {"name": "flaky", "version": "v1", "targets": [{"url": alpha.url}], "breaker_policy": "quick"},
        {
            "name": "fallback",
            "version": "v1",
            "targets": [{"url": alpha.url}],
            "breaker_policy": "canned",
        },
        {"name": "pair", "version": "v1", "targets": [{"url": dead}, {"url": beta.url}]},
        {
            "name": "retrying",
            "version": "v1",
            "methods": ["GET", "PUT"],
            "targets": [{"url": alpha.url}, {"url": beta.url}],
            "retries": {"attempts": 2, "on": ["5xx"]},
        },
        {
            "name": "upload",
            "version": "v1",
            "targets": [{"url": alpha.url}],
            "timeout": 1,
            "connect_timeout": 1,
            "methods": ["POST"],
        },
        {
            "name": "storm",
            "version": "v1",
            "targets": [{"url": alpha.url}, {"url": beta.url}],
            "retries": {"attempts": 3, "on": ["5xx"]},
            "breaker_policy": "lenient",
            "outlier": {"consecutive_failures": 1000},
        },
        policies=[
            {"name": "lenient", "failure_threshold": 1000},
            {
                "name": "quick",
                "failure_threshold": 2,
                "reset_timeout": 1,
                "half_open_max_calls": 1,
                "success_threshold": 1,
            },
            {
                "name": "canned",
                "failure_threshold": 1,
                "reset_timeout": 3600,
                "fallback_strategy": "default_response",
                "fallback": {"status": 200, "content_type": "application/json", "body": '{"items": []}'},
            },
        ],
    )
    with dataplane(workdir, document, DATAPLANE_HEADER_TIMEOUT="1", DATAPLANE_TRANSPORT=transport) as node:
        yield node


def test_the_data_plane_speaks_http_through_httptools_never_h11() -> None:
    config = uvicorn_config(object(), "127.0.0.1", 0, Settings.from_env({}))
    assert issubclass(config.http, HttpToolsProtocol)  # type: ignore[arg-type]
    assert config.http.header_timeout == Settings.from_env({}).header_timeout  # type: ignore[union-attr]


def test_the_breaker_opens_probes_after_the_reset_timeout_and_closes(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/v1/flaky/status/500").status_code == 500
    assert httpx.get(f"{gateway.url}/v1/flaky/status/502").status_code == 502
    opened = httpx.get(f"{gateway.url}/v1/flaky/status/200")
    assert opened.status_code == 503
    assert opened.json()["error"] == "circuit_open"
    assert opened.headers["x-circuit-breaker"] == "open"
    metrics = httpx.get(f"{gateway.admin}/-/metrics").text
    assert 'gateway_circuit_state{endpoint="flaky:v1"} 1.0' in metrics
    time.sleep(1.1)
    assert httpx.get(f"{gateway.url}/v1/flaky/status/200").status_code == 200
    assert httpx.get(f"{gateway.url}/v1/flaky/status/200").status_code == 200
    metrics = httpx.get(f"{gateway.admin}/-/metrics").text
    assert 'gateway_circuit_state{endpoint="flaky:v1"} 0.0' in metrics
    assert 'gateway_circuit_transitions_total{endpoint="flaky:v1",from="half_open",to="closed"} 1.0' in metrics


def test_an_open_circuit_with_a_default_response_serves_it(gateway: DataPlane) -> None:
    assert httpx.get(f"{gateway.url}/v1/fallback/status/503").status_code == 503
    response = httpx.get(f"{gateway.url}/v1/fallback/anything")
    assert (response.status_code, response.text) == (200, '{"items": []}')
    assert response.headers["x-gateway-fallback"] == "default"


def test_a_refused_target_fails_over_to_the_other(gateway: DataPlane) -> None:
    names = {httpx.get(f"{gateway.url}/v1/pair/who").json()["name"] for _ in range(6)}
    assert names == {"beta"}


def test_a_5xx_is_retried_on_another_target(gateway: DataPlane, alpha: Upstream, beta: Upstream) -> None:
    # Each upstream answers /status/503 with 503; with retries on 5xx the second try goes to the other.
    before = {u.port: len(httpx.get(f"{u.url}/_seen").json()) for u in (alpha, beta)}
    response = httpx.get(f"{gateway.url}/v1/retrying/status/503")
    assert response.status_code == 503
    after = {u.port: len(httpx.get(f"{u.url}/_seen").json()) for u in (alpha, beta)}
    assert [after[p] - before[p] for p in before] == [1, 1]
    assert "gateway_upstream_retries_total" in httpx.get(f"{gateway.admin}/-/metrics").text


def test_a_small_chunked_body_is_replayed_on_the_retry(gateway: DataPlane, alpha: Upstream, beta: Upstream) -> None:
    before = {u.port: len(httpx.get(f"{u.url}/_seen").json()) for u in (alpha, beta)}

    def body() -> Iterator[bytes]:
        yield b"a" * 500
        yield b"b" * 500

    response = httpx.put(f"{gateway.url}/v1/retrying/status/503", content=body())  # chunked: no length known
    assert response.status_code == 503
    after = {u.port: len(httpx.get(f"{u.url}/_seen").json()) for u in (alpha, beta)}
    assert [after[p] - before[p] for p in before] == [1, 1]


def test_a_slow_upload_does_not_spend_the_upstreams_timeout(gateway: DataPlane) -> None:
    """The endpoint's timeout is 1 s; the client takes 2.5 s over its 200 kB body: the upstream's time
    starts when the body is all sent, so the answer is the upstream's, not a 504."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/upload/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100_000)
        time.sleep(2.5)
        sock.sendall(b"y" * 100_000)
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["body_length"] == 200_000


def test_a_503_storm_with_retries_stays_within_the_retry_budget(
    gateway: DataPlane, alpha: Upstream, beta: Upstream, transport: str
) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        statuses = {
            client.get("/v1/storm/status/503", params={"storm": f"{transport}-{i}"}).status_code for i in range(60)
        }
    assert statuses == {503}
    upstream_hits = sum(
        1 for u in (alpha, beta) for path in httpx.get(f"{u.url}/_seen").json() if f"storm={transport}-" in path
    )
    assert 60 < upstream_hits <= 72  # at most 1.2x the client's requests


def test_an_upstream_answering_garbage_gives_502_upstream_protocol_error(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/v1/garbage")
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_protocol_error"


def test_an_upstream_closing_before_answering_gives_502_upstream_unavailable(gateway: DataPlane) -> None:
    response = httpx.get(f"{gateway.url}/v1/hangup")
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unavailable"


def test_request_headers_not_received_in_time_get_408_and_a_closed_connection(gateway: DataPlane) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/pair HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b'"error":"request_timeout"' in received


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (head and body may come in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_idle_past_the_keep_alive_timeout_is_closed_and_a_busy_one_is_not(
    gateway: DataPlane,
) -> None:
    """One keep-alive timer per connection: requests keep re-using the connection past the timeout
    (5 s here: the larger of 5 and DATAPLANE_HEADER_TIMEOUT), and silence after a response closes it."""
    request = b"GET /v1/flaky/kept HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        started = time.monotonic()
        answers = 0
        while time.monotonic() - started < 7:  # busy for longer than the timeout
            sock.sendall(request)
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            answers += 1
            time.sleep(1)
        idle_from = time.monotonic()
        assert sock.recv(65536) == b""  # then closed by the node, without another answer
        idle = time.monotonic() - idle_from
    assert answers >= 7
    assert 3 < idle < 12, idle
