"""WebSocket tunnels (ARCHITECTURE §13): the handshake's checks, the upstream connection, and the raw
byte relay both ways once the upstream has switched protocols.

The proxy (proxy.py) runs an upgrade request through the whole chain like any request, then opens an
`UpstreamSide` to a target, sends the handshake and reads the answer's head. A 101 with the right
`Sec-WebSocket-Accept` for the client's key is handed, with the 101 head for the client, to the server
protocol (server.py, the `gateway.tunnel` scope extension), which from then on relays bytes through a
`Tunnel`; any other answer goes back to the client as an ordinary one.

The relay passes the frames on as they are (extensions, masking, fragmentation, ping/pong and close are
the two ends' business) and never holds more than a transport's write buffer each way: when one side's
buffer is over its high-water mark, reading from the other side pauses until it drains. A tunnel ends
when either side closes (what was read from it is flushed to the other first), when no byte has moved
either way for the endpoint's `read_idle_timeout`, or a grace period after the node starts stopping.

In those last two cases the gateway ends the tunnel itself, and says so the way RFC 6455 §7.1.2 asks of an
endpoint: a close frame, code 1001 (going away), to each side before its connection is closed. A frame
may only go between two frames of a stream, so `Frames` follows each direction's frame headers (a few
integer operations per frame, none per payload byte); a side gets the close frame only when its stream
is at a frame boundary, has not carried a close frame already, and the side is reading (nothing left in
its write buffer); otherwise it is cut as before.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable

import httptools

from configdoc import is_denied_address

from .errors import (
    CLOSED_BEFORE_ANSWERING,
    MALFORMED,
    BadRequest,
    UpstreamAborted,
    UpstreamProtocolError,
    UpstreamReset,
)
from .types import Headers

# RFC 6455 §1.3: the accept value is base64(sha1(key + this GUID)).
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = b"13"
# The most of an upstream's answer head read before it is called malformed, and the most of its body
# (a refusal's) or of early tunnel bytes held before reading from that side pauses.
MAX_HEAD = 64 * 1024
HIGH_WATER = 64 * 1024
_UNSAFE_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")

HANDSHAKE_REFUSED = "the upstream's WebSocket handshake answer is not valid"

# The close frame the gateway sends when it ends a tunnel itself (idle, drain): 1001 "going away"
# (RFC 6455 §7.4.1), and how long a side that got it has to take it before its connection is cut.
GOING_AWAY = 1001
CLOSE_LINGER = 2.0
_CLOSE_REASONS = {"idle": b"idle timeout", "drain": b"gateway shutting down"}


def close_frame(reason: bytes, *, masked: bool) -> bytes:
    """A close frame with code 1001 and `reason` (at most 123 bytes); masked with a fresh key when it
    goes to the upstream, which must see client frames masked (RFC 6455 §5.3), unmasked to the client."""
    payload = GOING_AWAY.to_bytes(2, "big") + reason[:123]
    if not masked:
        return bytes((0x88, len(payload))) + payload
    key = os.urandom(4)
    body = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + key + body


# Which first bytes of a frame header a peer may send (RFC 6455 §5.2): any RSV bits (extensions own
# them), the opcodes 0-2 and 8-10, and control frames (8-10) only with FIN set (§5.5: never fragmented).
_FIRST_OK = bytes(
    1 if (byte & 0x0F) in (0, 1, 2) or ((byte & 0x0F) in (8, 9, 10) and byte & 0x80) else 0 for byte in range(256)
)


class Frames:
    """Where one direction of a tunnel stands in its frames (RFC 6455 §5.2), read from the frame headers
    only: the bytes `left` of the current frame, a header split over two reads (`partial`), whether a
    close frame went by (`closed`). A header no WebSocket peer may send that way (a reserved opcode, a
    fragmented or long control frame, the mask bit wrong for the direction, a 64-bit length with its top
    bit set) means the stream is not followed any more (`lost`): it is never at a boundary again."""

    __slots__ = ("_mask_bit", "_mask_size", "closed", "left", "lost", "partial")

    def __init__(self, *, masked: bool) -> None:
        # Frames from the client are masked, from the upstream not (§5.1).
        self._mask_bit = 0x80 if masked else 0
        self._mask_size = 4 if masked else 0
        self.left = 0
        self.partial = b""
        self.closed = False
        self.lost = False

    @property
    def at_boundary(self) -> bool:
        return not self.left and not self.partial and not self.lost

    def _lose(self) -> None:
        self.lost, self.left, self.partial = True, 0, b""

    def feed(self, data: bytes) -> None:
        if self.lost:
            return
        left = self.left
        size = len(data)
        if left >= size:  # within a frame's payload: the common case for large messages
            self.left = left - size
            return
        if self.partial:
            data = self.partial + data
            size = len(data)
            self.partial = b""
        position = left
        self.left = 0  # until a header past the end of `data` says otherwise
        mask_bit = self._mask_bit
        mask_size = self._mask_size
        while position < size:
            if position + 2 > size:
                self.partial = data[position:]
                return
            first = data[position]
            second = data[position + 1]
            if second & 0x80 != mask_bit or not _FIRST_OK[first]:
                self._lose()
                return
            length = second & 0x7F
            if length < 126:
                header = 2 + mask_size
                if position + header > size:
                    self.partial = data[position:]
                    return
            else:
                if first & 0x08:  # a control frame's payload is at most 125 bytes (§5.5)
                    self._lose()
                    return
                extended = 2 if length == 126 else 8
                header = 2 + extended + mask_size
                if position + header > size:
                    self.partial = data[position:]
                    return
                length = int.from_bytes(data[position + 2 : position + 2 + extended], "big")
                if length >> 63:
                    self._lose()
                    return
            if first & 0x0F == 8:
                self.closed = True
            position += header + length
        self.left = position - size


def accept_for(key: bytes) -> bytes:
    """The `Sec-WebSocket-Accept` an upstream must answer to `key` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 - the protocol's hash, not a security one


