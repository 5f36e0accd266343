"""The native `Transport` (docs/dataplane.md, "Speed"): a lean HTTP/1.1 client of our own on an asyncio
`Protocol` and httptools' response parser (llhttp, the parser our server side uses too).

What it does, and nothing more:

- a keep-alive pool per origin and TLS setting (scheme, host, port, verify, CA file, server name):
  most recently used connection first, at most `max_idle` idle connections kept per pool, an idle one
  closed after `idle_expiry` seconds; no cap on connections in use (the data plane's own concurrency
  cap applies, §5). A connection goes back to the pool the moment its response is complete (the body
  is already buffered) and only when both sides framed the message cleanly and asked for keep-alive;
- names resolved through the same SSRF guard as the other transports (`upstream.resolve` +
  `configdoc.is_denied_address`), connecting to the address it checked (DNS rebinding);
- TLS with verification through an `ssl` context per (verify, CA file), SNI = `server_name` or the
  URL's host;
- request bodies: bytes (Content-Length) or streamed (Content-Length when the client sent one, else
  chunked), written by a task of their own so an upstream answering early is seen at once; response
  bodies streamed as they arrive (Content-Length, chunked or until close), reading paused while more
  than `HIGH_WATER` bytes wait for the client; nothing decompressed, no header added, none dropped;
  redirects never followed (nothing is followed: this is not a browser);
- the timeouts of `UpstreamRequest`: `head_timeout` (everything up to the response head),
  `connect_timeout` (resolve + connect + TLS), `idle_timeout` (silence while the head or a body
  streams, either way);
- errors typed exactly as `transport.HttpxTransport` and `transport_aiohttp.AiohttpTransport` type them.
  A kept-alive connection the upstream closed while it sat in the pool is retried once on a new
  connection when nothing of the answer arrived, the method is idempotent and the body is buffered
  (bytes); a streamed body (not replayable) always goes on a new connection.

Not supported (not needed by the proxy, §5): `Expect: 100-continue` (answered by our server), HTTP/2,
proxies, cookies, decompression, redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httptools

from configdoc import is_denied_address

from .errors import (
    CANNOT_SEND,
    CLOSED_BEFORE_ANSWERING,
    CONNECT_TIMED_OUT,
    MALFORMED,
    NO_HEAD_IN_TIME,
    REFUSED,
    STOPPED_READING,
    TLS_FAILED,
    GatewayError,
    UpstreamAborted,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from .transport import UpstreamRequest, UpstreamResponse, tls_failure
from .types import Headers
from .upstream import Resolver, resolve

HIGH_WATER = 256 * 1024  # buffered response bytes at which reading pauses
LOW_WATER = 64 * 1024
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})  # RFC 9110 §9.2.2
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class _Reset(Exception):
    """The connection closed (or was reset) before any byte of the response head arrived."""


class _Connection(asyncio.Protocol):
    """One upstream connection; the parser callbacks feed the exchange in progress, if any."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.exchange: _Exchange | None = None
        self.parser: Any = None
        self.paused_reading = False
        self.paused_writing = False
        self.drain_waiter: asyncio.Future[None] | None = None
        # The head deadline of the exchange in progress: one timer per connection, re-armed when it
        # fires early, rather than one armed and cancelled per request (see `await_head`).
        self.head_deadline: float | None = None
        self.head_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        exchange.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            exchange.fail(UpstreamProtocolError(MALFORMED, detail=f"{self.pool.origin} switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            detail = f"{self.pool.origin} answered with a malformed response ({exc})"
            exchange.fail(UpstreamProtocolError(MALFORMED, detail=detail))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.pool.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.connection_lost(exc)
        self._wake_drain(exc or ConnectionResetError("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self._wake_drain(None)

    # --- httptools callbacks (forwarded to the exchange) -------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None:
            self.exchange.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.on_headers_complete(self.parser)
        else:
            self.close()  # an answer nobody asked for

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_body(body)
        else:
            self.close()

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.on_message_complete(self.parser)

    # --- helpers -----------------------------------------------------------------------------

    async def await_head(self, exchange: _Exchange, deadline: float) -> None:
        """Wait for the exchange's response head until `deadline` (loop time), then TimeoutError."""
        self.head_deadline = deadline
        timer = self.head_timer
        if timer is None or timer.when() > deadline:  # none armed, or armed for a later deadline
            if timer is not None:
                timer.cancel()
            self.head_timer = self.loop.call_at(deadline, self._head_timer_fired)
        try:
            await exchange.head
        finally:
            self.head_deadline = None

    def _head_timer_fired(self) -> None:
        self.head_timer = None
        deadline, exchange = self.head_deadline, self.exchange
        if deadline is None or exchange is None:
            return  # no head awaited now; the next exchange arms the timer again
        if self.loop.time() >= deadline:
            _expire(exchange.head)
        else:
            self.head_timer = self.loop.call_at(deadline, self._head_timer_fired)

    def _wake_drain(self, exc: BaseException | None) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def drain(self, timeout: float) -> None:
        if self.closed:
            raise ConnectionResetError("the upstream closed the connection")
        if not self.paused_writing:
            return
        waiter = self.drain_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            detail = f"{self.pool.origin} stopped reading the request body"
            raise UpstreamTimeout(STOPPED_READING, detail=detail) from None

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def set_reading(self, paused: bool) -> None:
        if paused != self.paused_reading and self.transport is not None and not self.closed:
            self.paused_reading = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def finished(self, exchange: _Exchange, keep_alive: bool) -> None:
        """The response is complete: back to the pool if the request went out whole and both sides
        keep the connection alive."""
        if self.exchange is not exchange:
            return
        self.exchange = None
        self.set_reading(False)
        if keep_alive and exchange.request_sent and self.usable():
            self.pool.put(self)
        else:
            self.close()


class _Exchange:
    """One request/response on a connection; also the `UpstreamResponse` handed to the proxy."""

    __slots__ = (
        "buffered",
        "chunks",
        "complete",
        "connection",
        "error",
        "head",
        "head_only",
        "headers",
        "idle_timeout",
        "interim",
        "origin",
        "received",
        "request_sent",
        "status",
        "until_close",
        "waiter",
        "writer",
    )

    def __init__(self, connection: _Connection, head_only: bool, idle_timeout: float) -> None:
        self.connection = connection
        self.origin = connection.pool.origin
        self.head_only = head_only
        self.idle_timeout = idle_timeout
        self.head: asyncio.Future[None] = connection.loop.create_future()
        self.status = 0
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.interim = False
        self.until_close = False
        self.received = False
        self.request_sent = False
        self.error: GatewayError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.writer: asyncio.Task[None] | None = None

    # --- from the parser ---------------------------------------------------------------------

    def on_headers_complete(self, parser: Any) -> None:
        status = parser.get_status_code()
        if 100 <= status < 200:
            # 1xx interim answers (103 Early Hints...) are not relayed; the real head follows.
            self.interim = True
            self.headers = []
            return
        self.status = status
        if self.head_only or status in (204, 304):
            self.complete = True
        else:
            self.until_close = not any(name in _FRAMING for name, _ in self.headers)
        if not self.head.done():
            self.head.set_result(None)
        if self.head_only:
            # llhttp does not know this answered a HEAD; the connection's next exchange gets a new parser.
            keep_alive = parser.should_keep_alive()
            self.connection.parser = None
            self.connection.finished(self, keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.complete:  # a body after a HEAD answer's head, or after the end
            self.connection.close()
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER:
            self.connection.set_reading(True)
        self._wake()

    def on_message_complete(self, parser: Any) -> None:
        if self.interim:
            self.interim = False
            return
        if self.head_only:
            return
        self.complete = True
        self._wake()
        self.connection.finished(self, parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(_Reset(repr(exc) if exc else "closed"))
        elif not self.complete:
            if self.until_close and exc is None and self.error is None:
                self.complete = True
            else:
                self.error = self.error or UpstreamAborted(f"{self.origin} closed the connection mid-body")
        self._wake()

    def fail(self, error: GatewayError) -> None:
        if not self.head.done():
            self.head.set_exception(error)
        elif not self.complete:
            failure = error.detail or error
            self.error = self.error or UpstreamAborted(f"the upstream failed while sending its body: {failure}")
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- UpstreamResponse --------------------------------------------------------------------

    def complete_body(self) -> bytes | None:
        """The whole body when all of it is here (nothing more to wait for from the upstream), taken
        in one piece without the async iterator; else None, and `body()` streams it."""
        if not self.complete or self.error is not None:
            return None
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def body(self) -> AsyncIterator[bytes]:
        loop = self.connection.loop
        while True:
            if self.chunks:
                chunks, self.chunks = self.chunks, []
                self.buffered = 0
                if self.connection.paused_reading:
                    self.connection.set_reading(False)
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                continue
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(self.idle_timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                self.connection.close()
                raise UpstreamAborted(
                    f"the upstream failed while sending its body: silent for {self.idle_timeout:g}s"
                ) from None
            finally:
                timer.cancel()
                self.waiter = None

    async def aclose(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
        if not self.complete:
            self.connection.close()  # an unread body: the connection cannot be reused (nor was it pooled)


_UNSAFE_IN_REQUEST_LINE = re.compile(r"[ \r\n]")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Pool:
    def __init__(
        self, transport: NativeTransport, loop: asyncio.AbstractEventLoop, key: tuple[Any, ...], origin: str
    ) -> None:
        self.owner = transport
        self.loop = loop
        self.key = key
        self.origin = origin
        self.idle: list[_Connection] = []
        self._sweeper: asyncio.TimerHandle | None = None

    def get(self) -> _Connection | None:
        idle = self.idle
        now = self.loop.time()
        while idle:
            connection = idle.pop()
            if connection.usable() and now - connection.idle_since < self.owner.idle_expiry:
                connection.reused = True
                return connection
            connection.close()
        return None

    def put(self, connection: _Connection) -> None:
        idle = self.idle
        now = self.loop.time()
        expiry = self.owner.idle_expiry
        while idle and now - idle[0].idle_since >= expiry:
            idle.pop(0).close()
        if len(idle) >= self.owner.max_idle or self.owner.closing:
            connection.close()
            return
        connection.idle_since = now
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(expiry, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for `idle_expiry`, also in a pool no request uses any more."""
        self._sweeper = None
        idle = self.idle
        now = self.loop.time()
        expiry = self.owner.idle_expiry
        while idle and now - idle[0].idle_since >= expiry:
            idle.pop(0).close()
        if idle:
            self._sweeper = self.loop.call_later(idle[0].idle_since + expiry - now, self._sweep)

    def forget(self, connection: _Connection) -> None:
        self.owner.connections.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


class NativeTransport:
    """The lean client behind the `Transport` interface (see the module docstring)."""

    def __init__(self, resolver: Resolver = resolve, *, max_idle: int = 256, idle_expiry: float = 30.0) -> None:
        self._resolve = resolver
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pools: dict[tuple[Any, ...], _Pool] = {}
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}
        self._origins: dict[str, tuple[str, str, str, int]] = {}
        self.connections: set[_Connection] = set()

    # --- pools -------------------------------------------------------------------------------

    def _origin(self, url: str) -> tuple[str, str, str, int, str]:
        """(origin, scheme, host, port, request target) of an absolute http(s) URL."""
        slash = url.find("/", url.find("//") + 2)
        origin, target = (url, "/") if slash < 0 else (url[:slash], url[slash:])
        parsed = self._origins.get(origin)
        if parsed is None:
            scheme, _, authority = origin.partition("://")
            scheme = scheme.lower()
            if scheme not in ("http", "https") or not authority or "@" in authority:
                raise UpstreamProtocolError(CANNOT_SEND, detail=f"cannot send to {origin!r}")
            if authority.startswith("["):
                host, _, port_text = authority[1:].partition("]")
                port_text = port_text.removeprefix(":")
            else:
                host, _, port_text = authority.partition(":")
            port = int(port_text) if port_text else (443 if scheme == "https" else 80)
            parsed = self._origins[origin] = (origin, scheme, host, port)
        return (*parsed, target)

    def _pool(self, request: UpstreamRequest, origin: str, scheme: str, host: str, port: int) -> _Pool:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            # Connections belong to one event loop (tests run several); a new loop starts afresh.
            self._pools, self.loop, self.connections = {}, loop, set()
        if scheme == "https":
            key: tuple[Any, ...] = (origin, request.tls_verify, request.ca_file, request.server_name)
        else:
            key = (origin,)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self, loop, key, origin)
        return pool

    def _context(self, request: UpstreamRequest) -> ssl.SSLContext:
        key = (request.tls_verify, request.ca_file)
        context = self._contexts.get(key)
        if context is None:
            if request.tls_verify:
                context = ssl.create_default_context(cafile=request.ca_file)
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            self._contexts[key] = context
        return context

    async def _connect(self, pool: _Pool, request: UpstreamRequest, scheme: str, host: str, port: int) -> _Connection:
        addresses = await self._resolve(host, port)
        denied = [a for a in addresses if is_denied_address(ipaddress.ip_address(a.split("%")[0]))]
        if denied:
            raise OSError(f"{host} resolves to a denied address ({', '.join(denied)})")
        if not addresses:
            raise OSError(f"{host} has no address")
        options: dict[str, Any] = {}
        if scheme == "https":
            options["ssl"] = self._context(request)
            options["server_hostname"] = request.server_name or host
        last: OSError | None = None
        loop = pool.loop
        for address in addresses:
            try:
                _, connection = await loop.create_connection(lambda: _Connection(pool), address, port, **options)
            except OSError as exc:  # ssl.SSLError (verification) is an OSError too
                last = exc
                continue
            self.connections.add(connection)
            return connection
        assert last is not None
        raise last

    # --- Transport ---------------------------------------------------------------------------

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        origin, scheme, host, port, target = self._origin(request.url)
        pool = self._pool(request, origin, scheme, host, port)
        loop = pool.loop
        head_deadline = loop.time() + max(request.head_timeout, 0.001)
        method = request.method.encode("latin-1")
        if _UNSAFE_IN_REQUEST_LINE.search(target) or _UNSAFE_IN_REQUEST_LINE.search(request.method):
            raise UpstreamProtocolError(CANNOT_SEND, detail=f"{origin}: the request line cannot be sent as is")
        body = request.body
        lines = [method, b" ", target.encode("latin-1"), b" HTTP/1.1\r\n"]
        length: bytes | None = None
        framing = _FRAMING
        for name, value in request.headers:
            if name not in framing:
                lines += (name, b": ", value, b"\r\n")
            elif name == b"content-length":
                length = value
        chunked = False
        if isinstance(body, bytes):
            if body or method in BODY_METHODS:
                lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        elif length is not None:
            lines += (b"content-length: ", length, b"\r\n")
        else:
            chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        # A streamed body cannot be sent twice, so it never risks a pooled connection the upstream may
        # have closed meanwhile: it gets a new one (which then joins the pool).
        fresh_only = not isinstance(body, bytes)
        while True:
            connection = None if fresh_only else pool.get()
            if connection is None:
                connection = await self._open(pool, request, scheme, host, port, head_deadline)
            exchange = _Exchange(connection, method == b"HEAD", request.idle_timeout)
            try:
                await self._exchange(connection, exchange, head, body, chunked, head_deadline, request)
            except _Reset as exc:
                connection.close()
                if connection.reused and method in IDEMPOTENT and isinstance(body, bytes) and not exchange.received:
                    fresh_only = True  # the pool's connection was stale: once more on a new one
                    continue
                raise UpstreamReset(
                    CLOSED_BEFORE_ANSWERING, detail=f"{origin} reset the connection before answering ({exc})"
                ) from exc
            except BaseException:
                connection.exchange = None  # nobody waits for this exchange any more
                connection.close()
                if exchange.writer is not None and not exchange.writer.done():
                    exchange.writer.cancel()
                raise
            return exchange

    async def _open(
        self, pool: _Pool, request: UpstreamRequest, scheme: str, host: str, port: int, head_deadline: float
    ) -> _Connection:
        loop = pool.loop
        head_left = head_deadline - loop.time()
        connect_timeout = min(request.connect_timeout, head_left)
        try:
            async with asyncio.timeout(max(connect_timeout, 0.001)):
                return await self._connect(pool, request, scheme, host, port)
        except TimeoutError as exc:
            if head_left <= request.connect_timeout:
                raise UpstreamTimeout(NO_HEAD_IN_TIME, detail=f"{pool.origin} sent no response head in time") from exc
            raise UpstreamConnectTimeout(CONNECT_TIMED_OUT, detail=f"connecting to {pool.origin} timed out") from exc
        except (OSError, ValueError) as exc:
            if tls_failure(exc):
                raise UpstreamConnectError(TLS_FAILED, detail=f"TLS with {pool.origin} failed: {exc}") from exc
            raise UpstreamConnectError(REFUSED, detail=f"{pool.origin} refused the connection ({exc})") from exc

    async def _exchange(
        self,
        connection: _Connection,
        exchange: _Exchange,
        head: bytes,
        body: bytes | AsyncIterator[bytes],
        chunked: bool,
        head_deadline: float,
        request: UpstreamRequest,
    ) -> None:
        loop = connection.loop
        idle_timeout = request.idle_timeout
        transport = connection.transport
        assert transport is not None
        connection.exchange = exchange
        if connection.parser is None:
            # llhttp parses one response after another on a kept-alive connection; only an answer to
            # HEAD (whose head announces a body that never comes) leaves it unusable (see below).
            connection.parser = httptools.HttpResponseParser(connection)
        if isinstance(body, bytes):
            transport.write(head + body if body else head)
            exchange.request_sent = True
        else:
            transport.write(head)
            writer = loop.create_task(self._write_body(connection, exchange, body, chunked, idle_timeout))
            exchange.writer = writer
            # The client sets the pace of a streamed body (its stalls are the proxy's 408, no fault of the
            # upstream's): the upstream's time to answer starts once the body is all sent, unless the
            # answer (or a failure) comes first (see transport.head_deadline).
            await asyncio.wait((exchange.head, writer), return_when=asyncio.FIRST_COMPLETED)
            if not exchange.head.done():
                head_deadline = loop.time() + max(request.head_timeout, 0.001)
        # The head must come within the head deadline, and no silence may last over the idle timeout.
        try:
            await connection.await_head(exchange, min(head_deadline, loop.time() + idle_timeout))
        except TimeoutError:
            detail = f"{connection.pool.origin} sent no response head in time"
            raise UpstreamTimeout(NO_HEAD_IN_TIME, detail=detail) from None

    async def _write_body(
        self,
        connection: _Connection,
        exchange: _Exchange,
        body: AsyncIterator[bytes],
        chunked: bool,
        idle_timeout: float,
    ) -> None:
        transport = connection.transport
        assert transport is not None
        try:
            async for chunk in body:
                if connection.closed:
                    return
                if chunked:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    transport.write(chunk)
                await connection.drain(idle_timeout)
            if chunked and not connection.closed:
                transport.write(b"0\r\n\r\n")
            exchange.request_sent = True
        except GatewayError as exc:
            # The client's own body failed (too large, stalled, gone): that is the answer, not the upstream.
            connection.close()
            if not exchange.head.done():
                exchange.head.set_exception(exc)
        except asyncio.CancelledError:
            connection.close()
            raise
        except Exception:  # the connection broke (OSError) or worse: the head wait sees it closed
            connection.close()

    async def aclose(self) -> None:
        self.closing = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        connections, self.connections = list(self.connections), set()
        for connection in connections:
            connection.close()
        self.closing = False
