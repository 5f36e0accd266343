"""Smooth weighted round-robin with outlier ejection (ARCHITECTURE §5).

Routable = enabled, not `unhealthy`, not ejected. A target with `consecutive_failures` failed tries
in a row is ejected for `base_ejection_seconds × times ejected`, but never more than
`max_ejection_percent` of the endpoint's targets at once, rounded down, so a lone target is never
ejected (its breaker protects it). Every try counts against its own target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .policies import OutlierPolicy, compile_outlier
from .snapshot import Target

Clock = Callable[[], float]


class TargetState:
    __slots__ = ("consecutive_failures", "current_weight", "ejected_until", "healthy", "target", "times_ejected")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.current_weight = 0
        self.consecutive_failures = 0
        self.times_ejected = 0
        self.ejected_until = 0.0
        self.healthy = True  # observed health from the control plane; `unknown` counts as routable


class Balancer:
    def __init__(
        self, targets: Sequence[Target], outlier: OutlierPolicy | Mapping[str, Any], *, clock: Clock = time.monotonic
    ) -> None:
        self.states = [TargetState(target) for target in targets]
        self.outlier = outlier if isinstance(outlier, OutlierPolicy) else compile_outlier(outlier)
        self._clock = clock

    def _ejected(self, state: TargetState, now: float) -> bool:
        return state.ejected_until > now

    def routable(self, *, panic: bool = False) -> list[TargetState]:
        now = self._clock()
        ok = [s for s in self.states if s.target.enabled and s.healthy and not self._ejected(s, now)]
        if not ok and panic:
            ok = [s for s in self.states if s.target.enabled and not self._ejected(s, now)]
        return ok

    def pick(self, *, exclude: Sequence[Target] = (), panic: bool = False) -> Target | None:
        """The next target by smooth weighted round-robin (nginx's algorithm), preferring ones not in
        `exclude` (targets this request already tried)."""
        candidates = self.routable(panic=panic)
        preferred = [s for s in candidates if s.target not in exclude] or candidates
        if not preferred:
            return None
        total = 0
        best = preferred[0]
        for state in preferred:
            state.current_weight += state.target.weight
            total += state.target.weight
            if state.current_weight > best.current_weight:
                best = state
        best.current_weight -= total
        return best.target

    def in_panic(self) -> bool:
        """True when no target is routable without `health_check.panic`."""
        return not self.routable()

    def record(self, target: Target, *, failed: bool) -> bool:
        """One try's outcome against `target`; True when it got the target ejected."""
        # `pick` hands out the balancer's own Target objects, so identity finds them without comparing
        # every field; equality is the fallback for a Target from elsewhere.
        for state in self.states:
            if state.target is target:
                break
        else:
            state = next((s for s in self.states if s.target == target), None)  # type: ignore[assignment]
            if state is None:
                return False
        if not failed:
            state.consecutive_failures = 0
            return False
        state.consecutive_failures += 1
        if state.consecutive_failures < self.outlier.consecutive_failures:
            return False
        now = self._clock()
        already = sum(1 for s in self.states if self._ejected(s, now))
        count = len(self.states)
        # A lone target is never ejected, even at max_ejection_percent 100: its breaker protects it.
        allowed = count * self.outlier.max_ejection_percent // 100 if count > 1 else 0
        if self._ejected(state, now) or already >= allowed:
            return False
        state.times_ejected += 1
        state.ejected_until = now + self.outlier.base_ejection_seconds * state.times_ejected
        state.consecutive_failures = 0
        return True

    def seconds_until_routable(self) -> float | None:
        """When the first ejected enabled target comes back, or None if none is ejected."""
        now = self._clock()
        waits = [s.ejected_until - now for s in self.states if s.target.enabled and self._ejected(s, now)]
        return min(waits) if waits else None

    def is_ejected(self, target: Target) -> bool:
        now = self._clock()
        return any(s.target == target and self._ejected(s, now) for s in self.states)
