"""What the upstream sees of the client's request head (ARCHITECTURE §5): hop-by-hop headers dropped
both ways; who the client is (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) believed only from a
trusted proxy, else set by the gateway; `Via` and `X-Request-ID` added; `Host` the target's (the
client's with the endpoint's `preserve_host`). `Forwarding.client_address` is the one place that
tells who the client is (plugins: ip_restriction)."""

from __future__ import annotations

import functools
import ipaddress
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from .exchange import Exchange
from .settings import Settings
from .tracing import TRACE_HEADERS
from .types import Headers, Scope

if TYPE_CHECKING:  # snapshot imports the plugins, and rate_limit imports this module while they load
    from .snapshot import Target

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Headers that say who the client is, besides X-Forwarded-*: believed only from a trusted proxy.
CLIENT_IDENTITY = frozenset({b"forwarded", b"x-real-ip"})
# What the authentication plugins tell the upstream about the caller (§11): a client's own copies are
# removed on every endpoint, with or without authentication, so an upstream can always trust them.
# Also not forwarded: `X-Request-ID` (the gateway sets its own) and `Expect` (`100-continue` was
# answered by our server already; the upstream gets the body).
CALLER_IDENTITY = frozenset(
    {
        b"x-consumer-id",
        b"x-consumer-username",
        b"x-consumer-custom-id",
        b"x-consumer-groups",
        b"x-credential-identifier",
        b"x-anonymous-consumer",
    }
)
_NOT_FORWARDED = CALLER_IDENTITY | {b"x-request-id", b"expect"}

