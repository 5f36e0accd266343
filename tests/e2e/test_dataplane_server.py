"""The data plane's HTTP/1.1 server (dataplane/server.py) as a real process, over raw sockets: what a
client can put on the wire that the ASGI layer must never see (trailers as headers, a bad Host, an
HTTP version it does not speak), HTTP/1.0 keep-alive, and the send deadline for slow readers."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dataplane.processes import DataPlane, Upstream, dataplane, raw_exchange, seed, upstream
from tests.e2e.servers import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dataplane-server")


@pytest.fixture(scope="module")
def origin(workdir: Path) -> Iterator[Upstream]:
    with upstream(workdir, "echo") as server:
        yield server


def document(origin: Upstream) -> dict[str, object]:
    return seed(
        {
            "name": "users",
            "version": "v1",
            "default": True,
            "methods": ["GET", "POST"],
            "targets": [{"url": f"{origin.url}/api"}],
            "max_body_bytes": 2_000_000,
        },
        {"name": "files", "version": "v1", "targets": [{"url": origin.url}], "timeout": 30},
    )


@pytest.fixture(scope="module")
def gateway(workdir: Path, origin: Upstream) -> Iterator[DataPlane]:
    with dataplane(workdir, document(origin)) as node:
        yield node


def answers(received: bytes) -> list[tuple[bytes, bytes]]:
    """The (head, body) of each complete Content-Length-delimited answer in `received`, in order."""
    found = []
    while received.startswith(b"HTTP/1.1 "):
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        if len(rest) < length:
            break  # not all here yet
        found.append((head, rest[:length]))
        received = rest[length:]
    return found


def upstream_headers(body: bytes) -> dict[str, str]:
    """The headers the echo upstream received, by lower-cased name."""
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


def error_of(answer: bytes, status: bytes) -> dict[str, object]:
    """The one answer in `answer`: `status`, `connection: close`, the gateway's JSON error body; closed after."""
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert len(re.findall(rb"(?:^|\r\n)HTTP/1\.1 \d{3} ", answer)) == 1, answer  # one answer
    assert not answer.endswith(b"<<still open>>"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head.lower() and b"\r\ncontent-type: application/json" in head.lower()
    error = json.loads(body)
    assert set(error) == {"error", "message", "request_id", "endpoint"}, error
    return error


# --- request trailers ------------------------------------------------------------------------------

TRAILER = b"Authorization: Bearer smuggled\r\nCookie: session=smuggled\r\nX-Admin: 1\r\n\r\n"
AFTER = b"GET /users/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
CHUNKED_HEAD = b"POST /users/trailer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Admin\r\n\r\n"


def test_trailer_fields_sent_with_the_body_never_reach_the_upstream_as_headers(gateway: DataPlane) -> None:
    received = raw_exchange(
        gateway.port,
        CHUNKED_HEAD
        + b"5\r\nhello\r\n0\r\n"
        + TRAILER
        + b"GET /users/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    (first_head, first), (second_head, second) = answers(received)
    assert first_head.startswith(b"HTTP/1.1 200 ") and second_head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(first)["body"] == "hello"
    for body in (first, second):
        headers = upstream_headers(body)
        assert not {"authorization", "cookie", "x-admin"} & set(headers), headers
    assert json.loads(second)["raw_path"] == "/api/after"


def test_trailer_fields_sent_later_never_reach_the_upstream_as_headers(gateway: DataPlane) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n")
        time.sleep(0.3)
        sock.sendall(TRAILER + AFTER)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    (first_head, first), (_, second) = answers(received)
    assert first_head.startswith(b"HTTP/1.1 200 ") and json.loads(first)["body"] == "hello"
    for body in (first, second):
        assert not {"authorization", "cookie", "x-admin"} & set(upstream_headers(body))
    assert json.loads(second)["raw_path"] == "/api/after"


# --- Host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [b"evil.example/x", b"a b", b"", b"host:80:80", b"host:http", b"a@b", b"[::1", b"host:99999", b"a,b"],
    ids=["path", "space", "empty", "two-ports", "named-port", "userinfo", "open-bracket", "port-range", "comma"],
)
def test_an_invalid_host_is_refused_with_400(gateway: DataPlane, origin: Upstream, host: bytes) -> None:
    before = len(httpx.get(f"{origin.url}/_seen").json())
    answer = raw_exchange(gateway.port, b"GET /users/host HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    error = error_of(answer, b"400 ")
    assert error["error"] == "bad_request" and "Host" in str(error["message"])
    assert len(httpx.get(f"{origin.url}/_seen").json()) == before  # nothing went upstream


@pytest.mark.parametrize(
    "host", [b"api.example.com", b"api.example.com:8080", b"127.0.0.1:80", b"[::1]:8443", b"[2001:db8::1]", b"x"]
)
def test_a_valid_host_goes_upstream_as_x_forwarded_host(gateway: DataPlane, host: bytes) -> None:
    answer = raw_exchange(gateway.port, b"GET /users/host HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    ((head, body),) = answers(answer)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert upstream_headers(body)["x-forwarded-host"] == host.decode()


def test_an_invalid_authority_in_an_absolute_form_target_is_refused_with_400(gateway: DataPlane) -> None:
    answer = raw_exchange(gateway.port, b"GET http://a@b/users/x HTTP/1.1\r\nHost: b\r\n\r\n")
    assert error_of(answer, b"400 ")["error"] == "bad_request"


def test_an_invalid_host_pipelined_behind_a_good_request_is_refused_after_its_answer(gateway: DataPlane) -> None:
    answer = raw_exchange(
        gateway.port, b"GET /users/first HTTP/1.1\r\nHost: x\r\n\r\nGET /users/second HTTP/1.1\r\nHost: a b\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    refused = answer.index(b"HTTP/1.1 400 ")
    assert b'"/api/first"' in answer[:refused]
    assert error_of(answer[refused:], b"400 ")["error"] == "bad_request"


# --- HTTP versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/9.9", b"HTTP/0.9"])
def test_a_request_line_of_another_http_version_answers_505_and_closes(
    gateway: DataPlane, origin: Upstream, version: bytes
) -> None:
    before = len(httpx.get(f"{origin.url}/_seen").json())
    answer = raw_exchange(gateway.port, b"GET /users/v " + version + b"\r\nHost: x\r\n\r\n")
    error = error_of(answer, b"505 ")
    assert error["error"] == "http_version_not_supported" and "HTTP/1.1" in str(error["message"])
    assert len(httpx.get(f"{origin.url}/_seen").json()) == before


def test_an_http_1_0_keep_alive_request_keeps_the_connection_with_a_length_delimited_body(gateway: DataPlane) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        for name in ("one", "two"):
            sock.sendall(f"GET /users/{name} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".encode())
            received = b""
            while not (found := answers(received)):
                chunk = sock.recv(65536)
                assert chunk, f"closed before answering {name}: {received!r}"
                received += chunk
            ((head, body),) = found
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"\r\nconnection: keep-alive" in head.lower() and b"transfer-encoding" not in head.lower()
            assert json.loads(body)["raw_path"] == f"/api/{name}"
        # A streamed (unknown-length) answer cannot be delimited for HTTP/1.0 but by the close.
        sock.sendall(b"GET /files/chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"chunk4;")
    assert b"\r\nconnection: close" in received.lower() and b"transfer-encoding" not in received.lower()


# --- slow readers ----------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def connected(sock: socket.socket) -> bool:
    """Whether the kernel still has the connection established (neither reset nor closed by the peer):
    a slow reader cannot learn that by reading, with its receive buffer still full."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state == 1  # TCP_ESTABLISHED


def slow_reader(port: int, cut: dict[int, float], index: int, started: threading.Event) -> None:
    """A client with a tiny receive buffer asking for a large body and reading a byte now and then;
    records how long after its request the server cut it off."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        began = time.monotonic()
        sock.sendall(b"GET /files/large?bytes=20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1)
        started.set()
        try:
            while connected(sock) and time.monotonic() - began < 60:
                sock.recv(1)
                time.sleep(0.2)
        except OSError:
            pass  # reset: cut off
        if not connected(sock):
            cut[index] = time.monotonic() - began


def test_slow_readers_are_cut_off_while_a_normal_client_is_served(workdir: Path, origin: Upstream) -> None:
    readers_count = 6
    (workdir / "slow").mkdir()
    with dataplane(workdir / "slow", document(origin), DATAPLANE_SEND_TIMEOUT="1") as node:
        cut: dict[int, float] = {}
        started = [threading.Event() for _ in range(readers_count)]
        readers = [
            threading.Thread(target=slow_reader, args=(node.port, cut, index, started[index]), daemon=True)
            for index in range(readers_count)
        ]
        for reader in readers:
            reader.start()
        for event in started:
            assert event.wait(10)
        statuses = []
        served_beside_all_slow_readers = 0
        with httpx.Client(base_url=node.url, timeout=10) as client:
            while len(cut) < readers_count and len(statuses) < 2000:
                response = client.get("/files/large?bytes=200000")
                statuses.append((response.status_code, len(response.content)))
                served_beside_all_slow_readers += not cut
        for reader in readers:
            reader.join(70)
        peak = peak_rss_mib(node.process.pid)
    assert set(statuses) == {(200, 200000)}
    assert served_beside_all_slow_readers > 0  # requests answered while every slow reader was connected
    assert sorted(cut) == list(range(readers_count)), "a slow reader was never cut off"
    # Cut off after the 1 s send timeout, not after the 20 MB body (hours at this pace).
    assert max(cut.values()) < 30, cut
    # Back-pressure held: each slow reader's 20 MB waited upstream, not in the data plane's memory.
    assert peak < 100, f"peak RSS {peak:.0f} MiB"


def server_side_open(port: int, client_port: int) -> bool:
    """Whether the kernel still keeps a socket of the server on `port` for the client on `client_port`
    (in any state: an orphan in FIN-WAIT-1 still holds its unsent bytes)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote = line.split()[1:3]
            if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return True
    return False


def test_what_the_kernel_holds_for_a_client_that_never_reads_is_dropped_too(workdir: Path, origin: Upstream) -> None:
    """An answer small enough for the kernel's send buffer leaves nothing in the server's own buffer to
    watch: the response completes, the idle connection is closed, and the closed socket would keep the
    bytes (and retry them) for minutes. TCP_USER_TIMEOUT ends it after the send timeout."""
    (workdir / "kernel").mkdir()
    settings = {"DATAPLANE_SEND_TIMEOUT": "1", "DATAPLANE_HEADER_TIMEOUT": "1"}  # idle connections close after 5 s
    with dataplane(workdir / "kernel", document(origin), **settings) as node:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", node.port))
            sock.sendall(b"GET /files/large?bytes=300000 HTTP/1.1\r\nHost: x\r\n\r\n")
            client_port = sock.getsockname()[1]
            eventually(lambda: server_side_open(node.port, client_port), "the connection to be accepted", 10)
            eventually(lambda: not server_side_open(node.port, client_port), "the server to drop it", 20)
            # Never read: all the while the client sat on a full window.
