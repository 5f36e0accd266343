"""Active probes (ARCHITECTURE §7): `GET` target base path + health path, no redirects, per-check timeout.

Pure asyncio + httpx; no database access, so probing happens outside any transaction. The target's
host name is resolved here and every resolved address is checked against configdoc's SSRF deny list
(unless GATEWAY_ALLOW_LINK_LOCAL_TARGETS); the probe then connects to the checked address itself (the
`Host` header and TLS server name keep the original name), so DNS cannot answer differently in between.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from configdoc import is_denied_address

# At most this many probes in flight per dispatcher run; a tick with more due targets waits its turn.
MAX_CONCURRENCY = 200


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe: a target and its endpoint's effective health_check (and tls)."""

    target_id: int
    url: str  # the target's base URL
    path: str  # health_check.path, starting with '/'
    timeout: float
    expected_statuses: Sequence[int | str]
    tls: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    target_id: int
    ok: bool
    checked_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    reason: str = ""


def probe_url(base: str, path: str) -> str:
    """Target base path + health path: `http://h:1/api` + `/health?x=1` → `http://h:1/api/health?x=1`."""
    target = urlsplit(base)
    health = urlsplit(path)
    return urlunsplit((target.scheme, target.netloc, target.path.rstrip("/") + health.path, health.query, ""))


def status_expected(status: int, expected: Sequence[int | str]) -> bool:
    """True when `status` is in a list of numbers and classes like "2xx"."""
    for pattern in expected:
        if isinstance(pattern, int) and pattern == status:
            return True
        if isinstance(pattern, str) and pattern.endswith("xx") and pattern[0] == str(status)[0]:
            return True
    return False


class DeniedAddress(Exception):
    pass


async def _resolve(host: str, port: int, *, allow_link_local: bool) -> str:
    """One address of `host`, every resolved address checked against the SSRF deny list."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [info[4][0] for info in infos]
    if not allow_link_local:
        for address in addresses:
            if is_denied_address(ipaddress.ip_address(address.split("%")[0])):
                raise DeniedAddress(f"denied address {address}")
    return addresses[0]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DeniedAddress):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return f"DNS error: {exc.strerror or exc}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        text = str(exc) or type(exc).__name__
        return "connection refused" if "refused" in text.lower() else f"connect error: {text}"[:500]
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol error"
    return f"{type(exc).__name__}: {exc}"[:500]


@functools.lru_cache(maxsize=64)
def _ssl_context(ca_file: str | None, ca_file_version: int) -> ssl.SSLContext:
    """One context per CA file (and version of it on disk), reused by every probe: building one loads
    the CA bundle, tens of ms of CPU on the event loop, which under hundreds of concurrent probes
    pushed every probe past its timeout (bench/health_scale.py)."""
    return ssl.create_default_context(cafile=ca_file)


def _verify(tls: dict[str, Any]) -> ssl.SSLContext | bool:
    if not tls.get("verify", True):
        return False
    ca_file = tls.get("ca_file") or None
    try:
        version = os.stat(ca_file).st_mtime_ns if ca_file else 0
    except OSError:
        version = -1  # let create_default_context report the missing file as the probe's failure
    return _ssl_context(ca_file, version)


async def probe_one(spec: ProbeSpec, *, allow_link_local: bool = False) -> ProbeResult:
    """Probe one target. Never raises: every failure becomes a result with a reason."""
    checked_at = datetime.now(UTC)
    url = httpx.URL(probe_url(spec.url, spec.path))
    try:
        async with asyncio.timeout(spec.timeout):
            host = url.host
            port = url.port or (443 if url.scheme == "https" else 80)
            address = await _resolve(host, port, allow_link_local=allow_link_local)
            extensions: dict[str, Any] = {}
            if url.scheme == "https":
                extensions["sni_hostname"] = spec.tls.get("server_name") or host
            connect_url = url.copy_with(host=address)
            headers = {"Host": url.netloc.decode("ascii"), "User-Agent": "gateway-health-check/1"}
            async with httpx.AsyncClient(
                # Plain HTTP never uses the context; passing the shared one keeps httpx from building one.
                verify=_verify(spec.tls) if url.scheme == "https" else _ssl_context(None, 0),
                follow_redirects=False,
                timeout=httpx.Timeout(spec.timeout),
                trust_env=False,
            ) as client:
                request_started = time.monotonic()
                request = client.build_request("GET", connect_url, headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                latency = (time.monotonic() - request_started) * 1000
                await response.aclose()
    except Exception as exc:  # noqa: BLE001 - a probe's failure is data, whatever it is
        return ProbeResult(spec.target_id, False, checked_at, reason=_reason(exc))
    ok = status_expected(response.status_code, spec.expected_statuses)
    return ProbeResult(
        spec.target_id,
        ok,
        checked_at,
        status_code=response.status_code,
        latency_ms=round(latency, 3),
        reason="" if ok else f"HTTP {response.status_code}",
    )


def _probe_span(spec: ProbeSpec) -> Any:
    """A span for one probe when tracing is on (docs/tracing.md), else None. The target's host and port only:
    a URL's query could hold something an operator would not want in a trace."""
    from controlplane.core import tracing

    if not tracing.enabled():
        return None
    target = urlsplit(spec.url)
    attributes = {
        "http.request.method": "GET",
        "server.address": target.hostname or "",
        "server.port": target.port or (443 if target.scheme == "https" else 80),
        "gateway.health.target_id": spec.target_id,
    }
    return tracing.start_probe_span("health probe", attributes)


async def probe_all(specs: Sequence[ProbeSpec], *, allow_link_local: bool = False) -> list[ProbeResult]:
    """Probe every spec concurrently (at most MAX_CONCURRENCY at once); results in the specs' order."""
    semaphore = asyncio.Semaphore(MAX_CONCURRENCY)

    async def bounded(spec: ProbeSpec) -> ProbeResult:
        async with semaphore:
            span = _probe_span(spec)
            if span is None:
                return await probe_one(spec, allow_link_local=allow_link_local)
            with span as current:
                result = await probe_one(spec, allow_link_local=allow_link_local)
                current.set_attribute("gateway.health.ok", result.ok)
                if result.status_code is not None:
                    current.set_attribute("http.response.status_code", result.status_code)
                if result.reason:
                    current.set_attribute("gateway.health.reason", result.reason)
                return result

    return list(await asyncio.gather(*(bounded(spec) for spec in specs)))
