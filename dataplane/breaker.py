"""The circuit breaker (ARCHITECTURE §6): per endpoint, per worker, on an injected monotonic clock.

    CLOSED ──(failure_threshold consecutive failures, or failure rate over the window)──► OPEN
    OPEN ──(reset_timeout passed; checked lazily by the next request)──► HALF_OPEN
    HALF_OPEN ──(success_threshold consecutive probe successes)──► CLOSED
    HALF_OPEN ──(any probe failure)──► OPEN (timer restarted)

An operator can force OPEN or CLOSED (optionally until a deadline) and reset the circuit; a reset
travels as a growing `reset_generation`, acted on once.

While OPEN, and for requests beyond `half_open_max_calls` probes in flight while HALF_OPEN, callers
get the fallback. The breaker counts one outcome per client request; local rejections never count.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .policies import BreakerPolicy, CacheLimits, compile_breaker, compile_cache_limits

Clock = Callable[[], float]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """The value of `gateway_circuit_state` (§9)."""
        return {State.CLOSED: 0, State.OPEN: 1, State.HALF_OPEN: 2}[self]


@dataclass(frozen=True)
class Permit:
    """What `CircuitBreaker.acquire` granted: a normal call, or one of the bounded half-open probes."""

    probe: bool


NORMAL = Permit(probe=False)
PROBE = Permit(probe=True)

Transition = Callable[[State, State], None]


class CircuitBreaker:
    def __init__(
        self,
        policy: BreakerPolicy | Mapping[str, Any],
        *,
        clock: Clock = time.monotonic,
        on_transition: Transition | None = None,
    ):
        # A mapping (the effective policy, as configdoc gives it) is compiled here: tests and tools.
        self.policy = policy if isinstance(policy, BreakerPolicy) else compile_breaker(policy)
        self._clock = clock
        self._on_transition = on_transition
        self._state = State.CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        # The rate rule's window: when each call and each failed call ended, oldest first. Two deques
        # of times rather than one of (time, failed) pairs, so the rule reads the counts as lengths:
        # O(1) per call however many calls the window holds.
        self._calls: deque[float] = deque()
        self._failures: deque[float] = deque()
        self._failure_statuses = self.policy.failure_statuses
        # Operator overrides (§6): a forced state, until a monotonic deadline (None: until lifted).
        self._forced: State | None = None
        self._forced_until: float | None = None
        self._reset_generation = 0

    @property
    def state(self) -> State:
        """The state as the next request would find it (OPEN turns HALF_OPEN lazily after reset_timeout)."""
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.policy.reset_timeout:
            self._move(State.HALF_OPEN)
            self._probes_in_flight = 0
            self._probe_successes = 0
        return self._state

    def peek(self) -> State:
        """The breaker's own state as the next request would find it (overrides aside), without making
        the OPEN → HALF_OPEN move: reading it changes nothing."""
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.policy.reset_timeout:
            return State.HALF_OPEN
        return self._state

    def current_state_gauge(self) -> int:
        """`gateway_circuit_state` as the next request would find it, without making the transition:
        an operator's forced state first."""
        forced = self.forced()
        if forced is not None:
            return forced.gauge
        return self.peek().gauge

    def retry_after(self) -> int:
        """Seconds until the circuit will next let a request through (at least 1): a probe after
        `reset_timeout`, or the end of an operator's forced OPEN (`reset_timeout` as the hint when it has
        no end)."""
        if self.forced() is State.OPEN:
            until = self._forced_until
            remaining = until - self._clock() if until is not None else float(self.policy.reset_timeout)
        else:
            remaining = self.policy.reset_timeout - (self._clock() - self._opened_at)
        return max(1, int(remaining + 0.999))

    def forced(self) -> State | None:
        """The forced state in effect, if any (an expired override lifts itself)."""
        if self._forced is not None and self._forced_until is not None and self._clock() >= self._forced_until:
            self._forced = self._forced_until = None
        return self._forced

    def acquire(self) -> Permit | None:
        """A permit to call the upstream, or None: serve the fallback."""
        forced = self.forced()
        if forced is State.OPEN:
            return None
        if forced is State.CLOSED:
            return NORMAL
        state = self.state
        if state is State.CLOSED:
            return NORMAL
        if state is State.HALF_OPEN and self._probes_in_flight < self.policy.half_open_max_calls:
            self._probes_in_flight += 1
            return PROBE
        return None

    def is_failure_status(self, status: int) -> bool:
        return status in self._failure_statuses

    def record(self, permit: Permit, *, failed: bool) -> None:
        """One client request's outcome."""
        now = self._clock()
        if permit.probe:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if self._state is not State.HALF_OPEN:
                return  # a probe that outlived its half-open period (another probe already decided)
            if failed:
                self._open(now)
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.policy.success_threshold:
                    self._close()
            return
        if self._state is not State.CLOSED:
            return  # a call let through while CLOSED that finished after the circuit opened
        calls, failures = self._calls, self._failures
        calls.append(now)
        if failed:
            failures.append(now)
        horizon = now - self.policy.window_seconds
        while calls[0] < horizon:
            calls.popleft()
        while failures and failures[0] < horizon:
            failures.popleft()
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        if self._forced is State.CLOSED:
            return  # forced closed: outcomes are kept, but the operator's word holds
        if self._consecutive_failures >= self.policy.failure_threshold or self._rate_exceeded():
            self._open(now)

    def release(self, permit: Permit) -> None:
        """The call ended without an outcome that counts (client abort, local rejection)."""
        if permit.probe:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def force(self, state: State | None, *, seconds: float | None = None) -> None:
        """An operator override (§6): force OPEN or CLOSED, for `seconds` or until lifted (None)."""
        self._forced = state
        self._forced_until = None if state is None or seconds is None else self._clock() + seconds

    def reset(self, generation: int) -> bool:
        """Act once on a reset whose generation grew: back to CLOSED with clean counters."""
        if generation <= self._reset_generation:
            return False
        self._reset_generation = generation
        self._close()
        return True

    def apply_override(self, override: Mapping[str, Any], *, wall_now: float) -> None:
        """The control plane's override for this endpoint (snapshot `state.breakers[key]`):
        `{"force": "open"|"closed"|null, "until": <unix seconds>|null, "reset_generation": <int>}`."""
        self.reset(int(override.get("reset_generation") or 0))
        force = override.get("force")
        until = override.get("until")
        seconds = None if until is None else float(until) - wall_now
        if force in ("open", "closed") and (seconds is None or seconds > 0):
            self.force(State(force), seconds=seconds)
        else:
            self.force(None)

    def _rate_exceeded(self) -> bool:
        threshold = self.policy.failure_rate_threshold
        calls = len(self._calls)
        if threshold is None or calls < self.policy.minimum_calls:
            return False
        return bool(len(self._failures) * 100 >= threshold * calls)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._move(State.OPEN)

    def _close(self) -> None:
        self._consecutive_failures = 0
        self._calls.clear()
        self._failures.clear()
        self._move(State.CLOSED)

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_transition is not None:
            self._on_transition(old, new)


