"""`forward_auth` (ARCHITECTURE §11): ask an auth service whether the request may pass (phase LATE,
priority 230: the last of the authentication plugins; see authentication.py for how they share the
phase).

Every request the earlier plugins did not already authenticate makes a `GET url` to the service
(forward_auth has no credential of its own to look for: the service decides), with:

- `X-Forwarded-Method`, `X-Forwarded-Uri` (the path and query as the client sent them) and
  `X-Forwarded-For` (the client's address as the gateway decided it, forwarding.Forwarding: never
  what the client wrote in its own X-Forwarded-* headers, which are not sent);
- the client's `request_headers` (every copy, from the request head only), nothing else, no body.

Its answer:

- 2xx: the request goes on, as a caller without a consumer; the `response_headers` of the service's
  answer are set on the upstream request (the client's own copies of those names are always removed
  first, so a client cannot claim `X-User-Id` itself);
- anything else (a 401 with the service's challenge, a 403, a 302 to a login page): returned to the
  client as is, status, headers (but hop-by-hop ones) and body, the body at most `MAX_BODY` bytes;
- no answer within `timeout` seconds, a connection refused, a body over `MAX_BODY`: 503
  `auth_unavailable` (the request is refused, never let through unchecked).

`mode: report` lets a refused or undecided request through as nobody, counting `would_deny`;
`gateway_policy_decisions_total{plugin="forward_auth"}` counts `allow`, `deny` and `would_deny`.

One HTTP client per worker process serves every endpoint's forward_auth (its pool outlives
snapshots; a client per plugin instance would be dropped, connections and all, by every new
snapshot), closed on shutdown (plugins.close_plugins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from ..errors import AuthUnavailable
from ..exchange import Exchange
from ..types import Headers
from . import Answer, Plugin, PluginContext, on_shutdown, register
from .authentication import AuthPlugin, Identity

MAX_BODY = 64 * 1024
_COPIED = "forward_auth"  # the key of Exchange.note() holding the headers for the upstream


class _Client:
    """The worker's client to the auth services, made on first use in the loop that uses it."""

    def __init__(self) -> None:
        self.client: httpx.AsyncClient | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self.client is None or self.loop is not loop:
            # (Another loop's client is unusable here: tests run one loop per call.)
            self.client = httpx.AsyncClient(
                trust_env=False, follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=32)
            )
            self.loop = loop
        return self.client

    async def aclose(self) -> None:
        client, self.client = self.client, None
        if client is not None and self.loop is asyncio.get_running_loop():
            await client.aclose()


CLIENT = _Client()
on_shutdown(CLIENT.aclose)


class ForwardAuth(AuthPlugin):
    name: ClassVar[str] = "forward_auth"
    priority: ClassVar[int] = 230
    awaits: ClassVar[bool] = True
    challenge = None  # the service's answer carries its own

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        request_headers: frozenset[bytes],
        response_headers: frozenset[bytes],
        not_returned: frozenset[bytes],
        report: bool,
    ) -> None:
        super().__init__(report=report)
        self.not_returned = not_returned  # hop-by-hop and framing headers of the service's answer
        self.url = url
        self.timeout = timeout
        self.request_headers = request_headers  # lower-case
        self.response_headers = response_headers  # lower-case

    def question(self, exchange: Exchange) -> list[tuple[bytes, bytes]]:
        """The headers of the GET to the service."""
        scope = exchange.scope
        uri: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        query: bytes = scope.get("query_string") or b""
        if query:
            uri += b"?" + query
        client = exchange.client_address()
        headers = [
            (b"x-forwarded-method", exchange.method.encode("ascii")),
            (b"x-forwarded-uri", uri),
            (b"x-forwarded-for", str(client).encode("ascii") if client is not None else b"unknown"),
        ]
        if self.request_headers:
            names = self.request_headers
            headers += [(name, value) for name, value in exchange.headers if name in names]
        return headers

    async def access_async(self, exchange: Exchange) -> Answer | None:
        if exchange.caller is not None:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                async with CLIENT.get().stream("GET", self.url, headers=self.question(exchange)) as answer:
                    # Read whole (capped) even on a 2xx, so the connection goes back to the pool.
                    body = b""
                    async for chunk in answer.aiter_raw():
                        body += chunk
                        if len(body) > MAX_BODY:
                            return self.unavailable(exchange, f"the auth service's answer is over {MAX_BODY} bytes")
                    status = answer.status_code
                    headers = [(name.lower(), value) for name, value in answer.headers.raw]
        except TimeoutError:
            return self.unavailable(exchange, f"the auth service did not answer within {self.timeout:g}s")
        except httpx.HTTPError as error:
            return self.unavailable(exchange, f"the auth service could not be reached ({type(error).__name__})")
        if 200 <= status < 300:
            names = self.response_headers
            exchange.note()[_COPIED] = [(name, value) for name, value in headers if name in names]
            self.accept(exchange, Identity(None))
            return None
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"forward_auth (report mode) would refuse: the auth service answered {status}"
            return None
        exchange.decide(self.name, "deny")
        exchange.detail = f"forward_auth: the auth service answered {status}"
        kept: Headers = [(name, value) for name, value in headers if name not in self.not_returned]
        kept.append((b"content-length", str(len(body)).encode("ascii")))
        return Answer(status, kept, body, error="forward_auth_refused")

    def unavailable(self, exchange: Exchange, detail: str) -> Answer | None:
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"forward_auth (report mode) would refuse: {detail}"
            return None
        exchange.decide(self.name, "deny")
        raise AuthUnavailable("the auth service is unavailable; retry shortly", detail=f"forward_auth: {detail}")

    def request(self, exchange: Exchange, headers: Headers) -> None:
        if not self.response_headers:
            return
        names = self.response_headers
        headers[:] = [(name, value) for name, value in headers if name not in names]
        context = exchange.context
        copied = context.get(_COPIED) if context is not None else None
        if copied:
            headers.extend(copied)


@register("forward_auth")
def compile_forward_auth(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (url, timeout, request_headers, response_headers, mode, enabled)
    → the plugin."""
    # Imported here: forwarding imports snapshot, which imports this package.
    from ..forwarding import HOP_BY_HOP

    return ForwardAuth(
        config["url"],
        timeout=float(config["timeout"]),
        request_headers=frozenset(name.lower().encode("ascii") for name in config["request_headers"]),
        response_headers=frozenset(name.lower().encode("ascii") for name in config["response_headers"]),
        not_returned=frozenset(HOP_BY_HOP | {b"content-length", b"transfer-encoding"}),
        report=config["mode"] == "report",
    )
