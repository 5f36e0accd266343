"""The SSRF guard on what upstream names resolve to (configdoc.egress)."""

from __future__ import annotations

import asyncio

import httpcore
import httpx
import pytest

from dataplane.transport import HttpxTransport
from dataplane.upstream import GuardedBackend, guarded_transport


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


def test_a_name_resolving_to_the_metadata_service_is_refused_before_connecting() -> None:
    backend = GuardedBackend(resolver("169.254.169.254"))
    with pytest.raises(httpcore.ConnectError, match="denied address"):
        asyncio.run(backend.connect_tcp("innocent.example", 80, timeout=1))


def test_a_name_with_any_denied_address_among_several_is_refused() -> None:
    backend = GuardedBackend(resolver("127.0.0.1", "::ffff:169.254.169.254"))
    with pytest.raises(httpcore.ConnectError, match="denied address"):
        asyncio.run(backend.connect_tcp("mixed.example", 80, timeout=1))


def test_the_proxy_answers_502_when_a_target_resolves_to_a_denied_address() -> None:
    from tests.dataplane.harness import Gateway, document, endpoint, ok

    gateway = Gateway(document(endpoint("users", "http://innocent.example:8010", default=True)), ok)
    limits = httpx.Limits()
    gateway.proxy.transport = HttpxTransport(
        lambda verify: guarded_transport(verify, limits, resolver("169.254.169.254"))
    )

    async def go() -> httpx.Response:
        async with gateway.client() as client:
            return await client.get("/users")

    response = asyncio.run(go())
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unavailable"


def test_the_aiohttp_resolver_refuses_a_name_with_a_denied_address() -> None:
    from dataplane.transport_aiohttp import GuardedResolver

    with pytest.raises(OSError, match="denied address"):
        asyncio.run(GuardedResolver(resolver("127.0.0.1", "169.254.169.254")).resolve("mixed.example", 80))


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
def test_each_transport_refuses_a_target_resolving_to_a_denied_address(transport: str) -> None:
    from dataplane.transport_aiohttp import AiohttpTransport
    from dataplane.transport_native import NativeTransport
    from tests.dataplane.harness import Gateway, document, endpoint, ok

    gateway = Gateway(document(endpoint("users", "http://innocent.example:8010", default=True)), ok)
    metadata = resolver("169.254.169.254")
    if transport == "native":
        gateway.proxy.transport = NativeTransport(metadata)
    elif transport == "aiohttp":
        gateway.proxy.transport = AiohttpTransport(metadata)
    else:
        limits = httpx.Limits()
        gateway.proxy.transport = HttpxTransport(lambda verify: guarded_transport(verify, limits, metadata))

    async def go() -> httpx.Response:
        try:
            async with gateway.client() as client:
                return await client.get("/users")
        finally:
            await gateway.proxy.aclose()

    response = asyncio.run(go())
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unavailable"
    assert gateway.seen == []
