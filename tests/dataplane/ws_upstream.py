"""A real WebSocket upstream for the tunnel tests: the `websockets` library's server on a loopback port,
in a thread of the test process, with a few behaviours chosen by path; and a raw server that answers
every handshake with a 101 whose `Sec-WebSocket-Accept` is wrong.

    /echo            every message sent back as it came (text stays text, binary binary)
    /close/<code>    closes at once with that close code and reason "bye"
    /refuse          refuses the handshake: 403, body "go away"
    /headers         sends one text message: the handshake's request headers as JSON, then echoes
    /hold            answers the handshake only once `released` is set, then echoes
    anything else    echoes

`events` records what the server saw end (`closed <path> <code>`), so a test can tell that the
upstream side of a tunnel was closed."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MAX_MESSAGE = 16 * 1024 * 1024


@dataclass
class WsUpstream:
    port: int
    bad_accept_port: int
    events: list[str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bad_accept_url(self) -> str:
        return f"http://127.0.0.1:{self.bad_accept_port}"


@contextmanager
def ws_upstream(tls: tuple[Path, Path] | None = None) -> Iterator[WsUpstream]:
    """The servers, in a thread; with `tls` (certificate and key files) the WebSocket one speaks wss."""
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None
    state: dict[str, Any] = {}

    async def main() -> None:
        nonlocal stop
        stop = loop.create_future()
        upstream = WsUpstream(0, 0)

        async def process_request(connection: ServerConnection, request: Request) -> Response | None:
            upstream.requests.append({name.lower(): value for name, value in request.headers.raw_items()})
            if request.path == "/refuse":
                return connection.respond(HTTPStatus.FORBIDDEN, "go away\n")
            if request.path == "/hold":
                await asyncio.to_thread(upstream.released.wait, 60)
            return None

        async def handler(connection: ServerConnection) -> None:
            path = connection.request.path if connection.request is not None else ""
            try:
                if path.startswith("/close/"):
                    await connection.close(int(path.rsplit("/", 1)[1]), "bye")
                    return
                if path == "/headers" and connection.request is not None:
                    await connection.send(json.dumps(dict(connection.request.headers.raw_items())))
                async for message in connection:
                    await connection.send(message)
            except ConnectionClosed:
                pass
            finally:
                upstream.events.append(f"closed {path} {connection.close_code}")

        async def bad_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: d3JvbmcgYWNjZXB0IHZhbHVlIQ==\r\n\r\n"
            )
            await writer.drain()
            await asyncio.sleep(1)
            writer.close()

        async with serve(
            handler,
            "127.0.0.1",
            0,
            process_request=process_request,
            max_size=MAX_MESSAGE,
            ping_interval=None,
            ssl=context,
        ) as server:
            raw = await asyncio.start_server(bad_accept, "127.0.0.1", 0)
            upstream.port = next(iter(server.sockets)).getsockname()[1]
            upstream.bad_accept_port = raw.sockets[0].getsockname()[1]
            state["upstream"] = upstream
            ready.set()
            await stop
            raw.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield state["upstream"]
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()
