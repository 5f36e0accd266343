"""HTTP/2 to clients (ARCHITECTURE §13) on real processes: curl over TLS (ALPN) and over plain h2c with
prior knowledge, many streams on one connection, big bodies both ways under flow control, the chain
and the error table over HTTP/2, malformed requests, the floods (rapid reset, PING, SETTINGS, empty
DATA, CONTINUATION without end) each ending only the flooding connection, the idle timeout and the
drain. The RFC 9113 conformance cases (an h2spec equivalent) are in test_dataplane_http2_conformance.py."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from configdoc.consumers import hash_key
from tests.dataplane import h2_frames as raw
from tests.dataplane.h2_frames import RawH2
from tests.dataplane.processes import DataPlane, dataplane, upstream
from tests.dataplane.tls_certs import Authority
from tests.e2e.servers import eventually, free_port

pytestmark = pytest.mark.e2e

KEY = "h2-key-5Gd8wQ1zR7"


def document(origin: str, dead: str) -> dict[str, Any]:
    def endpoint(name: str, url: str = origin, **fields: Any) -> dict[str, Any]:
        return {"name": name, "version": "v1", "methods": ["GET", "POST"], "targets": [{"url": url}], **fields}

    return {
        "format_version": 2,
        "consumers": [{"username": "partner", "key_auth": [{"key_sha256": hash_key(KEY), "label": "k"}]}],
        "endpoints": [
            endpoint("echo"),
            endpoint("keyed", plugins={"key_auth": {"key_names": ["apikey"], "in": ["header"]}}),
            endpoint("dead", dead),
        ],
    }


@dataclass
class Edge:
    node: DataPlane
    tls_port: int
    ca: Authority
    workdir: Path

    @property
    def https(self) -> str:
        return f"https://default.test:{self.tls_port}"

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """curl to the TLS listener, trusting the test CA, with default.test resolving to 127.0.0.1."""
        return curl("--cacert", str(self.ca.path), "--resolve", f"default.test:{self.tls_port}:127.0.0.1", *args)


def start_edge(workdir: Path, origin: str, **env: str) -> Any:
    ca = Authority.create(workdir)
    certs = workdir / "certs"
    certs.mkdir()
    ca.issue(certs / "default.pem", "default.test", "localhost")
    tls_port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: 502
    return (
        ca,
        tls_port,
        dataplane(
            workdir,
            document(origin, dead),
            DATAPLANE_TLS_LISTEN=f"127.0.0.1:{tls_port}",
            DATAPLANE_TLS_CERTS=str(certs),
            DATAPLANE_HEADER_TIMEOUT="5",  # the HTTP/2 idle timeout is the keep-alive one: max(5, this)
            DATAPLANE_SEND_TIMEOUT="3",
            **env,
        ),
    )


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    workdir = tmp_path_factory.mktemp("http2")
    with upstream(workdir) as origin:
        ca, tls_port, running = start_edge(workdir, origin.url)
        with running as node:
            yield Edge(node, tls_port, ca, workdir)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, check=False)


def head_and_body(output: str) -> tuple[str, str]:
    head, _, body = output.partition("\n\n")  # text mode: universal newlines
    return head, body


# --- curl -------------------------------------------------------------------------------------------


def test_curl_gets_http2_over_tls_by_alpn_and_the_upstream_sees_https(edge: Edge) -> None:
    result = edge.curl("-i", "--http2", f"{edge.https}/echo/over-tls?x=1")
    head, body = head_and_body(result.stdout)
    assert head.startswith("HTTP/2 200"), result.stdout + result.stderr
    echo = json.loads(body)
    assert echo["raw_path"] == "/over-tls" and echo["query"] == "x=1"
    assert ["x-forwarded-proto", "https"] in echo["headers"]


def test_curl_gets_http2_with_prior_knowledge_on_the_plain_listener(edge: Edge) -> None:
    result = curl("-i", "--http2-prior-knowledge", f"{edge.node.url}/echo/h2c")
    head, body = head_and_body(result.stdout)
    assert head.startswith("HTTP/2 200"), result.stdout + result.stderr
    echo = json.loads(body)
    assert echo["raw_path"] == "/h2c"
    # :authority became the Host the chain saw (X-Forwarded-Host is built from it).
    assert ["x-forwarded-host", f"127.0.0.1:{edge.node.port}"] in echo["headers"]


def test_http_1_1_is_still_served_on_both_listeners(edge: Edge) -> None:
    assert curl("-i", "--http1.1", f"{edge.node.url}/echo/one").stdout.startswith("HTTP/1.1 200")
    tls = edge.curl("-i", "--http1.1", f"{edge.https}/echo/one")
    assert tls.stdout.startswith("HTTP/1.1 200")


def test_an_h2c_upgrade_offer_is_answered_over_http_1_1(edge: Edge) -> None:
    # RFC 9113 deprecates the Upgrade: h2c dance; prior knowledge and ALPN are the ways in.
    result = curl("-i", "--http2", f"{edge.node.url}/echo/upgrade")
    assert result.stdout.startswith("HTTP/1.1 200"), result.stdout


def test_the_errors_are_the_same_json_over_http2(edge: Edge) -> None:
    for path, status, code in (
        ("/nowhere", 404, "no_route"),
        ("/dead/x", 502, "upstream_unavailable"),
        ("/keyed/x", 401, "unauthorized"),
    ):
        over_h2 = curl("-i", "--http2-prior-knowledge", f"{edge.node.url}{path}")
        over_h1 = httpx.get(f"{edge.node.url}{path}")
        head, body = head_and_body(over_h2.stdout)
        assert head.startswith(f"HTTP/2 {status}"), over_h2.stdout
        assert over_h1.status_code == status
        error = json.loads(body)
        assert error["error"] == over_h1.json()["error"]
        assert error["error"].startswith(code.split("_")[0])
        assert set(error) == set(over_h1.json())


def test_key_auth_admits_a_good_key_over_http2(edge: Edge) -> None:
    result = curl("-i", "--http2-prior-knowledge", "-H", f"apikey: {KEY}", f"{edge.node.url}/keyed/x")
    head, body = head_and_body(result.stdout)
    assert head.startswith("HTTP/2 200"), result.stdout
    assert ["x-consumer-username", "partner"] in json.loads(body)["headers"]
    wrong = curl("-i", "--http2-prior-knowledge", "-H", "apikey: nope", f"{edge.node.url}/keyed/x")
    assert wrong.stdout.startswith("HTTP/2 401") and '"invalid_credentials"' in wrong.stdout


def requests_counted(edge: Edge, method: str) -> float:
    text = httpx.get(f"{edge.node.admin}/-/metrics", timeout=10).text
    prefix = f'gateway_requests_total{{endpoint="echo:v1",method="{method}",status_class="2xx"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_the_access_log_and_metrics_count_http2_requests(edge: Edge) -> None:
    before = requests_counted(edge, "GET")
    curl("--http2-prior-knowledge", f"{edge.node.url}/echo/logged-over-h2")
    log = edge.workdir / "dataplane.log"
    eventually(lambda: 'path="/echo/logged-over-h2"' in log.read_text(), "the access line (written in batches)")
    assert requests_counted(edge, "GET") == before + 1


# --- the h2 library as a client: many streams, big bodies ------------------------------------------


class H2Client:
    """h2's own client over a socket: streams multiplexed on one connection, windows acknowledged."""

    def __init__(self, port: int, *, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        if window is not None:
            self.conn.local_settings.initial_window_size = window
        self.conn.initiate_connection()
        self.flush()
        self.answers: dict[int, dict[str, Any]] = {}
        self.auto_ack = True

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, *, method: str = "GET", body: bytes = b"") -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", path)]
        if body:
            headers.append(("content-length", str(len(body))))
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        self.answers[stream_id] = {"status": 0, "body": b"", "ended": False, "left": body}
        self.flush()
        self.push_body(stream_id)
        return stream_id

    def push_body(self, stream_id: int) -> None:
        """As much of the stream's body as the server's windows allow (RFC 9113 §5.2)."""
        answer = self.answers[stream_id]
        left: bytes = answer["left"]
        while left:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk, left = left[:window], left[window:]
            self.conn.send_data(stream_id, chunk, end_stream=not left)
        answer["left"] = left
        self.flush()

    def pump(self, until: Any, timeout: float = 30.0) -> None:
        self.sock.settimeout(timeout)
        while not until():
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.answers[event.stream_id]["status"] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.answers[event.stream_id]["body"] += event.data
                    if self.auto_ack:
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.answers[event.stream_id]["ended"] = True
                elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                    for stream_id, answer in self.answers.items():
                        if answer["left"] and not answer["ended"]:
                            self.push_body(stream_id)
            self.flush()

    def close(self) -> None:
        self.sock.close()