def names_websocket(upgrade: bytes) -> bool:
    """Whether an `Upgrade` header's protocols include `websocket` (any case, any version suffix)."""
    return any(protocol.strip().lower().split(b"/")[0] == b"websocket" for protocol in upgrade.split(b","))


def handshake_key(headers: Headers, method: str, http_version: str) -> bytes:
    """The client's `Sec-WebSocket-Key`, after the checks of RFC 6455 §4.2.1 a proxy can make: a GET over
    HTTP/1.1, exactly one key of 16 bytes in base64, version 13, no body. BadRequest (400) otherwise,
    naming the header."""
    if method != "GET":
        raise BadRequest("a WebSocket upgrade request must be a GET")
    if http_version != "1.1":
        raise BadRequest("a WebSocket upgrade request must be HTTP/1.1")
    keys: list[bytes] = []
    versions: list[bytes] = []
    for name, value in headers:
        if name == b"sec-websocket-key":
            keys.append(value)
        elif name == b"sec-websocket-version":
            versions.append(value)
        elif name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            # llhttp hands what follows an upgrade request's head to the tunnel, body or not.
            raise BadRequest("a WebSocket upgrade request must not have a body")
    if len(keys) != 1:
        raise BadRequest("a WebSocket upgrade request needs exactly one Sec-WebSocket-Key header")
    key = keys[0].strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise BadRequest("the Sec-WebSocket-Key header must be 16 bytes in base64")
    if len(versions) != 1 or versions[0].strip() != VERSION:
        raise BadRequest("the Sec-WebSocket-Version header must be 13", headers=[(b"sec-websocket-version", VERSION)])
    return key


def valid_switch(headers: Headers, key: bytes) -> str | None:
    """What is wrong with an upstream's 101 to a WebSocket handshake for `key`, or None."""
    upgrade = connection = b""
    accepts: list[bytes] = []
    for name, value in headers:
        if name == b"upgrade":
            upgrade += b"," + value
        elif name == b"connection":
            connection += b"," + value
        elif name == b"sec-websocket-accept":
            accepts.append(value.strip())
    if not names_websocket(upgrade):
        return "its 101 does not upgrade to websocket"
    if b"upgrade" not in {token.strip().lower() for token in connection.split(b",")}:
        return "its 101 has no Connection: upgrade"
    if accepts != [accept_for(key)]:
        return "its 101 has no valid Sec-WebSocket-Accept for the client's key"
    return None


