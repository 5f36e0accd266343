"""Rate-limit counters (ARCHITECTURE §11 `rate_limit`): the local ones of this process and the shared
ones in Redis, behind one rule for what a count means.

The algorithm: fixed windows aligned to the epoch, counted exactly. A limit `{requests: N, per: minute}`
lets N requests through in each wall-clock minute (12:00:00-12:00:59, then 12:01:00-...); a request
is let through only if every limit of the endpoint still has room, and only a request let through is
counted (a refused one costs the caller nothing, so a client hammering a per-second limit does not
also burn its daily quota). Why this and not a sliding-window estimate or a token bucket:

- the counts are exact, so "20 a minute" is 20 a minute, on one node and across a fleet, and a test
  (or an operator) can say exactly which request is the first refused;
- `RateLimit-Remaining` and `RateLimit-Reset` are true statements (N - count, the window's end), and
  `Retry-After` is the moment the refusing window ends, not an estimate;
- in Redis it is one key per (caller, window) with INCR and an expiry: the cheapest shared state
  there is, and the same rule locally means a node counting locally during an outage counts the same way;
- windows aligned to the epoch mean every node agrees where a window starts (Redis's clock for the
  shared counts, so nodes' clock skew does not matter there).

The price is the edge: a caller may spend a window's allowance at its very end and the next window's
at the very start, 2N within a short span. Where that matters, add a shorter limit beside the long
one (`[{requests: 10, per: second}, {requests: 100, per: minute}]`): all of them hold at once.

Local counters (`LocalCounters`) live in one process (with `--workers N`, each worker counts on its
own). Their memory is bounded: at most `DATAPLANE_RATE_LIMIT_MAX_KEYS` keys (a key is one caller of
one endpoint, with all its windows), kept in least-recently-used order. A key whose windows have all
ended is dropped when it reaches the old end of that order; when the table is full the least recently
used key is evicted, so its caller starts afresh: a flood of distinct callers can make the gateway
forget a quiet caller's count (it errs on letting through), never grow memory.

Shared counters (`RedisCounters`, `policy: redis`): one EVALSHA of `SCRIPT` per request (all the
endpoint's limits in that one call, atomic in Redis), on redis.asyncio (never a blocking client on the
event loop); the requests of one event-loop turn go out as one pipeline. Redis gets
`DATAPLANE_REDIS_TIMEOUT` to connect and to answer (the client's socket timeouts). When it fails
(refused, timed out, restarted) the call raises `BackendDown`; the counters then stay "down" and skip
Redis for a backoff (0.25 s doubling to 5 s) before one request tries again, so an outage costs no
request more than one timeout; the first failure of an outage is logged once and the recovery once,
and every request Redis did not count adds to `gateway_rate_limit_backend_errors_total`. Every count
Redis answers is copied into this node's local counters (`LocalCounters.absorb`), so a node that falls
back to counting locally (`fault_tolerant`) goes on from the fleet's count of the current windows: a
caller that used up its limit stays refused through a Redis outage instead of getting a fresh
allowance on every node (Kong's `fault_tolerant` lets every request through while Redis is down). Redis
restarted (scripts gone): the NOSCRIPT answers make the batch load the script and ask once more.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from configdoc.plugins import RATE_LIMIT_WINDOWS

from .settings import RATE_LIMIT_MAX_KEYS, Settings

logger = logging.getLogger("dataplane.ratelimit")

Clock = Callable[[], float]


class Limit(NamedTuple):
    """`requests` per `seconds`-long window. A tuple: the local counters look up each request's limits
    by them, and a tuple hashes in C (a frozen dataclass's hash is a Python call per limit)."""

    requests: int
    seconds: int


def compile_limits(config: Sequence[Any]) -> tuple[Limit, ...]:
    """configdoc's `limits` (each `{requests, per}`) → typed limits, shortest window first."""
    limits = (Limit(int(limit["requests"]), RATE_LIMIT_WINDOWS[limit["per"]]) for limit in config)
    return tuple(sorted(limits, key=lambda limit: limit.seconds))


class Verdict(NamedTuple):
    """What counting one request decided, and what the `RateLimit-*` headers say: the most restrictive
    limit's (the least remaining; of equals, the one whose window ends last). A tuple: one is made per
    request, and a tuple is the cheapest immutable record to make."""

    allowed: bool
    limit: int  # RateLimit-Limit
    remaining: int  # RateLimit-Remaining, after this request
    reset: int  # RateLimit-Reset: whole seconds (rounded up) until that limit's window ends
    retry_after: int  # refused: seconds until every window that refused it has ended; else 0
    shared: bool = True  # counted where policy says (False: counted locally while Redis was down)


# Verdict's own constructor is a Python function; tuple.__new__ makes the same named tuple in C.
_verdict: Callable[[tuple[bool, int, int, int, int, bool]], Verdict] = functools.partial(tuple.__new__, Verdict)


def judge(limits: tuple[Limit, ...], counts: Sequence[int], now: float) -> Verdict:
    """The verdict for a request given each limit's count *before* it in the current windows at `now`
    (seconds since the epoch): refused if any limit is used up; let through (and counted) otherwise."""
    allowed = True
    for (requests, _), count in zip(limits, counts, strict=True):
        if count >= requests:
            allowed = False
            break
    bump = 1 if allowed else 0
    retry_after = 0.0
    best_remaining = -1
    best_left = 0.0
    best_requests = 0
    for (requests, seconds), count in zip(limits, counts, strict=True):
        left = seconds - now % seconds  # until the window's end (windows start at the epoch)
        remaining = requests - count - bump
        if remaining < 0:
            remaining = 0
        if not allowed and count >= requests and left > retry_after:
            retry_after = left
        if best_remaining < 0 or remaining < best_remaining or (remaining == best_remaining and left > best_left):
            best_remaining, best_left, best_requests = remaining, left, requests
    reset = math.ceil(best_left)
    return _verdict(
        (
            allowed,
            best_requests,
            best_remaining,
            reset if reset > 1 else 1,
            0 if allowed else max(1, math.ceil(retry_after)),
            True,
        )
    )


class LocalCounters:
    """This process's counters: key → `[expires_at, limits, window, count, window, count, ...]` (a
    window and a count per limit, in the order of `limits`, the plugin's own tuple), in
    least-recently-used order, at most `max_keys` keys (see the module's docstring for the eviction
    rule). Event-loop thread only."""

    def __init__(self, max_keys: int = RATE_LIMIT_MAX_KEYS, *, clock: Clock = time.time) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._entries: OrderedDict[bytes, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: bytes, limits: tuple[Limit, ...], now: float) -> list[Any]:
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            entry = self._new(key, now)
        else:
            entries.move_to_end(key)
        # The same tuple as last time (one identity test per request), unless a new snapshot changed
        # the endpoint's limits: then the windows both have in common keep their counts.
        if entry[1] is not limits:
            entry[:] = self._realigned(entry, limits)
        return entry

    def hit(self, key: bytes, limits: tuple[Limit, ...]) -> Verdict:
        """Count one request of `key` against `limits` (if every limit has room) and judge it."""
        now = self.clock()
        entry = self._entry(key, limits, now)
        counts = []
        at = 2
        seconds = 1
        for _, seconds in limits:
            window = now // seconds
            if entry[at] != window:
                entry[at] = window
                entry[at + 1] = 0
            counts.append(entry[at + 1])
            at += 2
        verdict = judge(limits, counts, now)
        if verdict[0]:  # allowed
            for index in range(3, at, 2):
                entry[index] += 1
        entry[0] = (now // seconds + 1) * seconds  # the longest window's end (limits are sorted)
        return verdict

    def absorb(self, key: bytes, limits: tuple[Limit, ...], counts: Sequence[int], counted: bool, now: float) -> None:
        """Take the fleet's count of `key` (Redis's answer for one request: each limit's count before it,
        whether it was counted, Redis's time): a node that has to count locally when Redis fails goes on
        from the fleet's count in the current windows, not from zero."""
        entry = self._entry(key, limits, now)
        bump = 1 if counted else 0
        at = 2
        seconds = 1
        for (_, seconds), count in zip(limits, counts, strict=True):
            entry[at] = now // seconds
            entry[at + 1] = count + bump
            at += 2
        entry[0] = (now // seconds + 1) * seconds

    def _new(self, key: bytes, now: float) -> list[Any]:
        entries = self._entries
        if len(entries) >= self.max_keys:
            # Keys whose windows have all ended go first, then the least recently used: a few per
            # insert, so the table never holds more than max_keys and no insert pays for a sweep.
            for _ in range(2):
                oldest = next(iter(entries.values()), None)
                if oldest is None or oldest[0] > now:
                    break
                entries.popitem(last=False)
            while len(entries) >= self.max_keys:
                entries.popitem(last=False)
        entry: list[Any] = [0.0, ()]
        entries[key] = entry
        return entry

    @staticmethod
    def _realigned(entry: list[Any], limits: tuple[Limit, ...]) -> list[Any]:
        """The entry for `limits` (new, or the config changed): counts of the windows it kept."""
        kept = {seconds: (entry[2 + 2 * index], entry[3 + 2 * index]) for index, (_, seconds) in enumerate(entry[1])}
        result: list[Any] = [entry[0], limits]
        for _, seconds in limits:
            result += kept.get(seconds, (-1.0, 0))
        return result


# The shared count: KEYS[1] is the caller's key (a hash-tagged prefix, so a cluster keeps one caller's
# windows in one slot); ARGV is (requests, seconds) per limit. Windows follow Redis's clock (TIME), so
# the nodes' clocks never disagree on where a window starts. Returns Redis's time in milliseconds and
# each limit's count before this request; the request is counted (every window INCRemented) only when
# every limit has room, by the same rule as `judge`. A window's key expires a second after it ends.
# (replicate_commands: Redis before 5 replicates scripts verbatim and refuses a write after TIME unless
# the script's effects are replicated instead; from 5 on that is the default and the call a no-op.)
SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local n = #ARGV / 2
local keys, ends, counts = {}, {}, {}
local room = true
for i = 1, n do
  local requests = tonumber(ARGV[2 * i - 1])
  local span = tonumber(ARGV[2 * i]) * 1000
  local window = math.floor(now / span)
  keys[i] = KEYS[1] .. ':' .. ARGV[2 * i] .. ':' .. string.format('%d', window)
  ends[i] = (window + 1) * span
  counts[i] = tonumber(redis.call('GET', keys[i]) or '0')
  if counts[i] >= requests then room = false end
end
if room then
  for i = 1, n do
    if redis.call('INCR', keys[i]) == 1 then
      redis.call('PEXPIREAT', keys[i], ends[i] + 1000)
    end
  end
end
local result = {now}
for i = 1, n do result[i + 1] = counts[i] end
return result
"""

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0


class BackendDown(Exception):
    """Redis did not count this request (error, timeout, or known down and not yet retried)."""


def _where(url: str) -> str:
    """The Redis URL without its credentials, for log lines."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    except ValueError:
        return "the configured Redis"


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class RedisCounters:
    """The fleet's shared counters in Redis (`DATAPLANE_REDIS_URL`): one round trip per request at most.

    Pipelined: the counts asked for within one turn of the event loop go out together, as one pipeline
    of EVALSHAs on one connection (one write, one read for all of them), so under load a request costs
    Redis's work and a share of a round trip, not a round trip of its own; each request still waits for
    its own reply at most `timeout`."""

    def __init__(
        self,
        url: str | None,
        *,
        timeout: float = 0.5,
        on_error: Callable[[], None] | None = None,
        clock: Clock = time.monotonic,
        mirror: LocalCounters | None = None,
    ) -> None:
        self.url = url
        self.mirror = mirror  # the local counters that follow Redis's counts (LocalCounters.absorb)
        self.timeout = timeout
        self.on_error = on_error or (lambda: None)
        self.clock = clock
        self._client: Any = None  # redis.asyncio.Redis, made in the event loop that first counts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        self._queue: list[tuple[bytes, list[int], asyncio.Future[list[Any]]]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self.down = False
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST

    def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            assert self.url is not None
            # No retries inside redis-py: a retry would spend the request's time budget on a server that
            # just failed; the backoff below decides when to try again.
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
            self._loop = loop
        return self._client

    async def hit(self, key: bytes, limits: tuple[Limit, ...]) -> Verdict:
        """Count one request of `key` in Redis and judge it; BackendDown when Redis cannot say in time."""
        if self.url is None:
            self.on_error()
            raise BackendDown("DATAPLANE_REDIS_URL is not set")
        if self.down:
            if self.clock() < self._retry_at:
                self.on_error()
                raise BackendDown("Redis is down; retrying after a backoff")
            # This request probes; the others keep counting locally until it answers.
            self._retry_at = self.clock() + self._backoff
        args: list[int] = []
        for limit in limits:
            args += [limit.requests, limit.seconds]
        try:
            self._connect()
            loop = asyncio.get_running_loop()
            future: asyncio.Future[list[Any]] = loop.create_future()
            future.add_done_callback(_retrieved)  # a reply that came after its request gave up: no warning
            if not self._queue:
                loop.call_soon(self._send)
            self._queue.append((b"gw:rl:{" + key + b"}", args, future))
            # The Redis client's socket timeouts (connect, read) are `timeout`: they time Redis. This bound
            # only catches what they cannot (a batch stuck behind another): it is looser so that a busy
            # event loop's own lag is not taken for an outage of Redis.
            async with asyncio.timeout(self.timeout * 4):
                reply = await asyncio.shield(future)
            now = int(reply[0]) / 1000
            counts = [int(count) for count in reply[1:]]
        except Exception as exc:  # any failure of the backend (connection, timeout, reply) is an outage
            self._failed(exc)
            raise BackendDown(str(exc) or type(exc).__name__) from None
        if self.down:
            self.down = False
            self._backoff = BACKOFF_FIRST
            logger.warning("rate_limit: Redis at %s answers again; shared counting resumed", _where(self.url))
        verdict = judge(limits, counts, now)
        if self.mirror is not None:
            self.mirror.absorb(key, limits, counts, verdict.allowed, now)
        return verdict

    def _send(self) -> None:
        """Send what was queued this loop turn as one pipeline (its own task: the next turn's queue
        may go out before this one's replies are in, on another connection of the pool)."""
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._pipeline(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _pipeline(self, batch: list[tuple[bytes, list[int], asyncio.Future[list[Any]]]]) -> None:
        from redis.exceptions import NoScriptError

        client = self._client
        try:
            replies = await self._evalshas(client, batch)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # Redis restarted (or never saw the script): load it once, then ask again.
                await client.script_load(SCRIPT)
                replies = await self._evalshas(client, batch)
        except BaseException as exc:  # the connection failed: every request of the batch learns it
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else BackendDown("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _evalshas(self, client: Any, batch: list[tuple[bytes, list[int], asyncio.Future[list[Any]]]]) -> Any:
        pipe = client.pipeline(transaction=False)
        for key, args, _ in batch:
            pipe.evalsha(self._sha, 1, key, *args)
        return await pipe.execute(raise_on_error=False)

    def _failed(self, exc: BaseException) -> None:
        self.on_error()
        if not self.down:
            self.down = True
            self._backoff = BACKOFF_FIRST
            logger.warning(
                "rate_limit: Redis at %s failed (%s); counting locally (fault_tolerant) or refusing with 503 "
                "until it answers again",
                _where(self.url or ""),
                type(exc).__name__,
            )
        else:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._retry_at = self.clock() + self._backoff

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            try:
                await client.aclose()
            except Exception:  # closing a connection to a server that is gone: nothing left to do
                logger.debug("closing the rate-limit Redis client failed", exc_info=True)


class RateLimits:
    """The process's counters: local ones, and Redis's for `policy: redis` (both made from settings)."""

    def __init__(self, settings: Settings, on_backend_error: Callable[[], None] | None = None) -> None:
        self.local = LocalCounters(settings.rate_limit_max_keys)
        self.redis = RedisCounters(
            settings.redis_url, timeout=settings.redis_timeout, on_error=on_backend_error, mirror=self.local
        )

    async def aclose(self) -> None:
        await self.redis.aclose()


def hashed(value: bytes, limit: int = 64) -> bytes:
    """A counter key part: `value` itself when short, else a 16-byte digest of it (a client's 8 KiB
    header must not cost 8 KiB a key)."""
    if len(value) <= limit:
        return value
    return b"#" + hashlib.blake2b(value, digest_size=16).digest()


# One per process, replaced by `configure` when the app is built (app.build), read by the rate_limit
# plugin on each request.
RATE_LIMITS = RateLimits(Settings(node_id="-"))


def configure(settings: Settings, on_backend_error: Callable[[], None] | None = None) -> RateLimits:
    global RATE_LIMITS
    RATE_LIMITS = RateLimits(settings, on_backend_error)
    return RATE_LIMITS


__all__ = [
    "RATE_LIMITS",
    "SCRIPT",
    "BackendDown",
    "Limit",
    "LocalCounters",
    "RateLimits",
    "RedisCounters",
    "Verdict",
    "compile_limits",
    "configure",
    "hashed",
    "judge",
]
