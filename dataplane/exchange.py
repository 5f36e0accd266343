"""Per-request state on one object (STYLE 15c): the `Exchange` carries one client request from the
ASGI call to the access log line, so the proxy's steps, the plugins' hooks and the log all take one
argument instead of eight."""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from .types import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from .forwarding import Forwarding
    from .plugins import Chain
    from .plugins.authentication import Identity
    from .runtime import EndpointState
    from .snapshot import Endpoint
    from .tracing import Trace

REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,200}$")
# The key of Exchange.note() where a plugin puts the query string the upstream gets instead of the
# client's (key_auth's hide_credentials drops the key's parameter); read only when the request has a
# query and a plugin made notes, so the plain path pays nothing.
UPSTREAM_QUERY = "upstream_query"


class _RequestIds:
    """32 random hex digits per id (the form of a uuid4's hex, without the version bits), cut from
    4 KiB of `os.urandom` at a time rather than one system call per request."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        return self._pool[at : at + 16].hex()


new_request_id = _RequestIds()


class Exchange:
    """What one client request has accumulated so far: the ASGI triple, ids, the endpoint and its
    runtime state once routed, what was sent, and what the access log line reports."""

    __slots__ = (
        "began",
        "caller",
        "bytes_in",
        "body_streamed",
        "bytes_out",
        "chain",
        "client",
        "client_known",
        "consumer",
        "context",
        "decisions",
        "detail",
        "endpoint",
        "endpoint_key",
        "error",
        "forwarding",
        "method",
        "raw_path",
        "receive",
        "request_id",
        "scope",
        "send",
        "started",
        "state",
        "status",
        "target",
        "trace",
        "upstream_seconds",
        "user_agent",
        "websocket_key",
        "head_seconds",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, began: float) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.began = began  # time.perf_counter() when the request reached the app
        self.request_id = ""
        self.raw_path = b""  # without the query; set once the head passed the framing checks
        self.user_agent = b""  # for the access log, picked up by the proxy's one pass over the headers
        self.endpoint: Endpoint | None = None
        self.endpoint_key: str | None = None
        self.state: EndpointState | None = None
        # The plugins this request passes through: its endpoint's chain, or with no route the
        # document's global plugins (their response and log hooks only); None: no plugins at all.
        self.chain: Chain | None = None
        self.started = False  # the response head went out
        self.status = 0
        self.error: str | None = None
        self.detail = ""  # for the access log only (GatewayError.detail)
        self.target: str | None = None
        self.upstream_seconds = 0.0
        self.bytes_in = 0  # request body bytes received
        self.bytes_out = 0  # response body bytes sent
        self.body_streamed = False  # part of a streamed request body went to an upstream (no replay)
        self.consumer = ""  # who called, once an authentication plugin said so
        self.context: dict[str, Any] | None = None  # the plugins' own per-request notes, made on first use
        self.websocket_key: bytes | None = None  # a WebSocket upgrade's Sec-WebSocket-Key (tunnel.py)
        self.head_seconds = 0.0  # a tunnel's time to its 101 (the request's own time is the tunnel's life)
        self.trace: Trace | None = None  # tracing.Tracer.begin's, when tracing is on
        # Left unset on the plain path (no cost there): use_chain() sets them wherever a chain runs.
        self.forwarding: Forwarding
        self.client: IPv4Address | IPv6Address | None
        self.client_known: bool
        self.decisions: dict[tuple[str, str, str], int]
        self.caller: Identity | None  # who called, as the authentication phase decided (authentication.py)

    def use_chain(self, chain: Chain, forwarding: Forwarding, decisions: dict[tuple[str, str, str], int]) -> None:
        """This request passes through `chain`: what its plugins may ask for is made ready (set here
        rather than caught as a missing attribute later, which costs an exception each time).
        `decisions` is where decide() counts (metrics.Metrics.decisions)."""
        self.chain = chain
        self.forwarding = forwarding  # who the client is, for the plugins that ask
        self.client_known = False
        self.decisions = decisions
        self.caller = None

    @property
    def headers(self) -> Headers:
        """The request headers as the client sent them (lower-case names)."""
        return self.scope["headers"]  # type: ignore[no-any-return]

    def client_address(self) -> IPv4Address | IPv6Address | None:
        """The client's address (forwarding.Forwarding.client_address: the peer, or the first untrusted
        hop of X-Forwarded-For behind a trusted proxy; IPv4-mapped IPv6 as IPv4), worked out once per
        request; None when it cannot be told (no peer, an unreadable hop)."""
        if self.client_known:
            return self.client
        client = self.client = self.forwarding.client_address(self.scope)
        self.client_known = True
        return client

    def decide(self, plugin: str, decision: str) -> None:
        """An access plugin's decision (`allow`, `deny`, `would_deny`), counted at once in
        `gateway_policy_decisions_total{endpoint,plugin,decision}` (handed to prometheus_client with
        the request counters, at the end of the loop turn)."""
        key = (self.endpoint_key or "", plugin, decision)
        decisions = self.decisions
        decisions[key] = decisions.get(key, 0) + 1

    def note(self) -> dict[str, Any]:
        """The plugins' per-request notes (one dict, made when a plugin first asks)."""
        if self.context is None:
            self.context = {}
        return self.context
