"""uvicorn's httptools protocol with the request-header deadline of §5.

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


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

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
