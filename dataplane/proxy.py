"""The proxy ASGI app (ARCHITECTURE §5, §11): the orchestration of one request, in the order of the
checks: framing → route → [plugins, early] → method → enabled → body size → [plugins, late] →
overload → breaker → target selection → [plugins: request headers] → upstream → [plugins: response
headers] → access log. Streams both ways through a `Transport` (transport.py: `DATAPLANE_TRANSPORT`,
the native client by default).

The parts live beside it, one concern each: `exchange.py` (the per-request state), `body.py` (the
request body), `forwarding.py` (the upstream request headers), `fallback.py` (an open circuit's
answer), `accesslog.py` (the log line), `tracing.py` (W3C trace context and the spans, §13: a
`Tracer` only when tracing is on), `plugins/` (the chain), `tunnel.py` (a WebSocket upgrade's
handshake and byte relay, §13: the same checks up to the upstream call, then `_tunnel` instead of
`_proxy`). Every answer, the upstream's or the gateway's own, gets the gateway's response headers in
one place: `answer_headers`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from configdoc import Match, MatcherTable, Selection, UnsafePath, request_host
from configdoc.splits import TrafficSplit

from . import body as request_body
from . import grpc
from .accesslog import AccessLog
from .errors import (
    CONNECT_TIMED_OUT,
    NO_HEAD_IN_TIME,
    REFUSED,
    TLS_FAILED,
    BadRequest,
    BodyTooLarge,
    ClientGone,
    EndpointDisabled,
    GatewayError,
    HeadersTooLarge,
    LoopDetected,
    MethodNotAllowed,
    NoConfig,
    NoHealthyTarget,
    NoRoute,
    Overloaded,
    UpgradeForbidden,
    UpgradeNotSupported,
    UpstreamAborted,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UriTooLong,
    error_answer,
)
from .exchange import REQUEST_ID, UPSTREAM_QUERY, Exchange, new_request_id
from .fallback import cache_key, fallback
from .forwarding import HOP_BY_HOP, Forwarding, asks_upgrade, strip_hop_by_hop
from .plugins import Answer, Chain, Plugin, Wait, close_plugins
from .policies import NOTHING_SENT
from .retry import REPLAY_LIMIT, backoff, may_retry, per_try_timeout, replays_after_sending
from .runtime import EndpointState, Runtime
from .snapshot import Endpoint, Snapshot, Target
from .tracing import Tracer, from_error_path
from .transport import Transport, UpstreamRequest, UpstreamResponse, create_transport
from .tunnel import HANDSHAKE_REFUSED, UpstreamSide, connect, handshake_key, names_websocket, request_head, valid_switch
from .types import Headers, Receive, Scope, Send

# Re-exported: the server makes request ids with it.
__all__ = ["ProxyApp", "new_request_id", "strip_hop_by_hop"]

logger = logging.getLogger("dataplane.proxy")

MAX_URI = 8 * 1024
MAX_HEADER_BLOCK = 32 * 1024
# The request headers _check_head reads: any other name costs it one set lookup (the name's hash is
# computed once, by the server, and kept by the bytes object for every later lookup).
_CHECKED_HEADERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"x-request-id"}
    | {b"via", b"upgrade", b"connection", b"user-agent"}
)
BODY_STALL_TIMEOUT = 30.0
NO_TARGET_RETRY_AFTER = b"5"


# Bytes that may not appear in a Location value as sent (controls, space, DEL, non-ASCII): percent-encoded.
_UNSAFE_IN_LOCATION = re.compile(rb"[^\x21-\x7e]")
# Host header values as the matchers compare them (configdoc.request_host): requests to a host-routed
# table repeat a few values, and normalizing one (decode, strip, lower-case, the port and a trailing dot
# off) was a fifth of a selection's instructions. Only values a host name and port can fill are kept,
# at most _HOSTS_KEPT of them: a client sending a new Host each time only makes the cache start over.
_HOSTS: dict[bytes, str] = {}
_HOSTS_KEPT = 1024
_HOST_LONGEST = 262  # a 253-character name, ":" and a port


def _message_of(body: bytes) -> str:
    """The `message` of a gateway-made JSON answer (errors.error_answer's shape), for grpc-message."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        return ""
    return message if isinstance(message, str) else ""


def _percent(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


class ProxyApp:
    body_stall_timeout = BODY_STALL_TIMEOUT

    def __init__(self, runtime: Runtime, *, transport: Transport | None = None, tracer: Tracer | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.node_token = runtime.settings.node_id.encode()
        self.transport: Transport = transport or create_transport(runtime.settings.transport)
        # Tracing (§13, tracing.py): None when off, and then the request path only tests that.
        self.tracer = tracer
        self.forwarding = Forwarding(runtime.settings, tracing=tracer is not None)
        self.access_log = AccessLog(runtime.settings.access_log)
        self.show_response_time = not self.settings.hide_response_time
        # What the upstream may not set on the client's answer: the gateway's own headers replace them.
        self.grpc_pool = grpc.Pool()  # upstream HTTP/2 connections of protocol: grpc endpoints
        self.response_drop = HOP_BY_HOP | {b"x-request-id", b"x-endpoint-id", b"x-gateway-panic", b"x-gateway-fallback"}
        if self.show_response_time:
            self.response_drop |= {b"x-response-time"}

    async def aclose(self) -> None:
        self.grpc_pool.close()
        self.access_log.flush()
        if self.tracer is not None:
            await self.tracer.shutdown()
        await self.transport.aclose()
        await close_plugins()

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        exchange = Exchange(scope, receive, send, time.perf_counter())
        tracer = self.tracer
        if tracer is not None:
            tracer.begin(exchange)
        try:
            await self._handle(exchange)
        except ClientGone:
            exchange.error = ClientGone.code
        except GatewayError as error:
            exchange.detail = error.detail
            if exchange.started:
                return  # the head is out: leaving the response incomplete makes uvicorn drop the connection
            if not exchange.request_id:
                exchange.request_id = self._request_id(scope["headers"])
            await self._send_error(exchange, error)
        finally:
            elapsed = time.perf_counter() - exchange.began
            if exchange.status:
                self.runtime.metrics.observe_request(
                    exchange.endpoint_key or "",
                    exchange.method,
                    exchange.status,
                    exchange.error,
                    exchange.head_seconds if exchange.status == 101 else elapsed,
                )
                if exchange.consumer:  # only set by an authentication plugin: a plain endpoint skips this
                    self.runtime.metrics.observe_consumer(
                        exchange.endpoint_key or "", exchange.consumer, exchange.status, exchange.error
                    )
            chain = exchange.chain
            if chain is not None and chain.log:
                self._log_phase(chain, exchange)
            if tracer is not None:
                trace = exchange.trace
                if trace is not None and trace.sampled:
                    tracer.end(exchange, trace, elapsed)
            self.access_log.write(exchange, elapsed)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _request_id(headers: Headers) -> str:
        for name, value in headers:
            if name == b"x-request-id" and REQUEST_ID.match(value):
                return value.decode()
        return new_request_id()

    # --- answers: every one gets the gateway's headers here ------------------------------------

    def answer_headers(self, exchange: Exchange, headers: Headers) -> Headers:
        """The gateway's own response headers, added to every answer (the upstream's, a fallback, a
        plugin's, an error): `X-Request-ID`, `X-Endpoint-ID` once routed, `X-Response-Time` unless
        hidden, then the plugins' `response` hooks (response_headers, CORS), last so they see the
        whole head."""
        headers.append((b"x-request-id", exchange.request_id.encode()))
        if exchange.endpoint_key is not None:
            headers.append((b"x-endpoint-id", exchange.endpoint_key.encode()))
        if self.show_response_time:
            headers.append((b"x-response-time", f"{(time.perf_counter() - exchange.began) * 1000:.1f}ms".encode()))
        chain = exchange.chain
        if chain is not None:
            for plugin in chain.response:
                plugin.response(exchange, headers)
        return headers

    async def _send_error(self, exchange: Exchange, error: GatewayError) -> None:
        trace = exchange.trace
        if trace is None and self.tracer is None:
            # Tracing off: only here is a caller's traceparent read, so the answer names its trace.
            trace = exchange.trace = from_error_path(exchange.scope["headers"])
        trace_id = trace.trace_id if trace is not None else None
        status, headers, body = error_answer(error, exchange.request_id, exchange.endpoint_key, trace_id)
        exchange.status, exchange.error = status, error.code
        await self._send_whole(exchange, status, headers, body)

    async def _send_answer(self, exchange: Exchange, answer: Answer) -> None:
        exchange.status, exchange.error = answer.status, answer.error
        await self._send_whole(exchange, answer.status, list(answer.headers), answer.body)

    async def _send_whole(self, exchange: Exchange, status: int, headers: Headers, body: bytes) -> None:
        if status != 200 and grpc.is_grpc(exchange.scope):
            # A gRPC client reads grpc-status, not an HTTP status or a JSON body (grpc.py).
            # The access log and gateway_requests keep the HTTP status the error has (exchange.status).
            self.runtime.metrics.observe_grpc(exchange.endpoint_key or "", grpc.grpc_status_of(status))
            status, headers = grpc.grpc_answer(status, headers, _message_of(body))
            body = b""
        headers = self.answer_headers(exchange, headers)
        exchange.started = True
        exchange.bytes_out = len(body)
        await exchange.send({"type": "http.response.start", "status": status, "headers": headers})
        await exchange.send({"type": "http.response.body", "body": body})

    def _log_phase(self, chain: Chain, exchange: Exchange) -> None:
        for plugin in chain.log:
            try:
                plugin.log(exchange)
            except Exception:  # a plugin's logging never fails the request (its answer is out)
                logger.exception("plugin %s failed in its log phase", plugin.name)

    # --- the checks of §5, in order ------------------------------------------------------------

    def _check_head(self, exchange: Exchange) -> tuple[int | None, bool]:
        """Framing, loop and upgrade checks in one pass over the request headers; sets the request id.
        Returns the Content-Length (None without one) and whether the body is chunked."""
        scope = exchange.scope
        # ASGI's raw_path has no query, but some servers (and httpx's ASGITransport) include it.
        exchange.raw_path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        headers: Headers = scope["headers"]
        hosts = lengths = 0
        encodings = 0
        content_length: int | None = None
        size = 0
        request_id = ""
        bad_length = False
        problem: GatewayError | None = None  # a loop: checked after the framing
        upgrade: bytes | None = None
        connection = b""
        checked = _CHECKED_HEADERS
        for name, value in headers:
            size += len(name) + len(value) + 4
            if name not in checked:
                continue  # most headers: one set lookup instead of the eight comparisons below
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                lengths += 1
                if not value.isdigit():
                    bad_length = True
                elif content_length is None:
                    content_length = int(value)
            elif name == b"transfer-encoding":
                encodings += 1
            elif name == b"x-request-id":
                if not request_id and REQUEST_ID.match(value):
                    request_id = value.decode()
            elif name == b"via":
                for hop in value.split(b","):
                    parts = hop.split()
                    if len(parts) >= 2 and parts[1] == self.node_token:
                        problem = problem or LoopDetected("this request has already passed through this gateway node")
            elif name == b"upgrade":
                upgrade = value
            elif name == b"connection":
                connection += b"," + value
            elif name == b"user-agent":
                exchange.user_agent = value
        exchange.request_id = request_id or new_request_id()
        if bad_length:
            raise BadRequest("the Content-Length header is not a number")
        if lengths and encodings:
            # A request framed two ways is how request smuggling starts (RFC 9112 §6.3).
            raise BadRequest("the request has both Content-Length and Transfer-Encoding")
        if lengths > 1:
            raise BadRequest("the request has more than one Content-Length header")
        if hosts != 1:
            raise BadRequest("the request must have exactly one Host header")
        if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_URI:
            raise UriTooLong("the request URI is over 8 KiB")
        if size > MAX_HEADER_BLOCK:
            raise HeadersTooLarge("the request header block is over 32 KiB")
        if problem is not None:
            raise problem
        if upgrade is not None and asks_upgrade(connection, upgrade):
            # A WebSocket upgrade is tunnelled by a server that can (ours offers `gateway.tunnel`);
            # anything else (another protocol, another server) is refused as before.
            if not names_websocket(upgrade) or "gateway.tunnel" not in (scope.get("extensions") or ()):
                raise UpgradeNotSupported("protocol upgrades other than WebSocket are not supported")
            exchange.websocket_key = handshake_key(headers, exchange.method, scope["http_version"])
        if content_length is None and not encodings and scope.get("http_version") == "2":
            # HTTP/2 has no chunked coding: a body of no declared length is DATA frames until the stream
            # ends (the server says so in the scope), streamed like a chunked one.
            return None, "gateway.unsized_body" in (scope.get("extensions") or ())
        return content_length, bool(encodings)

    @staticmethod
    def _select(table: MatcherTable[Endpoint], exchange: Exchange, raw_path: bytes) -> Selection[Endpoint] | None:
        """§12's selection: the request's path, Host (lower-cased, port stripped; _check_head made sure
        there is exactly one), method, and the headers some endpoint's match_headers names."""
        headers = exchange.headers
        host = ""
        for name, value in headers:
            if name == b"host":
                known = _HOSTS.get(value)
                if known is None:
                    known = request_host(value.decode("latin-1"))
                    if len(value) <= _HOST_LONGEST:
                        if len(_HOSTS) >= _HOSTS_KEPT:
                            _HOSTS.clear()
                        _HOSTS[value] = known
                host = known
                break
        return table.select(
            raw_path.decode("latin-1"), host=host, method=exchange.method, headers=table.header_values(headers)
        )

    def _split(self, snapshot: Snapshot, endpoint: Endpoint, split: TrafficSplit, exchange: Exchange) -> Endpoint:
        """§12's canary: the version a `/{name}` request of a splitting default version goes to
        (configdoc.splits.TrafficSplit.decide). A method the target does not serve, or a disabled target,
        leaves the request where it is."""
        target = snapshot.endpoints.get(split.target_key)
        method = exchange.method
        if target is None or not target.enabled or method not in target.methods or method not in endpoint.methods:
            return endpoint
        client_ip: str | None = None
        if split.sticky == "ip":
            address = self.forwarding.client_address(exchange.scope)  # trusted-proxy aware, as the plugins see it
            client_ip = str(address) if address is not None else None
        headers = split.header_values(exchange.headers) if split.wanted else {}
        return target if split.decide(headers, client_ip).to_target else endpoint

    async def _handle(self, exchange: Exchange) -> None:
        content_length, chunked = self._check_head(exchange)
        snapshot = self.runtime.snapshot
        if snapshot is None:
            raise NoConfig("no configuration has been loaded yet")
        raw_path = exchange.raw_path
        allow: frozenset[str] | None = None  # §12: set when the selection found no endpoint for the method
        try:
            if snapshot.matchers.plain:  # no hosts, match_headers or shared keys: the path alone decides
                match: Match[Endpoint] | Selection[Endpoint] | None = snapshot.routes.match(raw_path.decode("latin-1"))
            else:
                match = self._select(snapshot.matchers, exchange, raw_path)
                if match is not None and not match.method_allowed:
                    allow = match.allow
        except UnsafePath as exc:
            raise BadRequest(str(exc)) from None
        if match is None:
            if snapshot.global_chain is not None:
                exchange.use_chain(snapshot.global_chain, self.forwarding, self.runtime.metrics.decisions)
            raise NoRoute("no endpoint serves this path")
        endpoint = match.value
        if endpoint.split is not None and allow is None and match.key == endpoint.split_key:
            endpoint = self._split(snapshot, endpoint, endpoint.split, exchange)
        exchange.endpoint = endpoint
        exchange.endpoint_key = endpoint.key
        trace = exchange.trace
        if trace is not None and trace.sampled:
            trace.route = match.key
        if endpoint.https_redirect and not self.forwarding.over_https(exchange.scope):
            # Before any policy: the answer says nothing about the endpoint, and whatever a policy decides
            # is decided again on the https:// request.
            location = self._https_location(exchange)
            await self._send_answer(exchange, Answer(308, [(b"location", location), (b"content-length", b"0")]))
            return
        chain = endpoint.chain
        if chain is not None:
            exchange.use_chain(chain, self.forwarding, self.runtime.metrics.decisions)
            if chain.early:
                early = self._access(chain.early, exchange)
                answer = await self._waited(early, exchange) if isinstance(early, Wait) else early
                if answer is not None:
                    await self._send_answer(exchange, answer)
                    return
        method = exchange.method
        if allow is not None:  # endpoints share this key; none of those matching host and headers has `method`
            raise MethodNotAllowed(
                f"{method} is not allowed here", headers=[(b"allow", ", ".join(sorted(allow)).encode())]
            )
        if method not in endpoint.methods:
            raise MethodNotAllowed(
                f"{method} is not allowed here", headers=[(b"allow", endpoint.allow_header.encode())]
            )
        if not endpoint.enabled:
            raise EndpointDisabled("this endpoint is disabled")
        if exchange.websocket_key is not None and not endpoint.websocket:
            raise UpgradeForbidden("WebSocket upgrades are not allowed on this endpoint")
        if content_length is not None and content_length > endpoint.max_body_bytes:
            raise BodyTooLarge(f"the request body is over {endpoint.max_body_bytes} bytes")
        if chain is not None and chain.late:
            if chain.late_awaits:
                answer = await self._access_async(chain.late, exchange)
            else:
                late = self._access(chain.late, exchange)
                answer = await self._waited(late, exchange) if isinstance(late, Wait) else late
            if answer is not None:
                await self._send_answer(exchange, answer)
                return
        runtime = self.runtime
        if runtime.in_flight >= self.settings.max_concurrency:
            raise Overloaded("the gateway is at its concurrency limit")
        runtime.in_flight += 1
        try:
            state = exchange.state = runtime.state_for(endpoint)
            rest = match.rest
            if match.key in endpoint.extra_paths and not endpoint.strip_path:
                rest = match.key[len(self.settings.mount_prefix) :] + rest
            if exchange.websocket_key is not None:
                await self._tunnel(exchange, state, rest)  # counted in in_flight as long as it is open
            elif endpoint.grpc:
                await self._grpc(exchange, state, rest)
            else:
                await self._proxy(exchange, state, rest, content_length, chunked)
        finally:
            runtime.in_flight -= 1

    def _https_location(self, exchange: Exchange) -> bytes:
        """`https://<host>[:<TLS port>]<path>?<query>` (`wss://` for a WebSocket handshake): the host of
        the request's validated authority (the server checked it: a name, an IPv4 address or a bracketed
        IPv6 literal), its port dropped; the port the TLS listener's unless that is 443 (or no TLS
        listener: then TLS is terminated in front, on 443); the path and query as the client sent them,
        any byte that may not stand in a header value percent-encoded."""
        scope = exchange.scope
        authority: bytes = scope.get("authority") or b""
        if not authority:  # a scope from another server: the Host header, checked as our server does
            from .server import valid_authority  # server.py imports this module

            found = next((value for name, value in scope["headers"] if name == b"host"), b"")
            authority = found if valid_authority(found) else b""
        if authority.startswith(b"["):
            host = authority[: authority.index(b"]") + 1]
        else:
            host = authority.partition(b":")[0]
        if not host:
            raise BadRequest("the Host header must be a host name or IP address with an optional port")
        tls = self.settings.tls_listen
        port = b"" if tls is None or tls[1] == 443 else b":%d" % tls[1]
        query: bytes = scope.get("query_string") or b""
        target = exchange.raw_path + (b"?" + query if query else b"")
        # A WebSocket handshake is sent to its `wss://` URL: a client that follows redirects (RFC 6455
        # §4.1 allows it; the `websockets` library does) takes only ws:// and wss:// URIs, and an
        # `https://` one would fail it instead of moving it to the TLS listener.
        scheme = b"wss://" if exchange.websocket_key is not None else b"https://"
        return scheme + host + port + _UNSAFE_IN_LOCATION.sub(_percent, target)

    @staticmethod
    def _access(plugins: tuple[Plugin, ...], exchange: Exchange) -> Answer | Wait | None:
        """The plugins' access hooks, in order: the first answer (or GatewayError) ends the request; a
        `Wait` (a `tries_sync` plugin that must wait after all) goes back with the plugins after it."""
        for plugin in plugins:
            answer = plugin.access(exchange)
            if answer is not None:
                if isinstance(answer, Wait):
                    answer.rest = plugins[plugins.index(plugin) + 1 :]
                return answer
        return None

    async def _waited(self, wait: Wait, exchange: Exchange) -> Answer | None:
        """The rest of a phase that `_access` left at a `Wait`: the plugin's decision, then the others."""
        answer = await wait.awaitable
        if answer is None and wait.rest:
            answer = await self._access_async(wait.rest, exchange)
        return answer

    @staticmethod
    async def _access_async(plugins: tuple[Plugin, ...], exchange: Exchange) -> Answer | None:
        """_access for a phase where some plugin waits on the network (Plugin.awaits)."""
        for plugin in plugins:
            answer = await plugin.access_async(exchange) if plugin.awaits else plugin.access(exchange)
            if isinstance(answer, Wait):
                answer = await answer.awaitable
            if answer is not None:
                return answer
        return None

    # --- upstream --------------------------------------------------------------------------------

    async def _grpc(self, exchange: Exchange, state: EndpointState, rest: str) -> None:
        """A `protocol: grpc` endpoint's call (grpc.py), counted by the breaker and by grpc-status."""
        if exchange.scope.get("http_version") != "2":
            raise BadRequest("gRPC calls need HTTP/2 (h2c with prior knowledge, or h2 over TLS)")
        permit = state.breaker.acquire()
        if permit is None:
            await self._send_answer(exchange, fallback(exchange, state))
            return
        codes: list[int] = []
        key = state.endpoint.key
        metrics = self.runtime.metrics

        def observe(code: int) -> None:
            codes.append(code)
            metrics.observe_grpc(key, code)

        drop = self.response_drop
        try:
            await grpc.proxy_call(
                exchange,
                state,
                rest,
                self.grpc_pool,
                lambda target: self.forwarding.upstream_headers(exchange, target),
                lambda headers: self.answer_headers(exchange, [pair for pair in headers if pair[0] not in drop]),
                observe,
            )
        except UpstreamError:
            state.breaker.record(permit, failed=True)
            raise
        except BaseException:
            state.breaker.release(permit)
            raise
        state.breaker.record(permit, failed=grpc.failed(codes[0] if codes else None))

    async def _proxy(
        self, exchange: Exchange, state: EndpointState, rest: str, content_length: int | None, chunked: bool
    ) -> None:
        endpoint = state.endpoint
        method = exchange.method
        limit, stall = endpoint.max_body_bytes, self.body_stall_timeout
        body: request_body.Body
        if not chunked and (content_length or 0) <= REPLAY_LIMIT:
            body = await request_body.read_small(exchange, limit, stall) if content_length else b""
            replayable = True
        elif chunked and replays_after_sending(endpoint.retries, method):
            # A chunked body that a retry could send again: read up to the replay limit first, and if it
            # ends by then, it goes as one piece (with a Content-Length) and can be replayed.
            body, replayable = await request_body.read_ahead(exchange, limit, stall)
        else:
            body = request_body.stream(exchange, limit, stall)
            replayable = False

        permit = state.breaker.acquire()
        if permit is None:
            await self._send_answer(exchange, fallback(exchange, state))
            return
        try:
            response, target, panic = await self._attempts(exchange, state, rest, body, replayable)
        except UpstreamError as error:
            state.breaker.record(permit, failed=True)
            raise error
        except BaseException:
            state.breaker.release(permit)
            raise
        state.breaker.record(permit, failed=state.breaker.is_failure_status(response.status))
        # Once the request body is all in, the only message left is the client's disconnect.
        watch = exchange.receive if isinstance(body, bytes) else None
        await self._relay(exchange, state, watch, response, target, panic)

    async def _send_once(
        self,
        exchange: Exchange,
        target: Target,
        path: str,
        headers: Headers,
        body: request_body.Body,
        head_timeout: float,
    ) -> UpstreamResponse:
        endpoint = exchange.state.endpoint  # type: ignore[union-attr]
        url = target.origin + target.base_path + (path or ("" if target.base_path else "/"))
        query: bytes = exchange.scope.get("query_string") or b""
        if query and exchange.context is not None:
            query = exchange.context.get(UPSTREAM_QUERY, query)
        if query:
            url += "?" + query.decode("latin-1")
        tls = endpoint.tls
        return await self.transport.send(
            UpstreamRequest(
                method=exchange.method,
                url=url,
                headers=headers,
                body=body,
                head_timeout=head_timeout,
                connect_timeout=endpoint.connect_timeout,
                idle_timeout=endpoint.read_idle_timeout,
                tls_verify=tls.verify,
                ca_file=tls.ca_file,
                server_name=tls.server_name,
            )
        )

    async def _attempts(
        self, exchange: Exchange, state: EndpointState, rest: str, body: request_body.Body, replayable: bool
    ) -> tuple[UpstreamResponse, Target, bool]:
        endpoint = state.endpoint
        method = exchange.method
        policy = endpoint.retries
        try_timeout = per_try_timeout(policy, endpoint.timeout)
        if not policy.per_try_timeout and (
            not policy.on_timeout or not may_retry(policy, method, None, replayable=replayable)
        ):
            # No try follows one that timed out, so the default share (timeout / attempts) would only
            # cut the one try short: it may use what is left of the whole timeout.
            try_timeout = endpoint.timeout
        deadline = exchange.began + endpoint.timeout
        state.budget.record_request()
        allow_panic = endpoint.health_check.panic
        panic = allow_panic and state.balancer.in_panic()
        chain = exchange.chain
        trace = exchange.trace
        tried: list[Target] = []
        attempt = 0
        while True:
            attempt += 1
            target = state.balancer.pick(exclude=tried, panic=allow_panic)
            if target is None:
                wait = state.balancer.seconds_until_routable()
                retry_after = str(max(1, math.ceil(wait))).encode() if wait is not None else NO_TARGET_RETRY_AFTER
                raise NoHealthyTarget(
                    "no target of this endpoint can take traffic", headers=[(b"retry-after", retry_after)]
                )
            tried.append(target)
            remaining = deadline - time.perf_counter()
            headers = self.forwarding.upstream_headers(exchange, target)
            if chain is not None:
                for plugin in chain.request:
                    plugin.request(exchange, headers)
            span_id = Tracer.propagate(trace, headers) if trace is not None else ""
            try_started = time.perf_counter()
            try:
                try:
                    response = await self._send_once(exchange, target, rest, headers, body, min(try_timeout, remaining))
                finally:
                    spent = time.perf_counter() - try_started
                    exchange.target = target.url
                    exchange.upstream_seconds += spent
                    self.runtime.metrics.observe_upstream(endpoint.key, spent)
            except UpstreamError as error:
                if span_id:
                    Tracer.tried(exchange, span_id, attempt, target, try_started, spent, 0, error.code)
                self._record_target(state, target, failed=True)
                # A try that never reached the upstream may replay even a streamed body not yet started.
                can_replay = replayable or (isinstance(error, NOTHING_SENT) and not exchange.body_streamed)
                if self._may_retry(state, attempt, method, error, can_replay, deadline):
                    await asyncio.sleep(backoff(attempt + 1))
                    continue
                raise
            if span_id:  # a recorded request's try
                Tracer.tried(exchange, span_id, attempt, target, try_started, spent, response.status, "")
            failed = state.breaker.is_failure_status(response.status)
            self._record_target(state, target, failed=failed)
            if response.status in policy.statuses and self._may_retry(
                state, attempt, method, None, replayable, deadline
            ):
                await response.aclose()
                await asyncio.sleep(backoff(attempt + 1))
                continue
            return response, target, panic

    def _may_retry(
        self,
        state: EndpointState,
        attempt: int,
        method: str,
        failure: UpstreamError | None,
        replayable: bool,
        deadline: float,
    ) -> bool:
        """Whether to try again after a failed try (`failure`) or a retryable status (None)."""
        if attempt >= state.endpoint.retries.attempts or time.perf_counter() >= deadline:
            return False
        if not may_retry(state.endpoint.retries, method, failure, replayable=replayable):
            return False
        if not state.budget.try_spend():
            return False
        self.runtime.metrics.retries.labels(state.endpoint.key).inc()
        return True

    def _record_target(self, state: EndpointState, target: Target, *, failed: bool) -> None:
        if state.balancer.record(target, failed=failed):
            self.runtime.metrics.target_ejected.labels(state.endpoint.key, target.url).set(1)
            logger.warning("target %s of %s ejected", target.url, state.endpoint.key)

    async def _relay(
        self,
        exchange: Exchange,
        state: EndpointState,
        watch: Receive | None,
        response: UpstreamResponse,
        target: Target,
        panic: bool,
    ) -> None:
        scope, send = exchange.scope, exchange.send
        headers = strip_hop_by_hop(response.headers, self.response_drop)
        cache = state.cache
        origin_headers = list(headers) if cache is not None else headers  # the cache keeps the upstream's own
        if panic:
            headers.append((b"x-gateway-panic", b"1"))
        exchange.status = response.status  # before the response hooks, which may read it
        headers = self.answer_headers(exchange, headers)
        method = exchange.method
        keep: list[bytes] | None = None
        if (
            cache is not None
            and method == "GET"  # a HEAD answer has no body to serve a later GET
            and cache.request_cacheable(method, scope["headers"])
            and cache.response_cacheable(response.status, origin_headers)
        ):
            keep = []
        exchange.started = True
        # uvicorn's send() silently drops writes once the client is gone, so without a watcher an
        # endless upstream stream (SSE, a long download) would be pulled forever for nobody.
        gone: list[bool] = []
        watcher = None
        relay = None
        # A body already all here (the native transport hands it over whole) cannot stream forever:
        # no watcher, and it goes out in one piece with the end of the response.
        complete_body = getattr(response, "complete_body", None)
        body = complete_body() if complete_body is not None else None
        if watch is not None and body is None:
            relay = asyncio.current_task()
            if relay is not None:
                watcher = asyncio.create_task(self._watch_disconnect(watch, relay, gone))
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            if body is not None:
                if keep is not None and cache is not None:
                    keep = [body] if len(body) <= cache.max_bytes else None
                exchange.bytes_out = len(body)
                await send({"type": "http.response.body", "body": body, "more_body": False})
            else:
                size = 0
                async for chunk in response.body():
                    size += len(chunk)
                    exchange.bytes_out = size
                    if keep is not None and cache is not None:
                        if size > cache.max_bytes:
                            keep = None
                        else:
                            keep.append(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamAborted as exc:
            # Never glue an error onto a partial response: leave it incomplete so the connection drops.
            logger.warning("upstream %s failed mid-body for %s: %s", target.url, state.endpoint.key, exc)
            exchange.error, exchange.detail = "upstream_aborted", str(exc)
            return
        except OSError:
            exchange.error = ClientGone.code
            return
        except asyncio.CancelledError:
            if not gone or relay is None:
                raise
            relay.uncancel()
            exchange.error = ClientGone.code
            return
        finally:
            # Synchronously, before any further await: after this the watcher can no longer cancel us.
            if watcher is not None:
                watcher.cancel()
            await response.aclose()
        if body is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if keep is not None and cache is not None:
            cache.store(cache_key(scope), scope["headers"], response.status, origin_headers, b"".join(keep))

    @staticmethod
    async def _watch_disconnect(receive: Receive, relay: asyncio.Task[Any], gone: list[bool]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.append(True)
                relay.cancel()
                return

    # --- WebSocket tunnels (§13) ------------------------------------------------------------------

    async def _tunnel(self, exchange: Exchange, state: EndpointState, rest: str) -> None:
        """A WebSocket upgrade past the chain: the breaker, a target, the handshake sent upstream; a valid
        101 opens the tunnel (the server relays bytes until it ends, and the access line is written
        then), anything else goes back as the upstream's ordinary answer."""
        endpoint = state.endpoint
        permit = state.breaker.acquire()
        if permit is None:
            await self._send_answer(exchange, fallback(exchange, state))
            return
        try:
            upstream = await self._handshake(exchange, state, rest)
        except UpstreamError:
            state.breaker.record(permit, failed=True)
            raise
        except BaseException:
            state.breaker.release(permit)
            raise
        try:
            if upstream.status != 101:
                state.breaker.record(permit, failed=state.breaker.is_failure_status(upstream.status))
                await self._pass_back(exchange, upstream)
                return
            key = exchange.websocket_key
            assert key is not None
            problem = valid_switch(upstream.headers, key)
            if problem is not None:
                state.breaker.record(permit, failed=True)
                raise UpstreamProtocolError(HANDSHAKE_REFUSED, detail=f"{exchange.target}: {problem}")
            state.breaker.record(permit, failed=False)
        except BaseException:
            upstream.abort()
            raise
        headers = strip_hop_by_hop(upstream.headers, self.response_drop)
        headers += ((b"connection", b"upgrade"), (b"upgrade", b"websocket"))
        exchange.status = 101
        headers = self.answer_headers(exchange, headers)
        head = b"".join([b"HTTP/1.1 101 Switching Protocols\r\n", *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"])
        exchange.head_seconds = time.perf_counter() - exchange.began
        tunnel = exchange.scope["extensions"]["gateway.tunnel"](head, upstream, endpoint.read_idle_timeout)
        if tunnel is None:
            upstream.abort()
            exchange.status = 0
            raise ClientGone("the client left before the tunnel opened")
        exchange.started = True
        metrics = self.runtime.metrics
        metrics.tunnel_opened(tunnel, endpoint.key)
        try:
            # Shielded: a cancelled request task (a stop past uvicorn's grace) must not cancel `done`,
            # which only the tunnel resolves; the finally closes the tunnel instead.
            ended = await asyncio.shield(tunnel.done)
            exchange.detail = f"tunnel ended: {ended}"
        finally:
            tunnel.close("drain")
            exchange.bytes_in, exchange.bytes_out = tunnel.to_upstream, tunnel.to_client
            metrics.tunnel_closed(tunnel)

    async def _handshake(self, exchange: Exchange, state: EndpointState, rest: str) -> UpstreamSide:
        """The handshake sent to a target picked the usual way (another target after a connect failure,
        as `retries` allow), up to the answer's head: the connection, its status and headers."""
        endpoint = state.endpoint
        deadline = exchange.began + endpoint.timeout
        state.budget.record_request()
        chain = exchange.chain
        tried: list[Target] = []
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            attempt += 1
            target = state.balancer.pick(exclude=tried, panic=endpoint.health_check.panic)
            if target is None:
                wait = state.balancer.seconds_until_routable()
                retry_after = str(max(1, math.ceil(wait))).encode() if wait is not None else NO_TARGET_RETRY_AFTER
                raise NoHealthyTarget(
                    "no target of this endpoint can take traffic", headers=[(b"retry-after", retry_after)]
                )
            tried.append(target)
            headers = self.forwarding.upstream_headers(exchange, target)
            if chain is not None:
                for plugin in chain.request:
                    plugin.request(exchange, headers)
            trace = exchange.trace
            span_id = Tracer.propagate(trace, headers) if trace is not None else ""
            path = target.base_path + (rest or ("" if target.base_path else "/"))
            query: bytes = exchange.scope.get("query_string") or b""
            if query and exchange.context is not None:
                query = exchange.context.get(UPSTREAM_QUERY, query)
            if query:
                path += "?" + query.decode("latin-1")
            started = time.perf_counter()
            try:
                try:
                    upstream = await self._switch(loop, endpoint, target, request_head("GET", path, headers), deadline)
                finally:
                    spent = time.perf_counter() - started
                    exchange.target = target.url
                    exchange.upstream_seconds += spent
                    self.runtime.metrics.observe_upstream(endpoint.key, spent)
            except UpstreamError as error:
                if span_id:
                    Tracer.tried(exchange, span_id, attempt, target, started, spent, 0, error.code)
                self._record_target(state, target, failed=True)
                if isinstance(error, NOTHING_SENT) and self._may_retry(state, attempt, "GET", error, True, deadline):
                    await asyncio.sleep(backoff(attempt + 1))
                    continue
                raise
            if span_id:
                Tracer.tried(exchange, span_id, attempt, target, started, spent, upstream.status, "")
            self._record_target(state, target, failed=state.breaker.is_failure_status(upstream.status))
            return upstream

    @staticmethod
    async def _switch(
        loop: asyncio.AbstractEventLoop, endpoint: Any, target: Target, head: bytes, deadline: float
    ) -> UpstreamSide:
        parts = urlsplit(target.url)
        host = parts.hostname or ""
        port = parts.port or (443 if target.scheme == "https" else 80)
        tls = endpoint.tls
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                upstream = await connect(
                    loop,
                    target.scheme,
                    host,
                    port,
                    verify=tls.verify,
                    ca_file=tls.ca_file,
                    server_name=tls.server_name,
                )
        except TimeoutError:
            raise UpstreamConnectTimeout(CONNECT_TIMED_OUT, detail=f"{target.url}: connect timed out") from None
        except OSError as exc:
            message = TLS_FAILED if isinstance(exc, ssl.SSLError) else REFUSED
            raise UpstreamConnectError(message, detail=f"{target.url}: {exc}") from None
        try:
            upstream.send(head)
            async with asyncio.timeout(max(0.001, min(endpoint.timeout, deadline - time.perf_counter()))):
                await upstream.head
        except TimeoutError:
            upstream.abort()
            raise UpstreamTimeout(NO_HEAD_IN_TIME, detail=f"{target.url}: no handshake answer in time") from None
        except BaseException:
            upstream.abort()
            raise
        return upstream

    async def _pass_back(self, exchange: Exchange, upstream: UpstreamSide) -> None:
        """The upstream's answer to a handshake it did not accept, as an ordinary answer (its body
        streamed; an upstream failing mid-body leaves the answer incomplete: the connection drops)."""
        send = exchange.send
        headers = strip_hop_by_hop(upstream.headers, self.response_drop)
        exchange.status = upstream.status
        headers = self.answer_headers(exchange, headers)
        exchange.started = True
        try:
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            size = 0
            async for chunk in upstream.body():
                size += len(chunk)
                exchange.bytes_out = size
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamAborted as exc:
            exchange.error, exchange.detail = "upstream_aborted", f"{exchange.target}: {exc.detail}"
            return
        finally:
            upstream.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
