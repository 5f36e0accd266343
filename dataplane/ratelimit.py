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
event loop), within `DATAPLANE_REDIS_TIMEOUT`. When Redis fails (refused, timed out, restarted) the
call raises `BackendDown`; the counters then stay "down" and skip Redis for a backoff (0.25 s doubling
to 5 s) before one request tries again, so an outage costs no request more than one timeout; the first
failure of an outage is logged once and the recovery once, and every request Redis did not count adds
to `gateway_rate_limit_backend_errors_total`. Redis restarted (scripts gone) is handled by EVALSHA's
NOSCRIPT fallback to EVAL (redis-py's Script).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from configdoc.plugins import RATE_LIMIT_WINDOWS

from .settings import RATE_LIMIT_MAX_KEYS, Settings

logger = logging.getLogger("dataplane.ratelimit")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Limit:
    """`requests` per `seconds`-long window."""

    requests: int
    seconds: int


def compile_limits(config: Sequence[Any]) -> tuple[Limit, ...]:
    """configdoc's `limits` (each `{requests, per}`) → typed limits, shortest window first."""
    limits = (Limit(int(limit["requests"]), RATE_LIMIT_WINDOWS[limit["per"]]) for limit in config)
    return tuple(sorted(limits, key=lambda limit: limit.seconds))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What counting one request decided, and what the `RateLimit-*` headers say: the most restrictive
    limit's (the least remaining; of equals, the one whose window ends last)."""

    allowed: bool
    limit: int  # RateLimit-Limit
    remaining: int  # RateLimit-Remaining, after this request
    reset: int  # RateLimit-Reset: whole seconds (rounded up) until that limit's window ends
    retry_after: int  # refused: seconds until every window that refused it has ended; else 0
    shared: bool = True  # counted where policy says (False: counted locally while Redis was down)


def judge(limits: tuple[Limit, ...], counts: Sequence[int], now: float) -> Verdict:
    """The verdict for a request given each limit's count *before* it in the current windows at `now`
    (seconds since the epoch): refused if any limit is used up; let through (and counted) otherwise."""
    allowed = True
    retry_after = 0
    best: tuple[int, float, int] | None = None  # (remaining, -seconds to reset, limit)
    for limit, count in zip(limits, counts, strict=True):
        window_end = (math.floor(now / limit.seconds) + 1) * limit.seconds
        left = window_end - now
        if count >= limit.requests:
            allowed = False
            retry_after = max(retry_after, math.ceil(left))
    for limit, count in zip(limits, counts, strict=True):
        window_end = (math.floor(now / limit.seconds) + 1) * limit.seconds
        left = window_end - now
        remaining = max(0, limit.requests - count - (1 if allowed else 0))
        candidate = (remaining, -left, limit.requests)
        if best is None or candidate < best:
            best = candidate
    assert best is not None, "an endpoint's rate_limit has at least one limit"
    return Verdict(
        allowed=allowed,
        limit=best[2],
        remaining=best[0],
        reset=max(1, math.ceil(-best[1])),
        retry_after=max(1, retry_after) if not allowed else 0,
    )


class LocalCounters:
    """This process's counters: key → `[expires_at, seconds, window, count, seconds, window, count, ...]`
    (one triple per limit), in least-recently-used order, at most `max_keys` keys (see the module's
    docstring for the eviction rule). Event-loop thread only."""

    def __init__(self, max_keys: int = RATE_LIMIT_MAX_KEYS, *, clock: Clock = time.time) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._entries: OrderedDict[bytes, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, key: bytes, limits: tuple[Limit, ...]) -> Verdict:
        """Count one request of `key` against `limits` (if every limit has room) and judge it."""
        now = self.clock()
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            entry = self._new(key)
        else:
            entries.move_to_end(key)
        if len(entry) != 1 + 3 * len(limits) or any(
            entry[1 + 3 * index] != limit.seconds for index, limit in enumerate(limits)
        ):
            entry[:] = self._realigned(entry, limits)
        counts = []
        for index, limit in enumerate(limits):
            window = int(now // limit.seconds)
            at = 2 + 3 * index
            if entry[at] != window:
                entry[at], entry[at + 1] = window, 0
            counts.append(entry[at + 1])
        verdict = judge(limits, counts, now)
        if verdict.allowed:
            for index in range(len(limits)):
                entry[3 + 3 * index] += 1
        entry[0] = max((int(now // limit.seconds) + 1) * limit.seconds for limit in limits)
        return verdict

    def _new(self, key: bytes) -> list[int]:
        entries = self._entries
        if len(entries) >= self.max_keys:
            now = self.clock()
            # Keys whose windows have all ended go first, then the least recently used: a few per
            # insert, so the table never holds more than max_keys and no insert pays for a sweep.
            for _ in range(2):
                oldest = next(iter(entries.values()), None)
                if oldest is None or oldest[0] > now:
                    break
                entries.popitem(last=False)
            while len(entries) >= self.max_keys:
                entries.popitem(last=False)
        entry: list[int] = [0]
        entries[key] = entry
        return entry

    @staticmethod
    def _realigned(entry: list[int], limits: tuple[Limit, ...]) -> list[int]:
        """The entry for `limits` (the config changed, or the entry is new): counts of windows it had kept."""
        kept = {entry[at]: (entry[at + 1], entry[at + 2]) for at in range(1, len(entry) - 2, 3)}
        result = [entry[0]]
        for limit in limits:
            window, count = kept.get(limit.seconds, (-1, 0))
            result += [limit.seconds, window, count]
        return result


# The shared count: KEYS[1] is the caller's key (a hash-tagged prefix, so a cluster keeps one caller's
# windows in one slot); ARGV is (requests, seconds) per limit. Windows follow Redis's clock (TIME), so
# the nodes' clocks never disagree on where a window starts. Returns Redis's time in milliseconds and
# each limit's count before this request; the request is counted (every window INCRemented) only when
# every limit has room, by the same rule as `judge`. A window's key expires a second after it ends.
SCRIPT = """
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


class RedisCounters:
    """The fleet's shared counters in Redis (`DATAPLANE_REDIS_URL`): one round trip per request."""

    def __init__(
        self,
        url: str | None,
        *,
        timeout: float = 0.1,
        on_error: Callable[[], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_error = on_error or (lambda: None)
        self.clock = clock
        self._client: Any = None  # redis.asyncio.Redis, made in the event loop that first counts
        self._script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
            self._script = self._client.register_script(SCRIPT)
            self._loop = loop
        return self._script

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
            script = self._connect()
            async with asyncio.timeout(self.timeout):
                reply = await script(keys=[b"gw:rl:{" + key + b"}"], args=args)
            now = int(reply[0]) / 1000
            counts = [int(count) for count in reply[1:]]
        except Exception as exc:  # any failure of the backend (connection, timeout, reply) is an outage
            self._failed(exc)
            raise BackendDown(str(exc) or type(exc).__name__) from None
        if self.down:
            self.down = False
            self._backoff = BACKOFF_FIRST
            logger.warning("rate_limit: Redis at %s answers again; shared counting resumed", _where(self.url))
        return judge(limits, counts, now)

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
        client, self._client, self._script = self._client, None, None
        if client is not None and self._loop is asyncio.get_running_loop():
            try:
                await client.aclose()
            except Exception:  # closing a connection to a server that is gone: nothing left to do
                logger.debug("closing the rate-limit Redis client failed", exc_info=True)


class RateLimits:
    """The process's counters: local ones, and Redis's for `policy: redis` (both made from settings)."""

    def __init__(self, settings: Settings, on_backend_error: Callable[[], None] | None = None) -> None:
        self.local = LocalCounters(settings.rate_limit_max_keys)
        self.redis = RedisCounters(settings.redis_url, timeout=settings.redis_timeout, on_error=on_backend_error)

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
