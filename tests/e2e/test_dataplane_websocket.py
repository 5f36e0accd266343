"""WebSocket tunnels (ARCHITECTURE §13) on real processes: a standalone data plane in front of a real
`websockets` server (tests/dataplane/ws_upstream.py) and a real HTTP echo upstream, spoken to with the
`websockets` client and over raw sockets. Text, binary, 10 MB of messages, ping/pong, close codes both
ways; the upstream refusing (its answer passed back) or answering a wrong accept (502); the client
vanishing (the upstream side closed, the gauge back to 0); the idle timeout; key_auth on the handshake;
`websocket: false`; malformed handshakes; a tunnel through a config swap, the concurrency cap and a
SIGTERM drain. Attacks: an upgrade smuggled in a trailer, `Connection: upgrade` without `Upgrade`, a
frame claiming 2^62 bytes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from configdoc.consumers import hash_key
from tests.dataplane.processes import DataPlane, Upstream, dataplane, self_signed_certificate, upstream
from tests.dataplane.ws_upstream import WsUpstream, ws_upstream
from tests.e2e.servers import RawAnswer, eventually

pytestmark = pytest.mark.e2e

KEY = "ws-e2e-key-5Gx81mQa"
# RFC 6455 §1.3's example key and the accept an upstream must answer to it.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def document(ws: WsUpstream, echo: Upstream) -> dict[str, Any]:
    def endpoint(name: str, url: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "version": "v1", "methods": ["GET", "POST"], "targets": [{"url": url}], **fields}

    return {
        "format_version": 2,
        "consumers": [{"username": "partner", "key_auth": [{"key_sha256": hash_key(KEY), "label": "ws"}]}],
        "endpoints": [
            endpoint("chat", ws.url),
            endpoint("quiet", ws.url, read_idle_timeout=1),
            endpoint("locked", ws.url, plugins={"key_auth": {"key_names": ["apikey"]}}),
            endpoint("closed", ws.url, websocket=False),
            endpoint("liar", ws.bad_accept_url),
            endpoint("plain", echo.url),
        ],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("websocket")


@pytest.fixture(scope="module")
def ws() -> Iterator[WsUpstream]:
    with ws_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def echo(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(workdir: Path, ws: WsUpstream, echo: Upstream) -> Iterator[DataPlane]:
    with dataplane(workdir, document(ws, echo)) as node:
        yield node


def open_ws(node: DataPlane, path: str, **options: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{node.port}{path}", max_size=None, open_timeout=10, **options)


@dataclass
class Refusal:
    """The answer to a handshake the gateway or the upstream refused."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def refusal(node: DataPlane, path: str, **options: Any) -> Refusal:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(node, path, **options).close()
    response = refused.value.response
    headers = {name.lower(): value for name, value in response.headers.raw_items()}
    return Refusal(response.status_code, headers, bytes(response.body or b""))


