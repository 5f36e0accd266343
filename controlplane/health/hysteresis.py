"""The health state machine of ARCHITECTURE §7, as a pure function.

    unknown ──(unhealthy_threshold consecutive failures)──► unhealthy
       │                                                      ▲  │
       └──(healthy_threshold consecutive successes)──► healthy ┘  │
                                                          ▲──────┘

Every probe counts, the first too: a new target with healthy_threshold 1 is healthy after one good
probe. A success resets the failure run and a failure the success run; the status changes only when
a run reaches its threshold, so a flapping target keeps its status.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN, HEALTHY, UNHEALTHY = "unknown", "healthy", "unhealthy"


@dataclass(frozen=True)
class HealthState:
    status: str = UNKNOWN
    consecutive_successes: int = 0
    consecutive_failures: int = 0


def advance(state: HealthState, *, ok: bool, healthy_threshold: int, unhealthy_threshold: int) -> HealthState:
    """The state after one probe."""
    if ok:
        successes = state.consecutive_successes + 1
        status = HEALTHY if successes >= healthy_threshold else state.status
        return HealthState(status, successes, 0)
    failures = state.consecutive_failures + 1
    status = UNHEALTHY if failures >= unhealthy_threshold else state.status
    return HealthState(status, 0, failures)
