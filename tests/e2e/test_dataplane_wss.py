"""`wss://` through the data plane (ARCHITECTURE §13: TLS termination and WebSocket together), on real
processes: certificates made with openssl as docs/dataplane.md tells a user (one file for a name and a
wildcard, one for `localhost`), the TLS listener, a real `websockets` server upstream (plain ws), and the
`websockets` client verifying the certificate. Echo, 5 MB, close codes, `X-Forwarded-Proto: https`,
key_auth on the handshake, a certificate swapped under an open tunnel, `https_redirect` for a ws://
upgrade, the gateway's own close frame (1001) on idle and on drain, and the docs' wss example as written."""

from __future__ import annotations

import json
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from configdoc.consumers import hash_key
from tests.dataplane.processes import DataPlane, dataplane
from tests.dataplane.ws_upstream import WsUpstream, ws_upstream
from tests.e2e.servers import ROOT, clean_env, eventually, free_port

pytestmark = pytest.mark.e2e

KEY = "wss-e2e-key-Qm81xT3b"


def openssl_certificate(folder: Path, file: str, names: str) -> bytes:
    """What docs/dataplane.md's TLS example does: a self-signed P-256 certificate for `names` (a
    subjectAltName value) and its key, in one file of the folder. Returns the certificate (what a
    client trusts)."""
    command = (
        'openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 -subj "/CN=gw" '
        f'-addext "subjectAltName={names}" -keyout key.pem -out cert.pem 2>/dev/null\n'
        f"cat cert.pem key.pem > certs/.{file}.partial && mv certs/.{file}.partial certs/{file} && rm key.pem"
    )
    subprocess.run(["bash", "-euc", command], cwd=folder.parent, env=clean_env(), check=True, timeout=60)
    return (folder.parent / "cert.pem").read_bytes()


@dataclass
class Edge:
    node: DataPlane
    tls_port: int
    certs: Path
    trust: Path  # the certificates a client trusts (every one written so far)

    def trust_also(self, pem: bytes) -> None:
        self.trust.write_bytes(self.trust.read_bytes() + pem)


def document(ws: WsUpstream) -> dict[str, Any]:
    def endpoint(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "version": "v1", "targets": [{"url": ws.url}], **fields}

    return {
        "format_version": 2,
        "consumers": [{"username": "partner", "key_auth": [{"key_sha256": hash_key(KEY), "label": "wss"}]}],
        "endpoints": [
            endpoint("chat"),
            endpoint("quiet", read_idle_timeout=1),
            endpoint("locked", plugins={"key_auth": {"key_names": ["apikey"]}}),
            endpoint("secure", https_redirect=True),
        ],
    }


@contextmanager
def running_edge(tmp: Path, ws: WsUpstream, **env: str) -> Iterator[Edge]:
    certs = tmp / "certs"
    certs.mkdir()
    trust = tmp / "trust.pem"
    trust.write_bytes(
        openssl_certificate(certs, "default.pem", "DNS:api.example.com,DNS:*.apps.example.com")
        + openssl_certificate(certs, "localhost.pem", "DNS:localhost")
    )
    tls_port = free_port()
    with dataplane(
        tmp,
        document(ws),
        DATAPLANE_TLS_LISTEN=f"127.0.0.1:{tls_port}",
        DATAPLANE_TLS_CERTS=str(certs),
        DATAPLANE_TLS_POLL="3600",  # only SIGHUP re-reads the folder here
        **env,
    ) as node:
        yield Edge(node, tls_port, certs, trust)


@pytest.fixture(scope="module")
def ws() -> Iterator[WsUpstream]:
    with ws_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, ws: WsUpstream) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("wss"), ws) as running:
        yield running


class OneTlsCallAtATime(ssl.SSLSocket):
    """An SSLSocket whose reads and writes never run at once. `websockets`' sync client reads in a thread
    of its own (blocked in recv) while the caller's thread sends, and CPython 3.11 lets SSL_read and
    SSL_write into one OpenSSL session together, which it does not allow: now and then the handshake
    request was lost as the reader took the server's TLS 1.3 session tickets, and the client waited
    10 s for an answer to a request the gateway never saw (its upstream saw none either; reproduced
    about once in 900 connections, with or without the gateway reloading its certificates). Each call
    here takes a lock, does what it can without blocking, and waits for the socket with the lock
    released, so a reader waiting for data never holds up a writer, nor a blocked writer a reader."""

    _one_at_a_time: threading.Lock

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> OneTlsCallAtATime:
        sock = super()._create(*args, **kwargs)  # type: ignore[misc]  # the handshake, before any thread
        sock._one_at_a_time = threading.Lock()
        return sock  # type: ignore[no-any-return]

    def _wait(self, error: ssl.SSLError) -> None:
        want_write = isinstance(error, ssl.SSLWantWriteError)
        select.select([] if want_write else [self], [self] if want_write else [], [])

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        while True:
            with self._one_at_a_time:
                self.setblocking(False)
                try:
                    return super().recv(buflen, flags)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as error:
                    waiting: ssl.SSLError = error
                finally:
                    self.setblocking(True)
            self._wait(waiting)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while view:
            with self._one_at_a_time:
                self.setblocking(False)
                try:
                    # A retry after a want-write passes the same bytes, as OpenSSL asks.
                    view = view[super().send(view[: 16 * 1024], flags) :]
                    continue
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as error:
                    waiting: ssl.SSLError = error
                finally:
                    self.setblocking(True)
            self._wait(waiting)


