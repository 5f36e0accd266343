"""The data plane's HTTP/1.1 server protocol: uvicorn's httptools protocol (llhttp; never h11) with
the request-header and send deadlines of §5, each response written in one system call
(`CorkedTransport`), and a leaner per-request ASGI cycle (`LeanCycle`, `LeanHttpToolsProtocol`).

uvicorn has no deadline for the request head: a client sending a byte a second holds a connection
forever (slowloris). Here the head must be complete within `header_timeout` seconds of the
connection opening (or of the first byte of the next request on a kept-alive connection), or the
client gets 408 `request_timeout` and the connection is closed.

Nor has it one for the response: a client that stops reading (slow read) holds its connection, its
buffered response and its upstream request forever. Here a client that accepts no bytes for
`send_timeout` seconds while some are waiting for it is cut off (reset, buffers freed).

What the ASGI app never sees: request trailer fields (dropped: they must not pass for headers, which
is where every policy looks), a request whose Host or absolute-form authority is not a valid
host[:port] (400), a request line of another HTTP version than 1.0 or 1.1 (505). The scope carries the
request's authority, validated, as `scope["authority"]` (bytes): the absolute-form target's when the
request line has one (RFC 9112 §3.2.2: it wins over Host), else the Host header's.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import struct
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import BadRequest, GatewayError, RequestTimeout, error_response
from .h2server import PREFACE, H2Server
from .proxy import new_request_id
from .tunnel import HIGH_WATER, Tunnel, UpstreamSide

logger = logging.getLogger("uvicorn.error")


# A write this large goes out at once, not at the end of the turn: corking gains nothing for it, and
# the transport's pause_writing must come before the app's next `send` (which then waits for the
# client) rather than after a turn's worth of body has piled up behind the cork.
WRITE_THROUGH = 16384


class CorkedTransport:
    """The client transport as uvicorn's response cycle sees it: writes made in one turn of the event
    loop (the response head, then its body) go out as one `write` at the end of the turn, so a small
    response costs one system call and one TCP segment instead of two. Closing flushes first; all
    else is the real transport's. Counts the bytes handed to the transport (`written`), and calls
    `backlogged` when some of them could not be sent at once (the client is not keeping up)."""

    __slots__ = ("_loop", "_pending", "_transport", "backlogged", "written")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, backlogged: Callable[[], None]
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self.backlogged = backlogged
        self.written = 0

    def write(self, data: bytes) -> None:
        pending = self._pending
        if len(data) >= WRITE_THROUGH:
            if pending is not None:
                pending.append(data)
                self._flush()  # the call_soon'd flush then finds nothing pending
            else:
                self._send(data)
        elif pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self._send(pending[0] if len(pending) == 1 else b"".join(pending))

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.write(data)
            self.written += len(data)
            if transport.get_write_buffer_size():
                self.backlogged()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def detach(self) -> asyncio.Transport:
        """The real transport, whatever was corked written to it first: a tunnel writes to it directly."""
        self._flush()
        return self._transport

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RestartingDeadline:
    """A deadline restarted often (each request head, each idle period) on one timer per connection
    instead of one armed and cancelled each time: `start` only records the time (arming the timer
    if none is armed), `stop` forgets it; the timer, when it fires, calls `expired` (started
    `timeout` ago and not stopped), re-arms for the time left (restarted since), or lapses (stopped;
    the next `start` arms it again)."""

    __slots__ = ("_expired", "_loop", "_since", "_timer", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, expired: Callable[[], None]) -> None:
        self._loop = loop
        self.timeout = timeout
        self._expired = expired
        self._since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._since is not None

    def start(self) -> None:
        self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout, self._fire)

    def stop(self) -> None:
        self._since = None

    def cancel(self) -> None:
        self._since = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        since = self._since
        if since is None:
            return
        left = since + self.timeout - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._fire)
        else:
            self._since = None
            self._expired()


class HttpVersionNotSupported(GatewayError):
    """A request line of an HTTP version this server does not speak (only 1.0 and 1.1): refused before
    the app sees it, so it lives here rather than among the app's errors."""

    status, code, close_connection = 505, "http_version_not_supported", True