def test_a_hundred_concurrent_streams_on_one_connection_are_each_answered(edge: Edge) -> None:
    client = H2Client(edge.node.port)
    try:
        streams = {client.request(f"/echo/stream-{index}"): index for index in range(100)}
        client.pump(lambda: all(client.answers[s]["ended"] for s in streams))
    finally:
        client.close()
    for stream_id, index in streams.items():
        answer = client.answers[stream_id]
        assert answer["status"] == 200
        assert json.loads(answer["body"])["raw_path"] == f"/echo/stream-{index}".removeprefix("/echo")


def test_a_big_upload_is_sent_as_the_windows_allow_and_arrives_whole(edge: Edge) -> None:
    body = bytes(range(256)) * (6 * 4096)  # 6 MiB: far over the 256 KiB stream and 1 MiB connection windows
    client = H2Client(edge.node.port)
    try:
        stream_id = client.request("/echo/upload", method="POST", body=body)
        client.pump(lambda: client.answers[stream_id]["ended"], timeout=60)
    finally:
        client.close()
    answer = client.answers[stream_id]
    assert answer["status"] == 200
    assert json.loads(answer["body"])["body_length"] == len(body)


def test_a_big_download_arrives_whole_over_tls(edge: Edge) -> None:
    out = edge.workdir / "download.bin"
    result = edge.curl(
        "--http2",
        "-o",
        str(out),
        "-w",
        "%{http_version} %{size_download}",
        f"{edge.https}/echo/large?bytes=8000000",
    )
    assert result.stdout == "2 8000000", result.stderr
    assert out.read_bytes() == b"L" * 8_000_000


