"""Reference (c) of bench/proxy.py: a minimal catch-all proxy on httpx, like the seed gateway's.

The seed gateway was FastAPI + one shared `httpx.AsyncClient`: read the request body, `client.request()`
to the upstream, read the whole answer, return it. This is the same forwarding as a tiny pure-ASGI app
(no FastAPI: its routing only adds cost, so the reference is, if anything, flattered), served by uvicorn.

    BENCH_UPSTREAM=http://127.0.0.1:8081 .venv/bin/python -m uvicorn bench.seedproxy:app --port 8082
"""

from __future__ import annotations

import os
from typing import Any

import httpx

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8081")
HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
_client: httpx.AsyncClient | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _client = httpx.AsyncClient(base_url=UPSTREAM, timeout=30)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _client is not None:
                    await _client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _client is not None
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if scope["query_string"]:
        path += "?" + scope["query_string"].decode("latin-1")
    headers = [(k, v) for k, v in scope["headers"] if k not in HOP]
    response = await _client.request(scope["method"], path, headers=headers, content=body)
    out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP]
    out.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": out})
    await send({"type": "http.response.body", "body": response.content})
