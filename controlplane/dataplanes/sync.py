"""The data-plane sync API (ARCHITECTURE §4) as a small pure-ASGI app in front of Django.

    GET  /api/v1/dataplane/config?wait=N   snapshot; If-None-Match → long-poll, 304 when nothing changed
    POST /api/v1/dataplane/status          the node's report; 204, or 400 with every bad field

config/asgi.py routes exactly these two paths here and everything else to Django. Waiting costs no
thread and no database connection: a waiting request is a coroutine parked on an asyncio.Event.
One watcher task per process (per event loop) reads the current ETag with one query every
POLL_INTERVAL seconds and wakes the waiters when it changes. Snapshot bytes (and their gzip) are
built once per ETag (again when a config comes back under a newer revision: SnapshotCache).
Database work (token lookup, storing a report) runs through asgiref's thread-sensitive
`sync_to_async`, i.e. on one shared thread with one connection. The watcher's read and the snapshot
builds run on a thread of their own (`own_watcher_thread`, on in config/asgi.py), with its own
connection, so a change reaches the waiters however many status reports and token lookups are queued
on the shared thread (bench/waiting_clients.py: with that thread saturated by status reports, a change
otherwise took over a second longer to reach waiting clients).

Answers: 200 snapshot, 304 unchanged, 204 report stored, 400 bad request / malformed report,
401 missing or bad token, 405 wrong method, 409 `format_unsupported`, 413 report too large;
errors are JSON `{"error", "message", "request_id"}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.db import connection

from controlplane.core import tracing

from .snapshot import (
    LATEST_SNAPSHOT_FORMAT_VERSION,
    SNAPSHOT_FORMAT_VERSION,
    Snapshot,
    load_snapshot,
    read_current_etag,
)
from .status import StatusReportError, validate_status_report

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger(__name__)
T = TypeVar("T")

CONFIG_PATH = "/api/v1/dataplane/config"
STATUS_PATH = "/api/v1/dataplane/status"
PATHS = frozenset({CONFIG_PATH, STATUS_PATH})
POLL_INTERVAL = 0.2
MIN_WAIT, MAX_WAIT = 1.0, 60.0
MAX_STATUS_BYTES = 4 * 1024 * 1024  # on the wire
# A report may come gzipped (`Content-Encoding: gzip`: a node with traffic on 10,000 endpoints sends
# ~2.8 MB of counters, ~10x smaller compressed); decompressed it may be at most this (no zip bombs).
MAX_STATUS_DECODED_BYTES = 32 * 1024 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# On a 200 snapshot answer: the W3C traceparent of the write that made its revision, when it was traced
# (docs/sync-api.md, docs/tracing.md).
CONFIG_TRACEPARENT_HEADER = b"x-config-traceparent"
# Optional on a config request: the node's id, recorded on the answer's span (same syntax as a request id).
NODE_ID_HEADER = b"x-gateway-node-id"


class SyncError(Exception):
    """An answer other than success: its status and error code travel with it."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


def _unauthorized(message: str) -> SyncError:
    return SyncError(401, "not_authenticated", message, [(b"www-authenticate", b'Bearer realm="dataplane"')])


def normalize_etag(value: str) -> str:
    """An entity tag as compared here: without `W/` and without quotes."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


class EtagWatcher:
    """Follows the current ETag with one query every `interval` seconds and wakes whoever waits on a change.

    Started lazily by the first request on the running event loop (uvicorn runs Django's app
    without lifespan events, so there is no startup hook to use); `aclose()` stops it.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[str]],
        interval: float = POLL_INTERVAL,
        first_read_timeout: float = 10.0,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._read = read
        self._interval = interval
        self._on_change = on_change
        self._first_read_timeout = first_read_timeout
        self._etag: str | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def current(self) -> str:
        """The current ETag; raises SyncError 503 when the database has not answered yet."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            # No await between the check and create_task: concurrent first requests start one watcher.
            self._loop = loop
            self._etag = None
            self._ready = asyncio.Event()
            self._changed = asyncio.Event()
            self._task = loop.create_task(self._run(), name="dataplane-etag-watcher")
        if self._etag is None:
            try:
                await asyncio.wait_for(self._ready.wait(), self._first_read_timeout)
            except TimeoutError:
                raise SyncError(503, "unavailable", "the control plane's database is not answering") from None
        assert self._etag is not None
        return self._etag

    async def wait_for_change(self, etag: str, timeout: float) -> str | None:
        """The new ETag once it differs from `etag`, or None after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = await self.current()
            if current != etag:
                return current
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return None

    async def _run(self) -> None:
        while True:
            try:
                etag = await self._read()
            except Exception:
                # The database went away or the connection broke: keep the last ETag, retry next tick.
                logger.warning("dataplane sync: reading the current ETag failed", exc_info=True)
            else:
                if etag != self._etag:
                    if self._on_change is not None:
                        self._on_change(etag)
                    self._etag = etag
                    self._ready.set()
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