def test_a_reader_that_grants_no_window_gets_no_more_than_its_window_and_others_are_served(edge: Edge) -> None:
    # The client opens a window of 16 KiB and never acknowledges: the server must stop there (the rest
    # waits upstream-side, not in our memory), and the stream is reset after the send deadline.
    client = RawH2(edge.node.port)
    try:
        client.handshake({0x4: 16384})  # SETTINGS_INITIAL_WINDOW_SIZE
        client.send(client.request(1, "/echo/large?bytes=4000000"))
        answer = client.response(1, timeout=15)
        assert answer.status == 200
        assert len(answer.body) <= 16384
        assert answer.reset == raw.CANCEL  # the send deadline (3 s here) gave up on the stream
        assert curl("--http2-prior-knowledge", f"{edge.node.url}/echo/meanwhile").returncode == 0
    finally:
        client.close()


# --- malformed requests: a stream error, the connection lives on ----------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [("connection", "keep-alive")],
        [("transfer-encoding", "chunked")],
        [("keep-alive", "timeout=5")],
        [("upgrade", "websocket")],
        [("proxy-connection", "keep-alive")],
        [("te", "gzip")],
        [("X-Upper", "case")],
    ],
    ids=["connection", "transfer-encoding", "keep-alive", "upgrade", "proxy-connection", "te-gzip", "uppercase"],
)
def test_a_request_with_a_connection_specific_or_bad_field_is_a_stream_error(
    edge: Edge, extra: list[tuple[str, str]]
) -> None:
    client = RawH2(edge.node.port)
    try:
        client.handshake()
        client.send(client.request(1, "/echo/bad", extra=list(extra)))  # type: ignore[arg-type]
        assert client.response(1).reset == raw.PROTOCOL_ERROR
        client.send(client.request(3, "/echo/after"))
        after = client.response(3)
        assert after.status == 200 and json.loads(after.body)["raw_path"] == "/after"
    finally:
        client.close()


def test_te_trailers_is_allowed(edge: Edge) -> None:
    client = RawH2(edge.node.port)
    try:
        client.handshake()
        client.send(client.request(1, "/echo/te", extra=[("te", "trailers")]))
        assert client.response(1).status == 200
    finally:
        client.close()


def test_an_invalid_authority_is_answered_400_as_over_http_1_1(edge: Edge) -> None:
    client = RawH2(edge.node.port)
    try:
        client.handshake()
        client.send(client.request(1, "/echo/x", authority="bad host,evil"))
        answer = client.response(1)
        assert answer.status == 400 and json.loads(answer.body)["error"] == "bad_request"
    finally:
        client.close()


# --- floods: GOAWAY for the flooder, service for the others ----------------------------------------


