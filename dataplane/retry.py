"""Retry rules and the retry budget (ARCHITECTURE §5).

`attempts` counts all tries. A connect error retries any method (nothing was sent); other conditions
only idempotent methods unless `retry_non_idempotent`; bodies over 64 KiB are not replayed. The
budget, per endpoint per worker: a retry is allowed while retries in the last 10 s are fewer than
max(3, 0.2 × client requests in the last 10 s), so a 503 storm cannot multiply upstream load.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

Clock = Callable[[], float]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
REPLAY_LIMIT = 64 * 1024
BUDGET_WINDOW = 10.0
BUDGET_RATIO = 0.2
BUDGET_MINIMUM = 3


class RetryBudget:
    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - BUDGET_WINDOW
        for events in (self._requests, self._retries):
            while events and events[0] <= horizon:
                events.popleft()

    def record_request(self) -> None:
        now = self._clock()
        self._trim(now)
        self._requests.append(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget, or False when it is spent."""
        now = self._clock()
        self._trim(now)
        if len(self._retries) >= max(BUDGET_MINIMUM, BUDGET_RATIO * len(self._requests)):
            return False
        self._retries.append(now)
        return True


def may_retry(policy: Mapping[str, Any], method: str, condition: str, *, replayable: bool) -> bool:
    """Whether a failed try may be tried again, before the budget and the deadline are asked.
    `condition` is the failure's (`connect_error`, `timeout`, ...) or "status": the answer's status is
    one `on` lists (the caller asks `Endpoint.retry_statuses`)."""
    on = policy["on"]
    if condition != "status" and condition not in on and not (condition == "connect_timeout" and "connect_error" in on):
        return False
    if condition in ("connect_error", "connect_timeout"):
        return True  # nothing reached the upstream: any method, any body
    return replayable and _repeatable(policy, method)


def _repeatable(policy: Mapping[str, Any], method: str) -> bool:
    """Whether the upstream may see this method twice: idempotent, or `retry_non_idempotent`."""
    return method in IDEMPOTENT or bool(policy["retry_non_idempotent"])


def replays_after_sending(policy: Mapping[str, Any], method: str) -> bool:
    """Whether a try that reached the upstream may be retried for this method at all (so a body worth
    keeping for a replay): more than one attempt, a condition besides `connect_error`, and a method
    that may be repeated."""
    return (
        int(policy["attempts"]) > 1
        and any(condition != "connect_error" for condition in policy["on"])
        and _repeatable(policy, method)
    )


def per_try_timeout(policy: Mapping[str, Any], timeout: float) -> float:
    configured = policy.get("per_try_timeout")
    return float(configured) if configured else timeout / int(policy["attempts"])


def backoff(attempt: int) -> float:
    """Jittered back-off before try `attempt` (2, 3, ...): up to 25 ms, 50 ms, ... capped at 250 ms."""
    return random.uniform(0, min(0.25, 0.025 * 2 ** (attempt - 2)))
