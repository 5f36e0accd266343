"""The proxy ASGI app (ARCHITECTURE §5): framing → route → method → enabled → body size → overload →
breaker → target selection → upstream, streaming both ways through a `Transport` (transport.py:
`DATAPLANE_TRANSPORT`, the native client by default)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from configdoc import UnsafePath

from .errors import (
    BadRequest,
    BodyTooLarge,
    CircuitOpen,
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
    RequestTimeout,
    UpgradeNotSupported,
    UpstreamAborted,
    UpstreamError,
    UriTooLong,
    error_response,
)
from .retry import REPLAY_LIMIT, backoff, may_retry, per_try_timeout, replays_after_sending
from .runtime import EndpointState, Runtime
from .snapshot import Endpoint, Target
from .transport import Transport, UpstreamRequest, UpstreamResponse, create_transport
from .types import Headers, Receive, Scope, Send

logger = logging.getLogger("dataplane.proxy")


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
MAX_URI = 8 * 1024
MAX_HEADER_BLOCK = 32 * 1024
BODY_STALL_TIMEOUT = 30.0
NO_TARGET_RETRY_AFTER = b"5"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,200}$")


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


class AccessLog:
    """One line per request on the `dataplane.access` logger, batched: each line is formatted whole
    (time, level, logger, fields: the format of `process.configure_logging`) when the request ends, and
    the lines go out as one log record at most every `interval` seconds (or every `batch` lines). So
    the per-request cost is one f-string instead of a LogRecord, a queue put and a format, and the log
    writer thread only writes (it never holds the interpreter long enough to delay the event loop)."""

    interval = 0.2
    batch = 2048

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("dataplane.access")
        self._prefix = f" INFO {self.logger.name} "
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def write(self, exchange: Exchange, elapsed: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        lines = self._lines
        lines.append(
            f"{self._stamp},{int((now - second) * 1000):03d}{self._prefix}request_id={exchange.request_id}"
            f" method={exchange.method} endpoint={exchange.endpoint or '-'} target={exchange.target or '-'}"
            f" status={exchange.status or '-'} duration_ms={elapsed * 1000:.1f}"
            f" upstream_ms={exchange.upstream_seconds * 1000:.1f} error={exchange.error or '-'}"
            # What exactly failed (a target's address, an OS or TLS error): here, never in the answer.
            + (f" detail={json.dumps(exchange.detail)}" if exchange.detail else "")
        )
        if len(lines) >= self.batch:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        if lines:
            record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, "\n".join(lines), (), None)
            record.preformatted = True  # process.LogFormatter writes it as is
            self.logger.handle(record)


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


def _asks_upgrade(connection: bytes, upgrade: bytes) -> bool:
    """An upgrade request (RFC 9110 §7.8): `Upgrade` named in `Connection`, to a protocol other than
    h2c. An h2c offer is optional for the server: it is answered over HTTP/1.1 (the server closes the
    connection after it), and `Upgrade` without `Connection: upgrade` is only a hop-by-hop header."""
    if b"upgrade" not in {token.strip().lower() for token in connection.split(b",")}:
        return False
    return any(protocol.strip().lower().split(b"/")[0] != b"h2c" for protocol in upgrade.split(b","))


def cache_key(scope: Scope) -> bytes:
    """The response cache's key: raw path + query, as the client sent them."""
    return (scope.get("raw_path") or b"").split(b"?", 1)[0] + b"?" + (scope.get("query_string") or b"")


class Exchange:
    """What one client request has accumulated so far: ids, the endpoint, whether the head was sent."""

    __slots__ = (
        "began",
        "detail",
        "endpoint",
        "error",
        "method",
        "request_id",
        "started",
        "status",
        "target",
        "upstream_seconds",
    )

    def __init__(self, request_id: str, method: str, began: float) -> None:
        self.request_id = request_id
        self.method = method
        self.began = began  # time.perf_counter() when the request reached the app
        self.endpoint: str | None = None
        self.started = False
        self.status = 0
        self.error: str | None = None
        self.detail = ""  # for the access log only (GatewayError.detail)
        self.target: str | None = None
        self.upstream_seconds = 0.0