def _database_call(
    function: Callable[..., T], executor: ThreadPoolExecutor | None = None
) -> Callable[..., Awaitable[T]]:
    """`function` run through thread-sensitive sync_to_async (or on `executor`'s one thread); on an error
    the (possibly broken) connection is closed so the next call opens a fresh one. Nobody else closes it:
    these calls run outside Django's request cycle, on asgiref's one shared thread (or the executor's),
    which keeps its connection (Django's connections are per thread)."""

    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except Exception:
            connection.close()
            raise

    if executor is not None:
        return sync_to_async(call, thread_sensitive=False, executor=executor)
    return sync_to_async(call, thread_sensitive=True)


def _decode_status_report(body: bytes, encoding: str) -> dict[str, Any]:
    """The report's bytes (gunzipped when `encoding` is gzip, at most MAX_STATUS_DECODED_BYTES) →
    `validate_status_report`'s dict; SyncError 400 / 413 for a bad or oversized gzip stream."""
    if encoding == "gzip":
        decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            decoded = decoder.decompress(body, MAX_STATUS_DECODED_BYTES)
        except zlib.error as exc:
            raise SyncError(400, "bad_request", f"the gzip body does not decode: {exc}") from None
        if decoder.unconsumed_tail:
            raise SyncError(
                413, "body_too_large", f"a status report is at most {MAX_STATUS_DECODED_BYTES} bytes decompressed"
            )
        if not decoder.eof:
            raise SyncError(400, "bad_request", "the gzip body is truncated")
        body = decoded
    return validate_status_report(body)


def _close_connection() -> None:
    connection.close()  # the calling thread's own (Django's connections are per thread)


class SnapshotCache:
    """Snapshots by ETag, each built once per process; only the newest few are kept.

    The ETag does not carry the revision: a config that comes back (A → B → A, a rollback) has A's ETag
    again under a newer revision. So when the watcher sees an ETag become current, `forget` drops what
    was built for it earlier, and a build that overlapped such a change is answered but not kept.
    """

    def __init__(self, load: Callable[[], Awaitable[Snapshot]], keep: int = 4) -> None:
        self._load = load
        self._keep = keep
        self._built: dict[str, Snapshot] = {}
        self._epoch = 0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def forget(self, etag: str) -> None:
        """`etag` just became current: whatever was built for it belongs to an earlier revision."""
        self._epoch += 1
        self._built = {key: found for key, found in self._built.items() if etag not in (key, found.etag)}

    async def get(self, etag: str) -> Snapshot:
        """A snapshot at least as new as `etag` (the one for `etag` when still current)."""
        found = self._built.get(etag)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            found = self._built.get(etag)
            if found is not None:
                return found
            epoch = self._epoch
            snapshot = await self._load()
            if epoch != self._epoch:
                return snapshot  # the ETag changed meanwhile: may be a revision that is gone again
            self._built[snapshot.etag] = snapshot
            # Requests for `etag` that found it superseded get the newer snapshot too.
            self._built[etag] = snapshot
            while len(self._built) > self._keep * 2:
                self._built.pop(next(iter(self._built)))
            return snapshot


