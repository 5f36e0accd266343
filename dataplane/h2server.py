"""HTTP/2 to clients (ARCHITECTURE §13), on the `h2` package's state machine, inside the data plane's own
server: a connection of `server.LeanHttpToolsProtocol` turns into an `H2Server` when TLS's ALPN chose
`h2`, or when a plain connection opens with the HTTP/2 preface (h2c with prior knowledge). Each stream
is one ASGI request through the same app as HTTP/1.1 (chain, error table, access log, metrics,
concurrency cap), with `http_version` "2".

What a client cannot do here:

- grow our memory by reading slowly: a stream's `send` waits for the client's flow-control window
  and for the transport's buffer to drain (the connection's send deadline still applies: server.py);
  a stream whose window stays shut for `send_timeout` is reset;
- push more body than the app reads: the window we grant (WINDOW_UPDATE) follows what the app has
  taken (`receive`), per stream and per connection;
- open more than `max_streams` streams at once (SETTINGS_MAX_CONCURRENT_STREAMS), nor keep more than
  twice that many requests running by opening and cancelling streams (CVE-2023-44487, "rapid
  reset"): such streams are refused, and cancelling more streams than the budget allows ends the
  connection (GOAWAY ENHANCE_YOUR_CALM);
- flood the connection with frames that cost us and not it: PING, SETTINGS, PRIORITY and empty DATA
  frames each have a budget (a token bucket); spending past it → GOAWAY ENHANCE_YOUR_CALM and close.
  A header block is at most `MAX_HEADER_LIST` bytes decoded and 64 CONTINUATION frames (h2's cap):
  beyond either → GOAWAY and close;
- send a malformed request (RFC 9113 §8.1.1, §8.2): connection-specific fields (`connection`,
  `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, `te` other than `trailers`),
  upper-case names, unknown, repeated, missing or misplaced pseudo-headers → RST_STREAM
  PROTOCOL_ERROR for that stream only;
- hold an idle connection: no stream open for `idle_timeout` → GOAWAY NO_ERROR and close.

`:authority` becomes the Host header (the one the chain and the upstream see); a Host sent alongside it
is dropped. Request trailers are dropped, as over HTTP/1.1. The response's connection-specific headers
are dropped (they mean nothing in HTTP/2). `http.response.trailers` (ASGI) is honoured when the app
asked for trailers in its `http.response.start`.

Draining (`shutdown`): GOAWAY NO_ERROR naming the last stream taken; streams in flight finish, newer
ones are refused, and the connection closes when the last one ends.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple
from hyperframe.exceptions import InvalidDataError
from hyperframe.frame import GoAwayFrame

from .errors import BadRequest, error_response
from .proxy import new_request_id

if TYPE_CHECKING:
    from .server import LeanHttpToolsProtocol

logger = logging.getLogger("uvicorn.error")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# What we announce and hold to. A stream's window is what one upload may have in flight unread; the
# connection's bounds all of them together (and so the body bytes buffered per connection).
MAX_HEADER_LIST = 65536
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 1024 * 1024
MAX_FRAME = 16384  # RFC 9113's minimum, and the default: bigger frames only delay other streams

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT = {"type": "http.disconnect"}
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9113 §8.2.2: fields that only mean something on one HTTP/1.1 connection.
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
# Response fields the ASGI app may set for HTTP/1.1 that HTTP/2 must not carry.
_RESPONSE_DROPPED = _CONNECTION_SPECIFIC | {b"te", b"trailer"}
_BAD_NAME_BYTES = bytes(range(0x21)) + bytes(range(0x41, 0x5B)) + b'\x7f()<>@,;:[]={}\\"/?'
_GOOD_NAME_BYTES = bytes(b for b in range(256) if b not in _BAD_NAME_BYTES)
_BAD_VALUE_BYTES = b"\x00\r\n"
_INDEXED = frozenset(
    {
        b"content-type",
        b"content-encoding",
        b"cache-control",
        b"server",
        b"vary",
        b"x-endpoint-id",
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
        b"strict-transport-security",
        b"grpc-encoding",
        b"grpc-accept-encoding",
    }
)


def _error_code(exc: h2.exceptions.ProtocolError) -> ErrorCodes | None:
    """The code RFC 9113 gives an error h2 reports with another: an undecodable header block is a
    COMPRESSION_ERROR (§4.3), a SETTINGS acknowledgement with a payload a FRAME_SIZE_ERROR (§6.5)."""
    cause = exc.__cause__
    if isinstance(cause, hpack.HPACKError) and not isinstance(cause, hpack.OversizedHeaderListError):
        return ErrorCodes.COMPRESSION_ERROR
    if isinstance(cause, InvalidDataError) and str(cause).startswith("SETTINGS ack frame must not have payload"):
        return ErrorCodes.FRAME_SIZE_ERROR
    return None


class Budget:
    """A token bucket: `capacity` events at once, `rate` more per second. `spend` is False once the
    events come faster than that (a flood)."""

    __slots__ = ("_clock", "_rate", "_stamp", "_tokens", "capacity")

    def __init__(self, capacity: float, rate: float, clock: Any) -> None:
        self.capacity = capacity
        self._rate = rate
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()

    def spend(self) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Malformed(Exception):
    """A request RFC 9113 §8.1.1 calls malformed: a stream error PROTOCOL_ERROR."""


def request_head(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    """The request's pseudo-headers and its fields, checked as RFC 9113 §8.2 and §8.3.1 say; Malformed
    otherwise. Cookie crumbs (§8.2.3) come joined by h2 already."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name[:1] == b":":
            if fields:
                raise Malformed(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise Malformed(f"unknown pseudo-header {name!r}")
            if name in pseudo:
                raise Malformed(f"repeated pseudo-header {name!r}")
            pseudo[name] = value
        else:
            if name in _CONNECTION_SPECIFIC:
                raise Malformed(f"connection-specific field {name!r}")
            if name == b"te" and value.lower() != b"trailers":
                raise Malformed("te other than trailers")
            fields.append((name, value))
        if not name or name.translate(None, _GOOD_NAME_BYTES).strip(b":") or b":" in name[1:]:
            raise Malformed(f"invalid field name {name!r}")
        if value != value.strip(b" \t") or any(byte in value for byte in _BAD_VALUE_BYTES):
            raise Malformed(f"invalid value of {name!r}")
    method = pseudo.get(b":method")
    if not method:
        raise Malformed("no :method")
    if method == b"CONNECT":
        raise Malformed("CONNECT is not served here")
    path = pseudo.get(b":path")
    if not path or b":scheme" not in pseudo:
        raise Malformed("no :path or no :scheme")
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        raise Malformed(":path is neither an absolute path nor *")
    return pseudo, fields


class H2Stream:
    """One stream's ASGI `receive` and `send` (the HTTP/2 twin of server.LeanCycle)."""

    __slots__ = (
        "body",
        "body_done",
        "body_ended",
        "disconnected",
        "head",
        "head_only",
        "id",
        "more_body",
        "response_complete",
        "response_started",
        "scope",
        "server",
        "trailer_fields",
        "trailers",
        "unacked",
        "waiter",
    )

    def __init__(self, server: H2Server, stream_id: int, scope: dict[str, Any], *, ended: bool) -> None:
        self.server = server
        self.id = stream_id
        self.scope = scope
        self.head_only = scope["method"] == "HEAD"
        self.body: list[bytes] = []
        self.unacked = 0  # flow-controlled bytes received and not yet given back to the client's window
        self.more_body = not ended
        self.body_ended = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.body_done = False  # the app sent its last body message
        self.trailers = False  # the app announced trailers
        self.trailer_fields: list[tuple[bytes, bytes]] = []  # ...and what it sent of them so far
        self.head: list[tuple[bytes, bytes]] | None = None  # the response head, sent with the first body
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started and not self.disconnected:
                body = b"Internal Server Error"
                await self.send(
                    {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]}
                )
                await self.send({"type": "http.response.body", "body": body})
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        finally:
            self.server.stream_done(self)

    async def receive(self) -> dict[str, Any]:
        while not (self.disconnected or self.response_complete):
            if self.body or (not self.more_body and not self.body_ended):
                break
            waiter = self.waiter = self.server.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        chunks, self.body = self.body, []
        if self.unacked:
            self.server.acknowledge(self.id, self.unacked)
            self.unacked = 0
        if not self.more_body:
            self.body_ended = True
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            return
        kind = message["type"]
        server = self.server
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self.response_started = True
            self.trailers = bool(message.get("trailers", False))
            self.head = response_head(message["status"], message.get("headers", ()))
        elif kind == "http.response.body":
            if self.body_done:
                raise RuntimeError("Unexpected ASGI message 'http.response.body' after the body ended.")
            body = b"" if self.head_only else message.get("body", b"")
            more = bool(message.get("more_body", False))
            end = not more and not self.trailers
            head, self.head = self.head, None
            if head is not None and not server.send_headers(self, head, end_stream=end and not body):
                return
            if body or (end and head is None):
                await server.send_body(self, body, end_stream=end)
            if not more:
                self.body_done = True
                if end:
                    self._complete()
        elif kind == "http.response.trailers":
            if not self.trailers or self.response_complete:
                raise RuntimeError("Unexpected ASGI message 'http.response.trailers'.")
            head, self.head = self.head, None
            if head is not None and not server.send_headers(self, head, end_stream=False):
                return  # trailers straight after the head: a response with no body
            self.body_done = True
            self.trailer_fields += [(name.lower(), value) for name, value in message.get("headers", ())]
            if not message.get("more_trailers", False):
                server.send_headers(self, self.trailer_fields, end_stream=True)
                self._complete()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")

    def _complete(self) -> None:
        self.response_complete = True
        self.wake()