def open_wss(edge: Edge, path: str, name: str = "api.example.com", **options: Any) -> ClientConnection:
    """A `websockets` client on the TLS listener, asking for `name` by SNI and verifying the certificate
    against the trusted ones (as a client of api.example.com would, its DNS pointing here)."""
    context = ssl.create_default_context(cafile=str(edge.trust))
    context.sslsocket_class = OneTlsCallAtATime
    return connect(
        f"wss://127.0.0.1:{edge.tls_port}{path}",
        ssl=context,
        server_hostname=name,
        max_size=None,
        open_timeout=10,
        **options,
    )


def served_serial(client: ClientConnection) -> int:
    sock = client.socket
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def closed_by(client: ClientConnection) -> ConnectionClosed:
    """Read until the connection ends; the ConnectionClosed it ended with."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            client.recv(timeout=30)
    return closed.value


# --- the tunnel over TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api.example.com", "tenant-7.apps.example.com"])
def test_text_and_binary_are_echoed_over_wss_with_the_certificate_verified(edge: Edge, name: str) -> None:
    with open_wss(edge, "/v1/chat/echo", name) as client:
        client.send("hello over tls, ü")
        assert client.recv(timeout=10) == "hello over tls, ü"
        client.send(b"\x00\xff binary")
        assert client.recv(timeout=10) == b"\x00\xff binary"


def test_a_five_megabyte_message_passes_both_ways(edge: Edge) -> None:
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    with open_wss(edge, "/v1/chat/echo") as client:
        client.send(payload)
        assert client.recv(timeout=60) == payload


def test_close_codes_pass_through_both_ways(edge: Edge, ws: WsUpstream) -> None:
    with open_wss(edge, "/v1/chat/close/4001") as client:
        closed = closed_by(client)
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (4001, "bye")
    with open_wss(edge, "/v1/chat/echo") as client:
        client.send("x")
        client.recv(timeout=10)
        client.close(4002, "client done")
    eventually(lambda: "closed /echo 4002" in ws.events, "the upstream saw the client's close code")


def test_the_upstream_sees_x_forwarded_proto_https(edge: Edge) -> None:
    with open_wss(edge, "/v1/chat/headers") as client:
        seen = {name.lower(): value for name, value in json.loads(client.recv(timeout=10)).items()}
    assert seen["x-forwarded-proto"] == "https"
    assert seen["upgrade"] == "websocket"


def test_key_auth_applies_to_the_wss_handshake(edge: Edge) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_wss(edge, "/v1/locked/echo").close()
    assert refused.value.response.status_code == 401
    assert json.loads(bytes(refused.value.response.body or b""))["error"] == "unauthorized"
    with open_wss(edge, "/v1/locked/headers", additional_headers={"apikey": KEY}) as client:
        seen = {name.lower(): value for name, value in json.loads(client.recv(timeout=10)).items()}
    assert seen["x-consumer-username"] == "partner"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_wss_client_that_never_reads_stops_its_own_sending_instead_of_growing_the_nodes_memory(
    edge: Edge,
) -> None:
    """Back-pressure through TLS: the echoes pile up toward a client that reads nothing; the node stops
    reading from the upstream, which stops reading, and the node stops reading from the client, whose
    sending stalls long before 256 MiB (TLS buffers in the node included)."""
    context = ssl.create_default_context(cafile=str(edge.trust))
    raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=30)
    sock = context.wrap_socket(raw, server_hostname="api.example.com")
    sock.sendall(
        b"GET /v1/chat/echo HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 101 ")
    frame = b"\x82\xff" + (1 << 20).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"m" * (1 << 20)
    sent = 0
    sock.settimeout(5)
    with sock:
        try:
            while sent < 256 << 20:
                sock.sendall(frame)
                sent += len(frame)
        except TimeoutError:
            pass
        assert sent < 256 << 20, "nothing pushed back"
        assert rss_mib(edge.node.process.pid) < 200
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- https_redirect and a plain ws:// upgrade -------------------------------------------------------


def test_a_ws_upgrade_to_an_https_redirect_endpoint_gets_308_to_its_wss_url(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.node.port), timeout=10) as sock:
        sock.sendall(
            b"GET /v1/secure/echo?room=1 HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 308 ")
    assert f"location: wss://api.example.com:{edge.tls_port}/v1/secure/echo?room=1".encode() in answer.lower()
    # A plain request to the same endpoint still goes to https://.
    response = httpx.get(f"{edge.node.url}/v1/secure/echo", headers={"Host": "api.example.com"})
    assert response.headers["location"] == f"https://api.example.com:{edge.tls_port}/v1/secure/echo"


def test_a_websockets_client_follows_the_redirect_from_ws_to_wss(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client's default TLS context trusts the test certificates (OpenSSL reads SSL_CERT_FILE).
    monkeypatch.setenv("SSL_CERT_FILE", str(edge.trust))
    with connect(f"ws://localhost:{edge.node.port}/v1/secure/headers", open_timeout=10) as client:
        seen = {name.lower(): value for name, value in json.loads(client.recv(timeout=10)).items()}
        assert isinstance(client.socket, ssl.SSLSocket)
    assert seen["x-forwarded-proto"] == "https"


# --- certificates swapped under an open tunnel -----------------------------------------------------


def test_a_certificate_swapped_on_sighup_leaves_an_open_tunnel_alone_and_serves_new_connections(
    tmp_path: Path, ws: WsUpstream
) -> None:
    with running_edge(tmp_path, ws) as edge:
        with open_wss(edge, "/v1/chat/echo") as held:
            before = served_serial(held)
            held.send("before the swap")
            assert held.recv(timeout=10) == "before the swap"
            fresh = openssl_certificate(edge.certs, "default.pem", "DNS:api.example.com,DNS:*.apps.example.com")
            edge.trust_also(fresh)
            edge.node.process.send_signal(signal.SIGHUP)

            def new_connections_get_the_new_certificate() -> bool:
                with open_wss(edge, "/v1/chat/echo") as probe:
                    return served_serial(probe) == serial_of(fresh)

            eventually(new_connections_get_the_new_certificate, "the new certificate served", timeout=30)
            assert serial_of(fresh) != before
            held.send(b"after the swap" * 1000)
            assert held.recv(timeout=10) == b"after the swap" * 1000
            assert served_serial(held) == before


# --- the gateway's own end: a close frame, 1001 --------------------------------------------------


def test_an_idle_wss_tunnel_is_closed_with_1001_on_both_sides(edge: Edge, ws: WsUpstream) -> None:
    with open_wss(edge, "/v1/quiet/idle") as client:
        client.send("one")
        assert client.recv(timeout=10) == "one"
        closed = closed_by(client)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "idle timeout")
    eventually(lambda: "closed /idle 1001" in ws.events, "the upstream got the close frame, masked")


def test_a_drained_wss_tunnel_is_closed_with_1001_after_the_grace_period(tmp_path: Path) -> None:
    with ws_upstream() as fresh:
        with running_edge(tmp_path, fresh, DATAPLANE_TUNNEL_GRACE="1") as edge:
            with open_wss(edge, "/v1/chat/echo") as client:
                client.send("before")
                assert client.recv(timeout=10) == "before"
                edge.node.process.send_signal(signal.SIGTERM)
                closed = closed_by(client)
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "gateway shutting down")
            assert edge.node.process.wait(timeout=60) == 0
        eventually(lambda: "closed /echo 1001" in fresh.events, "the upstream got the close frame")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_tunnel_opened_after_the_node_began_stopping_gets_the_grace_period_then_1001(tmp_path: Path) -> None:
    """The handshake is with the upstream when SIGTERM comes: the connection has no tunnel yet when the
    server asks it to shut down, and the tunnel opened after still ends after the grace period, as
    `drain`, not when the server's own shutdown limit cancels the request."""
    with ws_upstream() as held:
        with running_edge(tmp_path, held, DATAPLANE_TUNNEL_GRACE="3") as edge:
            outcome: dict[str, Any] = {}

            def talk() -> None:
                headers = {"X-Request-ID": "wss-late-1"}
                try:
                    with open_wss(edge, "/v1/chat/hold", additional_headers=headers) as client:
                        client.send("late")
                        outcome["echo"] = client.recv(timeout=10)
                        outcome["closed"] = closed_by(client)
                except Exception as exc:  # noqa: BLE001 - reported to the test's thread below
                    outcome["error"] = exc

            thread = threading.Thread(target=talk)
            thread.start()
            eventually(lambda: len(held.requests) == 1 or "error" in outcome, "the handshake held by the upstream")
            assert "error" not in outcome, outcome
            edge.node.process.send_signal(signal.SIGTERM)
            # The listener closes in the same turn of the node's loop as its connections are asked to shut
            # down: once a connection is refused, the held connection has been asked (and has no tunnel).
            eventually(lambda: refused(edge.node.port), "the server stopping")
            held.released.set()
            thread.join(90)
            assert "error" not in outcome, outcome
            assert outcome["echo"] == "late"
            closed = outcome["closed"]
            assert closed.rcvd is not None and closed.rcvd.code == 1001
            assert edge.node.process.wait(timeout=60) == 0
        lines = (tmp_path / "dataplane.log").read_text().splitlines()
        assert any("request_id=wss-late-1" in line and "tunnel ended: drain" in line for line in lines)