class ConfigAnswer:
    """What the span of one traced config answer needs (tracing on only): filled in while answering."""

    def __init__(self, started_ns: int) -> None:
        self.started_ns = started_ns
        self.status = 0
        self.snapshot: Snapshot | None = None
        self.token_name: str | None = None
        self.waited = False

    def record(self, scope: Scope) -> None:
        snapshot = self.snapshot
        node_id = _header(scope, NODE_ID_HEADER) or ""
        tracing.record_config_answer(
            headers=scope.get("headers", []),
            method=str(scope["method"]),
            path=CONFIG_PATH,
            started_ns=self.started_ns,
            status=self.status,
            revision=snapshot.revision if snapshot is not None else None,
            etag=snapshot.etag if snapshot is not None else None,
            write_traceparent=snapshot.traceparent if snapshot is not None else "",
            token_name=self.token_name,
            node_id=node_id if _REQUEST_ID.match(node_id) else None,
            waited=self.waited,
        )


class ClientGone(Exception):
    """The client disconnected while waiting: there is nobody to answer."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _accepts_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            try:
                return not params.strip() or float(quality) > 0
            except ValueError:
                return False
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class DataPlaneSyncApp:
    """Answers the two sync paths; hands every other request (and lifespan, websockets) to `fallback`."""

    def __init__(
        self, fallback: ASGIApp, *, poll_interval: float = POLL_INTERVAL, own_watcher_thread: bool = False
    ) -> None:
        """`own_watcher_thread`: the watcher and the snapshot builds get a thread (and a database connection)
        of their own instead of sharing asgiref's one thread with the token lookups and status reports.
        Off for in-process tests, whose data lives in the test thread's uncommitted transaction."""
        from .services import dataplane_token_authenticate, node_status_record

        self.fallback = fallback
        executor = ThreadPoolExecutor(1, thread_name_prefix="dataplane-etag-watcher") if own_watcher_thread else None
        self._executor = executor
        self.snapshots = SnapshotCache(_database_call(load_snapshot, executor))
        self.watcher = EtagWatcher(
            _database_call(read_current_etag, executor), poll_interval, on_change=self.snapshots.forget
        )
        self._authenticate = _database_call(dataplane_token_authenticate)
        self._record = _database_call(node_status_record)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.fallback(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id") or ""
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        # Config answers are traced (docs/tracing.md); status reports and 304s are heartbeats, not traced.
        answer = ConfigAnswer(started_ns=time.time_ns()) if scope["path"] == CONFIG_PATH and tracing.enabled() else None
        try:
            if scope["path"] == CONFIG_PATH:
                await self._config(scope, receive, send, request_id, answer)
            else:
                await self._status(scope, receive, send, request_id)
        except ClientGone:
            return
        except SyncError as error:
            if answer is not None:
                answer.status = error.status
            body = json.dumps({"error": error.code, "message": error.message, "request_id": request_id}).encode()
            headers = [(b"content-type", b"application/json"), *error.headers]
            await self._respond(send, error.status, body, headers, request_id)
        if answer is not None and answer.status not in (0, 304):
            answer.record(scope)

    async def aclose(self) -> None:
        await self.watcher.aclose()
        if self._executor is not None:  # close the watcher thread's connection (reopened if used again)
            await asyncio.get_running_loop().run_in_executor(self._executor, _close_connection)

    async def _respond(
        self, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], request_id: str
    ) -> None:
        headers = [*headers, (b"x-request-id", request_id.encode())]
        if status not in (204, 304):  # RFC 9110 §8.6: no Content-Length on a 204
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _require_token(self, scope: Scope) -> Any:
        authorization = _header(scope, b"authorization")
        if not authorization:
            raise _unauthorized("a data-plane token is required (Authorization: Bearer gwdp_...)")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthorized("a data-plane token is required (Authorization: Bearer gwdp_...)")
        token = await self._authenticate(secret=secret.strip())
        if token is None:
            raise _unauthorized("the data-plane token is not valid")
        return token

    async def _config(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, answer: ConfigAnswer | None = None
    ) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise SyncError(405, "method_not_allowed", "use GET", [(b"allow", b"GET, HEAD")])
        token = await self._require_token(scope)
        if answer is not None:
            answer.token_name = token.name
        supported = _header(scope, b"x-gateway-format")
        try:
            highest = int(supported) if supported is not None else 1
        except ValueError:
            highest = 0
        if highest < SNAPSHOT_FORMAT_VERSION:
            raise SyncError(
                409,
                "format_unsupported",
                f"X-Gateway-Format {supported!r} is not a format this control plane serves "
                f"(it serves formats {SNAPSHOT_FORMAT_VERSION} to {LATEST_SNAPSHOT_FORMAT_VERSION})",
            )
        wait = self._wait_seconds(scope)
        if_none_match = _header(scope, b"if-none-match")
        current = await self.watcher.current()
        if if_none_match is not None:
            known = normalize_etag(if_none_match)
            if known == current:
                # Long-poll. Nothing is held while waiting but this coroutine: no thread, no connection.
                if answer is not None:
                    answer.waited = bool(wait)
                changed = await self._wait_or_disconnect(receive, known, wait) if wait else None
                if changed is None:
                    if answer is not None:
                        answer.status = 304
                    await self._respond(send, 304, b"", [(b"etag", f'"{known}"'.encode())], request_id)
                    return
                current = changed
        try:
            snapshot = await self.snapshots.get(current)
        except Exception:
            logger.exception("dataplane sync: building the snapshot failed")
            raise SyncError(503, "unavailable", "the snapshot could not be built; try again") from None
        if snapshot.format_version > highest:
            # A node must never run a document whose policies it cannot apply (ARCHITECTURE §11): it
            # keeps what it has and shows this message in its status until it is upgraded.
            raise SyncError(
                409,
                "format_unsupported",
                f"the current config is format {snapshot.format_version} (it uses plugins or other format "
                f"{snapshot.format_version} settings) and this node reads format {highest} at most: upgrade "
                "the data plane",
            )
        headers = [
            (b"content-type", b"application/json"),
            (b"etag", f'"{snapshot.etag}"'.encode()),
            (b"cache-control", b"no-cache"),
            (b"vary", b"Accept-Encoding"),
        ]
        if snapshot.traceparent:
            # The span of the write that made this revision, so the node can link its apply span to it.
            headers.append((CONFIG_TRACEPARENT_HEADER, snapshot.traceparent.encode("ascii")))
        if answer is not None:
            answer.status, answer.snapshot = 200, snapshot
        body = snapshot.body
        if _accepts_gzip(_header(scope, b"accept-encoding")):
            headers.append((b"content-encoding", b"gzip"))
            body = snapshot.gzipped
        if scope["method"] == "HEAD":
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._respond(send, 200, body, headers, request_id)

    async def _wait_or_disconnect(self, receive: Receive, etag: str, wait: float) -> str | None:
        """The new ETag, or None when `wait` passes first; stops early when the client goes away."""
        change = asyncio.ensure_future(self.watcher.wait_for_change(etag, wait))
        disconnect = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({change, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
        if not change.done():
            change.cancel()
            raise ClientGone
        return change.result()

    @staticmethod
    def _wait_seconds(scope: Scope) -> float:
        """`?wait=N` clamped to 1-60 s; absent means answer at once (a plain conditional GET)."""
        values = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get("wait")
        if not values:
            return 0.0
        try:
            wait = float(values[-1])
        except ValueError:
            raise SyncError(400, "bad_request", "wait must be a number of seconds (1-60)") from None
        if wait != wait:  # NaN
            raise SyncError(400, "bad_request", "wait must be a number of seconds (1-60)")
        return min(MAX_WAIT, max(MIN_WAIT, wait))

    async def _status(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        if scope["method"] != "POST":
            raise SyncError(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
        token = await self._require_token(scope)
        body = await self._read_body(receive)
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise SyncError(415, "unsupported_media_type", "Content-Encoding must be gzip or absent")
        try:
            # Decoding and checking a large report takes tens of ms: off the event loop (long-polls wait on it).
            report = await asyncio.to_thread(_decode_status_report, body, encoding)
        except StatusReportError as error:
            payload = {"error": "validation_error", "message": str(error), "fields": error.fields}
            payload["request_id"] = request_id
            await self._respond(
                send, 400, json.dumps(payload).encode(), [(b"content-type", b"application/json")], request_id
            )
            return
        await self._record(report=report, token_name=token.name)
        await self._respond(send, 204, b"", [], request_id)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise SyncError(400, "bad_request", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_STATUS_BYTES:
                raise SyncError(413, "body_too_large", f"a status report is at most {MAX_STATUS_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
