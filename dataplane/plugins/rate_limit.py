"""`rate_limit` (ARCHITECTURE §11): limit requests per window by consumer, client address, a header's
value or the endpoint as a whole (phase LATE, priority 400: after authentication and `acl`, so the
consumer is known and a refused caller costs no count; before overload and the breaker).

What is counted, per endpoint (`by`):

- `consumer`: the consumer the authentication phase named; the `anonymous` consumer counts as one
  caller of its own (every credential-less request shares its allowance); a caller without any
  consumer (no authentication plugin, forward_auth without a consumer, authentication in report mode)
  is counted by client address instead;
- `ip`: the client address (`Exchange.client_address()`: the peer, or behind a trusted proxy the first
  untrusted `X-Forwarded-For` hop); one that cannot be told shares one count;
- `header`: the value of `header_name` as the client sent it. It is the client's word: a client that
  varies it gets fresh counts, so count by a header only behind something that sets it (a front proxy,
  a client id checked by an auth plugin). Sent more than once, the values joined with ", " (RFC 9110
  §5.3) are the one key, a count distinct from each single value's; without the header the request is
  counted by client address. Long values are counted by a digest (ratelimit.hashed);
- `endpoint`: every caller together.

Counting and the algorithm (fixed windows, exact): see dataplane/ratelimit.py. `policy: local` counts
in this process; `policy: redis` in Redis, shared by every node (one round trip per request), and when
Redis cannot answer within `DATAPLANE_REDIS_TIMEOUT`: `fault_tolerant: true` counts locally and serves
on, `false` answers 503 `rate_limit_unavailable` (`Retry-After: 1`). Never a 5xx of another kind.

Every answer of the endpoint after the count (the upstream's, the 429, a later gateway error) carries
`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (whole seconds) of the most restrictive
limit: the one with the least remaining. Over a limit: 429 `rate_limited` with `Retry-After`. In
`mode: report` a request over the limit goes through, counted as `would_deny` (and not counted against
the limit, as a refused request is not), and no `RateLimit-*` headers are sent: clients see nothing
until the limit is enforced. `gateway_policy_decisions_total{plugin="rate_limit"}` counts `allow`,
`deny` and `would_deny`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .. import ratelimit
from ..errors import RateLimited, RateLimitUnavailable
from ..exchange import Exchange
from ..forwarding import packed_address
from ..ratelimit import BackendDown, Limit, Verdict, compile_limits, hashed
from ..types import Headers
from . import Answer, Phase, Plugin, PluginContext, on_shutdown, register

_VERDICT = "rate_limit"  # the key of Exchange.note() holding the request's Verdict (for the headers)


class RateLimit(Plugin):
    """`policy: local`: a plain call, no await."""

    name: ClassVar[str] = "rate_limit"
    phase: ClassVar[Phase] = Phase.LATE
    priority: ClassVar[int] = 400

    def __init__(
        self, limits: tuple[Limit, ...], by: str, header_name: str | None, *, fault_tolerant: bool, report: bool
    ) -> None:
        self.limits = limits
        self.by = by
        self.header = header_name.lower().encode("ascii") if header_name else b""
        self.fault_tolerant = fault_tolerant
        self.report = report

    # --- who is counted ---------------------------------------------------------------------------

    def key(self, exchange: Exchange) -> bytes:
        """The counter key: the endpoint, then what `by` names (a kind letter first, so a consumer
        named like an address never shares an address's count)."""
        endpoint = (exchange.endpoint_key or "").encode()
        by = self.by
        if by == "endpoint":
            return endpoint + b"\x00e"
        if by == "consumer":
            who = exchange.caller
            if who is not None and who.consumer is not None:
                return endpoint + b"\x00c\x00" + hashed(who.consumer.username.encode())
        elif by == "header":
            values = [value for name, value in exchange.headers if name == self.header]
            if values:
                return endpoint + b"\x00h\x00" + self.header + b"\x00" + hashed(b", ".join(values))
        if exchange.forwarding.trusted_proxies:
            address = exchange.client_address()
            packed = address.packed if address is not None else None
        else:  # the client is the peer (Forwarding.client_address): its bytes from a cache
            client = exchange.scope.get("client")
            packed = packed_address(client[0]) if client else None
        return endpoint + b"\x00i\x00" + (packed if packed is not None else b"?")

    # --- the decision -----------------------------------------------------------------------------

    def access(self, exchange: Exchange) -> Answer | None:
        return self.decide(exchange, ratelimit.RATE_LIMITS.local.hit(self.key(exchange), self.limits))

    def decide(self, exchange: Exchange, verdict: Verdict) -> Answer | None:
        if verdict.allowed:
            exchange.decide(self.name, "allow")
            if not self.report:
                context = exchange.context
                if context is None:
                    exchange.context = {_VERDICT: verdict}
                else:
                    context[_VERDICT] = verdict
            return None
        if self.report:
            exchange.decide(self.name, "would_deny")
            exchange.detail = f"rate_limit (report mode) would refuse: over {verdict.limit} requests"
            return None
        exchange.decide(self.name, "deny")
        exchange.note()[_VERDICT] = verdict
        raise RateLimited(
            f"too many requests; retry in {verdict.retry_after} s",
            headers=[(b"retry-after", str(verdict.retry_after).encode())],
            detail=f"rate_limit refused: over {verdict.limit} requests in a window"
            + ("" if verdict.shared else " (counted locally: Redis down)"),
        )

    def response(self, exchange: Exchange, headers: Headers) -> None:
        context = exchange.context
        verdict: Verdict | None = None if context is None else context.get(_VERDICT)
        if verdict is not None:
            headers += (
                (b"ratelimit-limit", b"%d" % verdict.limit),
                (b"ratelimit-remaining", b"%d" % verdict.remaining),
                (b"ratelimit-reset", b"%d" % verdict.reset),
            )


class RedisRateLimit(RateLimit):
    """`policy: redis`: the count is a round trip to Redis, so the access hook awaits."""

    awaits: ClassVar[bool] = True

    async def access_async(self, exchange: Exchange) -> Answer | None:
        key = self.key(exchange)
        limits = ratelimit.RATE_LIMITS
        try:
            verdict = await limits.redis.hit(key, self.limits)
        except BackendDown as down:
            if not self.fault_tolerant and not self.report:
                exchange.decide(self.name, "deny")
                raise RateLimitUnavailable(
                    "the rate limit cannot be checked right now; retry shortly",
                    headers=[(b"retry-after", b"1")],
                    detail=f"rate_limit: Redis did not count ({down})",
                ) from None
            counted = limits.local.hit(key, self.limits)
            verdict = Verdict(
                counted.allowed, counted.limit, counted.remaining, counted.reset, counted.retry_after, shared=False
            )
        return self.decide(exchange, verdict)


@register("rate_limit")
def compile_rate_limit(config: Mapping[str, Any], context: PluginContext) -> Plugin:
    """configdoc's effective config (limits, by, header_name, policy, fault_tolerant, mode, enabled) → the
    plugin; `policy: redis` makes the awaiting kind, so a local limit stays a plain call."""
    kind = RedisRateLimit if config["policy"] == "redis" else RateLimit
    return kind(
        compile_limits(config["limits"]),
        config["by"],
        config["header_name"] if config["by"] == "header" else None,
        fault_tolerant=config["fault_tolerant"],
        report=config["mode"] == "report",
    )


@on_shutdown
async def _close_counters() -> None:
    """The process's Redis connections (policy: redis), if any; read at shutdown, since app.build
    replaces the module's RateLimits when it configures the process."""
    await ratelimit.RATE_LIMITS.aclose()
