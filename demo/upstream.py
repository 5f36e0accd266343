"""The demo upstream the example document (config/examples/gateway.yaml) points at.

A pure ASGI app that answers every request with JSON describing it, so a person trying the gateway
sees where a request landed: `{"service": "demo", "listen": "127.0.0.1:8010", "method": "GET",
"path": "/api/42", "query": "a=1"}`. `…/health` answers `{"status": "ok"}`.

    python -m uvicorn demo.upstream:app --port 8010
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def app(
    scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    host, port = scope.get("server") or ("127.0.0.1", 0)
    path: str = scope["path"]
    if path.endswith("/health"):
        body: dict[str, Any] = {"status": "ok"}
    else:
        body = {
            "service": "demo",
            "listen": f"{host}:{port}",
            "method": scope["method"],
            "path": scope.get("raw_path", path.encode()).decode("latin-1"),
            "query": scope.get("query_string", b"").decode("latin-1"),
        }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