# --- cached_response -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    stored_at: float


def _header(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


class ResponseCache:
    """The last 2xx answer per GET/HEAD path + query (+ the request headers the answer `Vary`s on),
    bounded by entries, bytes and age. Only answers safe to show another caller are stored."""

    def __init__(self, limits: CacheLimits | Mapping[str, Any], *, clock: Clock = time.monotonic) -> None:
        if not isinstance(limits, CacheLimits):
            limits = compile_cache_limits(limits)
        self.max_entries = limits.max_entries
        self.max_bytes = limits.max_bytes
        self.max_age = limits.max_age
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[tuple[bytes, ...], tuple[bytes, ...], CachedResponse]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def request_cacheable(method: str, request_headers: list[tuple[bytes, bytes]]) -> bool:
        if method not in ("GET", "HEAD"):
            return False
        return not any(name in (b"authorization", b"cookie") for name, _ in request_headers)

    @staticmethod
    def response_cacheable(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        if not 200 <= status < 300 or _header(headers, b"set-cookie"):
            return False
        control = b",".join(_header(headers, b"cache-control")).lower()
        if b"private" in control or b"no-store" in control:
            return False
        return not any(b"*" in value for value in _header(headers, b"vary"))

    def store(
        self,
        path_and_query: bytes,
        request_headers: list[tuple[bytes, bytes]],
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        if len(body) > self.max_bytes:
            return
        vary = tuple(
            sorted(
                {token.strip().lower() for value in _header(headers, b"vary") for token in value.split(b",")} - {b""}
            )
        )
        self._remove(path_and_query)
        selected = tuple(b",".join(_header(request_headers, name)) for name in vary)
        self._entries[path_and_query] = (vary, selected, CachedResponse(status, tuple(headers), body, self._clock()))
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def lookup(
        self, path_and_query: bytes, request_headers: list[tuple[bytes, bytes]]
    ) -> tuple[CachedResponse, int] | None:
        """The stored answer and its age in whole seconds, or None."""
        entry = self._entries.get(path_and_query)
        if entry is None:
            return None
        vary, selected, cached = entry
        if tuple(b",".join(_header(request_headers, name)) for name in vary) != selected:
            return None
        age = self._clock() - cached.stored_at
        if age > self.max_age:
            self._remove(path_and_query)
            return None
        return cached, int(age)

    def _remove(self, path_and_query: bytes) -> None:
        entry = self._entries.pop(path_and_query, None)
        if entry is not None:
            self._bytes -= len(entry[2].body)
