"""The two ASGI apps: the proxy (see proxy.py) and the admin app on the ops listener
(`/-/livez`, `/-/readyz`, `/-/metrics`, `/-/routes?path=`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from configdoc import UnsafePath, request_host
from configdoc.forwarding import upstream_url
from configdoc.splits import BY_RANDOM, DECIDED_BY_SPLIT, debug_split

from . import ratelimit
from .proxy import ProxyApp
from .runtime import Runtime
from .settings import Settings
from .transport import Transport
from .types import Headers, Receive, Scope, Send


class AdminApp:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # A supervisor of `--workers N` swaps these: metrics of all workers, and whether they all live.
        self.render_metrics: Callable[[], bytes] = self._own_metrics
        self.workers_alive: Callable[[], bool] = lambda: True

    def _own_metrics(self) -> bytes:
        self.runtime.refresh_gauges()
        return self.runtime.metrics.render()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        path = scope["path"]
        runtime = self.runtime
        if path == "/-/livez":
            await self._json(send, 200, {"status": "ok"})
        elif path == "/-/readyz":
            if runtime.draining:
                await self._json(send, 503, {"status": "draining"})
            elif runtime.snapshot is None:
                await self._json(send, 503, {"status": "no_config"})
            elif not self.workers_alive():
                await self._json(send, 503, {"status": "worker_down"})
            else:
                await self._json(send, 200, {"status": "ready", "config_sha256": runtime.snapshot.config_sha256})
        elif path == "/-/metrics":
            body = self.render_metrics()
            await self._send(send, 200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")], body)
        elif path == "/-/routes":
            await self._routes(scope, send)
        else:
            await self._json(send, 404, {"error": "not_found", "message": "no such admin path"})

    async def _routes(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        path = query.get("path", [""])[0]
        snapshot = self.runtime.snapshot
        if not path:
            await self._json(send, 400, {"error": "bad_request", "message": "pass ?path=/some/path"})
            return
        if snapshot is None:
            await self._json(send, 503, {"error": "no_config", "message": "no configuration loaded"})
            return
        method = query.get("method", ["GET"])[0].upper()
        host = request_host(query.get("host", [""])[0])
        headers: dict[str, str | None] = {}
        # `headers`: one `Name: value` per line, as the control plane's routes/resolve/ takes them.
        lines = [line for line in query.get("headers", [""])[0].splitlines() if line.strip()]
        for item in lines:
            name, colon, value = item.partition(":")
            if not colon:
                await self._json(send, 400, {"error": "bad_request", "message": "headers: one Name: value per line"})
                return
            key = name.strip().lower()
            headers[key] = None if key in headers else value.strip()  # sent twice: matches nothing, as in the proxy
        try:
            match = snapshot.matchers.select(path, host=host, method=method, headers=headers)
        except UnsafePath as exc:
            await self._json(send, 400, {"error": "bad_request", "message": str(exc)})
            return
        if match is None:
            await self._json(send, 404, {"error": "no_route", "message": "no endpoint serves this path", "path": path})
            return
        endpoint = match.value
        decided_by = match.decided_by
        split: dict[str, Any] | None = None
        if endpoint.split is not None and match.key == endpoint.split_key and match.method_allowed:
            # §12's canary, decided as the proxy would; `client_ip` stands for the client's address
            # (the proxy's, trusted proxies considered) for `sticky: ip`.
            target = snapshot.endpoints.get(endpoint.split.target_key)
            client_ip = query.get("client_ip", [""])[0].strip() or None
            split, to_target = debug_split(
                endpoint.split,
                source_version=endpoint.key.rpartition(":")[2],
                source_methods=endpoint.methods,
                target_methods=target.methods if target is not None else None,
                target_enabled=target is not None and target.enabled,
                method=method,
                headers=headers,
                client_ip=client_ip,
            )
            if split["applies"] and split["decided_by"] != BY_RANDOM:
                decided_by = DECIDED_BY_SPLIT
            if to_target and target is not None:
                endpoint = target
        rest = match.rest
        if match.key in endpoint.extra_paths and not endpoint.strip_path:
            rest = match.key[len(self.runtime.settings.mount_prefix) :] + rest
        targets = [{"url": t.url, "upstream_url": upstream_url(t.url, rest)} for t in endpoint.targets if t.enabled]
        await self._json(
            send,
            200,
            {
                "path": path,
                "endpoint": endpoint.key,
                "route_key": match.key,
                "methods": sorted(endpoint.methods),
                "method": method,
                "method_allowed": match.method_allowed,
                "decided_by": decided_by,
                "enabled": endpoint.enabled,
                "targets": targets,
                **({"traffic_split": split} if split is not None else {}),
            },
        )

    async def _json(self, send: Send, status: int, data: Any) -> None:
        await self._send(send, status, [(b"content-type", b"application/json")], json.dumps(data).encode())

    async def _send(self, send: Send, status: int, headers: Headers, body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def build(
    settings: Settings, *, transport: Transport | None = None, tracing: bool = True
) -> tuple[Runtime, ProxyApp, AdminApp]:
    """The runtime and both apps, with the first config loaded (§4): with a control plane, the verified
    cache, else the seed; standalone, the seed. Nothing usable leaves the node unready rather than
    stopping it. `tracing=False`: no tracer even with DATAPLANE_OTLP_ENDPOINT (the `--workers`
    supervisor proxies nothing; each worker makes its own)."""
    from .sync import boot  # sync imports runtime; kept local so app stays importable on its own

    runtime = Runtime(settings)
    # The rate_limit plugin's counters: one set per process, made before the first snapshot compiles.
    ratelimit.configure(settings, runtime.metrics.rate_limit_backend_errors.inc)
    boot(runtime)
    tracer = None
    if tracing and settings.otlp_endpoint is not None:
        from .tracing import Tracer

        tracer = Tracer(settings, dropped=runtime.metrics.trace_spans_dropped_count)
    return runtime, ProxyApp(runtime, transport=transport, tracer=tracer), AdminApp(runtime)