Address = IPv4Address | IPv6Address


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """An address as a peer or an `X-Forwarded-For` hop names it, or None: IPv4-mapped IPv6
    (`::ffff:10.0.0.1`, a dual-stack socket's view of an IPv4 client) as the IPv4 address it is, and
    a port (`10.0.0.1:5000`, `[2001:db8::1]:443`, as some proxies write hops) left out.

    Cached (the same peers and hops come back request after request; ipaddress's parser was a tenth
    of what ip_restriction cost per request), bounded, least recently used dropped first; the
    addresses are immutable, so sharing them is safe."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        host, colon, port = text.rpartition(":")
        if not colon or not port.isdigit():
            return None
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            return None  # an IPv6 address with a port must be in brackets
        text = host
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def packed_address(text: str) -> bytes | None:
    """parse_address(text)'s bytes (`packed`), cached alike: what `rate_limit` by ip counts a peer by,
    in one C-level cache hit per request instead of three Python calls."""
    address = parse_address(text)
    return None if address is None else address.packed


def strip_hop_by_hop(headers: Headers, drop: frozenset[bytes] = HOP_BY_HOP) -> Headers:
    """Drop hop-by-hop headers (`Proxy-*` among them), the names `Connection` lists (RFC 9110 §7.6.1)
    and any other name in `drop` (a superset of HOP_BY_HOP)."""
    # `b"proxy-" <= name < b"proxy."` is "starts with proxy-" ('-' sorts just before '.') as two C-level
    # comparisons: half the cost of a startswith call per header.
    kept = [(name, value) for name, value in headers if name not in drop and not b"proxy-" <= name < b"proxy."]
    if len(kept) == len(headers):
        return kept  # no Connection header among them, so nothing it lists either
    listed = {token.strip().lower() for name, value in headers if name == b"connection" for token in value.split(b",")}
    return [(name, value) for name, value in kept if name not in listed] if listed else kept


def asks_upgrade(connection: bytes, upgrade: bytes) -> bool:
    """An upgrade request (RFC 9110 §7.8): `Upgrade` named in `Connection`, to a protocol other than
    h2c. An h2c offer is optional for the server: it is answered over HTTP/1.1 (the server closes the
    connection after it), and `Upgrade` without `Connection: upgrade` is only a hop-by-hop header."""
    if b"upgrade" not in {token.strip().lower() for token in connection.split(b",")}:
        return False
    return any(protocol.strip().lower().split(b"/")[0] != b"h2c" for protocol in upgrade.split(b","))


# What upstream_headers does with a request header, by name (Forwarding._classify). Compared by
# identity: each is its own object.
_FORWARD = "forward"
_DROP = "drop"
_CONNECTION = "connection"
_HOST = "host"
_FORWARDED_FOR = "x-forwarded-for"
_FORWARDED_PROTO = "x-forwarded-proto"
_FORWARDED_HOST = "x-forwarded-host"
_VIA = "via"
_TRUSTED_ONLY = "trusted only"
_SET_BY_THE_GATEWAY = {
    b"host": _HOST,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"x-forwarded-proto": _FORWARDED_PROTO,
    b"x-forwarded-host": _FORWARDED_HOST,
    b"via": _VIA,
}
# Names learned beyond the fixed ones (what clients send: a few dozen in practice). Past this a new
# name is classified on each sight: a client sending random names cannot grow the table.
LEARNED_NAMES = 1024


class Forwarding:
    """Builds the upstream request headers for one node's settings."""

    def __init__(self, settings: Settings, *, tracing: bool = False) -> None:
        self.trusted_proxies = settings.trusted_proxies
        self.node_token = settings.node_id.encode()
        # With tracing on, the client's `traceparent`/`tracestate` are replaced per try
        # (tracing.Tracer.propagate), never passed on; off, they pass like any header.
        self.not_forwarded = _NOT_FORWARDED | TRACE_HEADERS if tracing else _NOT_FORWARDED
        names = HOP_BY_HOP | self.not_forwarded | CLIENT_IDENTITY | _SET_BY_THE_GATEWAY.keys()
        self.kinds: dict[bytes, str] = {name: self._classify(name) for name in names}
        self._fixed = len(self.kinds)

    def _classify(self, name: bytes) -> str:
        """What upstream_headers does with a header of this (lower-case) name."""
        if b"_" in name:
            # CGI-style backends (WSGI, PHP, nginx's underscores_in_headers) read `X_Forwarded_For` as
            # `X-Forwarded-For`: a client could pass for anyone under a name this loop does not know.
            return _DROP
        if name == b"connection":
            return _CONNECTION
        if name in HOP_BY_HOP or name.startswith(b"proxy-"):
            return _DROP
        kind = _SET_BY_THE_GATEWAY.get(name)
        if kind is not None:
            return kind
        if name.startswith(b"x-forwarded-") or name in CLIENT_IDENTITY:
            return _TRUSTED_ONLY
        if name in self.not_forwarded:
            return _DROP
        return _FORWARD

    def _learn(self, name: bytes) -> str:
        kind = self._classify(name)
        if len(self.kinds) < self._fixed + LEARNED_NAMES:
            self.kinds[name] = kind
        return kind

    def trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client or not self.trusted_proxies:
            return False
        address = parse_address(client[0])
        return address is not None and self._trusts(address)

    def _trusts(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def over_https(self, scope: Scope) -> bool:
        """Whether the client's request came over TLS: to this node's TLS listener, or to a trusted proxy
        that says so (`X-Forwarded-Proto: https`, its last value: the one the nearest proxy wrote), so
        that a TLS-terminating balancer in front is not redirected in a loop (`https_redirect`)."""
        if scope["scheme"] == "https":
            return True
        if not self.trusted(scope):
            return False
        proto = b""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = value
        return proto.rpartition(b",")[2].strip().lower() == b"https"

    def client_address(self, scope: Scope) -> Address | None:
        """Who the client is: the peer; behind a trusted proxy, the first hop of `X-Forwarded-For`
        (every such header, in order, as one list) that is not a trusted proxy, read from the right
        (the hops a trusted proxy appended are believed, what the client wrote itself is not); every
        hop trusted: the leftmost. None when it cannot be told: no peer address, or an unreadable hop
        before an untrusted one was found (a policy then refuses rather than guess)."""
        client = scope.get("client")
        peer = parse_address(client[0]) if client else None
        if peer is None or not self.trusted_proxies or not self._trusts(peer):
            return peer
        hops = [
            hop
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        found: Address = peer
        for hop in reversed(hops):
            hop = hop.strip(" \t")
            if not hop:
                continue
            address = parse_address(hop)
            if address is None:
                return None
            if not self._trusts(address):
                return address
            found = address
        return found

    def upstream_headers(self, exchange: Exchange, target: Target) -> Headers:
        """The request headers as the upstream gets them (§5): hop-by-hop ones dropped; what says who the
        client is (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) kept only from a trusted proxy, else set
        by the gateway (For, Proto, Host) or dropped; names with `_` dropped from anyone.

        One pass, one dict lookup per header (`_kind`): an ordinary header is passed on as the very
        tuple the server made. A `Connection` header (rare in a proxied request) restarts the pass on
        the headers without the names it lists (strip_hop_by_hop)."""
        scope = exchange.scope
        return self._upstream_headers(exchange, target, scope, scope["headers"])

    def _upstream_headers(self, exchange: Exchange, target: Target, scope: Scope, headers: Headers) -> Headers:
        trusted = self.trusted(scope)
        client_host = b""
        forwarded_for = forwarded_proto = forwarded_host = None
        via = None
        out: Headers = []
        kinds = self.kinds
        for pair in headers:
            kind = kinds.get(pair[0])
            if kind is None:
                kind = self._learn(pair[0])
            if kind is _FORWARD:
                out.append(pair)
                continue
            name, value = pair
            if kind is _DROP:
                continue
            if kind is _CONNECTION:
                return self._upstream_headers(exchange, target, scope, strip_hop_by_hop(headers))
            if kind is _HOST:
                client_host = value
            elif kind is _FORWARDED_FOR:
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif kind is _FORWARDED_PROTO:
                forwarded_proto = value
            elif kind is _FORWARDED_HOST:
                forwarded_host = value
            elif kind is _VIA:
                via = value if via is None else via + b", " + value
            elif trusted:  # _TRUSTED_ONLY (X-Forwarded-Port, Forwarded, X-Real-IP...): only a trusted proxy's say-so
                out.append(pair)
        client = scope.get("client")
        peer = (client[0] if client else "").encode()
        if trusted and forwarded_for:
            out.append((b"x-forwarded-for", forwarded_for + b", " + peer))
        else:
            out.append((b"x-forwarded-for", peer))
        out.append((b"x-forwarded-proto", forwarded_proto if trusted and forwarded_proto else scope["scheme"].encode()))
        if not (trusted and forwarded_host):
            # The server's validated authority: an absolute-form request target's (`GET http://host/path`)
            # when there is one, since then the Host header is not what counts (RFC 9112 §3.2.2), else
            # the Host header's. A scope from another server (tests' ASGI transports) has none.
            forwarded_host = scope.get("authority") or client_host
        out.append((b"x-forwarded-host", forwarded_host))
        hop = b"1.1 " + self.node_token
        out.append((b"via", via + b", " + hop if via else hop))
        out.append((b"x-request-id", exchange.request_id.encode()))
        # The target's host, or with `preserve_host` (host_header empty) the client's: the validated
        # authority of an absolute-form request target, else the Host header (RFC 9112 §3.2.2).
        out.append((b"host", target.host_header or scope.get("authority") or client_host))
        return out