# A Host (or an absolute-form target's authority): a name of unreserved characters (RFC 3986's reg-name
# without percent-encoding and sub-delims: `,` `;` `=` and the like would corrupt the X-Forwarded-Host
# list built from it) or an IPv4 address, or a bracketed IPv6 literal, with an optional port. No
# userinfo, no path, no spaces.
_HOST = re.compile(rb"(?:[A-Za-z0-9._~-]+|\[([0-9A-Fa-f:.]+)\])(?::([0-9]{1,5}))?")
_ABSOLUTE_FORM = re.compile(rb"(?i)(https?)://([^/?#]*)")


@functools.lru_cache(maxsize=1024)  # clients send the same few Host values over and over
def valid_authority(value: bytes) -> bool:
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    literal, port = match.groups()
    if port is not None and not 0 < int(port) < 65536:
        return False
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    return True


# llhttp's reasons for a request line of a version it refuses outright (HTTP/1.2, 3.0, 9.9) and for the
# HTTP/2 connection preface (`PRI * HTTP/2.0`, prior-knowledge h2c, which this server does not speak).
_VERSION_ERRORS = ("Invalid HTTP version", "Pause on PRI")
_VERSION_MESSAGE = "only HTTP/1.1 and HTTP/1.0 are served here"
# SO_LINGER on, zero seconds: close() resets the connection and drops what the kernel still holds for
# the client, instead of keeping it (and retrying it) for a client that does not read.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
_TCP_USER_TIMEOUT: int | None = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol with the request-head deadline (a head must be complete within
    `header_timeout` of the connection opening or of its first byte: 408 and close otherwise) and the
    send deadline (a client with bytes waiting for it that accepts none of them for `send_timeout` is
    cut off)."""

    header_timeout = 10.0
    send_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # After an upgrade request llhttp parses nothing more: what the client sends next is held here
        # (reading paused beyond HIGH_WATER) until a tunnel takes it or the connection closes.
        self._upgraded = False
        self._early: list[bytes] = []
        self._early_size = 0
        self._head = RestartingDeadline(self.loop, self.header_timeout, self._head_timed_out)
        self._refusal: GatewayError | None = None  # a malformed request's 400, sent once those before it are answered
        self._sending: asyncio.TimerHandle | None = None  # armed while bytes wait for the client
        self._accepted = 0  # bytes the client had accepted when last checked
        self._accepted_at = 0.0  # ...and when that count last grew

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop, self._watch_send)  # type: ignore[assignment]
        self._head.start()
        sock = transport.get_extra_info("socket")
        if sock is not None and _TCP_USER_TIMEOUT is not None:
            # The kernel's half of the send deadline: what it holds for the client (up to megabytes of
            # send buffer, out of reach of the watch below, and all of it once the connection is closed)
            # is dropped and the connection reset when none of it is acknowledged for this long.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(self.send_timeout * 1000))
            except OSError:
                pass  # not TCP (a Unix socket): nothing held by a kernel TCP stack

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._head.running:
            self._head.start()

    def on_headers_complete(self) -> None:
        self._head.stop()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head.cancel()
        self._stop_send_watch()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with llhttp's reason kept: a request the parser refuses (Content-Length with
        Transfer-Encoding, a bad or repeated Content-Length, a bad chunk size, bytes not allowed in the
        head) gets the JSON 400 `bad_request` of §5 and the connection is closed, not uvicorn's text; a
        request line of another HTTP version gets 505. A check made when the head is complete (Host,
        version) raises its GatewayError from the parser's callback, which stops the parser there.
        After a parse error the parser is spent: what follows is ignored."""
        if self._refusal is not None:
            return
        if self._upgraded:
            self._after_upgrade(data)
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, GatewayError):
                error = refused
                reason = error.message
            else:
                reason = str(exc) or "the request is not valid HTTP/1.1"
                if reason.startswith(_VERSION_ERRORS):
                    error = HttpVersionNotSupported(_VERSION_MESSAGE)
                else:
                    error = BadRequest(f"malformed request: {reason}")
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
            logger.warning("malformed request from %s refused: %s", client, reason)
            self._malformed(error)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops after a request with `Connection: upgrade` and `Upgrade` (or CONNECT) and
            # parses nothing more on this connection: the app either opens a tunnel (a WebSocket
            # upgrade that passed the chain and that the upstream accepted: what follows the head is
            # the tunnel's) or answers that request (an error, an upstream's refusal, 501, or over
            # HTTP/1.1 for an h2c offer), and then the connection closes.
            self._upgraded = True
            rest = data[exc.args[0] :] if exc.args else b""
            if rest:
                self._after_upgrade(rest)
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False

    def _after_upgrade(self, data: bytes) -> None:
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > HIGH_WATER:
            self.flow.pause_reading()

    # --- the send deadline ---------------------------------------------------------------------
    # Checked every quarter of `send_timeout` while bytes wait in the transport's buffer (none wait for a
    # client that keeps up: then no timer runs), so a stalled client is cut off between `send_timeout`
    # and 1.25 times it after it last accepted a byte. "Accepted" is bytes written minus bytes still
    # buffered: it only grows when the client reads (the kernel takes no more than the client's window).

    def _watch_send(self) -> None:
        if self._sending is None:
            transport: CorkedTransport = self.transport  # type: ignore[assignment]
            self._accepted = transport.written - transport.get_write_buffer_size()
            self._accepted_at = self.loop.time()
            self._sending = self.loop.call_later(self.send_timeout / 4, self._check_send)

    def _stop_send_watch(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None

    def _check_send(self) -> None:
        self._sending = None
        transport: CorkedTransport = self.transport  # type: ignore[assignment]
        waiting = transport.get_write_buffer_size()
        if not waiting:
            return  # all sent: the next backlog starts a new watch
        accepted = transport.written - waiting
        now = self.loop.time()
        if accepted > self._accepted:
            self._accepted, self._accepted_at = accepted, now
        elif now - self._accepted_at >= self.send_timeout:
            self._cut_off(waiting)
            return
        self._sending = self.loop.call_later(self.send_timeout / 4, self._check_send)

    def _cut_off(self, waiting: int) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        logger.warning(
            "client %s accepted no bytes for %gs (%d waiting): connection cut off", client, self.send_timeout, waiting
        )
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            except OSError:
                pass  # closed meanwhile: abort() below is all there is to do
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        self._refuse(BadRequest(msg))

    def _malformed(self, error: GatewayError) -> None:
        self._refusal = error
        self._refuse(error)

    def _head_timed_out(self) -> None:
        self._refuse(RequestTimeout(f"the request headers did not arrive within {self.header_timeout:g}s"))

    def _refuse(self, error: GatewayError) -> None:
        """Answer a request the app never saw with the gateway's JSON error (each of these errors says
        `connection: close`), then close."""
        if self.transport is None or self.transport.is_closing():
            return
        status, headers, body = error_response(error, new_request_id(), None)
        head = [STATUS_LINE[status]]
        head.extend(b"%s: %s\r\n" % pair for pair in headers)
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()


# uvicorn's checks (its byte classes of bad header names and values), made once per response over all
# names and all values joined (a bad byte in the join is a bad byte in one of the parts) instead of
# twice per header. Deleting every good byte with bytes.translate and looking at what is left is one C
# pass at a few instructions a byte; the regex search of a byte class was ~40 a byte, a visible part
# of the proxy's CPU on answers with many headers.
_BAD_NAME_BYTES = bytes(range(0x20)) + b'\x7f()<>@,;:[]={} \t\\"'
_BAD_VALUE_BYTES = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_GOOD_NAME_BYTES = bytes(byte for byte in range(256) if byte not in _BAD_NAME_BYTES)
_GOOD_VALUE_BYTES = bytes(byte for byte in range(256) if byte not in _BAD_VALUE_BYTES)
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_SERVER_HEADERS = frozenset({b"host", b"expect", b"upgrade"})  # the request headers on_header looks at
_HEAD_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})  # the response's _head does
_UNTIL_CLOSE = 1 << 62  # `expected_length` of a body delimited by the connection's close
_DISCONNECT = {"type": "http.disconnect"}


