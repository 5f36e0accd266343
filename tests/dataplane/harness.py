"""Build a data plane in-process from a document, with a fake upstream (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from configdoc import validate_document
from dataplane.app import AdminApp, build
from dataplane.proxy import ProxyApp
from dataplane.runtime import Runtime
from dataplane.settings import Settings
from dataplane.snapshot import compile_document
from dataplane.transport import HttpxTransport

Handler = Callable[[httpx.Request], httpx.Response]


def document(*endpoints: dict[str, Any], policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = {"format_version": 1, "breaker_policies": policies or [], "endpoints": list(endpoints)}
    canonical, problems = validate_document(data)
    assert problems == [], problems
    return canonical


def endpoint(name: str = "users", *urls: str, **fields: Any) -> dict[str, Any]:
    targets = [{"url": url} for url in (urls or ("http://127.0.0.1:8010/api",))]
    return {"name": name, "version": "v1", "targets": targets, **fields}


class FakeUpstream(httpx.AsyncBaseTransport):
    """Like httpx.MockTransport, but leaves the response body unread so the proxy can stream it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = self.handler(request)
        if not response.is_stream_consumed:
            return response
        # httpx reads a Response built from bytes at once; hand the proxy an unread stream instead.
        return httpx.Response(response.status_code, headers=response.headers, stream=response.stream)


class Body(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes, fail_after: bool = False) -> None:
        self.chunks = chunks
        self.fail_after = fail_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail_after:
            raise httpx.ReadError("connection reset by peer")


class Gateway:
    def __init__(self, doc: dict[str, Any] | None, handler: Handler, **settings: Any) -> None:
        self.seen: list[httpx.Request] = []

        def recording(request: httpx.Request) -> httpx.Response:
            self.seen.append(request)
            return handler(request)

        self.settings = Settings(**{"node_id": "node-a", **settings})
        self.runtime: Runtime
        self.proxy: ProxyApp
        self.admin: AdminApp
        self.runtime, self.proxy, self.admin = build(
            self.settings, transport=HttpxTransport(lambda verify: FakeUpstream(recording))
        )
        if doc is not None:
            self.runtime.apply(compile_document(doc, mount_prefix=self.settings.mount_prefix))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.proxy), base_url="http://gw.test")

    def admin_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.admin), base_url="http://admin.test")


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"path": request.url.raw_path.decode()})