def request_head(method: str, target: str, headers: Headers) -> bytes:
    """The handshake as the upstream gets it: the forwarded headers (hop-by-hop ones already dropped)
    with `Connection: upgrade` and `Upgrade: websocket` put back."""
    if _UNSAFE_IN_TARGET.search(target):
        raise UpstreamProtocolError(
            "the request cannot be sent to the upstream as is", detail="the request target cannot be sent as is"
        )
    lines = [method.encode("latin-1"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n")
    return b"".join(lines)


_contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}


def client_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The TLS context for an https target (one per verify and CA file, like the native transport's)."""
    key = (verify, ca_file)
    context = _contexts.get(key)
    if context is None:
        if verify:
            context = ssl.create_default_context(cafile=ca_file)
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        _contexts[key] = context
    return context


async def connect(
    loop: asyncio.AbstractEventLoop,
    scheme: str,
    host: str,
    port: int,
    *,
    verify: bool,
    ca_file: str | None,
    server_name: str | None,
) -> UpstreamSide:
    """A connection to a target (TLS for https), to an address that is not on the egress deny list
    (checked after resolving, then connected to: no second lookup to rebind). OSError on failure."""
    infos = await loop.getaddrinfo(host, port, type=0, proto=6)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    denied = [a for a in addresses if is_denied_address(ipaddress.ip_address(a.split("%")[0]))]
    if denied:
        raise OSError(f"{host} resolves to a denied address ({', '.join(denied)})")
    if not addresses:
        raise OSError(f"{host} has no address")
    context = client_context(verify, ca_file) if scheme == "https" else None
    hostname = (server_name or host) if context is not None else None
    last: OSError | None = None
    for address in addresses:
        try:
            _, side = await loop.create_connection(
                lambda: UpstreamSide(loop), address, port, ssl=context, server_hostname=hostname
            )
        except OSError as exc:  # ssl.SSLError (verification) is an OSError too
            last = exc
            continue
        return side
    assert last is not None
    raise last


class UpstreamSide(asyncio.Protocol):
    """The upstream connection of one upgrade request: its answer's head parsed (`head`, then `status`
    and `headers`), a refusal's body read (`body`), or after a 101 the upstream half of a `Tunnel`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: Headers = []
        self._head_size = 0
        self.switched = False  # the answer was a 101 the parser stopped after
        self.early: list[bytes] = []  # tunnel bytes that came with or after the 101, before the relay
        self._early_size = 0
        self._chunks: list[bytes] = []  # a refusal's body, waiting for the client
        self._buffered = 0
        self._complete = False
        self._length_known = False  # Content-Length or chunked: a close before the end is an abort
        self._waiter: asyncio.Future[None] | None = None
        self._informational = False  # a 1xx other than 101 (103 Early Hints) is skipped, not the answer
        self.closed = False
        self.tunnel: Tunnel | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_upstream(data)
            return
        if self.switched:
            self._hold(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.switched = True
            rest = data[exc.args[0] :]
            if rest:
                self._hold(rest)
            self._resolve()
        except httptools.HttpParserError as exc:
            # A 101 without `Connection: upgrade` stops llhttp too (as an error): the head is in, and
            # the proxy refuses it for what it lacks.
            if self.status == 101 and self.head.done():
                self.switched = True
                return
            self._fail(UpstreamProtocolError(MALFORMED, detail=f"malformed WebSocket handshake answer: {exc}"))

    def _hold(self, data: bytes) -> None:
        self.early.append(data)
        self._early_size += len(data)
        if self._early_size > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close: a half-closed tunnel is a closed one

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
            return
        if not self.head.done():
            self.head.set_exception(UpstreamReset(CLOSED_BEFORE_ANSWERING, detail="closed before the 101 or answer"))
        self._wake()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_backlogged()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_drained()

    # --- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise UpstreamProtocolError(MALFORMED, detail="the handshake answer's head is over 64 KiB")
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self._length_known = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers, self._head_size, self._informational = [], 0, True
            return
        self.status = status
        self._resolve()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._complete = True
        self._wake()

    # --- for the proxy -----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def body(self) -> AsyncIterator[bytes]:
        """A refusal's body as it arrives; UpstreamAborted when the connection closes before a body of
        known length ends (one without a length ends at the close)."""
        while True:
            if self._chunks:
                chunks, self._chunks, self._buffered = self._chunks, [], 0
                if self.transport is not None and not self.closed:
                    self.transport.resume_reading()
                yield b"".join(chunks)
                continue
            if self._complete:
                return
            if self.closed:
                if self._length_known:
                    raise UpstreamAborted(MALFORMED, detail="the upstream closed mid-body")
                return
            waiter = self._waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _resolve(self) -> None:
        if not self.head.done():
            self.head.set_result(None)

    def _fail(self, error: Exception) -> None:
        if not self.head.done():
            self.head.set_exception(error)
        self.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Tunnel:
    """One open tunnel: bytes from the client go to the upstream and back, counted; reading from a side
    pauses while the other side's write buffer is over its high-water mark; `done` resolves (with why
    it ended: `client_closed`, `upstream_closed`, `idle`, `drain`) once both connections are closed."""

    __slots__ = (
        "_client",
        "_from_client",
        "_from_upstream",
        "_idle_timeout",
        "_last",
        "_loop",
        "_pause_client",
        "_resume_client",
        "_timer",
        "done",
        "reported_to_client",
        "reported_to_upstream",
        "to_client",
        "to_upstream",
        "upstream",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: asyncio.Transport,
        upstream: UpstreamSide,
        *,
        idle_timeout: float,
        pause_client: Callable[[], None],
        resume_client: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._client = client
        self.upstream = upstream
        self._idle_timeout = idle_timeout
        self._pause_client = pause_client
        self._resume_client = resume_client
        self.to_upstream = 0  # bytes from the client to the upstream
        self.to_client = 0  # bytes from the upstream to the client
        self.reported_to_upstream = 0  # ...of which counted in the metrics already
        self.reported_to_client = 0
        self.done: asyncio.Future[str] = loop.create_future()
        self._from_client = Frames(masked=True)
        self._from_upstream = Frames(masked=False)
        self._last = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_later(idle_timeout, self._check_idle)

    def start(self, client_early: list[bytes]) -> None:
        """Relay from now on: first the bytes each side sent before the tunnel was open."""
        upstream = self.upstream
        upstream.tunnel = self
        for data in client_early:
            self.from_client(data)
        early, upstream.early = upstream.early, []
        for data in early:
            self.from_upstream(data)
        if upstream.closed:
            self.upstream_lost()
        elif upstream.transport is not None:
            upstream.transport.resume_reading()

    def from_client(self, data: bytes) -> None:
        self.to_upstream += len(data)
        self._last = self._loop.time()
        self._from_client.feed(data)
        self.upstream.send(data)

    def from_upstream(self, data: bytes) -> None:
        self.to_client += len(data)
        self._last = self._loop.time()
        self._from_upstream.feed(data)
        if not self._client.is_closing():
            self._client.write(data)

    # Back-pressure: the side whose write buffer is full stops the other from being read.
    def client_backlogged(self) -> None:
        transport = self.upstream.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def client_drained(self) -> None:
        transport = self.upstream.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def upstream_backlogged(self) -> None:
        self._pause_client()

    def upstream_drained(self) -> None:
        self._resume_client()

    def client_lost(self) -> None:
        self.close("client_closed")

    def upstream_lost(self) -> None:
        self.close("upstream_closed")

    def drain(self, grace: float) -> None:
        """The node is stopping: the tunnel may live `grace` seconds more."""
        if not self.done.done():
            self._loop.call_later(grace, self.close, "drain")

    def _check_idle(self) -> None:
        self._timer = None
        left = self._last + self._idle_timeout - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check_idle)
        else:
            self.close("idle")

    def close(self, reason: str) -> None:
        """Close both sides and resolve `done`. When one side closed, the other gets what was read from
        it first. An idle or drained tunnel is ended by the gateway: each side gets a close frame (1001)
        when it can (`_going_away`), else is cut at once (a peer that reads nothing would otherwise keep
        its buffered bytes, and the connection, alive)."""
        if self.done.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if reason in ("idle", "drain"):
            said = _CLOSE_REASONS[reason]
            # Toward the client go the upstream's frames, toward the upstream the client's.
            self._going_away(self._client, self._from_upstream, close_frame(said, masked=False))
            self._going_away(self.upstream.transport, self._from_client, close_frame(said, masked=True))
        else:
            self._client.close()
            self.upstream.close()
        self.done.set_result(reason)

    def _going_away(self, transport: asyncio.Transport | None, toward: Frames, frame: bytes) -> None:
        """Send `frame` on `transport` and close it, if the stream it would join is between two frames,
        has carried no close frame yet, and the peer has left nothing unread in the write buffer; cut it
        otherwise. A peer that does not take the frame within CLOSE_LINGER is cut then."""
        if transport is None or transport.is_closing():
            return
        if toward.at_boundary and not toward.closed and not transport.get_write_buffer_size():
            transport.write(frame)
            transport.close()
            self._loop.call_later(CLOSE_LINGER, transport.abort)
        else:
            transport.abort()
