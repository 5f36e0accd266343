"""`python -m dataplane [--listen HOST:PORT] [--seed FILE]`: the proxy and admin listeners in one
process on uvicorn with the httptools parser (pinned: h11 lets a Content-Length + Transfer-Encoding
request smuggle a second one). SIGHUP re-reads the seed; SIGTERM drains (readyz 503 for the drain
delay), then stops the listeners and lets in-flight requests finish."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import queue
import signal
import sys
from collections.abc import Iterator, Sequence

import uvicorn

from .app import build
from .server import protocol_class
from .settings import Settings, SettingsError

logger = logging.getLogger("dataplane")

GRACEFUL_SHUTDOWN = 30


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us: two servers share one process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: object, host: str, port: int, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        # httptools (llhttp), with the request-header deadline added; never h11.
        http=protocol_class(settings.header_timeout),
        ws="none",
        lifespan="off",
        loop="asyncio",
        access_log=False,
        # uvicorn would otherwise rewrite the client address from X-Forwarded-For sent by 127.0.0.1;
        # which proxies are trusted is DATAPLANE_TRUSTED_PROXIES's call, made in proxy.py.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
        timeout_keep_alive=max(5, int(settings.header_timeout)),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


async def serve(settings: Settings) -> None:
    runtime, proxy, admin = build(settings)
    servers = [
        _Server(_config(proxy, *settings.listen, settings)),
        _Server(_config(admin, *settings.admin_listen, settings)),
    ]
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        if runtime.draining:
            return
        runtime.draining = True
        logger.info("draining for %.1fs before stopping", settings.drain_delay)
        await asyncio.sleep(settings.drain_delay)
        for server in servers:
            server.should_exit = True

    tasks: set[asyncio.Task[None]] = set()

    def on_term() -> None:
        task = loop.create_task(drain())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_signal_handler(signal.SIGHUP, runtime.reload_seed)
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        await proxy.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplane", description="The gateway's data plane.")
    parser.add_argument("--listen", help="proxy listener HOST:PORT (overrides DATAPLANE_LISTEN)")
    parser.add_argument("--seed", help="seed config file (overrides DATAPLANE_SEED)")
    args = parser.parse_args(argv)
    listener = _configure_logging(os.environ.get("DATAPLANE_LOG_LEVEL", "INFO").upper())
    try:
        settings = Settings.from_env(os.environ).with_overrides(listen=args.listen, seed=args.seed)
    except SettingsError as exc:
        print(f"dataplane: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    finally:
        listener.stop()
    return 0


def _configure_logging(level: str) -> logging.handlers.QueueListener:
    """Log records go onto a queue and a thread writes them out, so the event loop never blocks on
    stderr (the access log writes one line per request)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    return listener


if __name__ == "__main__":
    sys.exit(main())