# --- the example of docs/dataplane.md --------------------------------------------------------------


def test_the_docs_wss_example_runs_as_written(tmp_path: Path, ws: WsUpstream) -> None:
    page = (ROOT / "docs" / "dataplane.md").read_text(encoding="utf-8")
    tls = page.split("## TLS termination", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    section = page.split("**wss://**", 1)[1]
    shell = section.split("```sh\n", 1)[1].split("```", 1)[0]
    client = section.split("```python\n", 1)[1].split("```", 1)[0]
    tls_port, plain_port, admin_port = free_port(), free_port(), free_port()
    ports = {":8443": f":{tls_port}", ":8020": f":{ws.port}"}
    for documented, free in ports.items():
        shell = shell.replace(documented, free)
        client = client.replace(documented, free)
    # The folder as the TLS example makes it (its lines up to the seed).
    tls_lines = tls.replace("\\\n", "").splitlines()
    folder = tls_lines[: next(i for i, line in enumerate(tls_lines) if line.startswith("cat > seed.yaml"))]
    subprocess.run(["bash", "-euc", "\n".join(folder)], cwd=tmp_path, env=clean_env(), check=True, timeout=60)
    lines = shell.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("DATAPLANE_TLS_LISTEN="))
    subprocess.run(["bash", "-euc", "\n".join(lines[:start])], cwd=tmp_path, env=clean_env(), check=True, timeout=60)
    words = lines[start].split(" &")[0].split()
    variables = dict(word.split("=", 1) for word in words if word.startswith("DATAPLANE_"))
    argv = [sys.executable if word == "python" else word for word in words if not word.startswith("DATAPLANE_")]
    env = clean_env(
        **variables,
        DATAPLANE_LISTEN=f"127.0.0.1:{plain_port}",
        DATAPLANE_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
        PYTHONPATH=str(ROOT),
    )
    (tmp_path / "wss_hello.py").write_text(client)
    with (tmp_path / "dataplane.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: httpx.get(f"http://127.0.0.1:{admin_port}/-/readyz").status_code == 200, "ready")
            said = subprocess.run(
                [sys.executable, "wss_hello.py"],
                cwd=tmp_path,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert said.returncode == 0, said.stderr
            assert said.stdout.splitlines() == ["hello over wss"]
        finally:
            process.terminate()
            process.wait(timeout=40)


def test_a_client_stalled_mid_frame_gets_1001_while_the_upstream_is_cut(edge: Edge, ws: WsUpstream) -> None:
    """Hostile: half a frame sent, then silence. The stream toward the upstream is mid-frame, where no
    close frame may go: the upstream is cut (1006); the client's stream is between frames: it gets 1001."""
    context = ssl.create_default_context(cafile=str(edge.trust))
    raw = socket.create_connection(("127.0.0.1", edge.tls_port), timeout=30)
    with context.wrap_socket(raw, server_hostname="api.example.com") as sock:
        sock.sendall(
            b"GET /v1/quiet/half HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 101 ")
        rest = received.partition(b"\r\n\r\n")[2]
        # A masked binary frame announcing 1000 bytes, and only 10 of them.
        sock.sendall(b"\x82\xfe" + (1000).to_bytes(2, "big") + b"\x00\x00\x00\x00" + b"x" * 10)
        try:
            while chunk := sock.recv(65536):
                rest += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    assert rest[:1] == b"\x88" and rest[2:4] == (1001).to_bytes(2, "big"), rest[:40]
    eventually(lambda: "closed /half 1006" in ws.events, "the upstream cut, not sent a frame")