class Bystander:
    """A well-behaved client asking all along, in a thread, while another floods."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                self.statuses.append(client.get(f"{self.url}/echo/bystander").status_code)

    def __enter__(self) -> Bystander:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        # And once more after the flood: still served.
        self.statuses.append(httpx.get(f"{self.url}/echo/bystander", timeout=10).status_code)
        assert set(self.statuses) == {200}


def flood(client: RawH2, frames: Any, count: int) -> None:
    batch = b"".join(frame.serialize() for frame in frames)
    for _ in range(count):
        client.write(batch)
        if client.closed:
            return


def assert_calmed(client: RawH2, code: int = raw.ENHANCE_YOUR_CALM) -> None:
    assert client.wait_closed(15), "the flooding connection was not closed"
    assert client.goaway is not None and client.goaway.error_code == code


def test_rapid_reset_ends_the_connection_with_enhance_your_calm(edge: Edge) -> None:
    with Bystander(edge.node.url):
        client = RawH2(edge.node.port)
        client.handshake()
        for batch in range(40):
            frames = []
            for index in range(10):
                stream_id = 1 + 2 * (batch * 10 + index)
                frames += [client.request(stream_id, "/echo/slow?seconds=2"), client.rst(stream_id)]
            client.send(*frames)
            if client.closed:
                break
        assert_calmed(client)
        client.close()


def test_a_ping_flood_ends_the_connection(edge: Edge) -> None:
    with Bystander(edge.node.url):
        client = RawH2(edge.node.port)
        client.handshake()
        flood(client, [client.ping()] * 100, 20)
        assert_calmed(client)
        client.close()


def test_a_settings_flood_ends_the_connection(edge: Edge) -> None:
    with Bystander(edge.node.url):
        client = RawH2(edge.node.port)
        client.handshake()
        flood(client, [client.settings({0x3: 100})] * 100, 20)
        assert_calmed(client)
        client.close()


def test_empty_data_frames_end_the_connection(edge: Edge) -> None:
    with Bystander(edge.node.url):
        client = RawH2(edge.node.port)
        client.handshake()
        client.send(client.request(1, "/echo/empty", method="POST", end_stream=False))
        flood(client, [client.data(1, b"")] * 100, 20)
        assert_calmed(client)
        client.close()


def test_continuation_frames_without_end_end_the_connection(edge: Edge) -> None:
    with Bystander(edge.node.url):
        client = RawH2(edge.node.port)
        client.handshake()
        first = client.request(1, "/echo/cont")
        first.flags.discard("END_HEADERS")
        client.send(first)
        flood(client, [client.continuation(1, b"")] * 50, 10)
        assert client.wait_closed(15)
        assert client.goaway is not None and client.goaway.error_code in (raw.PROTOCOL_ERROR, raw.ENHANCE_YOUR_CALM)
        client.close()


def test_more_streams_than_announced_are_refused(edge: Edge) -> None:
    client = RawH2(edge.node.port)
    try:
        client.handshake()
        announced = client.server_settings[0x3]  # SETTINGS_MAX_CONCURRENT_STREAMS
        assert announced == 100
        client.send(*[client.request(1 + 2 * i, "/echo/slow?seconds=1") for i in range(announced + 1)])
        client.wait(lambda: client.goaway is not None or any(f.stream_id == 2 * announced + 1 for f in client.frames))
        refused = client.goaway is not None or client.response(2 * announced + 1).reset is not None
        assert refused
    finally:
        client.close()


# --- idle and drain ---------------------------------------------------------------------------------


def test_an_idle_connection_gets_goaway_and_is_closed(edge: Edge) -> None:
    client = RawH2(edge.node.port)
    try:
        client.handshake()
        client.send(client.request(1, "/echo/before-idle"))
        assert client.response(1).status == 200
        assert client.wait_closed(15)
        assert client.goaway is not None and client.goaway.error_code == raw.NO_ERROR
        assert client.goaway.last_stream_id == 1
    finally:
        client.close()


def test_draining_sends_goaway_and_lets_the_stream_in_flight_finish(tmp_path: Path) -> None:
    with upstream(tmp_path) as origin:
        _ca, _tls_port, running = start_edge(tmp_path, origin.url)
        with running as node:
            client = RawH2(node.port)
            client.handshake()
            client.send(client.request(1, "/echo/slow?seconds=1.5"))
            client.wait(lambda: False, timeout=0.3)  # the request is in flight
            node.process.send_signal(signal.SIGTERM)
            assert client.wait(lambda: client.goaway is not None, 10)
            assert client.goaway is not None
            assert client.goaway.error_code == raw.NO_ERROR and client.goaway.last_stream_id == 1
            answer = client.response(1, timeout=15)
            assert answer.status == 200 and answer.body == b"slow"
            assert client.wait_closed(15)
            client.close()


def test_with_http2_off_alpn_offers_only_http_1_1_and_the_preface_gets_505(tmp_path: Path) -> None:
    with upstream(tmp_path) as origin:
        ca, tls_port, running = start_edge(tmp_path, origin.url, DATAPLANE_HTTP2="off")
        with running as node:
            edge = Edge(node, tls_port, ca, tmp_path)
            result = edge.curl("-i", "--http2", f"{edge.https}/echo/x")
            assert result.stdout.startswith("HTTP/1.1 200"), result.stdout
            client = RawH2(node.port)
            client.write(raw.PREFACE)
            assert client.wait_closed(10)
            assert client.buffer.startswith(b"HTTP/1.1 505 ")
            client.close()
