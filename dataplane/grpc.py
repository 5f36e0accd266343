"""gRPC proxying (ARCHITECTURE §13): endpoints with `protocol: grpc` go upstream over HTTP/2 (h2c, or h2
over TLS for an https target) on a small client built on `h2`, one multiplexed connection per target
(a new one when it is gone, draining, or full), so trailers (`grpc-status`) pass both ways and every
kind of call streams: unary, client, server and bidirectional.

A call is relayed message-agnostic: DATA frames both ways as they come, each direction under HTTP/2
flow control (the upstream's window for what the client sends; ours, given back only once the client
took the bytes, for what the upstream answers). The client's `grpc-timeout` is the call's deadline:
past it the upstream stream is reset (CANCEL) and the client told DEADLINE_EXCEEDED. A client that
cancels (RST_STREAM) cancels the upstream stream. An upstream that dies mid-call ends the call with
UNAVAILABLE in the trailers, and so does the server's shutdown limit for a call still running.

What the gateway itself answers a gRPC client (an error of the chain, an open breaker, no upstream) is
a trailers-only response (RFC-less, per gRPC's PROTOCOL-HTTP2.md): HTTP 200, `content-type:
application/grpc`, `grpc-status` and `grpc-message` (`grpc_answer`), the status mapped from the
gateway's HTTP one: 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 429 and 413 RESOURCE_EXHAUSTED, 404 and
405 UNIMPLEMENTED, 502 and 503 UNAVAILABLE, 504 and 408 DEADLINE_EXCEEDED, 499 CANCELLED, 400 and 500
INTERNAL, others UNKNOWN.

The breaker counts a call failed when the upstream could not be reached or answered UNAVAILABLE,
DEADLINE_EXCEEDED, INTERNAL, UNKNOWN or DATA_LOSS; `gateway_grpc_responses{endpoint, grpc_status}`
counts calls by the status the client got.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple

from .errors import (
    CONNECT_TIMED_OUT,
    NO_HEAD_IN_TIME,
    REFUSED,
    TLS_FAILED,
    ClientGone,
    NoHealthyTarget,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .forwarding import HOP_BY_HOP
from .types import Headers, Scope

if TYPE_CHECKING:
    from .exchange import Exchange
    from .runtime import EndpointState
    from .snapshot import Endpoint, Target

logger = logging.getLogger("dataplane")

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 7, 8, 12, 13, 14
DATA_LOSS, UNAUTHENTICATED = 15, 16
_BY_HTTP_STATUS = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,
    413: RESOURCE_EXHAUSTED,
    429: RESOURCE_EXHAUSTED,
    499: CANCELLED,
    500: INTERNAL,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}
# What the breaker counts as the upstream failing (a client's mistake or a missing method is not).
_FAILURES = frozenset({UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS})
# Request headers that do not go upstream: HTTP/1.1's hop-by-hop ones and the ones rebuilt as
# pseudo-headers (`te: trailers` is added back).
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length"}
# Values that differ on every call, and secrets (RFC 7541 §7.1.3): sent never-indexed, so HPACK's table
# keeps the ones that repeat and no secret sits in it (see h2server.response_head).
_VOLATILE = frozenset(
    {
        b"x-request-id",
        b"grpc-timeout",
        b"traceparent",
        b"tracestate",
        b"authorization",
        b"proxy-authorization",
        b"cookie",
    }
)
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 1024 * 1024
# A client cancelling this close to its deadline is taken for the deadline passing (its clock started
# before the request reached us, ours after).
DEADLINE_SLACK = 0.05
# An upstream connection with no call open this long is closed (GOAWAY NO_ERROR): as the HTTP/1.1 pool
# does its idle connections (transport_native.py), and so that a connection the pool replaced (full,
# or found unusable) does not stay open for the process's life. The next call opens a new one.
IDLE_TIMEOUT = 30.0
# grpc-message of a call still running when the server's shutdown limit ends it.
STOPPING = "the gateway is shutting down"
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def is_grpc(scope: Scope) -> bool:
    """An HTTP/2 request with a gRPC content type."""
    if scope.get("http_version") != "2":
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).startswith(b"application/grpc")
    return False


def grpc_status_of(http_status: int) -> int:
    return _BY_HTTP_STATUS.get(http_status, UNKNOWN)


def grpc_message(text: str) -> bytes:
    """`grpc-message`: percent-encoded UTF-8 (gRPC's PROTOCOL-HTTP2.md)."""
    return urllib.parse.quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


def grpc_answer(status: int, headers: Headers, message: str) -> tuple[int, Headers]:
    """A gateway-made answer as a gRPC trailers-only response: HTTP 200 and the mapped status."""
    kept = [(name, value) for name, value in headers if name not in (b"content-type", b"content-length")]
    kept += [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % grpc_status_of(status)),
        (b"grpc-message", grpc_message(message)),
    ]
    return 200, kept


