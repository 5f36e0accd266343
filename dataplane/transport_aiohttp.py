"""The aiohttp-based `Transport` (`DATAPLANE_TRANSPORT=aiohttp`; the default is the native client,
transport_native.py).

One `aiohttp.ClientSession` per TLS setting (verify, CA file), per event loop: `auto_decompress=False`
(encoded bodies pass as bytes), no default headers added (`skip_auto_headers`), `trust_env=False` (no
environment proxies), redirects never followed, URLs sent as given (`encoded=True`: `%2F` and the
query stay byte for byte). The connector pools keep-alive connections and resolves names through the
same SSRF guard as the httpx path (`upstream.resolve` + `configdoc.is_denied_address`), connecting to
the addresses it checked. Errors are typed exactly as `transport.HttpxTransport` types them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from configdoc import is_denied_address

from .errors import (
    CLOSED_BEFORE_ANSWERING,
    CONNECT_TIMED_OUT,
    MALFORMED,
    NO_HEAD_IN_TIME,
    REFUSED,
    TLS_FAILED,
    GatewayError,
    UpstreamAborted,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from .transport import UpstreamRequest, UpstreamResponse, head_deadline, tls_failure
from .types import Headers
from .upstream import Resolver, resolve

# Headers aiohttp would add on its own; the proxy sends exactly the headers it built.
SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type", "Connection")


class GuardedResolver(AbstractResolver):
    """Resolves with `upstream.resolve` and refuses a name any of whose addresses is denied."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self._resolve = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from None
        denied = [a for a in addresses if is_denied_address(ipaddress.ip_address(a.split("%")[0]))]
        if denied:
            raise OSError(f"{host} resolves to a denied address ({', '.join(denied)})")
        if not addresses:
            raise OSError(f"{host} has no address")
        results: list[ResolveResult] = []
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None


class _Outcome:
    """The first gateway error raised by the client's request body while aiohttp was sending it
    (aiohttp wraps it in its own connection error, in another task)."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


async def _watched(body: AsyncIterator[bytes], outcome: _Outcome) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    except GatewayError as exc:
        outcome.error = exc
        raise


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Headers = [(name.lower(), value) for name, value in response.raw_headers]

    async def body(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamAborted(f"the upstream failed while sending its body: {exc!r}") from exc

    async def aclose(self) -> None:
        # Returns the connection to the pool when the body was read to its end, else closes it.
        self._response.release()


class AiohttpTransport:
    """aiohttp's client behind the `Transport` interface."""

    def __init__(self, resolver: Resolver = resolve) -> None:
        self._resolver = resolver
        self._sessions: dict[tuple[bool, str | None], aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session(self, request: UpstreamRequest) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A session belongs to one event loop (tests run several); a new loop starts afresh.
            self._sessions, self._loop = {}, loop
        key = (request.tls_verify, request.ca_file)
        session = self._sessions.get(key)
        if session is None:
            context: ssl.SSLContext | bool = False
            if request.tls_verify:
                context = ssl.create_default_context(cafile=request.ca_file)
            connector = aiohttp.TCPConnector(
                limit=0,  # no pool-wide cap: the data plane's own concurrency cap applies (§5)
                limit_per_host=0,
                keepalive_timeout=30,
                ssl=context,
                resolver=GuardedResolver(self._resolver),
                ttl_dns_cache=10,
                happy_eyeballs_delay=None,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=SKIP_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                requote_redirect_url=False,
            )
            self._sessions[key] = session
        return session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=request.connect_timeout,  # pool wait + connect (+ TLS)
            sock_read=request.idle_timeout,  # silence while the head or the body streams
        )
        outcome = _Outcome()
        deadline, body = head_deadline(request)
        data: Any
        if isinstance(body, bytes):
            data = body or None
        else:
            data = _watched(body, outcome)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers]
        options: dict[str, Any] = {}
        if request.server_name:
            options["server_hostname"] = request.server_name
        origin = "/".join(request.url.split("/", 3)[:3])
        try:
            async with deadline:
                response = await self._session(request).request(
                    request.method,
                    URL(request.url, encoded=True),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    compress=None,
                    chunked=None,
                    timeout=timeout,
                    **options,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            self._raise_body_error(outcome, exc)
            raise UpstreamConnectTimeout(CONNECT_TIMED_OUT, detail=f"connecting to {origin} timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            self._raise_body_error(outcome, exc)
            if isinstance(exc, aiohttp.ClientSSLError) or tls_failure(exc):
                raise UpstreamConnectError(TLS_FAILED, detail=f"TLS with {origin} failed: {exc}") from exc
            raise UpstreamConnectError(REFUSED, detail=f"{origin} refused the connection ({exc})") from exc
        except TimeoutError as exc:  # the head deadline, or silence while waiting for the head
            self._raise_body_error(outcome, exc)
            raise UpstreamTimeout(NO_HEAD_IN_TIME, detail=f"{origin} sent no response head in time") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            self._raise_body_error(outcome, exc)
            raise UpstreamReset(
                CLOSED_BEFORE_ANSWERING, detail=f"{origin} reset the connection before answering ({exc!r})"
            ) from exc
        except aiohttp.ClientResponseError as exc:
            self._raise_body_error(outcome, exc)
            detail = f"{origin} answered with a malformed response ({exc})"
            raise UpstreamProtocolError(MALFORMED, detail=detail) from exc
        except aiohttp.ClientConnectionError as exc:
            self._raise_body_error(outcome, exc)
            raise UpstreamReset(
                CLOSED_BEFORE_ANSWERING, detail=f"{origin} closed the connection before answering ({exc!r})"
            ) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            self._raise_body_error(outcome, exc)
            raise UpstreamProtocolError(MALFORMED, detail=f"{origin}: {type(exc).__name__}: {exc}") from exc
        return _AiohttpResponse(response)

    @staticmethod
    def _raise_body_error(outcome: _Outcome, exc: BaseException) -> None:
        """A failure of the client's own body (too large, stalled, gone) wins over what it caused."""
        if outcome.error is not None:
            raise outcome.error from exc

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