def tunnels_active(node: DataPlane, endpoint: str) -> float:
    text = httpx.get(f"{node.admin}/-/metrics", timeout=10).text
    found = re.search(r'^gateway_tunnels_active\{endpoint="' + endpoint + r'"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def tunnel_bytes(node: DataPlane, endpoint: str, direction: str) -> float:
    text = httpx.get(f"{node.admin}/-/metrics", timeout=10).text
    labels = f'direction="{direction}",endpoint="{endpoint}"'
    found = re.search(r"^gateway_tunnel_bytes_total\{" + labels + r"\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def log_lines(node: DataPlane) -> list[str]:
    return (node.seed.parent / "dataplane.log").read_text().splitlines()


def raw_handshake(node: DataPlane, path: str, *lines: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    head = f"GET {path} HTTP/1.1\r\nHost: gw.example\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    sock.sendall(head.encode("latin-1"))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """What the gateway sends until it closes the connection; the socket is closed after."""
    received = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


WEBSOCKET_LINES = ("Connection: Upgrade", "Upgrade: websocket", f"Sec-WebSocket-Key: {SAMPLE_KEY}")


# --- the tunnel ------------------------------------------------------------------------------------


def test_text_and_binary_messages_are_echoed_through_the_tunnel(gateway: DataPlane) -> None:
    with open_ws(gateway, "/chat/echo") as client:
        client.send("hello, ü")
        assert client.recv(timeout=10) == "hello, ü"
        client.send(b"\x00\x01\xff binary")
        assert client.recv(timeout=10) == b"\x00\x01\xff binary"


def test_the_101_carries_the_gateways_headers_and_the_upstream_gets_the_forwarded_handshake(
    gateway: DataPlane, ws: WsUpstream
) -> None:
    with open_ws(gateway, "/chat/headers", additional_headers={"X-Request-ID": "ws-req-1"}) as client:
        seen = {name.lower(): value for name, value in json.loads(client.recv(timeout=10)).items()}
        assert client.response is not None
        answered = client.response.headers
    assert answered["X-Request-ID"] == "ws-req-1"
    assert answered["X-Endpoint-ID"] == "chat:v1"
    assert seen["x-request-id"] == "ws-req-1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["via"] == "1.1 e2e-node"
    assert seen["upgrade"] == "websocket"
    assert seen["connection"] == "upgrade"


def test_ten_megabytes_of_messages_pass_both_ways_and_are_counted(gateway: DataPlane) -> None:
    before = tunnel_bytes(gateway, "chat:v1", "to_upstream")
    payloads = [os.urandom(1024 * 1024) for _ in range(10)]
    with open_ws(gateway, "/chat/echo") as client:
        for payload in payloads:
            client.send(payload)
            assert client.recv(timeout=30) == payload
    eventually(lambda: tunnel_bytes(gateway, "chat:v1", "to_upstream") - before > 10 * 1024 * 1024, "bytes counted")
    assert tunnel_bytes(gateway, "chat:v1", "to_client") > 10 * 1024 * 1024


def test_a_ping_gets_its_pong(gateway: DataPlane) -> None:
    with open_ws(gateway, "/chat/echo") as client:
        assert client.ping(b"are you there").wait(timeout=10)


def test_close_codes_pass_through_both_ways(gateway: DataPlane, ws: WsUpstream) -> None:
    with open_ws(gateway, "/chat/close/4001") as client, pytest.raises(ConnectionClosed) as closed:
        client.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")

    with open_ws(gateway, "/chat/echo") as client:
        client.close(4002, "client done")
    eventually(lambda: "closed /echo 4002" in ws.events, "the upstream saw the client's close code")


def test_the_access_line_is_written_when_the_tunnel_ends(gateway: DataPlane) -> None:
    # Random bytes: permessage-deflate (which the client and upstream agree on) cannot shrink them.
    with open_ws(gateway, "/chat/echo", additional_headers={"X-Request-ID": "ws-logged-1"}) as client:
        client.send(os.urandom(2000))
        client.recv(timeout=10)

    def line() -> str | None:
        return next((line for line in log_lines(gateway) if "request_id=ws-logged-1" in line), None)

    eventually(lambda: line() is not None, "the tunnel's access line")
    found = line()
    assert found is not None
    assert "status=101" in found
    assert "endpoint=chat:v1" in found
    bytes_in, bytes_out = re.search(r"bytes_in=(\d+) bytes_out=(\d+)", found).groups()  # type: ignore[union-attr]
    assert int(bytes_in) > 2000
    assert int(bytes_out) > 2000
    assert 'detail="tunnel ended:' in found


# --- the upstream's answer -------------------------------------------------------------------------


def test_an_upstream_refusing_the_handshake_is_passed_back(gateway: DataPlane) -> None:
    response = refusal(gateway, "/chat/refuse")
    assert response.status_code == 403
    assert response.content == b"go away\n"
    assert response.headers["x-endpoint-id"] == "chat:v1"


def test_an_upstream_101_with_a_wrong_accept_is_502(gateway: DataPlane) -> None:
    response = refusal(gateway, "/liar/echo")
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_protocol_error"
    assert "127.0.0.1" not in response.text


def test_a_client_vanishing_mid_stream_closes_the_upstream_side(gateway: DataPlane, ws: WsUpstream) -> None:
    sock = raw_handshake(gateway, "/chat/echo", *WEBSOCKET_LINES, "Sec-WebSocket-Version: 13")
    head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert SAMPLE_ACCEPT.encode() in head
    eventually(lambda: tunnels_active(gateway, "chat:v1") == 1, "the tunnel counted")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: no close frame
    eventually(lambda: "closed /echo 1006" in ws.events, "the upstream side closed")
    eventually(lambda: tunnels_active(gateway, "chat:v1") == 0, "the gauge back to 0")


def test_a_tunnel_silent_both_ways_for_read_idle_timeout_is_closed(gateway: DataPlane) -> None:
    with open_ws(gateway, "/quiet/echo", additional_headers={"X-Request-ID": "ws-idle-1"}) as client:
        client.send("one")
        assert client.recv(timeout=10) == "one"
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=30)
    eventually(
        lambda: any("request_id=ws-idle-1" in line and "tunnel ended: idle" in line for line in log_lines(gateway)),
        "the idle end logged",
    )
    eventually(lambda: tunnels_active(gateway, "quiet:v1") == 0, "the gauge back to 0")


# --- the gateway's own checks ----------------------------------------------------------------------


def test_key_auth_applies_to_the_handshake(gateway: DataPlane) -> None:
    response = refusal(gateway, "/locked/echo")
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    with open_ws(gateway, "/locked/headers", additional_headers={"apikey": KEY}) as client:
        seen = {name.lower(): value for name, value in json.loads(client.recv(timeout=10)).items()}
    assert seen["x-consumer-username"] == "partner"


def test_an_endpoint_with_websocket_false_refuses_the_upgrade_with_403(gateway: DataPlane) -> None:
    response = refusal(gateway, "/closed/echo")
    assert (response.status_code, response.json()["error"]) == (403, "upgrade_forbidden")
    # Plain requests still pass on that endpoint (the websockets server answers them 426 itself).
    assert httpx.get(f"{gateway.url}/closed/echo").status_code == 426


def test_a_handshake_without_a_key_is_400(gateway: DataPlane) -> None:
    sock = raw_handshake(
        gateway, "/chat/echo", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"
    )
    answer = RawAnswer(read_all(sock))
    assert (answer.status, answer.error()) == (400, "bad_request")
    assert "Sec-WebSocket-Key" in answer.json()["message"]


def test_a_handshake_of_another_version_is_400_naming_13(gateway: DataPlane) -> None:
    sock = raw_handshake(gateway, "/chat/echo", *WEBSOCKET_LINES, "Sec-WebSocket-Version: 8")
    answer = RawAnswer(read_all(sock))
    assert (answer.status, answer.error()) == (400, "bad_request")
    assert answer.header("sec-websocket-version") == ["13"]


def test_a_handshake_with_a_malformed_key_is_400(gateway: DataPlane) -> None:
    sock = raw_handshake(
        gateway,
        "/chat/echo",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: \x01not base64",
        "Sec-WebSocket-Version: 13",
    )
    answer = RawAnswer(read_all(sock))
    assert (answer.status, answer.error()) == (400, "bad_request")


# --- attacks ---------------------------------------------------------------------------------------


def test_an_upgrade_smuggled_in_a_trailer_is_an_ordinary_request(gateway: DataPlane) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(
        b"POST /plain/echo HTTP/1.1\r\nHost: gw.example\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
        + f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        + b"GET /plain/echo HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n"
    )
    received = read_all(sock)
    sock.close()
    assert b" 101 " not in received
    head, _, rest = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    first = RawAnswer(head + b"\r\n\r\n" + rest[:length])
    assert first.status == 200
    assert first.upstream_got("upgrade") == []
    assert first.upstream_got("sec-websocket-key") == []
    assert received.count(b"HTTP/1.1 200 ") == 2  # the next request was parsed as HTTP, not tunnelled


def test_connection_upgrade_without_an_upgrade_header_is_an_ordinary_request(gateway: DataPlane) -> None:
    sock = raw_handshake(
        gateway,
        "/plain/echo",
        "Connection: Upgrade, close",
        f"Sec-WebSocket-Key: {SAMPLE_KEY}",
        "Sec-WebSocket-Version: 13",
    )
    answer = RawAnswer(read_all(sock))
    assert answer.status == 200
    assert answer.upstream_got("connection") == []
    assert answer.upstream_got("upgrade") == []


def test_an_upgrade_header_without_connection_upgrade_is_an_ordinary_request(gateway: DataPlane) -> None:
    sock = raw_handshake(gateway, "/plain/echo", "Upgrade: websocket", "Connection: close")
    answer = RawAnswer(read_all(sock))
    assert answer.status == 200
    assert answer.upstream_got("upgrade") == []


def test_a_frame_claiming_two_to_the_62_bytes_is_the_upstreams_to_refuse(gateway: DataPlane) -> None:
    sock = raw_handshake(gateway, "/chat/echo", *WEBSOCKET_LINES, "Sec-WebSocket-Version: 13")
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    # FIN + binary, masked, 64-bit length 2^62, a mask, and a little of the promised payload.
    sock.sendall(b"\x82\xff" + (1 << 62).to_bytes(8, "big") + b"\x01\x02\x03\x04" + b"x" * 4096)
    received = rest + read_all(sock)
    # The upstream closes with 1009 (message too big); its close frame reaches the client.
    assert received[:1] == b"\x88"
    assert received[2:4] == (1009).to_bytes(2, "big")
    eventually(lambda: tunnels_active(gateway, "chat:v1") == 0, "the gauge back to 0")


def test_a_client_that_never_reads_stops_its_own_sending_instead_of_growing_the_nodes_memory(
    gateway: DataPlane,
) -> None:
    """Back-pressure end to end: the echoes pile up toward a client that reads nothing, the node stops
    reading from the upstream, the upstream stops reading, and the node stops reading from the client,
    whose sending then stalls, long before 256 MiB."""
    sock = raw_handshake(gateway, "/chat/echo", *WEBSOCKET_LINES, "Sec-WebSocket-Version: 13")
    head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    # A masked binary frame of 1 MiB (a zero mask leaves the payload as it is).
    frame = b"\x82\xff" + (1 << 20).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"m" * (1 << 20)
    sent = 0
    sock.settimeout(5)
    with sock:
        try:
            while sent < 256 << 20:
                sent += sock.send(frame)
        except TimeoutError:
            pass
        assert sent < 256 << 20, "nothing pushed back"
        assert rss_mib(gateway.process.pid) < 200
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    eventually(lambda: tunnels_active(gateway, "chat:v1") == 0, "the gauge back to 0")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_single_four_megabyte_frame_is_relayed_whole(gateway: DataPlane) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    with open_ws(gateway, "/chat/echo") as client:
        client.send(payload)
        assert client.recv(timeout=30) == payload


# --- the node's life: swaps, the cap, drain --------------------------------------------------------


def test_an_https_target_is_tunnelled_over_verified_tls(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with ws_upstream(tls=(cert, key)) as secure:
        target = f"https://127.0.0.1:{secure.port}"
        seed = {
            "format_version": 1,
            "endpoints": [
                {"name": "secure", "version": "v1", "targets": [{"url": target}], "tls": {"ca_file": str(cert)}},
                {"name": "untrusted", "version": "v1", "targets": [{"url": target}]},
            ],
        }
        with dataplane(tmp_path, seed) as node:
            with open_ws(node, "/secure/echo") as client:
                client.send("over tls")
                assert client.recv(timeout=10) == "over tls"
            # Without the CA the certificate is not trusted: no tunnel, and no TLS text for the client.
            response = refusal(node, "/untrusted/echo")
            assert (response.status_code, response.json()["error"]) == (502, "upstream_unavailable")
            assert response.json()["message"] == "the TLS handshake with the upstream failed"


def test_tunnels_on_every_worker_add_up_in_the_supervisors_metrics(tmp_path: Path, ws: WsUpstream) -> None:
    seed = {"format_version": 1, "endpoints": [{"name": "chat", "version": "v1", "targets": [{"url": ws.url}]}]}
    with dataplane(tmp_path, seed, workers=2) as node:
        with ExitStack() as stack:
            clients = [stack.enter_context(open_ws(node, "/chat/echo")) for _ in range(4)]
            for client in clients:
                client.send("hi")
                assert client.recv(timeout=10) == "hi"
            eventually(lambda: tunnels_active(node, "chat:v1") == 4, "four tunnels counted")
        eventually(lambda: tunnels_active(node, "chat:v1") == 0, "the gauge back to 0")
        assert tunnel_bytes(node, "chat:v1", "to_client") > 0


def test_a_tunnel_survives_a_config_swap_that_removes_its_endpoint(tmp_path: Path, ws: WsUpstream) -> None:
    def seed(name: str) -> dict[str, Any]:
        return {"format_version": 1, "endpoints": [{"name": name, "version": "v1", "targets": [{"url": ws.url}]}]}

    with dataplane(tmp_path, seed("chat")) as node, open_ws(node, "/chat/echo") as client:
        client.send("before")
        assert client.recv(timeout=10) == "before"
        node.seed.write_text(json.dumps(seed("other")))
        node.process.send_signal(signal.SIGHUP)
        eventually(lambda: httpx.get(f"{node.url}/chat/echo").status_code == 404, "the new config applied")
        client.send("after")
        assert client.recv(timeout=10) == "after"


def test_a_tunnel_counts_toward_the_concurrency_cap(tmp_path: Path, ws: WsUpstream) -> None:
    seed = {"format_version": 1, "endpoints": [{"name": "chat", "version": "v1", "targets": [{"url": ws.url}]}]}
    with dataplane(tmp_path, seed, DATAPLANE_MAX_CONCURRENCY="1") as node:
        with open_ws(node, "/chat/echo") as client:
            client.send("hold")
            assert client.recv(timeout=10) == "hold"
            response = httpx.get(f"{node.url}/chat/echo")
            assert (response.status_code, response.json()["error"]) == (503, "overloaded")
        eventually(lambda: httpx.get(f"{node.url}/chat/echo").status_code == 426, "the slot freed")


def test_sigterm_gives_open_tunnels_a_grace_period_then_closes_them(tmp_path: Path, ws: WsUpstream) -> None:
    seed = {"format_version": 1, "endpoints": [{"name": "chat", "version": "v1", "targets": [{"url": ws.url}]}]}
    with dataplane(tmp_path, seed, DATAPLANE_TUNNEL_GRACE="5") as node:
        with open_ws(node, "/chat/echo", additional_headers={"X-Request-ID": "ws-drain-1"}) as client:
            client.send("before")
            assert client.recv(timeout=10) == "before"
            node.process.send_signal(signal.SIGTERM)
            client.send("during the grace period")
            assert client.recv(timeout=10) == "during the grace period"
            with pytest.raises(ConnectionClosed):
                while True:
                    client.recv(timeout=60)
        assert node.process.wait(timeout=60) == 0
    assert any("request_id=ws-drain-1" in line and "tunnel ended: drain" in line for line in log_lines(node))
