"""How far a config revision has rolled out over the live nodes, and `revisions/{n}/wait/`.

**Which revision did a rejecting node reject?** A status report names only the revision the node *runs*
(`revision`) and the outcome of the last snapshot it was sent (`result`); after a rejection the node
keeps running its old revision, so the report cannot say which revision it refused. The control plane
only ever serves its latest snapshot, so the rules are:

- a node **applied** revision n when it runs n or a later one (`revision >= n`), whatever `result`
  says: `result` describes a later snapshot than the one it runs, and running n+1 means n got through;
- a node **rejected** revision n when its report says `rejected`, it runs an older revision (or none),
  and the report arrived at least REJECTION_GRACE_SECONDS after n was created. Such a node was sent n or
  a later revision (the only ones served since then) and refused it. The grace keeps a periodic report
  that left the node before it fetched n (the fetch follows n's commit within the sync watcher's
  ~200 ms tick) from counting as a refusal of n: without it, fixing a bad revision with a new one would
  often "fail" at once on the reports that still describe the old refusal. A genuine refusal of n is
  counted from the node's next report (at most DATAPLANE_REPORT_INTERVAL, 10 s, later);
- only live nodes count (`selectors.live_nodes()`).

`RolloutWaitApp` answers `GET /api/v1/revisions/{n}/wait/?share=&timeout=` before Django, like the
sync API (config/asgi.py): Django would run an async view behind the project's sync-only middleware on
its one shared thread, so a waiting request would stall every other sync view. Here waiting is a
coroutine; the live nodes are read at most once per POLL_INTERVAL seconds per process, however many
requests wait, through the same thread-sensitive `sync_to_async` as the sync API. People authenticate with the API's JWT
(simplejwt), and the role is looked up on every request like the rest of the API (config:read).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from .models import DataPlaneNode
from .sync import ASGIApp, Receive, Scope, Send, _database_call, _header

REJECTION_GRACE_SECONDS = 1.0
POLL_INTERVAL = 0.2
DEFAULT_SHARE, DEFAULT_TIMEOUT = 1.0, 30.0
MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 60.0
WAIT_PATH = re.compile(r"^/api/v1/revisions/(?P<number>[0-9]+)/wait/?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A plain decimal number: float() alone also takes " 1", "1_0", "inf" and "nan".
_NUMBER = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


@dataclass
class RolloutCounts:
    """Live nodes that applied / rejected one revision (see the module docstring for the rules)."""

    applied: int = 0
    rejected: int = 0
    live: int = 0
    rejections: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"applied": self.applied, "rejected": self.rejected, "live": self.live}


def node_applied(node: DataPlaneNode, number: int) -> bool:
    return node.revision is not None and node.revision >= number


def node_rejected(node: DataPlaneNode, number: int, created_at: datetime) -> bool:
    return (
        node.result == DataPlaneNode.Result.REJECTED
        and (node.revision is None or node.revision < number)
        and node.last_seen >= created_at + timedelta(seconds=REJECTION_GRACE_SECONDS)
    )


def rollout_counts(*, number: int, created_at: datetime, nodes: Iterable[DataPlaneNode]) -> RolloutCounts:
    """Counts for revision `number` (created at `created_at`) among `nodes`, which should be the live ones."""
    counts = RolloutCounts()
    for node in nodes:
        counts.live += 1
        if node_applied(node, number):
            counts.applied += 1
        elif node_rejected(node, number, created_at):
            counts.rejected += 1
            counts.rejections.append({"node_id": node.node_id, "error": node.error})
    return counts


def live_node_rows() -> list[DataPlaneNode]:
    """The live nodes with only what the counts read."""
    from .selectors import live_nodes

    return list(live_nodes().only("node_id", "revision", "result", "error", "last_seen").order_by("node_id"))


# --- GET /api/v1/revisions/{n}/wait/ --------------------------------------------------------------------


class WaitError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _authenticate(authorization: str | None) -> Any:
    """The user of a valid JWT access token, or a WaitError 401; roles are read afterwards, from the database."""
    from rest_framework_simplejwt.authentication import JWTAuthentication
    from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError

    scheme, _, raw = (authorization or "").partition(" ")
    if scheme != "Bearer" or not raw.strip():
        raise WaitError(401, "not_authenticated", "Authentication credentials were not provided.")
    auth = JWTAuthentication()
    try:
        user = auth.get_user(auth.get_validated_token(raw.strip().encode()))
    except (InvalidToken, AuthenticationFailed, TokenError) as exc:
        raise WaitError(401, "authentication_failed", _sentence(exc)) from None
    if not user.is_active:
        raise WaitError(401, "authentication_failed", "User is inactive")
    return user


def _sentence(exc: Exception) -> str:
    """simplejwt's message for a refused token: InvalidToken's `detail` is a dict (`detail`, `code`,
    `messages`), whose str() is a Python repr; the API's other routes answer its `detail` sentence."""
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        detail = detail.get("detail")
    return str(detail or exc)


def _may(user: Any, permission: str) -> bool:
    from controlplane.accounts.roles import has_gateway_perm

    return has_gateway_perm(user, permission)


def _revision_created_at(number: int) -> datetime | None:
    from controlplane.core.models import ConfigRevision

    return ConfigRevision.objects.filter(number=number).values_list("created_at", flat=True).first()


