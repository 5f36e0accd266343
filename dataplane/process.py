"""Running the data plane in a process: uvicorn with the httptools parser (pinned: h11 lets a
Content-Length + Transfer-Encoding request smuggle a second one), both listeners in one process,
SIGHUP re-reading the seed off the event loop, SIGTERM draining (readyz 503 for the drain delay) and
then stopping the listeners while in-flight requests finish. A worker of `--workers N` (no admin
listener of its own) refreshes its state gauges every `GAUGE_REFRESH` seconds instead of per scrape."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.handlers
import os
import queue
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from .app import build
from .runtime import Runtime
from .server import protocol_class
from .settings import Settings
from .tls import Certificates, NoCertificates

logger = logging.getLogger("dataplane")

GRACEFUL_SHUTDOWN = 30
# How often a worker of `--workers N` brings its state gauges up to date (circuits turning half-open
# and ejections ending by the clock, the config's age): the supervisor reads them from the workers'
# files, so this bounds how stale its `/-/metrics` can be. One pass is a few gauge writes per endpoint.
GAUGE_REFRESH = 1.0


class BootError(Exception):
    """A standalone node (no control plane) without a usable seed, or a TLS listener without a usable
    certificate: nothing could ever make it serve, so the process exits with the reason instead of
    living on."""


def bind(address: tuple[str, int]) -> socket.socket:
    """A listening socket on `address`, inheritable, so the workers of `--workers N` share it."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_certificates(
    folder: Path, on_change: Callable[..., None] | None = None, *, http2: bool = True
) -> Certificates:
    """The TLS listener's certificates, or BootError naming the folder when none is usable."""
    try:
        return Certificates(folder, on_change, http2=http2)
    except NoCertificates as exc:
        raise BootError(str(exc)) from None


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us: two servers share one process. `on_started` is
    called once it listens (a worker tells its supervisor it is up). It says once that it listens, as
    what (`proxy`, `ops`); uvicorn's own process lines are filtered (UvicornLifecycleFilter)."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None] | None = None,
        *,
        role: str,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        super().__init__(config)
        self.on_started = on_started
        self.role = role
        self.tls = tls
        self.handshake_timeout = handshake_timeout

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.tls is not None and sockets is not None:
            await self._start_tls(sockets)
        else:
            await super().startup(sockets=sockets)
        if not self.started:
            return
        for server in self.servers:
            for listening in server.sockets:
                host, port = listening.getsockname()[:2]
                logger.info("%s listening on %s", self.role, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if self.on_started is not None:
            self.on_started()

    async def _start_tls(self, sockets: list[socket.socket]) -> None:
        """uvicorn's startup on bound sockets, with TLS: the listener's context (its SNI callback picks
        the certificate, tls.py) and a handshake deadline uvicorn does not pass, so a client that starts
        a handshake and stalls (or sends no TLS at all) is dropped after `handshake_timeout` instead of
        holding the connection for asyncio's default minute. The request-head deadline starts once the
        handshake is done (the protocol's connection_made)."""
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=self.tls,
                backlog=config.backlog,
                ssl_handshake_timeout=self.handshake_timeout,
            )
            for sock in sockets
        ]
        self.started = True


