"""The native upstream client (dataplane/transport_native.py) against scripted raw HTTP servers on
127.0.0.1: what goes on the wire, connection reuse, and the framings the wire suites do not reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from dataplane.errors import UpstreamAborted, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from dataplane.transport import UpstreamRequest
from dataplane.transport_native import NativeTransport

Header = tuple[bytes, bytes]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


class Server:
    """Counts connections; `handler(reader, writer, n)` serves the n-th one (from 1)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self.connections)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def request(
    url: str, method: str = "GET", body: bytes | AsyncIterator[bytes] = b"", headers: Sequence[Header] = ()
) -> UpstreamRequest:
    return UpstreamRequest(
        method=method,
        url=url,
        headers=[(b"host", b"upstream.test"), *headers],
        body=body,
        head_timeout=5,
        connect_timeout=5,
        idle_timeout=5,
    )


async def read_all(transport: NativeTransport, req: UpstreamRequest) -> tuple[int, bytes]:
    response = await transport.send(req)
    try:
        return response.status, b"".join([chunk async for chunk in response.body()])
    finally:
        await response.aclose()


def test_keep_alive_requests_share_one_connection_and_send_exactly_the_given_head() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            heads.append(await read_head(reader))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def go() -> int:
        transport = NativeTransport()
        async with Server(handler) as server:
            for i in range(3):
                assert await read_all(transport, request(f"{server.url}/a%2Fb?q={i}")) == (200, b"ok")
            await transport.aclose()
            return server.connections

    assert asyncio.run(go()) == 1
    assert heads[0] == b"GET /a%2Fb?q=0 HTTP/1.1\r\nhost: upstream.test\r\n\r\n"


def test_a_short_head_timeout_after_a_long_one_on_the_same_connection_still_times_out_in_time() -> None:
    """The head deadline is one timer per connection: a request with a 0.3 s timeout that follows one
    with a 30 s timeout on the same pooled connection must not wait for the earlier, later deadline."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_head(reader)
        await asyncio.sleep(10)  # the second request is never answered

    async def go() -> tuple[type[BaseException], float, int]:
        transport = NativeTransport()
        async with Server(handler) as server:
            first = request(server.url + "/")
            first.head_timeout = first.idle_timeout = 30
            assert await read_all(transport, first) == (200, b"ok")
            second = request(server.url + "/")
            second.head_timeout = 0.3
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout) as raised:
                await transport.send(second)
            waited = asyncio.get_running_loop().time() - started
            await transport.aclose()
            return raised.type, waited, server.connections

    error, waited, connections = asyncio.run(go())
    assert error is UpstreamTimeout
    assert connections == 1  # the second request really went out on the first one's connection
    assert waited < 5  # 0.3 s asked; 30 s would mean the first request's deadline held


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_kept_alive_connection_closed_under_a_request_is_retried_only_for_an_idempotent_method(method: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n" + str(n).encode())
        await writer.drain()
        if n == 1:
            await read_head(reader)  # the second request on this connection: closed without an answer

    async def go() -> tuple[int, bytes] | str:
        transport = NativeTransport()
        async with Server(handler) as server:
            try:
                assert await read_all(transport, request(server.url + "/", method)) == (200, b"1")
                return await read_all(transport, request(server.url + "/", method))
            except UpstreamUnavailable as exc:
                return type(exc).__name__
            finally:
                await transport.aclose()

    assert asyncio.run(go()) == ((200, b"2") if method == "GET" else "UpstreamReset")


def test_a_body_framed_by_closing_the_connection_and_a_103_before_the_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx-final: yes\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"the end")
        await writer.drain()

    async def go() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        transport = NativeTransport()
        async with Server(handler) as server:
            response = await transport.send(request(server.url + "/"))
            body = b"".join([chunk async for chunk in response.body()])
            await response.aclose()
            await transport.aclose()
            return response.status, response.headers, body

    status, headers, body = asyncio.run(go())
    assert (status, headers, body) == (200, [(b"x-final", b"yes")], b"until the end")


def test_a_head_answer_with_a_content_length_does_not_hold_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await read_head(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nget")
            await writer.drain()

    async def go() -> tuple[list[tuple[int, bytes]], int]:
        transport = NativeTransport()
        async with Server(handler) as server:
            answers = [
                await read_all(transport, request(server.url + "/", "HEAD")),
                await read_all(transport, request(server.url + "/")),
            ]
            await transport.aclose()
            return answers, server.connections

    assert asyncio.run(go()) == ([(200, b""), (200, b"get")], 1)


def test_a_streamed_body_without_a_length_goes_chunked_and_one_with_a_length_as_is() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        head = await read_head(reader)
        if b"transfer-encoding: chunked" in head:
            body = await reader.readuntil(b"0\r\n\r\n")
        else:
            body = await reader.readexactly(6)
        received.append(head + body)
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async def go() -> list[int]:
        transport = NativeTransport()
        async with Server(handler) as server:
            statuses = [
                (await read_all(transport, request(server.url + "/", "POST", parts())))[0],
                (
                    await read_all(
                        transport, request(server.url + "/", "PUT", parts(), headers=[(b"content-length", b"6")])
                    )
                )[0],
            ]
            await transport.aclose()
            return statuses

    assert asyncio.run(go()) == [201, 201]
    assert received[0].endswith(b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
    assert received[1].endswith(b"content-length: 6\r\n\r\nabcdef")


@pytest.mark.parametrize(
    ("reply", "error"),
    [(b"", UpstreamUnavailable), (b"HTTP/1.1 abc\r\n\r\n", UpstreamProtocolError)],
    ids=["closed-before-answering", "garbage"],
)
def test_failures_before_the_head_are_typed(reply: bytes, error: type[Exception]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader)
        writer.write(reply)
        await writer.drain()

    async def go() -> None:
        transport = NativeTransport()
        async with Server(handler) as server:
            try:
                await transport.send(request(server.url + "/"))
            finally:
                await transport.aclose()

    with pytest.raises(error):
        asyncio.run(go())


@pytest.mark.parametrize(
    "rest",
    [b"5\r\nhel", b"zz\r\nhello\r\n"],
    ids=["closed-mid-chunk", "garbage-chunk-size"],
)
def test_a_body_breaking_off_after_the_head_raises_upstream_aborted(rest: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(rest)
        await writer.drain()

    async def go() -> None:
        transport = NativeTransport()
        async with Server(handler) as server:
            response = await transport.send(request(server.url + "/"))
            assert response.status == 200
            try:
                async for _ in response.body():
                    pass
            finally:
                await response.aclose()
                await transport.aclose()

    with pytest.raises(UpstreamAborted):
        asyncio.run(go())


def test_an_idle_connection_is_closed_after_the_idle_expiry() -> None:
    closed: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        closed.append(await reader.read() == b"")  # returns once our side closes the connection

    async def go() -> list[bool]:
        transport = NativeTransport(idle_expiry=0.1)
        async with Server(handler) as server:
            assert await read_all(transport, request(server.url + "/")) == (200, b"ok")
            for _ in range(100):  # no further request comes to this pool
                if closed:
                    break
                await asyncio.sleep(0.05)
            seen = list(closed)
            await transport.aclose()
            return seen

    assert asyncio.run(go()) == [True]
