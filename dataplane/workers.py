"""`python -m dataplane --workers N` (ARCHITECTURE §4): N proxy processes accept on one listening
socket; each is its own node (`<node>-w<i>`) with its own breaker, budget and ejection state. The
supervisor owns the admin listener: `/-/metrics` shows all workers (Prometheus multiprocess mode),
`/-/readyz` is 503 while any worker is down or during the drain. SIGHUP and SIGTERM are passed on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import replace
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .app import build
from .process import Server, configure_logging, run, serve, uvicorn_config
from .settings import Settings

logger = logging.getLogger("dataplane")


def _worker(settings: Settings, sock: socket.socket, index: int) -> None:
    listener = configure_logging(os.environ.get("DATAPLANE_LOG_LEVEL", "INFO").upper())
    try:
        run(serve(replace(settings, node_id=f"{settings.node_id}-w{index}"), sockets=[sock], admin_listener=False))
    finally:
        listener.stop()


def _bind(settings: Settings) -> socket.socket:
    host, port = settings.listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def supervise(settings: Settings, workers: int) -> None:
    metrics_dir = tempfile.mkdtemp(prefix="dataplane-metrics-")
    # Set only now: this process's own metrics stay in memory; the workers, spawned fresh, write theirs
    # to files the collector below merges.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    sock = _bind(settings)
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    for index in range(workers):
        process = context.Process(target=_worker, args=(settings, sock, index), name=f"dataplane-w{index}")
        process.start()
        processes.append(process)
    logger.info("started %d workers on %s:%d", workers, *settings.listen)

    runtime, _, admin = build(settings)  # the supervisor's copy answers /-/routes and /-/readyz

    def render() -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    admin.render_metrics = render
    admin.workers_alive = lambda: all(process.is_alive() for process in processes)
    admin_server = Server(uvicorn_config(admin, *settings.admin_listen, settings))
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    if settings.control_plane_url:
        # The supervisor follows the control plane too (no status reports: the workers are the nodes),
        # so its /-/readyz and /-/routes show what the workers run.
        from .sync import Sync

        sync_task = loop.create_task(Sync(runtime, report=False).run())
        tasks.add(sync_task)

    def forward(signum: int) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    async def stop() -> None:
        if runtime.draining:
            return
        runtime.draining = True
        forward(signal.SIGTERM)  # each worker drains for the same delay, then finishes in-flight requests
        while any(process.is_alive() for process in processes):
            await asyncio.sleep(0.1)
        admin_server.should_exit = True

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
        for worker in processes:
            if worker.is_alive():
                worker.terminate()
            worker.join(timeout=35)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
