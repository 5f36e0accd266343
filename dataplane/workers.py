"""`python -m dataplane --workers N` (ARCHITECTURE §4): N proxy processes accept on one listening
socket; each is its own node (`<node>-w<i>`) with its own breaker, budget and ejection state. The
supervisor owns the admin listener: `/-/metrics` shows all workers (Prometheus multiprocess mode),
`/-/readyz` is 503 while any worker is down (until its replacement listens) or during the drain.
SIGHUP and SIGTERM are passed on, to restarted workers too.

The merged metrics are up to ~1 s stale for the gauges that move by the clock alone (a circuit turning
half-open, an ejection ending, `gateway_config_age_seconds`): each worker refreshes them every
`process.GAUGE_REFRESH` seconds, not per scrape (a scrape does not reach the workers).

A worker that exits while the supervisor is not stopping is logged and started again with the same
index (same node id, same listening socket), after a back-off that doubles from `RESTART_DELAY` to
`RESTART_DELAY_MAX` for a worker that keeps dying at boot, and starts over once one stayed up
`RESTART_STABLE` seconds. Its gauges leave `/-/metrics` (a dead process has no current value); its
counters and histograms stay in the merged totals, as Prometheus multiprocess mode intends.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, replace
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .app import build
from .process import Server, bind, configure_logging, load_certificates, require_config, run, serve, uvicorn_config
from .settings import Settings

logger = logging.getLogger("dataplane")

RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
RESTART_STABLE = 30.0


def _worker(
    settings: Settings, sock: socket.socket, tls_sock: socket.socket | None, index: int, up: ctypes.c_byte
) -> None:
    listener = configure_logging(settings.log_level)

    def started() -> None:
        up.value = 1

    try:
        node = replace(settings, node_id=f"{settings.node_id}-w{index}")
        tls_sockets = [tls_sock] if tls_sock is not None else None
        run(serve(node, sockets=[sock], tls_sockets=tls_sockets, admin_listener=False, on_started=started))
    finally:
        listener.stop()


@dataclass
class Worker:
    """One worker slot: its current process, and whether that process is up (its proxy listens)."""

    index: int
    process: BaseProcess
    # A shared byte without a lock (an Event's lock, held by a worker killed at the wrong moment, would
    # hang the supervisor's /-/readyz): the worker writes 1 once, the supervisor only reads.
    up: ctypes.c_byte

    @classmethod
    def start(
        cls,
        context: SpawnContext,
        settings: Settings,
        sock: socket.socket,
        tls_sock: socket.socket | None,
        index: int,
    ) -> Worker:
        up = context.RawValue("b", 0)
        process = context.Process(
            target=_worker, args=(settings, sock, tls_sock, index, up), name=f"dataplane-w{index}"
        )
        process.start()
        return cls(index, process, up)

    def serving(self) -> bool:
        return self.process.is_alive() and self.up.value == 1


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def forget_gauges(metrics_dir: str, pid: int) -> None:
    """Remove a dead worker's gauge files (the gauges are "liveall", metrics.LIVE), so `/-/metrics`
    shows no gauges of that pid. Counter and histogram files stay: the merged totals keep counting
    what the dead process did."""
    mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


async def supervise(settings: Settings, workers: int) -> None:
    # The supervisor's copy answers /-/routes and /-/readyz; built first, so a standalone supervisor on
    # a bad seed exits (BootError) before it starts any worker.
    runtime, _, admin = build(settings, tracing=False)
    require_config(settings, runtime)
    metrics_dir = tempfile.mkdtemp(prefix="dataplane-metrics-")
    # Set only now: this process's own metrics stay in memory; the workers, spawned fresh, write theirs
    # to files the collector below merges.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    sock = bind(settings.listen)
    tls_sock: socket.socket | None = None
    if settings.tls_listen is not None and settings.tls_certs is not None:
        # Read once here too, so no usable certificate is one clear error at start, not N workers dying
        # in a restart loop; each worker keeps (and re-reads) its own, as it keeps its own snapshot.
        load_certificates(settings.tls_certs)
        tls_sock = bind(settings.tls_listen)
    context = multiprocessing.get_context("spawn")
    # Replaced in place when a worker is restarted, so signals and readiness follow the new process.
    slots = [Worker.start(context, settings, sock, tls_sock, index) for index in range(workers)]
    logger.info("started %d workers on %s:%d", workers, *settings.listen)

    def render() -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    admin.render_metrics = render
    admin.workers_alive = lambda: all(slot.serving() for slot in slots)
    admin_server = Server(uvicorn_config(admin, *settings.admin_listen, settings), role="ops")
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    if settings.control_plane_url:
        # The supervisor follows the control plane too (no status reports: the workers are the nodes),
        # so its /-/readyz and /-/routes show what the workers run.
        from .sync import Sync

        sync_task = loop.create_task(Sync(runtime, report=False).run())
        tasks.add(sync_task)

    def forward(signum: int) -> None:
        for slot in slots:
            if slot.process.pid is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signum)

    async def stop() -> None:
        if runtime.draining:
            return
        runtime.draining = True
        forward(signal.SIGTERM)  # each worker drains for the same delay, then finishes in-flight requests
        while any(slot.process.is_alive() for slot in slots):
            await asyncio.sleep(0.1)
        admin_server.should_exit = True

    async def exited(process: BaseProcess) -> None:
        """Wait for `process` to end (its sentinel becomes readable), then reap it."""
        ended = loop.create_future()

        def on_ready() -> None:
            loop.remove_reader(process.sentinel)
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(process.sentinel, on_ready)
        try:
            await ended
        finally:
            loop.remove_reader(process.sentinel)
        process.join()

    async def watch(index: int) -> None:
        """Restart the worker of slot `index` whenever it ends outside a shutdown."""
        delay = RESTART_DELAY
        while True:
            slot = slots[index]
            started = loop.time()
            await exited(slot.process)
            if runtime.draining:
                return
            pid = slot.process.pid
            assert pid is not None
            forget_gauges(metrics_dir, pid)
            if loop.time() - started >= RESTART_STABLE:
                delay = RESTART_DELAY
            logger.error(
                "worker %d (pid %d) %s; restarting it in %.1fs",
                index,
                pid,
                _describe_exit(slot.process.exitcode),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)
            if runtime.draining:
                return
            try:
                slots[index] = Worker.start(context, settings, sock, tls_sock, index)
            except OSError:  # no process to watch: try again after the next delay
                logger.exception("worker %d could not be started", index)
                continue
            slot.process.close()
            logger.info("worker %d restarted as pid %s", index, slots[index].process.pid)

    watchers = [loop.create_task(watch(index)) for index in range(workers)]

    def spawn(coroutine: Any) -> None:
        task = loop.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_hup() -> None:
        forward(signal.SIGHUP)
        spawn(runtime.reload_seed_off_loop())

    loop.add_signal_handler(signal.SIGTERM, lambda: spawn(stop()))
    loop.add_signal_handler(signal.SIGINT, lambda: spawn(stop()))
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await admin_server.serve()
    finally:
        for watcher in watchers:  # nothing is restarted from here on
            watcher.cancel()
        for slot in slots:
            if slot.process.is_alive():
                slot.process.terminate()
            slot.process.join(timeout=35)
        sock.close()
        if tls_sock is not None:
            tls_sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
