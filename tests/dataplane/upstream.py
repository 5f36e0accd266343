"""A small upstream for end-to-end tests: `python -m tests.dataplane.upstream PORT [NAME [CERT KEY]]`
(with CERT and KEY it serves HTTPS).

Paths (after any base path): `/echo...` answers what it received as JSON; `/status/N` answers N;
`/slow?seconds=S`; `/reset-mid-body` promises 100000 bytes and dies after some; `/gzip`;
`/chunked`; `/large?bytes=N` streams N bytes; `/redirect`; `/own-ids` answers with its own
`X-Request-ID`, `X-Endpoint-ID` and `X-Response-Time`; `/_seen` lists the raw paths it served.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from typing import Any
from urllib.parse import parse_qs

import uvicorn

NAME = "upstream"
SEEN: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    raw_path = scope["raw_path"].decode()
    query = scope["query_string"].decode()
    params = parse_qs(query)
    path = scope["path"]
    if path != "/_seen":
        SEEN.append(raw_path + ("?" + query if query else ""))

    async def answer(status: int, content: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"content-length", str(len(content)).encode()), *(headers or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    segments = path.rstrip("/").split("/")
    last = segments[-1] if segments else ""
    if path == "/_seen":
        await answer(200, json.dumps(SEEN).encode(), [(b"content-type", b"application/json")])
    elif "status" in segments[:-1]:
        await answer(int(last), f"status {last} from {NAME}".encode(), [(b"x-upstream", NAME.encode())])
    elif last == "slow":
        await asyncio.sleep(float(params.get("seconds", ["1"])[0]))
        await answer(200, b"slow")
    elif last == "reset-mid-body":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100000")]})
        await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        raise RuntimeError("dying mid-body on purpose")
    elif last == "gzip":
        await answer(200, gzip.compress(b"compressed " * 50), [(b"content-encoding", b"gzip")])
    elif last == "chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(5):
            await send({"type": "http.response.body", "body": f"chunk{index};".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif last == "large":
        size = int(params.get("bytes", ["1000000"])[0])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        block = b"L" * 65536
        sent = 0
        while sent < size:
            part = block[: min(len(block), size - sent)]
            await send({"type": "http.response.body", "body": part, "more_body": True})
            sent += len(part)
        await send({"type": "http.response.body", "body": b""})
    elif last == "endless":
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while not gone.is_set():
            await send({"type": "http.response.body", "body": b"tick\n" * 1000, "more_body": True})
            await asyncio.sleep(0.02)
        watcher.cancel()
    elif last == "own-ids":
        ids = [(b"x-request-id", b"upstream-id"), (b"x-endpoint-id", b"upstream"), (b"x-response-time", b"9ms")]
        await answer(200, b"ids", ids)
    elif last == "redirect":
        await answer(302, b"", [(b"location", b"/somewhere/else")])
    else:
        echo = {
            "name": NAME,
            "method": scope["method"],
            "raw_path": raw_path,
            "query": query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_length": len(body),
            "body": body[:1000].decode("latin-1"),
        }
        await answer(200, json.dumps(echo).encode(), [(b"content-type", b"application/json")])


if __name__ == "__main__":
    NAME = sys.argv[2] if len(sys.argv) > 2 else NAME
    tls = {"ssl_certfile": sys.argv[3], "ssl_keyfile": sys.argv[4]} if len(sys.argv) > 4 else {}
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", log_level="warning", lifespan="off", **tls
    )
