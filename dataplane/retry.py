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
from collections.abc import Callable

from .errors import UpstreamConnectError, UpstreamError
from .policies import NOTHING_SENT, RetryPolicy

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


def may_retry(policy: RetryPolicy, method: str, failure: UpstreamError | None, *, replayable: bool) -> bool:
    """Whether a failed try may be tried again, before the budget and the deadline are asked.
    `failure` is the try's error (its class decides), or None: the answer's status is one `on` lists
    (the caller asks `RetryPolicy.statuses`)."""
    if failure is not None:
        if isinstance(failure, NOTHING_SENT):
            # Nothing reached the upstream: any method, any body, when `connect_error` is asked for.
            return UpstreamConnectError in policy.on_errors
        if not isinstance(failure, policy.on_errors):
            return False
    return replayable and _repeatable(policy, method)


def _repeatable(policy: RetryPolicy, method: str) -> bool:
    """Whether the upstream may see this method twice: idempotent, or `retry_non_idempotent`."""
    return method in IDEMPOTENT or policy.retry_non_idempotent


def replays_after_sending(policy: RetryPolicy, method: str) -> bool:
    """Whether a try that reached the upstream may be retried for this method at all (so a body worth
    keeping for a replay): more than one attempt, a condition besides `connect_error`, and a method
    that may be repeated."""
    return policy.attempts > 1 and policy.after_sending and _repeatable(policy, method)


def per_try_timeout(policy: RetryPolicy, timeout: float) -> float:
    return policy.per_try_timeout or timeout / policy.attempts


def backoff(attempt: int) -> float:
    """Jittered back-off before try `attempt` (2, 3, ...): up to 25 ms, 50 ms, ... capped at 250 ms."""
    return random.uniform(0, min(0.25, 0.025 * 2 ** (attempt - 2)))