class LeanCycle:
    """One request's ASGI `receive` and `send`, with uvicorn's RequestResponseCycle's behaviour (body
    flow control, `Expect: 100-continue`, Content-Length or chunked framing, keep-alive, HEAD, 500 for an
    app that fails before its head) and less work per request: no `asyncio.Event` (a future only
    while `receive` actually waits), header checks over the joined names and values, slots."""

    __slots__ = (
        "body",
        "body_ended",
        "buffered",
        "chunked",
        "disconnected",
        "expected_length",
        "flow",
        "keep_alive",
        "method",
        "more_body",
        "on_response",
        "protocol",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiter",
        "waiting_for_100_continue",
    )

    def __init__(
        self, protocol: LeanHttpToolsProtocol, scope: dict[str, Any], *, keep_alive: bool, expect_100_continue: bool
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.method: str = scope["method"]
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.on_response: Callable[[], None] = protocol.on_response_complete
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.disconnected = False
        self.body: list[bytes] = []
        self.buffered = 0  # bytes in `body`
        self.more_body = True
        self.body_ended = False  # the message with more_body False went to the app
        self.response_started = False
        self.response_complete = False
        self.chunked: bool | None = None
        self.expected_length = 0
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Body arrived, the body ended, the response completed or the client left."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.transport.close()
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                logger.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_response = _nothing

    async def _send_500(self) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]
        headers.append((b"connection", b"close"))
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        while not (self.disconnected or self.response_complete):
            if self.body or (not self.more_body and not self.body_ended):
                break
            self.flow.resume_reading()
            waiter = self.waiter = self.protocol.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        chunks, self.body, self.buffered = self.body, [], 0
        if not self.more_body:
            self.body_ended = True
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self.response_started = True
            self.waiting_for_100_continue = False
            self.transport.write(self._head(message["status"], message.get("headers", ())))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self.method == "HEAD":
                self.expected_length = 0
            elif self.chunked:
                data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
                self.transport.write(data if more_body else data + b"0\r\n\r\n")
            else:
                if len(body) > self.expected_length:
                    raise RuntimeError("Response content longer than Content-Length")
                self.expected_length -= len(body)
                if body:
                    self.transport.write(body)
            if not more_body:
                if self.expected_length != 0 and self.expected_length < _UNTIL_CLOSE // 2:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.wake()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")

    def _head(self, status: int, headers: Any) -> bytes:
        lines = [STATUS_LINE[status]]
        names: list[bytes] = []
        values: list[bytes] = []
        close = connection = False
        for name, value in headers:
            name = name.lower()
            names.append(name)
            values.append(value)
            lines += (name, b": ", value, b"\r\n")
            if name not in _HEAD_HEADERS:
                continue
            if name == b"content-length" and self.chunked is None:
                self.expected_length = int(value.decode())
                self.chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_length = 0
                self.chunked = True
            elif name == b"connection":
                connection = True
                if b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    close = True
        if b"".join(names).translate(None, _GOOD_NAME_BYTES):
            raise RuntimeError("Invalid HTTP header name.")
        if b"".join(values).translate(None, _GOOD_VALUE_BYTES):
            raise RuntimeError("Invalid HTTP header value.")
        old = self.scope["http_version"] == "1.0"
        if self.chunked is None and self.method != "HEAD" and status not in (204, 304):
            if old:
                # An HTTP/1.0 client knows no chunked coding (RFC 9112 §6.1): the body ends at the close,
                # even when it asked to keep the connection.
                self.chunked = False
                self.expected_length = _UNTIL_CLOSE
                self.keep_alive = False
            else:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            if not close:
                lines.append(b"connection: close\r\n")
        elif old and not connection:
            # HTTP/1.0 closes unless the answer says otherwise (RFC 9112 §9.3).
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