def _parse_params(query_string: bytes) -> tuple[float, float]:
    params = parse_qs(query_string.decode("latin-1"))
    # As on every API route (core.api.errors.ApiErrorMiddleware): a parameter given twice is refused.
    fields: dict[str, list[str]] = {name: ["give this parameter once"] for name, v in params.items() if len(v) > 1}
    share, timeout = DEFAULT_SHARE, DEFAULT_TIMEOUT
    if "share" in params:
        try:
            share = _number(params["share"][-1])
        except ValueError:
            share = math.nan
        if not 0 < share <= 1:  # NaN fails too
            fields["share"] = ["must be a number greater than 0 and at most 1"]
    if "timeout" in params:
        try:
            timeout = _number(params["timeout"][-1])
        except ValueError:
            timeout = math.nan
        if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
            fields["timeout"] = [f"must be a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}"]
    if fields:
        raise WaitError(400, "validation_error", "invalid query parameters", fields=fields)
    return share, timeout


def _number(raw: str) -> float:
    if not _NUMBER.match(raw):
        raise ValueError(raw)
    return float(raw)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class RolloutWaitApp:
    """Answers `/api/v1/revisions/{n}/wait/`; hands everything else to `fallback` (Django)."""

    def __init__(self, fallback: ASGIApp, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.fallback = fallback
        self.poll_interval = poll_interval
        self._authenticate = _database_call(_authenticate)
        self._may = _database_call(_may)
        self._created_at = _database_call(_revision_created_at)
        self._read_nodes = _database_call(live_node_rows)
        # One read of the live nodes per tick serves every waiter of this process (and event loop).
        self._nodes: tuple[float, list[DataPlaneNode]] | None = None
        self._nodes_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = WAIT_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.fallback(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id") or ""
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        headers: list[tuple[bytes, bytes]] = []
        try:
            status, body = await self._answer(scope, receive, int(match["number"]))
        except WaitError as error:
            status, body = error.status, {"error": error.code, "message": error.message, **error.extra}
            if status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="api"'))
            elif status == 405:
                headers.append((b"allow", b"GET"))
        if status == 0:  # the client went away while waiting: nobody to answer
            return
        if status >= 400:
            body["request_id"] = request_id
        payload = json.dumps(body).encode()
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope, receive: Receive, number: int) -> tuple[int, dict[str, Any]]:
        from controlplane.accounts.roles import CONFIG_READ, CONFIG_WRITE

        user = await self._authenticate(_header(scope, b"authorization"))
        # Like the rest of the API: the permission check comes first (a write needs config:write), then 405.
        read = scope["method"] in ("GET", "HEAD", "OPTIONS")
        if not await self._may(user, CONFIG_READ if read else CONFIG_WRITE):
            raise WaitError(403, "permission_denied", "your role does not allow this")
        if scope["method"] != "GET":
            raise WaitError(405, "method_not_allowed", f'Method "{scope["method"]}" not allowed.')
        share, timeout = _parse_params(bytes(scope.get("query_string", b"")))
        created_at = await self._created_at(number)
        if created_at is None:
            raise WaitError(404, "not_found", f"no revision {number}")
        waiting = asyncio.ensure_future(self._wait(number, created_at, share, timeout))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not waiting.done():
            waiting.cancel()
            return 0, {}
        return waiting.result()

    async def _live_nodes(self, fresh_since: float) -> list[DataPlaneNode]:
        """The live nodes as read by a query that started at `fresh_since` or later (loop time). Requests
        waiting together share one read per tick; a new request never gets a read older than itself."""
        loop = asyncio.get_running_loop()
        if self._nodes_lock is None or self._loop is not loop:
            self._nodes_lock, self._loop, self._nodes = asyncio.Lock(), loop, None
        async with self._nodes_lock:
            if self._nodes is None or self._nodes[0] < fresh_since:
                started = loop.time()
                self._nodes = (started, await self._read_nodes())
            return self._nodes[1]

    async def _wait(
        self, number: int, created_at: datetime, share: float, timeout: float
    ) -> tuple[int, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        fresh_since = loop.time()
        deadline = fresh_since + timeout
        while True:
            nodes = await self._live_nodes(fresh_since)
            counts = rollout_counts(number=number, created_at=created_at, nodes=nodes)
            summary = {"revision": number, "share": share, **counts.as_dict()}
            if counts.live == 0:
                raise WaitError(409, "no_live_nodes", "no data-plane node is live: nothing can apply it", **summary)
            if counts.rejected:
                raise WaitError(
                    409,
                    "rollout_failed",
                    f"{counts.rejected} live node(s) rejected revision {number}",
                    **summary,
                    nodes=counts.rejections,
                )
            # share × live nodes, rounded up: 0.5 of 3 nodes needs 2. The epsilon absorbs float noise (0.1 × 10).
            if counts.applied >= share * counts.live - 1e-9:
                return 200, {**summary, "done": True}
            if loop.time() >= deadline:
                raise WaitError(
                    409,
                    "rollout_incomplete",
                    f"{counts.applied} of {counts.live} live node(s) applied revision {number} within {timeout:g}s",
                    **summary,
                )
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - loop.time())))
            fresh_since = loop.time() - self.poll_interval