def response_head(status: int, headers: Any) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 response head: `:status`, then the app's fields (names lower-cased, connection-specific
    ones dropped). Only fields that repeat from answer to answer enter HPACK's dynamic table; the rest
    (a request id, a date, a response time, cookies) are sent never-indexed: they would only push the
    repeating ones out of the table and make every search of it longer."""
    head: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status)]
    for name, value in headers:
        name = name.lower()
        if name in _RESPONSE_DROPPED:
            continue
        head.append((name, value) if name in _INDEXED else NeverIndexedHeaderTuple(name, value))
    names = b"".join(name for name, _ in head[1:])
    if names.translate(None, _GOOD_NAME_BYTES):
        raise RuntimeError("Invalid HTTP header name.")
    if any(byte in value for _, value in head for byte in _BAD_VALUE_BYTES):
        raise RuntimeError("Invalid HTTP header value.")
    return head


class H2Server:
    """One HTTP/2 connection: h2's state machine fed by the protocol's `data_received`, a stream (an
    ASGI request) per client stream, the limits and budgets of the module docstring."""

    def __init__(self, protocol: LeanHttpToolsProtocol, *, max_streams: int, idle_timeout: float) -> None:
        from .server import RestartingDeadline, valid_authority  # server.py imports this module

        self.valid_authority = valid_authority

        self.protocol = protocol
        self.loop = protocol.loop
        self.max_streams = max_streams
        self.send_timeout = protocol.send_timeout
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Our own checks (request_head) answer a malformed request with a stream error, as RFC 9113
            # asks; h2's would end the whole connection.
            validate_inbound_headers=False,
            normalize_inbound_headers=True,
            # response_head lower-cases and checks the fields itself (and chooses what HPACK indexes).
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = self.conn = h2.connection.H2Connection(config=config)
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        conn.decoder.max_header_list_size = MAX_HEADER_LIST
        self.streams: dict[int, H2Stream] = {}  # streams whose request is running
        self._opening: bytes | None = b""  # the client's first bytes, until its first frame's type is known
        self.last_stream = 0  # the highest stream id taken
        self.draining = False
        self.closed = False
        self._window_waiters: set[asyncio.Future[None]] = set()
        clock = self.loop.time
        self.resets = Budget(100, 10, clock)  # client-cancelled streams (CVE-2023-44487)
        self.pings = Budget(50, 10, clock)
        self.settings = Budget(50, 10, clock)
        self.priorities = Budget(500, 100, clock)
        self.empty = Budget(100, 20, clock)  # DATA frames with no data and no END_STREAM
        self.idle = RestartingDeadline(self.loop, idle_timeout, self._idle_expired)

    # --- the connection -------------------------------------------------------------------------------

    def start(self, first: bytes) -> None:
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        self.idle.start()
        if first:
            self.data_received(first)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            transport = self.protocol.transport
            if not transport.is_closing():
                transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._opening is not None and not self._check_opening(data):
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued the GOAWAY with the error's code; where RFC 9113 names another code than
            # h2 does, it is replaced.
            code = _error_code(exc)
            if code is not None:
                self.conn.clear_outbound_data_buffer()
                self.conn.close_connection(code, last_stream_id=self.last_stream)
            self._log("protocol error: %s", exc)
            self._close()
            return
        for event in events:
            if self.closed:
                return
            self._event(event)
        self.flush()

    def _check_opening(self, data: bytes) -> bool:
        """RFC 9113 §3.4: the client's preface is the magic then a SETTINGS frame (h2 checks only the
        magic). The first 28 bytes are copied aside (h2 gets them all the same) until the frame's type
        is known."""
        opening = self._opening = (self._opening or b"") + data
        if len(opening) < len(PREFACE) + 4:
            return True
        self._opening = None
        if opening.startswith(PREFACE) and opening[len(PREFACE) + 3] != 0x4:
            self._log("the connection preface has no SETTINGS frame")
            self.conn.close_connection(ErrorCodes.PROTOCOL_ERROR)
            self._close()
            return False
        return True

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.more_body = False
                stream.wake()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._gone(stream)
                if event.remote_reset and not stream.response_complete and not self.resets.spend():
                    self._calm("too many streams cancelled (rapid reset)")
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            if isinstance(event, h2.events.RemoteSettingsChanged) and not self.settings.spend():
                self._calm("SETTINGS flood")
                return
            self._wake_senders()
        elif isinstance(event, h2.events.PingReceived):
            if not self.pings.spend():
                self._calm("PING flood")
        elif isinstance(event, h2.events.PriorityUpdated):
            if not self.priorities.spend():
                self._calm("PRIORITY flood")
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client said GOAWAY: it opens no more streams; those running may finish.
            self.draining = True
            if not self.streams:
                self._close()
        elif isinstance(event, h2.events.TrailersReceived):
            # Dropped (as over HTTP/1.1), but a trailer section may hold no pseudo-header (RFC 9113 §8.1).
            stream = self.streams.get(event.stream_id)
            if any(name[:1] == b":" for name, _ in event.headers or ()):
                if stream is not None:
                    self._reset(stream, ErrorCodes.PROTOCOL_ERROR)
                else:
                    self.conn.reset_stream(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
        # Settings and ping acks, unknown frames: nothing to do.

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        ended = event.stream_ended is not None
        if self.draining:
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.last_stream = max(self.last_stream, stream_id)
        if len(self.streams) >= 2 * self.max_streams:
            # Requests still running for streams the client already cancelled: no more until they end.
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        try:
            pseudo, fields = request_head(event.headers or [])
        except Malformed as exc:
            self._log("malformed request on stream %d: %s", stream_id, exc)
            self.conn.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        scope, problem = self._scope(pseudo, fields, ended)
        stream = H2Stream(self, stream_id, scope, ended=ended)
        self.streams[stream_id] = stream
        self.idle.stop()
        protocol = self.protocol
        if problem is not None:
            coroutine = self._refuse(stream, problem)
        else:
            coroutine = stream.run_asgi(protocol.app)
        task = self.loop.create_task(coroutine)
        task.add_done_callback(protocol.tasks.discard)
        protocol.tasks.add(task)

    def _scope(
        self, pseudo: dict[bytes, bytes], fields: list[tuple[bytes, bytes]], ended: bool
    ) -> tuple[dict[str, Any], BadRequest | None]:
        problem: BadRequest | None = None
        authority = pseudo.get(b":authority")
        if authority is None:
            hosts = [value for name, value in fields if name == b"host"]
            authority = hosts[0] if len(hosts) == 1 else b""
        headers = [(b"host", authority)] if authority else []
        headers += [field for field in fields if field[0] != b"host"]
        if authority and not self.valid_authority(authority):
            problem = BadRequest("the :authority must be a host name or IP address with an optional port")
        raw_path, _, query = pseudo[b":path"].partition(b"?")
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            path = raw_path.decode("latin-1")
            problem = BadRequest("the :path must be ASCII (percent-encoded)")
        if "%" in path:
            path = urllib.parse.unquote(path)
        protocol = self.protocol
        root = protocol.root_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "2",
            "server": protocol.server,
            "client": protocol.client,
            "scheme": protocol.scheme,  # the listener's, whatever :scheme says
            "method": pseudo[b":method"].decode("latin-1"),
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": query,
            "headers": headers,
            "authority": authority,
        }
        if not ended and not any(name == b"content-length" for name, _ in fields):
            # A body of no declared length (HTTP/2 has no chunked coding: DATA frames until END_STREAM);
            # the proxy streams it as it would a chunked one.
            scope["extensions"] = {"gateway.unsized_body": {}}
        return scope, problem

    async def _refuse(self, stream: H2Stream, error: BadRequest) -> None:
        try:
            status, headers, body = error_response(error, new_request_id(), None)
            await stream.send({"type": "http.response.start", "status": status, "headers": headers})
            await stream.send({"type": "http.response.body", "body": body})
        finally:
            self.stream_done(stream)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length or 0
        if not event.data and event.stream_ended is None and not self.empty.spend():
            self._calm("empty DATA frames")
            return
        if stream is None or stream.response_complete or stream.disconnected:
            # Nobody will read it: give the window back at once.
            if size:
                self.acknowledge(event.stream_id, size)
            return
        if event.data:
            stream.body.append(event.data)
        stream.unacked += size
        if event.stream_ended is not None:
            stream.more_body = False
        stream.wake()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Bytes read (or dropped): h2 gives them back to the client's windows (WINDOW_UPDATE, once half
        a window is consumed)."""
        if self.closed:
            return
        self.conn.acknowledge_received_data(size, stream_id)
        self.flush()

    def stream_done(self, stream: H2Stream) -> None:
        """The stream's request ended (answered, failed or abandoned)."""
        if self.streams.pop(stream.id, None) is None:
            return
        self.protocol.server_state.total_requests += 1
        if stream.unacked:
            self.acknowledge(stream.id, stream.unacked)
            stream.unacked = 0
        if not stream.response_complete and not stream.disconnected and not self.closed:
            # The app ended without finishing its answer: the client must not wait for the rest.
            self._reset(stream, ErrorCodes.INTERNAL_ERROR)
        if not self.streams:
            if self.draining:
                self._close()
            elif not self.closed:
                self.idle.start()

    def _gone(self, stream: H2Stream) -> None:
        stream.disconnected = True
        stream.wake()
        if stream.unacked:
            self.acknowledge(stream.id, stream.unacked)
            stream.unacked = 0

    def _reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        try:
            self.conn.reset_stream(stream.id, code)
        except h2.exceptions.StreamClosedError:
            pass
        self._gone(stream)
        self.flush()

    # --- sending ----------------------------------------------------------------------------------------

    def send_headers(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], *, end_stream: bool) -> bool:
        if self.closed or stream.disconnected:
            return False
        try:
            self.conn.send_headers(stream.id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._gone(stream)
            return False
        self.flush()
        return True

    async def send_body(self, stream: H2Stream, data: bytes, *, end_stream: bool) -> None:
        """Send `data` as the client's windows allow, waiting for them (and for the transport to drain)."""
        conn = self.conn
        flow = self.protocol.flow
        while True:
            if flow.write_paused:
                await flow.drain()
            if stream.disconnected or self.closed:
                return
            try:
                window = conn.local_flow_control_window(stream.id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._gone(stream)
                return
            size = min(window, conn.max_outbound_frame_size, len(data))
            if size <= 0 and data:
                if not await self._wait_window():
                    self._log("stream %d: no flow-control window for %gs, reset", stream.id, self.send_timeout)
                    self._reset(stream, ErrorCodes.CANCEL)
                    return
                continue
            chunk, data = data[:size], data[size:]
            try:
                conn.send_data(stream.id, chunk, end_stream=end_stream and not data)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._gone(stream)
                return
            self.flush()
            if not data:
                return

    async def _wait_window(self) -> bool:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._window_waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, self.send_timeout)
        except TimeoutError:
            return False
        finally:
            self._window_waiters.discard(waiter)
        return True

    def _wake_senders(self) -> None:
        waiters, self._window_waiters = self._window_waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- ending -----------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server is stopping: GOAWAY naming the last stream taken; running streams finish. The frame
        is written by hand: h2 would refuse to send anything more once it sent a GOAWAY itself."""
        if self.closed or self.draining:
            return
        self.draining = True
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream
        frame.error_code = ErrorCodes.NO_ERROR
        self.flush()
        transport = self.protocol.transport
        if not transport.is_closing():
            transport.write(frame.serialize())
        if not self.streams:
            self._close()

    def _idle_expired(self) -> None:
        if self.streams or self.closed:
            return
        self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=self.last_stream)
        self._close()

    def _calm(self, reason: str) -> None:
        self._log("%s: GOAWAY ENHANCE_YOUR_CALM", reason)
        self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self.last_stream)
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.flush()
        self.idle.cancel()
        self.protocol.transport.close()
        self.connection_lost()

    def connection_lost(self) -> None:
        self.closed = True
        self.idle.cancel()
        for stream in list(self.streams.values()):
            if not stream.response_complete:
                stream.disconnected = True
            stream.wake()
        self._wake_senders()

    def _log(self, message: str, *args: Any) -> None:
        client = self.protocol.client
        where = f"{client[0]}:{client[1]}" if client else "unknown client"
        logger.warning("HTTP/2 client %s: " + message, where, *args)
