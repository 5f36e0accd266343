"""The control-plane sync (ARCHITECTURE §4, docs/sync-api.md): boot from the verified cache, then
long-poll `GET /api/v1/dataplane/config` and apply each snapshot through `Runtime.apply`, reporting
to `POST /api/v1/dataplane/status` after every apply or reject and every 30 s.

- Boot (control plane configured): the on-disk cache when it verifies (sha256 of the body bytes, and
  the control-plane URL it came from matches) → the seed file → nothing (readyz 503).
- A snapshot is parsed, validated whole and prepared in a thread (the compile reuses the endpoints
  that did not change); only the commit runs on the event loop (Runtime.apply_off_loop). A bad
  one is rejected and reported, the old one stays, and its ETag is remembered so the next poll waits
  for a change rather than fetching it again at once.
- The cache is written atomically (temp file, fsync, rename, mode 0600).
- Control plane down or answering errors: keep serving, retry with capped jittered exponential
  back-off, `gateway_control_plane_connected` 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from . import __version__
from .report import (
    ConsumerCounts,
    bound_consumers,
    build_breakers,
    build_certificates,
    build_counters,
    consumers_field,
    merge_consumer_counts,
)
from .runtime import Runtime
from .settings import Settings
from .snapshot import READ_FORMAT_VERSION, Snapshot, load_sync_snapshot

if TYPE_CHECKING:
    from .tracing import Tracer

logger = logging.getLogger("dataplane.sync")

CONFIG_PATH = "/api/v1/dataplane/config"
STATUS_PATH = "/api/v1/dataplane/status"
FORMAT = str(READ_FORMAT_VERSION)  # the highest snapshot format this node reads
WAIT = 30.0  # long-poll wait asked of the control plane; plus up to WAIT_JITTER
WAIT_JITTER = 3.0
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
REPORT_EVERY = 10.0  # the default of DATAPLANE_REPORT_INTERVAL (settings.report_interval)
CACHE_FORMAT = 1
# The node id as the control plane takes it in X-Gateway-Node-ID (docs/sync-api.md).
_NODE_ID_HEADER = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Random per process start: the control plane tells a restart from a long-running node by it.
BOOT_ID = uuid.uuid4().hex[:16]

Sleep = Callable[[float], Awaitable[None]]


def etag_of(snapshot: Snapshot) -> str:
    return f'"{snapshot.config_sha256}.{snapshot.state_seq}"'


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def _unknown_consumers_field(response: httpx.Response) -> bool:
    """A 400 refusing the report's `consumers` as an unknown field: a control plane older than it."""
    try:
        body = response.json()
    except ValueError:
        return False
    fields = body.get("fields") if isinstance(body, dict) else None
    return isinstance(fields, dict) and fields.get("consumers") == ["unknown field"]


def _unknown_rate_limited_field(response: httpx.Response) -> bool:
    """A 400 refusing only the consumers' `rate_limited` counts as unknown fields: a control plane that
    takes traffic by consumer but is older than its 429 count."""
    try:
        body = response.json()
    except ValueError:
        return False
    fields = body.get("fields") if isinstance(body, dict) else None
    return (
        isinstance(fields, dict)
        and bool(fields)
        and all(
            isinstance(path, str) and path.startswith("consumers.") and path.endswith(".rate_limited")
            and messages == ["unknown field"]
            for path, messages in fields.items()
        )
    )  # fmt: skip


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return str(body.get("message", "")) if isinstance(body, dict) else response.text[:500]


# --- status reports ----------------------------------------------------------------------------------

GZIP_REPORTS_OVER = 16 * 1024  # bytes of JSON; the control plane takes at most 4 MiB on the wire