class UvicornLifecycleFilter(logging.Filter):
    """uvicorn logs "Started server process", "Uvicorn running on", "Shutting down" and "Finished server
    process" once per server, and a data plane runs two servers (proxy and ops) in one process: each
    line came twice, naming no listener. These records are dropped; the data plane says once per
    process that it started and stopped, and once per listener where it listens (Server.startup).
    The templates are uvicorn's own; tests/e2e/test_dataplane_process.py fails if one changes and a
    line comes twice again."""

    TEMPLATES = frozenset(
        {
            "Started server process [%d]",
            "Finished server process [%d]",
            "Shutting down",
            "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)",
            "Uvicorn running on %s://[%s]:%d (Press CTRL+C to quit)",
            "Waiting for connections to close. (CTRL+C to force quit)",
            "Waiting for background tasks to complete. (CTRL+C to force quit)",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.TEMPLATES


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the data plane's event loop: uvloop's (libuv; less CPU per request than asyncio's own)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def uvicorn_config(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # httptools (llhttp), with the request-header and send deadlines added; never h11.
        http=protocol_class(
            settings.header_timeout,
            settings.send_timeout,
            settings.tunnel_grace,
            http2=settings.http2,
            h2_max_streams=settings.h2_max_streams,
        ),
        ws="none",
        lifespan="off",
        loop="none",  # the loop is ours (run() above): uvloop
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


# The collector's first threshold, 700 by default, is reached every ~20 proxied requests (each leaves a
# few container objects in flight: coroutines, futures, header lists); at ~4,500 requests/s that was
# ~55 young collections a second, 3-4 % of the core and a pause for every request in flight each
# time. Nearly all of those objects die by reference counting, so few collections find anything:
# at 10,000 a young collection runs every second or two (bench/README.md, the proxy section).
GC_THRESHOLDS = (10_000, 10, 10)


async def serve(
    settings: Settings,
    *,
    sockets: list[socket.socket] | None = None,
    tls_sockets: list[socket.socket] | None = None,
    admin_listener: bool = True,
    on_started: Callable[[], None] | None = None,
) -> None:
    """One process: the proxy (on `sockets` when a supervisor bound them), the TLS proxy listener when
    one is configured (on `tls_sockets`, the same), and, unless a supervisor owns it, the admin
    listener. `on_started` is called once the proxy listener accepts."""
    runtime, proxy, admin = build(settings)
    require_config(settings, runtime)
    certificates: Certificates | None = None
    if settings.tls_listen is not None and settings.tls_certs is not None:
        certificates = load_certificates(settings.tls_certs, runtime.metrics.set_certificates, http2=settings.http2)
        runtime.certificates = certificates
        if tls_sockets is None:
            tls_sockets = [bind(settings.tls_listen)]
    # What exists now (modules, config, snapshot) lives as long as the process: out of the collector's
    # way, so its full collections stay short under load (tail latency).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    proxy_server = Server(uvicorn_config(proxy, *settings.listen, settings), on_started=on_started, role="proxy")
    servers = [proxy_server]
    if certificates is not None and tls_sockets is not None and settings.tls_listen is not None:
        # Same app and protocol as the plain listener: the scope's scheme is "https" on this one.
        tls_host, tls_port = settings.tls_listen
        tls_server = Server(
            uvicorn_config(proxy, tls_host, tls_port, settings),
            role="proxy (TLS)",
            tls=certificates.listener_context,
            handshake_timeout=settings.header_timeout,
        )
        servers.append(tls_server)
    if admin_listener:
        servers.append(Server(uvicorn_config(admin, *settings.admin_listen, settings), role="ops"))
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        if runtime.draining:
            return
        runtime.draining = True
        logger.info("draining for %.1fs before stopping", settings.drain_delay)
        await asyncio.sleep(settings.drain_delay)
        for server in servers:
            server.should_exit = True

    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coroutine: Any) -> None:
        task = loop.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def refresh_gauges() -> None:
        while True:
            try:
                runtime.refresh_gauges()
            except Exception:  # a bad pass must not end the refreshing for the process's life
                logger.exception("refreshing the state gauges failed")
            await asyncio.sleep(GAUGE_REFRESH)

    if settings.control_plane_url:
        from .sync import Sync

        spawn(Sync(runtime, tracer=proxy.tracer).run())
    if not admin_listener:
        # No scrape reaches this process (the supervisor merges its metric files), so nothing else
        # would move the gauges that change by the clock alone.
        spawn(refresh_gauges())
    loop.add_signal_handler(signal.SIGTERM, lambda: spawn(drain()))
    loop.add_signal_handler(signal.SIGINT, lambda: spawn(drain()))

    def on_hup() -> None:
        spawn(runtime.reload_seed_off_loop())
        if certificates is not None:
            spawn(certificates.reload("SIGHUP"))

    if certificates is not None:
        spawn(certificates.watch(settings.tls_poll))
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    logger.info("data plane %s started (pid %d)", settings.node_id, os.getpid())
    try:
        await asyncio.gather(
            proxy_server.serve(sockets=sockets),
            *(server.serve(sockets=tls_sockets) if server.tls else server.serve() for server in servers[1:]),
        )
    finally:
        for task in list(tasks):
            task.cancel()
        await proxy.aclose()
        logger.info("data plane %s stopped (pid %d)", settings.node_id, os.getpid())


def require_config(settings: Settings, runtime: Runtime) -> None:
    """Standalone, the seed is the only source of config (§4): if it is missing or invalid at boot the
    node could never become ready, so refuse to start (BootError) with the reason. With a control
    plane a node without config waits for it, unready, as §4 says."""
    if settings.control_plane_url or runtime.snapshot is not None:
        return
    if settings.seed is None:
        reason = "no seed file is configured (DATAPLANE_SEED or --seed)"
    else:
        reason = runtime.seed_error or f"{settings.seed} was not loaded"
    raise BootError(f"standalone (no DATAPLANE_CONTROL_PLANE_URL) and no usable seed: {reason}")


class LogFormatter(logging.Formatter):
    """`%(asctime)s %(levelname)s %(name)s %(message)s`; a batch of access lines (accesslog.AccessLog),
    already in that format, is written as it is."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "preformatted", False):
            return record.getMessage()
        return super().format(record)


def configure_logging(level: str) -> logging.handlers.QueueListener:
    """Log records go onto a queue and a thread writes them out, so the event loop never blocks on
    stderr (the access log writes one line per request)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, UvicornLifecycleFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(UvicornLifecycleFilter())
    # httpx logs every request at INFO; the access log already says it, once.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    return listener
