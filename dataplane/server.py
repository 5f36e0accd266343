"""uvicorn's httptools protocol with the request-header deadline of §5, writing each response in
one system call (`CorkedTransport`).

uvicorn has no deadline for the request head: a client sending a byte a second holds a connection
forever (slowloris). Here the head must be complete within `header_timeout` seconds of the
connection opening (or of the first byte of the next request on a kept-alive connection), or the
client gets 408 `request_timeout` and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """The client transport as uvicorn's response cycle sees it: writes made in one turn of the event
    loop (the response head, then its body) go out as one `write` at the end of the turn, so a small
    response costs one system call and one TCP segment instead of two. Closing flushes first; all
    else is the real transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """One timer per connection, not one per request: a head starting only records the time, and the
    timer, when it fires, either answers 408 (a head has been arriving for `header_timeout`), re-arms
    for the time left (a later head is arriving), or lapses (no head is arriving; the next one re-arms
    it)."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # when the head being received began, None between heads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        self._head_began()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_since is None:
            self._head_began()

    def on_headers_complete(self) -> None:
        self._head_since = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_began(self) -> None:
        self._head_since = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        since = self._head_since
        if since is None:
            return
        left = since + self.header_timeout - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._head_deadline)
        else:
            self._head_timed_out()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        body = json.dumps(
            {
                "error": "request_timeout",
                "message": f"the request headers did not arrive within {self.header_timeout:g}s",
                "request_id": None,
                "endpoint": None,
            },
            separators=(",", ":"),
        ).encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


def protocol_class(header_timeout: float) -> type[DeadlineHttpToolsProtocol]:
    return type("DataPlaneHttpProtocol", (DeadlineHttpToolsProtocol,), {"header_timeout": header_timeout})
