"""The one small interface between the proxy and an HTTP client library.

A `Transport` takes an `UpstreamRequest` (head, and a body as bytes or a byte iterator) and returns an
`UpstreamResponse` (status, headers, body iterator), or raises one of the typed errors of
`errors.py`: `UpstreamConnectError` (refused, TLS failed), `UpstreamReset` (closed before answering),
`UpstreamConnectTimeout`, `UpstreamTimeout` (no response head in time), `UpstreamProtocolError`
(garbage). A failure while the body streams raises `UpstreamAborted`. The retry rules read these
classes, so every transport must raise the same one for the same failure. So the client can be
swapped (`DATAPLANE_TRANSPORT`: native, the default, in transport_native.py; aiohttp in
transport_aiohttp.py; or httpx, below) and the same wire and fault suites run against each.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from .errors import (
    CLOSED_BEFORE_ANSWERING,
    CONNECT_TIMED_OUT,
    MALFORMED,
    NO_HEAD_IN_TIME,
    REFUSED,
    TLS_FAILED,
    UpstreamAborted,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamReset,
    UpstreamTimeout,
)
from .types import Headers
from .upstream import guarded_transport


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~2 us per request
class UpstreamRequest:
    method: str
    url: str  # absolute; path and query exactly as they go on the wire
    headers: Headers  # Host included
    body: bytes | AsyncIterator[bytes]
    head_timeout: float  # until the response head has arrived
    connect_timeout: float
    idle_timeout: float  # max silence while a body streams, either way
    tls_verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None


class UpstreamResponse(Protocol):
    status: int
    headers: Headers  # names lower-case, as received (hop-by-hop ones included)

    def body(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def head_deadline(request: UpstreamRequest) -> tuple[asyncio.Timeout, bytes | AsyncIterator[bytes]]:
    """The response-head deadline of one try, as an `asyncio.Timeout` to enter around the exchange, and
    the body to send with it. A body given whole: `head_timeout` from now. A streamed body: the client
    sets the pace of its upload (its stalls are the proxy's 30 s body deadline: 408, and no fault of the
    upstream's), so the upstream's `head_timeout` starts once the body has all been handed over; an
    answer that comes earlier ends the wait as usual."""
    if isinstance(request.body, bytes):
        return asyncio.timeout(max(request.head_timeout, 0.001)), request.body
    deadline = asyncio.timeout(None)
    return deadline, _deadline_after(request.body, deadline, request.head_timeout)


async def _deadline_after(
    body: AsyncIterator[bytes], deadline: asyncio.Timeout, seconds: float
) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk
    if not deadline.expired():
        try:
            deadline.reschedule(asyncio.get_running_loop().time() + max(seconds, 0.001))
        except RuntimeError:
            pass  # the head came first and the wait is over


def tls_failure(error: BaseException) -> bool:
    """Whether a connect error was TLS failing (a certificate not verified, a handshake refused): an
    `ssl.SSLError` anywhere in its chain of causes (client libraries wrap it in their own errors)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# --- httpx ---------------------------------------------------------------------------------------

HttpxTransportFactory = Callable[[Any], httpx.AsyncBaseTransport]


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Headers = [(name.lower(), value) for name, value in response.headers.raw]

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except (httpx.HTTPError, TimeoutError) as exc:
            raise UpstreamAborted(f"the upstream failed while sending its body: {exc!r}") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    """One shared httpx.AsyncClient per TLS setting (verify, CA file), redirects never followed,
    no environment proxies, no default headers, bodies passed as raw bytes."""

    def __init__(self, factory: HttpxTransportFactory | None = None) -> None:
        self._factory = factory
        self._clients: dict[tuple[bool, str | None], httpx.AsyncClient] = {}

    def _client(self, request: UpstreamRequest) -> httpx.AsyncClient:
        key = (request.tls_verify, request.ca_file)
        client = self._clients.get(key)
        if client is None:
            verify: ssl.SSLContext | bool = False
            if request.tls_verify:
                verify = ssl.create_default_context(cafile=request.ca_file) if request.ca_file else True
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000, keepalive_expiry=30)
            transport = self._factory(verify) if self._factory is not None else guarded_transport(verify, limits)
            client = httpx.AsyncClient(follow_redirects=False, trust_env=False, transport=transport)
            self._clients[key] = client
        return client

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        timeout = httpx.Timeout(
            connect=request.connect_timeout,
            read=request.idle_timeout,
            write=request.idle_timeout,
            pool=request.connect_timeout,
        )
        extensions: dict[str, Any] = {"timeout": timeout.as_dict()}
        if request.server_name:
            extensions["sni_hostname"] = request.server_name
        deadline, content = head_deadline(request)
        # Built directly, not with client.build_request, so the client adds no default headers.
        outgoing = httpx.Request(
            request.method, request.url, headers=request.headers, content=content, extensions=extensions
        )
        where = request.url.split("/", 3)[:3]
        origin = "/".join(where)
        try:
            async with deadline:
                response = await self._client(request).send(outgoing, stream=True)
        except (TimeoutError, httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise UpstreamTimeout(NO_HEAD_IN_TIME, detail=f"{origin} sent no response head in time") from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise UpstreamConnectTimeout(CONNECT_TIMED_OUT, detail=f"connecting to {origin} timed out ({exc})") from exc
        except httpx.ConnectError as exc:
            if tls_failure(exc):
                raise UpstreamConnectError(TLS_FAILED, detail=f"TLS with {origin} failed: {exc}") from exc
            raise UpstreamConnectError(REFUSED, detail=f"{origin} refused the connection ({exc})") from exc
        except (httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamReset(
                CLOSED_BEFORE_ANSWERING, detail=f"{origin} reset the connection before answering ({exc!r})"
            ) from exc
        except httpx.RemoteProtocolError as exc:
            if "disconnected" in str(exc).lower() or "without sending" in str(exc):
                raise UpstreamReset(
                    CLOSED_BEFORE_ANSWERING, detail=f"{origin} closed the connection before answering ({exc})"
                ) from exc
            detail = f"{origin} answered with a malformed response ({exc})"
            raise UpstreamProtocolError(MALFORMED, detail=detail) from exc
        except httpx.HTTPError as exc:
            raise UpstreamProtocolError(MALFORMED, detail=f"{origin}: {type(exc).__name__}: {exc}") from exc
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


TRANSPORTS = ("native", "aiohttp", "httpx")


def create_transport(name: str = "native") -> Transport:
    """The upstream client named by `DATAPLANE_TRANSPORT`."""
    if name == "httpx":
        return HttpxTransport()
    if name == "native":
        from .transport_native import NativeTransport

        return NativeTransport()
    if name == "aiohttp":
        from .transport_aiohttp import AiohttpTransport

        return AiohttpTransport()
    raise ValueError(f"unknown transport {name!r} (one of {', '.join(TRANSPORTS)})")