class ProxyApp:
    body_stall_timeout = BODY_STALL_TIMEOUT

    def __init__(self, runtime: Runtime, *, transport: Transport | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.node_token = runtime.settings.node_id.encode()
        self.transport: Transport = transport or create_transport(runtime.settings.transport)
        self.access_log = AccessLog()
        # What the upstream may not set on the client's answer: the gateway's own headers replace them.
        self.response_drop = HOP_BY_HOP | {b"x-request-id", b"x-endpoint-id", b"x-gateway-panic", b"x-gateway-fallback"}
        if not self.settings.hide_response_time:
            self.response_drop |= {b"x-response-time"}

    async def aclose(self) -> None:
        self.access_log.flush()
        await self.transport.aclose()

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        started_at = time.perf_counter()
        exchange = Exchange("", scope["method"], started_at)
        try:
            await self._handle(scope, receive, send, exchange, started_at)
        except ClientGone:
            exchange.error = ClientGone.code
        except GatewayError as error:
            exchange.detail = error.detail
            if exchange.started:
                return  # the head is out: leaving the response incomplete makes uvicorn drop the connection
            if not exchange.request_id:
                exchange.request_id = self._request_id(scope["headers"])
            await self._send_error(send, exchange, error)
        finally:
            elapsed = time.perf_counter() - started_at
            if exchange.status:
                self.runtime.metrics.observe_request(
                    exchange.endpoint or "", exchange.method, exchange.status, exchange.error, elapsed
                )
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

    def _request_id(self, headers: Headers) -> str:
        for name, value in headers:
            if name == b"x-request-id" and _REQUEST_ID.match(value):
                return value.decode()
        return new_request_id()

    def _response_time(self, exchange: Exchange) -> Headers:
        if self.settings.hide_response_time:
            return []
        return [(b"x-response-time", f"{(time.perf_counter() - exchange.began) * 1000:.1f}ms".encode())]

    async def _send_error(self, send: Send, exchange: Exchange, error: GatewayError) -> None:
        status, headers, body = error_response(error, exchange.request_id, exchange.endpoint)
        headers += self._response_time(exchange)
        exchange.status, exchange.error = status, error.code
        exchange.started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- the checks of §5, in order ------------------------------------------------------------

    def _check_head(self, scope: Scope, exchange: Exchange) -> tuple[int | None, bool]:
        """Framing, loop and upgrade checks in one pass over the request headers; sets the request id.
        Returns the Content-Length (None without one) and whether the body is chunked."""
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
        for name, value in headers:
            size += len(name) + len(value) + 4
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
                if not request_id and _REQUEST_ID.match(value):
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
        if upgrade is not None and _asks_upgrade(connection, upgrade):
            raise UpgradeNotSupported("protocol upgrades (WebSocket) are not supported")
        return content_length, bool(encodings)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange, started_at: float) -> None:
        content_length, chunked = self._check_head(scope, exchange)
        snapshot = self.runtime.snapshot
        if snapshot is None:
            raise NoConfig("no configuration has been loaded yet")
        # ASGI's raw_path has no query, but some servers (and httpx's ASGITransport) include it.
        raw_path: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        try:
            match = snapshot.routes.match(raw_path.decode("latin-1"))
        except UnsafePath as exc:
            raise BadRequest(str(exc)) from None
        if match is None:
            raise NoRoute("no endpoint serves this path")
        endpoint = match.value
        exchange.endpoint = endpoint.key
        method = scope["method"]
        if method not in endpoint.methods:
            raise MethodNotAllowed(
                f"{method} is not allowed here", headers=[(b"allow", endpoint.allow_header.encode())]
            )
        if not endpoint.enabled:
            raise EndpointDisabled("this endpoint is disabled")
        if content_length is not None and content_length > endpoint.max_body_bytes:
            raise BodyTooLarge(f"the request body is over {endpoint.max_body_bytes} bytes")
        runtime = self.runtime
        if runtime.in_flight >= self.settings.max_concurrency:
            raise Overloaded("the gateway is at its concurrency limit")
        runtime.in_flight += 1
        try:
            state = runtime.state_for(endpoint)
            rest = match.rest
            if match.key in endpoint.extra_paths and not endpoint.strip_path:
                rest = match.key[len(self.settings.mount_prefix) :] + rest
            await self._proxy(scope, receive, send, exchange, state, rest, content_length, chunked, started_at)
        finally:
            runtime.in_flight -= 1

    # --- bodies --------------------------------------------------------------------------------

    async def _receive_chunk(self, receive: Receive) -> tuple[bytes, bool]:
        try:
            message = await asyncio.wait_for(receive(), self.body_stall_timeout)
        except TimeoutError:
            raise RequestTimeout("the request body stalled") from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        return message.get("body", b""), bool(message.get("more_body", False))

    async def _read_ahead(
        self, receive: Receive, limit: int, streamed: dict[str, bool]
    ) -> tuple[bytes | AsyncIterator[bytes], bool]:
        """Up to REPLAY_LIMIT bytes of a body of unknown length: (the whole body, True) if it ends by then,
        else (a stream of what was read and the rest, False)."""
        parts: list[bytes] = []
        total = 0
        more = True
        while more and total <= REPLAY_LIMIT:
            chunk, more = await self._receive_chunk(receive)
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"the request body is over {limit} bytes")
            if chunk:
                parts.append(chunk)
        if not more:
            return b"".join(parts), True
        return self._stream_body(receive, limit, streamed, parts), False

    async def _read_small_body(self, receive: Receive, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        more = True
        while more:
            chunk, more = await self._receive_chunk(receive)
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"the request body is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    # --- forwarding ----------------------------------------------------------------------------

    def _trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client or not self.settings.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.settings.trusted_proxies)

    def _upstream_headers(self, scope: Scope, exchange: Exchange, target: Target) -> Headers:
        """The request headers as the upstream gets them (§5): hop-by-hop ones dropped; what says who the
        client is (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) kept only from a trusted proxy, else set
        by the gateway (For, Proto, Host) or dropped; names with `_` dropped from anyone."""
        headers = strip_hop_by_hop(scope["headers"])
        trusted = self._trusted(scope)
        client_host = b""
        forwarded_for = forwarded_proto = forwarded_host = None
        via = None
        out: Headers = []
        for name, value in headers:
            if b"_" in name:
                # CGI-style backends (WSGI, PHP, nginx's underscores_in_headers) read `X_Forwarded_For` as
                # `X-Forwarded-For`: a client could pass for anyone under a name this loop does not know.
                continue
            if name == b"host":
                client_host = value
            elif name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
            elif name == b"x-forwarded-host":
                forwarded_host = value
            elif name == b"via":
                via = value if via is None else via + b", " + value
            elif b"x-forwarded-" <= name < b"x-forwarded." or name in CLIENT_IDENTITY:  # (see strip_hop_by_hop)
                if trusted:  # X-Forwarded-Port, Forwarded, X-Real-IP...: a client's say-so only through a trusted proxy
                    out.append((name, value))
            elif name not in (b"x-request-id", b"expect"):
                # `Expect: 100-continue` was answered by our server already; the upstream gets the body.
                out.append((name, value))
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
        out.append((b"host", target.host.encode()))
        return out

    async def _send_once(
        self,
        endpoint: Endpoint,
        target: Target,
        method: str,
        path: str,
        query: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes],
        head_timeout: float,
    ) -> UpstreamResponse:
        url = target.origin + target.base_path + (path or ("" if target.base_path else "/"))
        if query:
            url += "?" + query.decode("latin-1")
        tls = endpoint.tls
        return await self.transport.send(
            UpstreamRequest(
                method=method,
                url=url,
                headers=headers,
                body=body,
                head_timeout=head_timeout,
                connect_timeout=endpoint.connect_timeout,
                idle_timeout=endpoint.read_idle_timeout,
                tls_verify=bool(tls["verify"]),
                ca_file=tls.get("ca_file"),
                server_name=tls.get("server_name"),
            )
        )

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        state: EndpointState,
        rest: str,
        content_length: int | None,
        chunked: bool,
        started_at: float,
    ) -> None:
        endpoint = state.endpoint
        method = scope["method"]
        body: bytes | AsyncIterator[bytes]
        streamed = {"started": False}
        if not chunked and (content_length or 0) <= REPLAY_LIMIT:
            body = await self._read_small_body(receive, endpoint.max_body_bytes) if content_length else b""
            replayable = True
        elif chunked and replays_after_sending(endpoint.retries, method):
            # A chunked body that a retry could send again: read up to the replay limit first, and if it
            # ends by then, it goes as one piece (with a Content-Length) and can be replayed.
            body, replayable = await self._read_ahead(receive, endpoint.max_body_bytes, streamed)
        else:
            body = self._stream_body(receive, endpoint.max_body_bytes, streamed)
            replayable = False

        permit = state.breaker.acquire()
        if permit is None:
            await self._fallback(scope, send, exchange, state)
            return
        try:
            response, target, panic = await self._attempts(
                scope, exchange, state, method, rest, body, replayable, streamed, started_at
            )
        except UpstreamError as error:
            state.breaker.record(permit, failed=True)
            raise error
        except BaseException:
            state.breaker.release(permit)
            raise
        state.breaker.record(permit, failed=state.breaker.is_failure_status(response.status))
        # Once the request body is all in, the only message left is the client's disconnect.
        watch = receive if isinstance(body, bytes) else None
        await self._relay(scope, send, watch, exchange, state, response, target, panic, started_at)

    async def _stream_body(
        self, receive: Receive, limit: int, streamed: dict[str, bool], first: list[bytes] | None = None
    ) -> AsyncIterator[bytes]:
        """The request body as it arrives, after `first` (what was read ahead, still to be sent)."""
        total = 0
        for chunk in first or ():
            streamed["started"] = True
            total += len(chunk)
            yield chunk
        more = True
        while more:
            chunk, more = await self._receive_chunk(receive)
            streamed["started"] = True
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"the request body is over {limit} bytes")
            if chunk:
                yield chunk

    async def _attempts(
        self,
        scope: Scope,
        exchange: Exchange,
        state: EndpointState,
        method: str,
        rest: str,
        body: bytes | AsyncIterator[bytes],
        replayable: bool,
        streamed: dict[str, bool],
        started_at: float,
    ) -> tuple[UpstreamResponse, Target, bool]:
        endpoint = state.endpoint
        policy = endpoint.retries
        attempts = int(policy["attempts"])
        try_timeout = per_try_timeout(policy, endpoint.timeout)
        if not policy["per_try_timeout"] and (
            "timeout" not in policy["on"] or not may_retry(policy, method, "timeout", replayable=replayable)
        ):
            # No try follows one that timed out, so the default share (timeout / attempts) would only
            # cut the one try short: it may use what is left of the whole timeout.
            try_timeout = endpoint.timeout
        deadline = started_at + endpoint.timeout
        state.budget.record_request()
        panic = bool(endpoint.health_check["panic"]) and state.balancer.in_panic()
        tried: list[Target] = []
        query: bytes = scope.get("query_string") or b""
        attempt = 0
        while True:
            attempt += 1
            target = state.balancer.pick(exclude=tried, panic=bool(endpoint.health_check["panic"]))
            if target is None:
                wait = state.balancer.seconds_until_routable()
                retry_after = str(max(1, math.ceil(wait))).encode() if wait is not None else NO_TARGET_RETRY_AFTER
                raise NoHealthyTarget(
                    "no target of this endpoint can take traffic", headers=[(b"retry-after", retry_after)]
                )
            tried.append(target)
            remaining = deadline - time.perf_counter()
            headers = self._upstream_headers(scope, exchange, target)
            try_started = time.perf_counter()
            try:
                try:
                    response = await self._send_once(
                        endpoint, target, method, rest, query, headers, body, min(try_timeout, remaining)
                    )
                finally:
                    spent = time.perf_counter() - try_started
                    exchange.target = target.url
                    exchange.upstream_seconds += spent
                    self.runtime.metrics.observe_upstream(endpoint.key, spent)
            except UpstreamError as error:
                self._record_target(state, target, failed=True)
                condition = error.retry_condition
                can_replay = replayable or (
                    condition in ("connect_error", "connect_timeout") and not streamed["started"]
                )
                if self._may_retry(state, attempt, attempts, method, condition, can_replay, deadline):
                    await asyncio.sleep(backoff(attempt + 1))
                    continue
                raise
            failed = state.breaker.is_failure_status(response.status)
            self._record_target(state, target, failed=failed)
            if response.status in endpoint.retry_statuses and self._may_retry(
                state, attempt, attempts, method, "status", replayable, deadline
            ):
                await response.aclose()
                await asyncio.sleep(backoff(attempt + 1))
                continue
            return response, target, panic

    def _may_retry(
        self,
        state: EndpointState,
        attempt: int,
        attempts: int,
        method: str,
        condition: str,
        replayable: bool,
        deadline: float,
    ) -> bool:
        if attempt >= attempts or time.perf_counter() >= deadline:
            return False
        if not may_retry(state.endpoint.retries, method, condition, replayable=replayable):
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
        scope: Scope,
        send: Send,
        watch: Receive | None,
        exchange: Exchange,
        state: EndpointState,
        response: UpstreamResponse,
        target: Target,
        panic: bool,
        started_at: float,
    ) -> None:
        headers = strip_hop_by_hop(response.headers, self.response_drop)
        cache = state.cache
        origin_headers = list(headers) if cache is not None else headers  # the cache keeps the upstream's own
        headers.append((b"x-request-id", exchange.request_id.encode()))
        headers.append((b"x-endpoint-id", state.endpoint.key.encode()))
        if not self.settings.hide_response_time:
            elapsed = (time.perf_counter() - started_at) * 1000
            headers.append((b"x-response-time", f"{elapsed:.1f}ms".encode()))
        if panic:
            headers.append((b"x-gateway-panic", b"1"))
        method = scope["method"]
        keep: list[bytes] | None = None
        if (
            cache is not None
            and method == "GET"  # a HEAD answer has no body to serve a later GET
            and cache.request_cacheable(method, scope["headers"])
            and cache.response_cacheable(response.status, origin_headers)
        ):
            keep = []
        exchange.status = response.status
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
                await send({"type": "http.response.body", "body": body, "more_body": False})
            else:
                size = 0
                async for chunk in response.body():
                    if keep is not None and cache is not None:
                        size += len(chunk)
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
            path_and_query = cache_key(scope)
            cache.store(path_and_query, scope["headers"], response.status, origin_headers, b"".join(keep))

    @staticmethod
    async def _watch_disconnect(receive: Receive, relay: asyncio.Task[Any], gone: list[bool]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.append(True)
                relay.cancel()
                return

    async def _fallback(self, scope: Scope, send: Send, exchange: Exchange, state: EndpointState) -> None:
        policy = state.endpoint.breaker
        strategy = policy["fallback_strategy"]
        if strategy == "default_response":
            fallback = policy["fallback"]
            body = fallback["body"].encode()
            await self._send_plain(
                send,
                exchange,
                state,
                fallback["status"],
                [
                    (b"content-type", fallback["content_type"].encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-gateway-fallback", b"default"),
                ],
                body,
                error="circuit_open",
            )
            return
        if strategy == "cached_response" and state.cache is not None:
            path_and_query = cache_key(scope)
            found = state.cache.lookup(path_and_query, scope["headers"])
            if found is not None and state.cache.request_cacheable(scope["method"], scope["headers"]):
                cached, age = found
                headers = [(n, v) for n, v in cached.headers if n != b"age"]
                headers += [(b"x-gateway-fallback", b"cached"), (b"age", str(age).encode())]
                body = b"" if scope["method"] == "HEAD" else cached.body
                await self._send_plain(send, exchange, state, cached.status, headers, body, error="circuit_open")
                return
        raise CircuitOpen(
            "the circuit breaker of this endpoint is open",
            headers=[
                (b"retry-after", str(state.breaker.retry_after()).encode()),
                (b"x-circuit-breaker", b"open"),
            ],
        )

    async def _send_plain(
        self,
        send: Send,
        exchange: Exchange,
        state: EndpointState,
        status: int,
        headers: Headers,
        body: bytes,
        *,
        error: str | None = None,
    ) -> None:
        headers = [
            *headers,
            (b"x-request-id", exchange.request_id.encode()),
            (b"x-endpoint-id", state.endpoint.key.encode()),
            *self._response_time(exchange),
        ]
        exchange.status, exchange.error, exchange.started = status, error, True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