def _nothing() -> None:
    return None


class LeanHttpToolsProtocol(DeadlineHttpToolsProtocol):
    """uvicorn's httptools protocol, per request: the scope built in one step when the head is complete,
    a `LeanCycle`, and one keep-alive timer per connection (like the header deadline's) instead of one
    armed and cancelled per request. Connection handling, parse errors (400 + close), pipelining and
    graceful shutdown are uvicorn's. A WebSocket upgrade the app accepts becomes a byte relay on this
    connection (`gateway.tunnel` in the scope's extensions; uvicorn's own WebSocket support stays off,
    ws="none")."""

    # uvicorn types these with its own cycle class; this protocol only ever creates and queues LeanCycle.
    cycle: LeanCycle  # type: ignore[assignment]
    pipeline: deque[tuple[LeanCycle, Any]]  # type: ignore[assignment]
    tunnel_grace = 10.0  # seconds a tunnel may live on once the server is stopping
    http2 = True  # h2 by ALPN on TLS, h2c with prior knowledge on plain (h2server.py)
    h2_max_streams = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle = RestartingDeadline(self.loop, self.timeout_keep_alive, self._idle_expired)
        self._host = b""  # the request's Host header, checked as it arrives...
        self._hosts_valid = True  # ...and whether every one was a valid host[:port]
        self._asks_upgrade = False  # the request has an Upgrade header: its scope offers a tunnel
        self._tunnel: Tunnel | None = None
        self._stopping = False  # the server asked this connection to shut down
        self._h2: H2Server | None = None
        # A plain connection's first bytes, held while they may still be the HTTP/2 preface (h2c with
        # prior knowledge); None once decided, or when HTTP/2 is off or the connection is TLS (ALPN says).
        self._sniff: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.http2:
            tls = transport.get_extra_info("ssl_object")
            if tls is None:
                # Until the first bytes are seen they take the `_upgraded` branch of data_received (to
                # `_after_upgrade`, then `_sniff_preface`), so once a connection is HTTP/1.x its
                # data_received is exactly what it was without HTTP/2: not one more check per request.
                self._sniff = b""
                self._upgraded = True
            elif tls.selected_alpn_protocol() == "h2":
                self._switch_to_h2(b"")

    def _sniff_preface(self, data: bytes) -> None:
        """A plain connection's first bytes, before llhttp sees them: the HTTP/2 preface turns the
        connection into HTTP/2 (h2c with prior knowledge); a part of it waits for the rest; anything
        else is HTTP/1.x, handed to the parser from now on."""
        seen = self._sniff + data if self._sniff else data
        if len(seen) < len(PREFACE) and PREFACE.startswith(seen):
            self._sniff = seen
            return
        self._sniff = None
        if seen.startswith(PREFACE):
            self._switch_to_h2(seen)
            return
        self._upgraded = False
        self.data_received(seen)

    def _switch_to_h2(self, first: bytes) -> None:
        """From now on this connection is HTTP/2: llhttp parses nothing more (`_upgraded`), every byte
        goes to the H2Server, which has its own idle deadline."""
        self._head.cancel()
        self._idle.cancel()
        self._upgraded = True
        self._h2 = H2Server(self, max_streams=self.h2_max_streams, idle_timeout=self.timeout_keep_alive)
        self._h2.start(first)

    def _malformed(self, error: GatewayError) -> None:
        """A parse error belongs to the request being parsed: if that is the last cycle, its body broken,
        that request is dropped (and answered now, unless its response began: then the connection is
        just closed); otherwise it is a request with no cycle yet, and the 400 waits until the requests
        before it are answered, in order (an answer written now would be read as theirs)."""
        self._refusal = error
        self._head.cancel()
        cycle: LeanCycle | None = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            if self.pipeline and self.pipeline[0][0] is cycle:
                self.pipeline.popleft()  # queued behind another: it never ran
            else:
                cycle.disconnected = True
                cycle.wake()
                if cycle.response_started:
                    self.transport.close()
                else:
                    self._refuse(error)
                return
        running = self.cycle is not None and not self.cycle.response_complete
        if not running and not self.pipeline:
            self._refuse(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head.cancel()
        self._idle.cancel()
        self._stop_send_watch()
        self.connections.discard(self)
        if self._tunnel is not None:
            self._tunnel.client_lost()
        if self._h2 is not None:
            self._h2.connection_lost()
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.wake()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def _unset_keepalive_if_required(self) -> None:
        self._idle.stop()  # data arrived: the connection is no longer idle

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._host = b""
        self._hosts_valid = True
        self._asks_upgrade = False
        if not self._head.running:
            self._head.start()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in _SERVER_HEADERS:
            # Most headers: one set lookup. It also computes the name's hash, which the bytes object
            # keeps for the proxy's lookups of the same name further on.
            self.headers.append((name, value))
            return
        if name == b"host":
            # Validated as it arrives (the proxy refuses a missing or repeated one): each must be valid.
            self._host = value
            self._hosts_valid = self._hosts_valid and valid_authority(value)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"upgrade":
            self._asks_upgrade = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """The scope, built in one step. Raising a GatewayError here stops the parser (data_received
        answers it once the requests before it are answered)."""
        self._head.stop()
        parser = self.parser
        http_version = parser.get_http_version()
        if http_version != "1.1" and http_version != "1.0":
            raise HttpVersionNotSupported(_VERSION_MESSAGE)
        if not self._hosts_valid:
            raise BadRequest("the Host header must be a host name or IP address with an optional port")
        url = self.url
        authority = self._host
        if url[:1] != b"/" and url != b"*":
            # Absolute-form (`GET http://host/path`): its authority is the request's (RFC 9112 §3.2.2).
            absolute = _ABSOLUTE_FORM.match(url)
            if absolute is None:
                raise BadRequest("the request target must be a path or an http(s) URL")
            authority = absolute.group(2)
            if not valid_authority(authority):
                raise BadRequest(
                    "the request target's authority must be a host name or IP address with an optional port"
                )
        parsed = httptools.parse_url(url)
        raw_path = parsed.path or b"/"  # `http://host` without a path means `/` (RFC 9112 §3.2.2)
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": parsed.query or b"",
            "headers": self.headers,
            "authority": authority,
        }
        # llhttp reports trailer fields (after a chunked body) through on_header like head fields: they
        # go to a list nobody reads, never into this request's headers, where a policy or the upstream
        # would take an `Authorization` or `X-Admin` sent after the body for a real header.
        self.headers = []
        self.scope = scope  # type: ignore[assignment]
        existing = self.cycle
        cycle = self.cycle = LeanCycle(
            self,
            scope,
            # HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
            keep_alive=parser.should_keep_alive(),
            expect_100_continue=self.expect_100_continue,
        )
        if self._asks_upgrade:
            # The ASGI app cannot relay raw bytes: it opens the tunnel through this (proxy.py).
            scope["extensions"] = {"gateway.tunnel": functools.partial(self._open_tunnel, cycle)}  # type: ignore[dict-item]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)
        else:
            # A pipelined request waits for the one before it.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.body.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.more_body = False
        cycle.wake()

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        self._idle.start()

    def _idle_expired(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # --- tunnels (WebSocket, §13) -----------------------------------------------------------------

    def _open_tunnel(self, cycle: LeanCycle, head: bytes, upstream: UpstreamSide, idle_timeout: float) -> Tunnel | None:
        """The `gateway.tunnel` extension: write `head` (the 101) to the client and relay bytes between
        it and `upstream` from now on. The request counts as answered (uvicorn sends nothing more); the
        app awaits the returned tunnel's `done`. None when there is no client to tunnel to any more,
        or when llhttp did not stop after this request (then what follows is HTTP, never tunnel bytes)."""
        if (
            cycle is not self.cycle
            or not self._upgraded
            or cycle.disconnected
            or cycle.response_started
            or self.transport.is_closing()
        ):
            return None
        cycle.response_started = cycle.response_complete = True
        cycle.on_response = _nothing
        self._head.cancel()
        self._idle.cancel()
        client = self.transport.detach()  # type: ignore[attr-defined]
        client.write(head)
        tunnel = self._tunnel = Tunnel(
            self.loop,
            client,
            upstream,
            idle_timeout=idle_timeout,
            pause_client=self.flow.pause_reading,
            resume_client=self.flow.resume_reading,
        )
        early, self._early, self._early_size = self._early, [], 0
        tunnel.start(early)
        if not tunnel.done.done():
            self.flow.resume_reading()
            if self._stopping:
                # The server began stopping while the handshake was with the upstream: `shutdown` found no
                # tunnel to give its grace to, so it is given here (else the tunnel would live until the
                # server's own shutdown limit cancels the request).
                tunnel.drain(self.tunnel_grace)
        return tunnel

    def _after_upgrade(self, data: bytes) -> None:
        h2 = self._h2
        if h2 is not None:
            h2.data_received(data)
            return
        if self._sniff is not None:
            self._sniff_preface(data)
            return
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.from_client(data)
        else:
            super()._after_upgrade(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._tunnel is not None:
            self._tunnel.client_backlogged()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._tunnel is not None:
            self._tunnel.client_drained()

    def shutdown(self) -> None:
        """The server is stopping: a tunnel gets `tunnel_grace` seconds more, other connections
        uvicorn's treatment (closed when idle, after the response in progress otherwise)."""
        self._stopping = True
        if self._h2 is not None:
            self._h2.shutdown()
        elif self._tunnel is not None:
            self._tunnel.drain(self.tunnel_grace)
        else:
            super().shutdown()


def protocol_class(
    header_timeout: float,
    send_timeout: float = 30.0,
    tunnel_grace: float = 10.0,
    *,
    http2: bool = True,
    h2_max_streams: int = 100,
) -> type[LeanHttpToolsProtocol]:
    return type(
        "DataPlaneHttpProtocol",
        (LeanHttpToolsProtocol,),
        {
            "header_timeout": header_timeout,
            "send_timeout": send_timeout,
            "tunnel_grace": tunnel_grace,
            "http2": http2,
            "h2_max_streams": h2_max_streams,
        },
    )
