"""The WebSocket tunnel's parts in-process (ARCHITECTURE §13): the handshake checks a proxy makes (RFC
6455 §4), the upstream 101's check, the endpoint's `websocket` key in the document, the relay's
back-pressure and idle end on fake transports, and the tunnel metrics. On real processes:
tests/e2e/test_dataplane_websocket.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from configdoc import validate_document
from configdoc.validate import effective_endpoint
from dataplane.errors import BadRequest, UpstreamAborted
from dataplane.metrics import Metrics
from dataplane.snapshot import compile_document
from dataplane.tunnel import Tunnel, UpstreamSide, accept_for, handshake_key, names_websocket, valid_switch
from tests.dataplane.harness import Gateway, endpoint, ok

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GOOD = [(b"host", b"gw"), (b"sec-websocket-key", KEY), (b"sec-websocket-version", b"13")]
V13 = (b"sec-websocket-version", b"13")
TARGET = "http://127.0.0.1:9"


def test_the_accept_value_is_rfc_6455s_example() -> None:
    assert accept_for(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_handshake_gives_the_clients_key() -> None:
    assert handshake_key(GOOD, "GET", "1.1") == KEY


@pytest.mark.parametrize(
    ("headers", "method", "version", "naming"),
    [
        ([V13], "GET", "1.1", "Sec-WebSocket-Key"),
        ([*GOOD, (b"sec-websocket-key", KEY)], "GET", "1.1", "Sec-WebSocket-Key"),
        (
            [(b"sec-websocket-key", b"not base64!"), (b"sec-websocket-version", b"13")],
            "GET",
            "1.1",
            "Sec-WebSocket-Key",
        ),
        ([(b"sec-websocket-key", b"c2hvcnQ="), V13], "GET", "1.1", "Sec-WebSocket-Key"),
        ([(b"sec-websocket-key", KEY + b"\x00"), V13], "GET", "1.1", "Sec-WebSocket-Key"),
        ([(b"sec-websocket-key", KEY)], "GET", "1.1", "Sec-WebSocket-Version"),
        ([(b"sec-websocket-key", KEY), (b"sec-websocket-version", b"8")], "GET", "1.1", "Sec-WebSocket-Version"),
        ([*GOOD, (b"sec-websocket-version", b"13")], "GET", "1.1", "Sec-WebSocket-Version"),
        (GOOD, "POST", "1.1", "GET"),
        (GOOD, "GET", "1.0", "HTTP/1.1"),
        ([*GOOD, (b"content-length", b"5")], "GET", "1.1", "body"),
        ([*GOOD, (b"transfer-encoding", b"chunked")], "GET", "1.1", "body"),
    ],
)
def test_a_bad_handshake_is_400_naming_what_is_wrong(
    headers: list[tuple[bytes, bytes]], method: str, version: str, naming: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        handshake_key(headers, method, version)
    assert naming in refused.value.message
    assert refused.value.status == 400


def test_a_wrong_version_is_told_which_one_is_spoken() -> None:
    with pytest.raises(BadRequest) as refused:
        handshake_key([(b"sec-websocket-key", KEY), (b"sec-websocket-version", b"8")], "GET", "1.1")
    assert refused.value.headers == [(b"sec-websocket-version", b"13")]


def test_upgrade_protocol_lists_are_read_case_insensitively() -> None:
    assert names_websocket(b"WebSocket")
    assert names_websocket(b"h2c, websocket")
    assert not names_websocket(b"h2c")
    assert not names_websocket(b"websockets")


def test_an_upstream_101_needs_upgrade_connection_and_the_right_accept() -> None:
    accept = accept_for(KEY)
    good = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", accept)]
    assert valid_switch(good, KEY) is None
    assert valid_switch([good[1], good[2]], KEY) is not None
    assert valid_switch([good[0], good[2]], KEY) is not None
    assert valid_switch([good[0], good[1], (b"sec-websocket-accept", b"d3Jvbmc=")], KEY) is not None
    assert valid_switch([*good, (b"sec-websocket-accept", accept)], KEY) is not None  # two of them
    assert valid_switch(good, b"AAAAAAAAAAAAAAAAAAAAAA==") is not None


# --- the document --------------------------------------------------------------------------------


def _document(**fields: Any) -> dict[str, Any]:
    return {
        "format_version": 2,
        "endpoints": [{"name": "chat", "version": "v1", "targets": [{"url": TARGET}], **fields}],
    }


def test_websocket_false_is_kept_and_true_is_the_default_left_out() -> None:
    canonical, problems = validate_document(_document(websocket=False), max_format_version=2)
    assert problems == []
    assert canonical["endpoints"][0]["websocket"] is False
    assert effective_endpoint(canonical["endpoints"][0])["websocket"] is False
    canonical, problems = validate_document(_document(websocket=True), max_format_version=2)
    assert problems == []
    assert "websocket" not in canonical["endpoints"][0]
    assert canonical["format_version"] == 1  # nothing of format 2 is left


def test_websocket_needs_format_2_and_a_boolean() -> None:
    document = _document(websocket=False)
    document["format_version"] = 1
    _, problems = validate_document(document, max_format_version=2)
    assert any(
        problem.path == "endpoints[0].websocket" and "format_version: 2" in problem.message for problem in problems
    )
    _, problems = validate_document(_document(websocket="no"), max_format_version=2)
    assert [problem.path for problem in problems] == ["endpoints[0].websocket"]


def test_the_snapshot_compiles_the_flag() -> None:
    closed, _ = validate_document(_document(websocket=False), max_format_version=2)
    opened, _ = validate_document(_document(), max_format_version=2)
    assert compile_document(closed).endpoints["chat:v1"].websocket is False
    assert compile_document(opened).endpoints["chat:v1"].websocket is True


def test_an_asgi_server_without_the_tunnel_extension_still_answers_501() -> None:
    import httpx

    gateway = Gateway(None, ok)
    from tests.dataplane.harness import document

    gateway.runtime.apply(compile_document(document(endpoint("users", default=True))))
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": KEY.decode(),
        "Sec-WebSocket-Version": "13",
    }

    async def call() -> httpx.Response:
        async with gateway.client() as client:
            return await client.get("/users", headers=headers)

    response = asyncio.run(call())
    assert (response.status_code, response.json()["error"]) == (501, "upgrade_not_supported")


# --- the relay -----------------------------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.aborted = False
        self.buffered = 0  # bytes the peer has not taken yet

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def _tunnel(
    loop: asyncio.AbstractEventLoop, idle: float = 60
) -> tuple[Tunnel, FakeTransport, FakeTransport, list[str]]:
    client, upstream_transport = FakeTransport(), FakeTransport()
    side = UpstreamSide(loop)
    side.connection_made(upstream_transport)
    calls: list[str] = []
    tunnel = Tunnel(
        loop,
        client,
        side,
        idle_timeout=idle,
        pause_client=lambda: calls.append("pause"),
        resume_client=lambda: calls.append("resume"),
    )
    return tunnel, client, upstream_transport, calls


def test_bytes_go_both_ways_early_ones_first_and_are_counted() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tunnel, client, upstream, _ = _tunnel(loop)
        tunnel.upstream.early = [b"server-first"]
        tunnel.start([b"client-early"])
        tunnel.upstream.data_received(b"down")
        tunnel.from_client(b"up")
        assert upstream.written == [b"client-early", b"up"]
        assert client.written == [b"server-first", b"down"]
        assert (tunnel.to_upstream, tunnel.to_client) == (14, 16)
        tunnel.upstream.connection_lost(None)
        assert await tunnel.done == "upstream_closed"
        assert client.closed and not client.aborted  # what was read from the upstream is flushed first

    asyncio.run(scenario())


def test_a_full_side_pauses_reading_from_the_other() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tunnel, _, upstream, calls = _tunnel(loop)
        tunnel.start([])
        tunnel.client_backlogged()
        assert not upstream.reading
        tunnel.client_drained()
        assert upstream.reading
        tunnel.upstream.pause_writing()
        tunnel.upstream.resume_writing()
        assert calls == ["pause", "resume"]
        tunnel.close("client_closed")

    asyncio.run(scenario())


def test_a_tunnel_silent_both_ways_ends_idle_with_a_close_frame_to_each_side() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tunnel, client, upstream, _ = _tunnel(loop, idle=0.05)
        tunnel.start([])
        assert await asyncio.wait_for(tunnel.done, 10) == "idle"
        assert client.written == [b"\x88\x0e\x03\xe9idle timeout"]  # 1001, unmasked
        assert upstream.written[0][:2] == b"\x88\x8e"  # masked, as a client's frame must be
        assert client.closed and upstream.closed
        assert not client.aborted and not upstream.aborted

    asyncio.run(scenario())


def test_the_metrics_count_open_tunnels_and_their_bytes() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        metrics = Metrics()
        tunnel, _, _, _ = _tunnel(loop)
        tunnel.start([])
        metrics.tunnel_opened(tunnel, "chat:v1")
        tunnel.from_client(b"x" * 10)
        text = metrics.render().decode()
        assert 'gateway_tunnels_active{endpoint="chat:v1"} 1.0' in text
        assert 'gateway_tunnel_bytes_total{direction="to_upstream",endpoint="chat:v1"} 10.0' in text
        tunnel.upstream.data_received(b"y" * 5)
        tunnel.close("client_closed")
        metrics.tunnel_closed(tunnel)
        text = metrics.render().decode()
        assert 'gateway_tunnels_active{endpoint="chat:v1"} 0.0' in text
        assert 'gateway_tunnel_bytes_total{direction="to_upstream",endpoint="chat:v1"} 10.0' in text
        assert 'gateway_tunnel_bytes_total{direction="to_client",endpoint="chat:v1"} 5.0' in text

    asyncio.run(scenario())


def test_an_informational_answer_before_the_101_is_skipped() -> None:
    async def scenario() -> None:
        side = UpstreamSide(asyncio.get_running_loop())
        side.connection_made(FakeTransport())
        side.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        assert not side.head.done()
        side.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nhi")
        await side.head
        assert side.status == 101 and side.switched
        assert side.headers == [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]
        assert side.early == [b"hi"]

    asyncio.run(scenario())


def test_a_refusals_body_is_read_to_its_length_and_an_early_close_is_an_abort() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        side = UpstreamSide(loop)
        side.connection_made(FakeTransport())
        side.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\ngo ")
        await side.head
        side.data_received(b"away")
        assert side.status == 403
        assert [chunk async for chunk in side.body()] == [b"go away"]
        cut = UpstreamSide(loop)
        cut.connection_made(FakeTransport())
        cut.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 70\r\n\r\ngo")
        cut.connection_lost(None)
        with pytest.raises(UpstreamAborted):
            [chunk async for chunk in cut.body()]

    asyncio.run(scenario())