def encode_report(status: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The report as JSON, gzipped when large (traffic on 10,000 endpoints is ~2.8 MB of counters, ~10x
    smaller compressed), and its request headers. Runs in a thread: the counters are encoded one
    endpoint at a time, because one `json.dumps` of all of them is one C call holding the interpreter
    for hundreds of ms, and the event loop with it; zlib lets go of the interpreter while it works."""
    rest = {key: value for key, value in status.items() if key != "counters"}
    parts = [json.dumps(rest, separators=(",", ":"))[:-1], ',"counters":{']
    parts.append(
        ",".join(
            f"{json.dumps(key)}:{json.dumps(value, separators=(',', ':'))}"
            for key, value in status.get("counters", {}).items()
        )
    )
    parts.append("}}")
    body = "".join(parts).encode()
    headers = {"Content-Type": "application/json"}
    if len(body) > GZIP_REPORTS_OVER:
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return body, headers


# --- cache -------------------------------------------------------------------------------------------


def cache_path(settings: Settings) -> Path | None:
    """One cache file per node (a `--workers N` worker is its own node)."""
    if settings.cache_dir is None:
        return None
    name = re.sub(r"[^A-Za-z0-9._-]", "-", settings.node_id)
    return settings.cache_dir / f"snapshot-{name}.json"


def _same_url(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and a.rstrip("/") == b.rstrip("/")  # type: ignore[union-attr]


def write_cache(path: Path, body: bytes, control_plane_url: str) -> None:
    """Atomically replace the cache: temp file in the same directory, fsync, rename, mode 0600."""
    record = {
        "cache_format": CACHE_FORMAT,
        "control_plane_url": control_plane_url,
        "sha256": hashlib.sha256(body).hexdigest(),
        "body": body.decode("utf-8"),
    }
    data = json.dumps(record, separators=(",", ":")).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_cache(path: Path, control_plane_url: str, *, mount_prefix: str = "") -> Snapshot | None:
    """The cached snapshot, or None when there is none, it came from another control plane, its bytes
    do not match their recorded sha256, or it does not parse and validate (each logged)."""
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("cache %s unreadable, ignored: %s", path, exc)
        return None
    if not isinstance(record, dict) or record.get("cache_format") != CACHE_FORMAT:
        logger.warning("cache %s has an unknown format, ignored", path)
        return None
    if not _same_url(record.get("control_plane_url"), control_plane_url):
        logger.warning("cache %s came from another control plane (%r), ignored", path, record.get("control_plane_url"))
        return None
    body = record.get("body")
    if not isinstance(body, str):
        logger.warning("cache %s has no body, ignored", path)
        return None
    raw = body.encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != record.get("sha256"):
        logger.warning("cache %s does not verify (sha256 mismatch), ignored", path)
        return None
    try:
        return load_sync_snapshot(raw, mount_prefix=mount_prefix)
    except ValueError as exc:
        logger.warning("cache %s holds a snapshot this node rejects, ignored: %s", path, exc)
        return None


def boot(runtime: Runtime) -> str:
    """Load the first config at boot (§4) and say where it came from: `cache`, `seed` or `none`."""
    settings = runtime.settings
    if settings.control_plane_url:
        path = cache_path(settings)
        if path is not None:
            snapshot = read_cache(path, settings.control_plane_url, mount_prefix=settings.mount_prefix)
            if snapshot is not None:
                try:
                    runtime.apply(snapshot)
                except Exception:  # a bug, not a bad file (that is caught above): the seed is next
                    logger.exception("the cache %s could not be applied, ignored", path)
                else:
                    logger.info("booted from the cache %s (revision %s)", path, snapshot.revision)
                    return "cache"
    if settings.seed is not None and runtime.reload_seed():
        return "seed"
    if settings.control_plane_url:
        logger.warning("no verified cache and no seed: not ready until the control plane answers")
    return "none"


# --- the loop ------------------------------------------------------------------------------------------


class Sync:
    def __init__(
        self,
        runtime: Runtime,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        report: bool = True,
        wait: float = WAIT,
        report_every: float | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        settings = runtime.settings
        self.tracer = tracer  # tracing on: each snapshot's `config apply` span (Tracer.config_applied)
        # Who asks, for the control plane's span of its answer (docs/sync-api.md); a default id made from
        # an exotic hostname is left out rather than sent as a header it would refuse.
        node_id = settings.node_id
        self.node_header = {"X-Gateway-Node-ID": node_id} if _NODE_ID_HEADER.fullmatch(node_id) else {}
        if not settings.control_plane_url:
            raise ValueError("the sync needs a control-plane URL")
        self.runtime = runtime
        self.settings = settings
        self.url: str = settings.control_plane_url
        self.cache = cache_path(settings)
        self.transport = transport
        self.sleep = sleep
        self.reporting = report
        self.wait = wait
        self.report_every = report_every if report_every is not None else settings.report_interval
        # A snapshot from the control plane (the cache) is what we run: ask only for changes to it.
        # A seed (revision None) is not: the first poll fetches at once.
        current = runtime.snapshot
        self.etag: str | None = etag_of(current) if current is not None and current.revision is not None else None
        self.failures = 0
        self.result = "applied"
        self.error: str | None = None
        self.hostname = socket.gethostname()
        self.client: httpx.AsyncClient | None = None
        self._report_now = asyncio.Event()
        # Traffic by consumer goes per report epoch (report.py): the epoch numbers this boot's reports,
        # and a report that did not reach the control plane (down, 5xx) hands its counts to the next.
        self.consumer_epoch = 0
        self._unsent_consumers: ConsumerCounts = {}
        # False once a control plane refused the `consumers` field as unknown (older than the field):
        # then reports go without it, so the node's status is still stored.
        self.send_consumers = True
        # False once a control plane refused the consumers' `rate_limited` counts as unknown (older than
        # them): then the consumers go without them.
        self.send_rate_limited = True

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            transport=self.transport,
            trust_env=False,
            headers={
                "Authorization": f"Bearer {self.settings.token or ''}",
                "User-Agent": f"gateway-dataplane/{__version__}",
            },
            timeout=httpx.Timeout(10.0, read=self.wait + WAIT_JITTER + 15.0),
        )

    async def run(self) -> None:
        """Poll until cancelled; never raises for a control-plane problem."""
        async with self._client() as client:
            self.client = client
            reporter = asyncio.create_task(self._reporter()) if self.reporting else None
            try:
                while True:
                    # Always through the event loop, even for 0: a control plane answering at once must
                    # not starve the reporter (or anything else on the loop).
                    await self.sleep(await self.poll_once())
            finally:
                if reporter is not None:
                    reporter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reporter
                self.client = None

    def backoff(self) -> float:
        """Capped, jittered exponential back-off for the current run of failures (0.5 s doubling to 30 s)."""
        ceiling: float = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, self.failures - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    def _failed(self, message: str) -> float:
        self.failures += 1
        self.runtime.metrics.control_plane_connected.set(0)
        delay = self.backoff()
        log = logger.warning if self.failures == 1 or self.failures % 10 == 0 else logger.debug
        log("control plane unavailable (%s); keeping the current config, retrying in %.1fs", message, delay)
        return delay

    async def poll_once(self) -> float:
        """One GET of the config; returns how long to sleep before the next one."""
        assert self.client is not None, "poll_once runs inside run() or with .client set"
        headers = {"X-Gateway-Format": FORMAT, "Accept-Encoding": "gzip", **self.node_header}
        params: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
            params["wait"] = f"{self.wait + random.random() * WAIT_JITTER:.1f}"
        try:
            response = await self.client.get(CONFIG_PATH, headers=headers, params=params)
        except httpx.HTTPError as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if response.status_code == 304:
            self._connected()
            return 0.0
        if response.status_code == 409 and _error_code(response) == "format_unsupported":
            # The control plane is up but serves no format this node reads: not an outage but a
            # refusal, so the operator sees it on the node (result "rejected" with the reason). Asked
            # again with the same back-off as after an outage, in case the control plane is upgraded.
            self.runtime.metrics.control_plane_connected.set(1)
            error = f"format_unsupported: {_error_message(response)}"[:4000]
            if (self.result, self.error) != ("rejected", error):
                self.result, self.error = "rejected", error
                logger.error("the control plane serves no snapshot format this node reads: %s", error)
                self._report_now.set()
            self.failures += 1
            return self.backoff()
        if response.status_code != 200:
            return self._failed(f"HTTP {response.status_code}: {response.text[:200]}")
        self._connected()
        began = time.time()
        await self._received(response.content, response.headers.get("etag"))
        write = response.headers.get("x-config-traceparent")
        if write and self.tracer is not None:
            current = self.runtime.snapshot
            self.tracer.config_applied(
                write,
                node_id=self.settings.node_id,
                etag=response.headers.get("etag"),
                revision=current.revision if current is not None and self.result == "applied" else None,
                error=self.error if self.result != "applied" else None,
                began=began,
            )
        return 0.0

    def _connected(self) -> None:
        if self.failures:
            logger.info("control plane reachable again")
        self.failures = 0
        self.runtime.metrics.control_plane_connected.set(1)

    async def _received(self, body: bytes, etag: str | None) -> None:
        settings = self.settings
        try:
            snapshot = await asyncio.to_thread(
                load_sync_snapshot, body, mount_prefix=settings.mount_prefix, previous=self.runtime.snapshot
            )
        except ValueError as exc:
            # Remember its ETag: the next poll then waits for a change instead of fetching it again.
            self.etag = etag or self.etag
            self.result, self.error = "rejected", str(exc)[:4000]
            logger.error("snapshot %s rejected, keeping the current config: %s", etag, exc)
            self._report_now.set()
            return
        try:
            await self.runtime.apply_off_loop(snapshot)  # prepared in a thread; the loop only commits
        except Exception as exc:  # a bug, not a bad snapshot: still keep the old one and keep following
            logger.exception("snapshot %s could not be applied, keeping the current config", etag)
            self.etag = etag or self.etag
            self.result, self.error = "rejected", f"the node could not apply it: {exc}"[:4000]
            self._report_now.set()
            return
        self.etag = etag or etag_of(snapshot)
        self.result, self.error = "applied", None
        if self.cache is not None:
            try:
                await asyncio.to_thread(write_cache, self.cache, body, self.url)
            except OSError as exc:
                logger.error("could not write the cache %s: %s", self.cache, exc)
        self._report_now.set()

    # --- status reports --------------------------------------------------------------------------------

    def status(self, counters: dict[str, Any] | None = None, consumers: dict[str, Any] | None = None) -> dict[str, Any]:
        """The status report (§4); `breakers` and `counters` are built from the runtime (report.py),
        the counters here unless given (`report()` builds them off the event loop). `consumers` (the
        traffic by consumer of this report epoch, from `report()`) only when given and not empty."""
        snapshot = self.runtime.snapshot
        if counters is None:
            self.runtime.metrics.flush()
        status: dict[str, Any] = {
            "node_id": self.settings.node_id,
            "boot_id": BOOT_ID,
            "hostname": self.hostname[:255],
            "version": __version__,
            "revision": snapshot.revision if snapshot else None,
            "config_sha256": snapshot.config_sha256 if snapshot else None,
            "state_seq": snapshot.state_seq if snapshot else None,
            "result": self.result,
            "error": self.error,
            "breakers": build_breakers(self.runtime),
            "counters": build_counters(self.runtime.metrics) if counters is None else counters,
            **({"consumers": consumers} if consumers and consumers["endpoints"] else {}),
        }
        certificates = self.runtime.certificates
        if certificates is not None:
            # Only from a node with a TLS listener: a control plane older than the field still takes the
            # reports of every other node.
            status["certificates"] = build_certificates(certificates.current)
        return status

    async def report(self) -> bool:
        """Send one status report; False (logged) when the control plane did not store it."""
        if self.client is None:
            return False
        # Counters and encoding grow with the endpoints that had traffic (~50 ms per 1,000): off the
        # event loop, so a report never stalls the proxy (bench/large_config.py). Breakers stay on the
        # loop: they read runtime state the loop changes, and only non-closed ones are listed.
        self.runtime.metrics.flush()  # what this loop turn observed, before the thread reads it
        counters = await asyncio.to_thread(build_counters, self.runtime.metrics)
        taken = merge_consumer_counts(self.runtime.metrics.take_consumers(), self._unsent_consumers)
        self._unsent_consumers = {}
        bounded = await asyncio.to_thread(bound_consumers, taken) if taken else {}
        consumers = None
        if bounded and self.send_consumers:
            self.consumer_epoch += 1
            consumers = consumers_field(bounded, self.consumer_epoch, rate_limited=self.send_rate_limited)
        body, headers = await asyncio.to_thread(encode_report, self.status(counters, consumers))
        try:
            response = await self.client.post(STATUS_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.debug("status report failed: %s", exc)
            self._unsent_consumers = bounded  # counted in the next report instead
            return False
        if response.status_code >= 500:
            self._unsent_consumers = bounded
        if consumers is not None and response.status_code == 400 and _unknown_rate_limited_field(response):
            logger.warning(
                "the control plane does not take 429 counts by consumer (older version): reporting without them"
            )
            self.send_rate_limited = False
            consumers = consumers_field(bounded, self.consumer_epoch, rate_limited=False)
            body, headers = await asyncio.to_thread(encode_report, self.status(counters, consumers))
            try:
                response = await self.client.post(STATUS_PATH, content=body, headers=headers)
            except httpx.HTTPError as exc:
                logger.debug("status report failed: %s", exc)
                self._unsent_consumers = bounded
                return False
            if response.status_code >= 500:
                self._unsent_consumers = bounded
        if consumers is not None and response.status_code == 400 and _unknown_consumers_field(response):
            logger.warning("the control plane does not take traffic by consumer (older version): reporting without it")
            self.send_consumers = False
            body, headers = await asyncio.to_thread(encode_report, self.status(counters))
            try:
                response = await self.client.post(STATUS_PATH, content=body, headers=headers)
            except httpx.HTTPError as exc:
                logger.debug("status report failed: %s", exc)
                return False
        if response.status_code != 204:
            logger.warning("status report refused: HTTP %s %s", response.status_code, response.text[:300])
            return False
        return True

    async def _reporter(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self.report_every)
            self._report_now.clear()
            await self.report()