def parse_timeout(value: bytes) -> float | None:
    """`grpc-timeout` (`100m`, `5S`, at most 8 digits and a unit) in seconds; None when malformed."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


# --- the upstream client -------------------------------------------------------------------------------


class UpstreamStream:
    """One call's stream on an upstream connection: what the upstream sent, in order, as a queue of
    (kind, value): ("headers", fields), ("data", (bytes, flow-controlled length)), ("trailers", fields),
    ("end", None), ("reset", code), ("lost", None)."""

    def __init__(self, connection: UpstreamConnection, stream_id: int) -> None:
        self.connection = connection
        self.id = stream_id
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.closed = False

    async def send(self, data: bytes, *, end_stream: bool) -> bool:
        """Send body bytes as the upstream's windows allow; False when the stream or connection is gone."""
        return await self.connection.send_data(self, data, end_stream=end_stream)

    def consumed(self, size: int) -> None:
        self.connection.acknowledge(self.id, size)

    def reset(self, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        if not self.closed:
            self.closed = True
            self.connection.reset(self.id, code)


class UpstreamConnection:
    """One HTTP/2 connection to a target, its streams multiplexed."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=True,
            # The request head is built here from checked parts (the client's fields passed h2server's
            # checks; the rest are ours): h2 need not normalise it again, nor choose what HPACK indexes.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.streams: dict[int, UpstreamStream] = {}
        self.closed = False
        self.going_away = False
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] | None = None  # bytes for the upstream, written at the end of the turn
        self._window: set[asyncio.Future[None]] = set()
        self.idle_timeout = idle_timeout
        self._idle: asyncio.TimerHandle | None = None
        self.flush()
        self._task = self._loop.create_task(self._read())
        self._idle_from_now()

    @classmethod
    async def open(
        cls, target: Target, endpoint: Endpoint, contexts: Contexts, *, idle_timeout: float = IDLE_TIMEOUT
    ) -> UpstreamConnection:
        host, _, port_text = target.host.rpartition(":") if _has_port(target.host) else (target.host, "", "")
        host = host.strip("[]")
        tls = target.scheme == "https"
        port = int(port_text) if port_text else (443 if tls else 80)
        options: dict[str, Any] = {}
        if tls:
            policy = endpoint.tls
            options["ssl"] = contexts.get(policy.verify, policy.ca_file)
            options["server_hostname"] = policy.server_name or host
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, **options), endpoint.connect_timeout
            )
        except TimeoutError:
            raise UpstreamConnectTimeout(CONNECT_TIMED_OUT) from None
        except ssl.SSLError as exc:
            raise UpstreamConnectError(TLS_FAILED, detail=f"{target.origin}: {exc}") from None
        except OSError as exc:
            raise UpstreamConnectError(REFUSED, detail=f"{target.origin}: {exc}") from None
        return cls(reader, writer, idle_timeout=idle_timeout)

    @property
    def usable(self) -> bool:
        if self.closed or self.going_away:
            return False
        return self.conn.open_outbound_streams < self.conn.remote_settings.max_concurrent_streams

    def flush(self) -> None:
        """What h2 has to send, written once at the end of this turn of the event loop with whatever
        else the turn adds: with many calls in flight, one system call instead of one per frame."""
        data = self.conn.data_to_send()
        if data:
            pending = self._pending
            if pending is None:
                self._pending = [data]
                self._loop.call_soon(self._write)
            else:
                pending.append(data)

    def _write(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self.writer.is_closing():
            self.writer.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def request(self, headers: Headers, *, end_stream: bool) -> UpstreamStream:
        stream_id = self.conn.get_next_available_stream_id()
        stream = self.streams[stream_id] = UpstreamStream(self, stream_id)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.flush()
        return stream

    async def send_data(self, stream: UpstreamStream, data: bytes, *, end_stream: bool) -> bool:
        conn = self.conn
        while True:
            if self.closed or stream.closed:
                return False
            try:
                window = conn.local_flow_control_window(stream.id)
                size = min(window, conn.max_outbound_frame_size, len(data))
                if size <= 0 and data:
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._window.add(waiter)
                    try:
                        await waiter
                    finally:
                        self._window.discard(waiter)
                    continue
                chunk, data = data[:size], data[size:]
                conn.send_data(stream.id, chunk, end_stream=end_stream and not data)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return False
            self.flush()
            if self.writer.transport.get_write_buffer_size() > CONNECTION_WINDOW:
                self._write()
                await self.writer.drain()
            if not data:
                return True

    def acknowledge(self, stream_id: int, size: int) -> None:
        if self.closed or not size:
            return
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.flush()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        self.streams.pop(stream_id, None)
        if self.closed:
            return
        self._idle_from_now()
        try:
            self.conn.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.flush()

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    logger.warning("gRPC upstream broke HTTP/2: %s", exc)
                    self.flush()
                    break
                for event in events:
                    self._event(event)
                self.flush()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed = True
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            for stream in self.streams.values():
                stream.events.put_nowait(("lost", None))
            self.streams.clear()
            self._wake()
            self._write()  # a GOAWAY h2 queued for a protocol error goes out before the close
            self.writer.close()

    def _event(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        stream = self.streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived):
            if stream is not None:
                stream.events.put_nowait(("headers", event.headers))
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.events.put_nowait(("data", (event.data, event.flow_controlled_length)))
            else:
                self.acknowledge(event.stream_id, event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.TrailersReceived):
            if stream is not None:
                stream.events.put_nowait(("trailers", event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                stream.closed = True
                self.streams.pop(stream_id, None)
                stream.events.put_nowait(("end", None))
                self._idle_from_now()
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                stream.closed = True
                self.streams.pop(stream_id, None)
                stream.events.put_nowait(("reset", event.error_code))
                self._idle_from_now()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.going_away = True
            last = event.last_stream_id or 0
            for sid in [sid for sid in self.streams if sid > last]:
                self.streams.pop(sid).events.put_nowait(("lost", None))

    def _wake(self) -> None:
        waiters, self._window = self._window, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _idle_from_now(self) -> None:
        """No call open: the connection closes after `idle_timeout` unless one opens by then."""
        if self.streams or self.closed or self._idle is not None:
            return
        self._idle = self._loop.call_later(self.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        if self.streams or self.closed:
            return
        self.conn.close_connection(ErrorCodes.NO_ERROR)
        self.flush()
        self._write()  # the GOAWAY goes out before the close
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._task.cancel()
        self.writer.close()


def _has_port(host: str) -> bool:
    return host.rsplit("]", 1)[-1].count(":") == 1


class Contexts:
    """TLS contexts for h2 targets (ALPN `h2`), one per (verify, CA file)."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}

    def get(self, verify: bool, ca_file: str | None) -> ssl.SSLContext:
        context = self._contexts.get((verify, ca_file))
        if context is None:
            context = ssl.create_default_context(cafile=ca_file) if verify else ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            self._contexts[(verify, ca_file)] = context
        return context


class Pool:
    """One usable connection per target origin (and TLS policy), opened on first use."""

    def __init__(self, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._connections: dict[tuple[str, bool, str | None, str | None], UpstreamConnection] = {}
        self._opening: dict[tuple[str, bool, str | None, str | None], asyncio.Future[UpstreamConnection]] = {}
        self.contexts = Contexts()

    async def connection(self, target: Target, endpoint: Endpoint) -> UpstreamConnection:
        tls = endpoint.tls
        key = (target.origin, tls.verify, tls.ca_file, tls.server_name)
        found = self._connections.get(key)
        if found is not None and found.usable:
            return found
        opening = self._opening.get(key)
        if opening is not None:
            return await asyncio.shield(opening)
        future: asyncio.Future[UpstreamConnection] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            connection = await UpstreamConnection.open(target, endpoint, self.contexts, idle_timeout=self.idle_timeout)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._opening.pop(key, None)
        self._connections[key] = connection
        future.set_result(connection)
        return connection

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


# --- the call --------------------------------------------------------------------------------------------


async def proxy_call(
    exchange: Exchange,
    state: EndpointState,
    rest: str,
    pool: Pool,
    upstream_headers: Callable[[Target], Headers],
    answer_headers: Callable[[Headers], Headers],
    observe: Callable[[int], None],
) -> None:
    """Relay one gRPC call to a target of `state`'s endpoint. Raises GatewayError before the response
    head (the proxy answers it, as grpc-status); after it, ends the call with trailers itself."""
    endpoint = state.endpoint
    scope = exchange.scope
    deadline: float | None = None
    for name, value in scope["headers"]:
        if name == b"grpc-timeout":
            seconds = parse_timeout(value)
            if seconds is not None:
                deadline = time.monotonic() + seconds
    target = state.balancer.pick()
    if target is None:
        raise NoHealthyTarget("no healthy target for this endpoint")
    exchange.target = target.url
    connection = await pool.connection(target, endpoint)
    query: bytes = scope.get("query_string") or b""
    path = (target.base_path + rest).encode("latin-1") + (b"?" + query if query else b"")
    headers: Headers = [
        (b":method", b"POST"),
        (b":scheme", target.scheme.encode()),
        (b":authority", target.host.encode()),
        (b":path", path),
    ]
    headers += [
        NeverIndexedHeaderTuple(name, value) if name in _VOLATILE else (name, value)
        for name, value in upstream_headers(target)
        if name not in _NOT_FORWARDED
    ]
    headers.append((b"te", b"trailers"))  # gRPC requires it; the forwarding rules drop it as hop-by-hop
    started = time.perf_counter()
    stream = connection.request(headers, end_stream=False)
    pump = asyncio.get_running_loop().create_task(_client_to_upstream(exchange, stream))
    try:
        await _upstream_to_client(exchange, stream, endpoint, deadline, answer_headers, observe)
    except asyncio.CancelledError:
        # Only the server's shutdown limit cancels a call (uvicorn's, once the drain has waited for it):
        # the client hears UNAVAILABLE, which it may retry on another node, not a reset stream (which
        # grpcio reports as INTERNAL, a failure nobody retries).
        await _stopping(exchange, answer_headers, observe)
        raise
    finally:
        exchange.upstream_seconds = time.perf_counter() - started
        if not pump.done():
            pump.cancel()
        stream.reset()


async def _client_to_upstream(exchange: Exchange, stream: UpstreamStream) -> None:
    """The client's messages, as they come; a client that goes away cancels the upstream stream."""
    while True:
        message = await exchange.receive()
        if message["type"] == "http.disconnect":
            stream.reset(ErrorCodes.CANCEL)
            stream.events.put_nowait(("cancelled", None))
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        exchange.bytes_in += len(body)
        if not await stream.send(body, end_stream=not more):
            return
        if not more:
            break
    # The request is all sent: what is left to hear from the client is its cancelling.
    while (await exchange.receive())["type"] != "http.disconnect":
        pass
    stream.reset(ErrorCodes.CANCEL)
    stream.events.put_nowait(("cancelled", None))


async def _next(stream: UpstreamStream, deadline: float | None, limit: float | None) -> tuple[str, Any]:
    wait = limit
    if deadline is not None:
        left = deadline - time.monotonic()
        wait = left if wait is None else min(wait, left)
    if wait is None:
        return await stream.events.get()
    if wait <= 0:
        raise TimeoutError
    return await asyncio.wait_for(stream.events.get(), wait)


async def _upstream_to_client(
    exchange: Exchange,
    stream: UpstreamStream,
    endpoint: Endpoint,
    deadline: float | None,
    answer_headers: Callable[[Headers], Headers],
    observe: Callable[[int], None],
) -> None:
    send = exchange.send
    # The head: within the endpoint's timeout (and the call's deadline).
    try:
        kind, value = await _next(stream, deadline, endpoint.timeout)
    except TimeoutError:
        stream.reset()
        if deadline is not None and time.monotonic() >= deadline:
            raise UpstreamTimeout("the call's deadline (grpc-timeout) passed") from None
        raise UpstreamTimeout(NO_HEAD_IN_TIME) from None
    if kind == "cancelled":
        if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK:
            # The client's timer beat ours by a hair: the deadline passed all the same, and the breaker
            # should hear of a slow upstream whoever noticed first.
            raise UpstreamTimeout("the call's deadline (grpc-timeout) passed")
        raise ClientGone("the client cancelled the call")
    if kind != "headers":
        raise UpstreamUnavailable("the upstream ended the call before answering")
    status = int(dict(value).get(b":status", b"0") or 0)
    fields: Headers = [(name, val) for name, val in value if not name.startswith(b":")]
    if status != 200:
        raise UpstreamUnavailable(f"the upstream answered HTTP {status} to a gRPC call")
    trailers_only = any(name == b"grpc-status" for name, _ in fields)
    exchange.status = 200
    exchange.started = True
    if trailers_only:
        code = _status_in(fields)
        await send({"type": "http.response.start", "status": 200, "headers": answer_headers(fields)})
        await send({"type": "http.response.body", "body": b""})
        _finish(exchange, code, observe)
        return
    await send({"type": "http.response.start", "status": 200, "headers": answer_headers(fields), "trailers": True})
    while True:
        try:
            kind, value = await _next(stream, deadline, None)
        except TimeoutError:
            stream.reset()
            await _end(exchange, DEADLINE_EXCEEDED, "the call's deadline (grpc-timeout) passed", observe)
            return
        if kind == "data":
            data, size = value
            if data:
                exchange.bytes_out += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
            stream.consumed(size)
        elif kind == "trailers":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send({"type": "http.response.trailers", "headers": list(value), "more_trailers": False})
            _finish(exchange, _status_in(value), observe)
            return
        elif kind == "cancelled":
            _finish(exchange, CANCELLED, observe)
            exchange.error = "client_closed_request"
            return
        else:  # "end" without trailers, "reset", "lost": the upstream went away mid-call
            await _end(exchange, UNAVAILABLE, "the upstream ended the call without a status", observe)
            return


def _status_in(fields: Any) -> int:
    for name, value in fields:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return UNKNOWN
    return UNKNOWN


async def _end(exchange: Exchange, code: int, message: str, observe: Callable[[int], None]) -> None:
    await exchange.send({"type": "http.response.body", "body": b"", "more_body": False})
    trailers = [(b"grpc-status", b"%d" % code), (b"grpc-message", grpc_message(message))]
    await exchange.send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
    exchange.error = "upstream_aborted" if code == UNAVAILABLE else "upstream_timeout"
    _finish(exchange, code, observe)


async def _stopping(
    exchange: Exchange, answer_headers: Callable[[Headers], Headers], observe: Callable[[int], None]
) -> None:
    """End a call the stopping server cancelled with UNAVAILABLE: trailers-only before the head,
    trailers after it."""
    if exchange.started:
        await _end(exchange, UNAVAILABLE, STOPPING, observe)
    else:
        exchange.started = True
        exchange.status = 200
        status, headers = grpc_answer(503, [], STOPPING)
        await exchange.send({"type": "http.response.start", "status": status, "headers": answer_headers(headers)})
        await exchange.send({"type": "http.response.body", "body": b""})
        observe(UNAVAILABLE)
    exchange.error = "shutting_down"


def _finish(exchange: Exchange, code: int, observe: Callable[[int], None]) -> None:
    observe(code)


def failed(code: int | None) -> bool:
    """Whether the breaker counts the call failed."""
    return code is None or code in _FAILURES
