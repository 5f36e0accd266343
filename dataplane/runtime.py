"""The data plane's mutable runtime: the current snapshot (swapped whole) and the per-endpoint state
(breaker, balancer, retry budget, response cache) that survives a reload while its config is unchanged.

This is the seam for the control-plane sync (§4): whatever produces a snapshot calls `apply`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .balancer import Balancer
from .breaker import CircuitBreaker, ResponseCache, State
from .metrics import Metrics
from .retry import RetryBudget
from .settings import Settings
from .snapshot import Endpoint, Snapshot, load_seed

logger = logging.getLogger("dataplane")

Clock = Callable[[], float]
TRANSITION_HISTORY = 20  # configdoc.reports.MAX_TRANSITIONS


@dataclass
class EndpointState:
    endpoint: Endpoint
    breaker: CircuitBreaker
    balancer: Balancer
    budget: RetryBudget
    cache: ResponseCache | None
    in_flight: int = field(default=0)


class Runtime:
    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self.states: dict[str, EndpointState] = {}
        self.applied_at = 0.0
        self.draining = False
        self.in_flight = 0
        # The last TRANSITION_HISTORY breaker transitions per endpoint key this boot, oldest first, with
        # wall-clock time: the status report's `breakers[key].transitions` (dataplane/report.py).
        self.transitions: dict[str, deque[dict[str, Any]]] = {}

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and not self.draining

    def _new_state(self, endpoint: Endpoint) -> EndpointState:
        key = endpoint.key

        def transition(old: State, new: State) -> None:
            self.metrics.circuit_transitions.labels(key, old.value, new.value).inc()
            history = self.transitions.setdefault(key, deque(maxlen=TRANSITION_HISTORY))
            history.append({"from": old.value, "to": new.value, "at": time.time()})
            self.metrics.circuit_state.labels(key).set(new.gauge)
            logger.warning("circuit of %s: %s -> %s", key, old.value, new.value)

        policy = endpoint.breaker
        cache = None
        if policy["fallback_strategy"] == "cached_response":
            cache = ResponseCache(policy["cache"], clock=self.clock)
        self.metrics.circuit_state.labels(key).set(0)
        for target in endpoint.targets:
            self.metrics.target_health.labels(key, target.url).set(1)
            self.metrics.target_ejected.labels(key, target.url).set(0)
        return EndpointState(
            endpoint=endpoint,
            breaker=CircuitBreaker(policy, clock=self.clock, on_transition=transition),
            balancer=Balancer(endpoint.targets, endpoint.outlier, clock=self.clock),
            budget=RetryBudget(clock=self.clock),
            cache=cache,
        )

    def apply(self, snapshot: Snapshot) -> None:
        """Make `snapshot` current. State is kept for endpoints whose effective config is unchanged."""
        states: dict[str, EndpointState] = {}
        for key, endpoint in snapshot.endpoints.items():
            old = self.states.get(key)
            if old is not None and old.endpoint.fingerprint == endpoint.fingerprint:
                old.endpoint = endpoint
                states[key] = old
            else:
                states[key] = self._new_state(endpoint)
        wall_now = time.time()
        for key, state in states.items():
            state.breaker.apply_override(snapshot.breaker_overrides.get(key, {}), wall_now=wall_now)
            health = snapshot.target_health.get(key, {})
            for target_state in state.balancer.states:
                target_state.healthy = health.get(target_state.target.url, "unknown") != "unhealthy"
                self.metrics.target_health.labels(key, target_state.target.url).set(int(target_state.healthy))
        # One assignment each: a request sees the old pair or the new pair's snapshot first, and looks
        # its state up by key with a fallback, so a request in between never fails.
        self.states = states
        self.snapshot = snapshot
        self.applied_at = time.time()
        self.metrics.config_revision.set(snapshot.revision or 0)
        self.metrics.set_config(snapshot.config_sha256)
        logger.info("applied config %s (%d endpoints)", snapshot.config_sha256[:12], len(snapshot.endpoints))

    def state_for(self, endpoint: Endpoint) -> EndpointState:
        state = self.states.get(endpoint.key)
        if state is None or state.endpoint.fingerprint != endpoint.fingerprint:
            state = self._new_state(endpoint)
        return state

    def refresh_gauges(self) -> None:
        """Bring the state gauges up to date before a scrape (ejections end and circuits move to
        HALF_OPEN by the clock, not by an event). Reads state without moving it."""
        now = self.clock()
        for key, state in self.states.items():
            self.metrics.circuit_state.labels(key).set(state.breaker.current_state_gauge())
            for target_state in state.balancer.states:
                ejected = target_state.ejected_until > now
                self.metrics.target_ejected.labels(key, target_state.target.url).set(int(ejected))
        if self.snapshot is not None:
            self.metrics.config_age.set(time.time() - self.applied_at)

    def _read_seed(self) -> Snapshot | None:
        """Parse, validate and compile the seed file; thread-safe (touches no runtime state)."""
        seed = self.settings.seed
        if seed is None:
            logger.warning("no seed file configured; nothing to load")
            return None
        try:
            return load_seed(seed, mount_prefix=self.settings.mount_prefix)
        except (OSError, ValueError) as exc:
            logger.error("seed %s rejected, keeping the current config: %s", seed, exc)
            return None

    def reload_seed(self) -> bool:
        """Read the seed file and apply it (at boot). A bad seed keeps the current snapshot and is logged."""
        snapshot = self._read_seed()
        if snapshot is None:
            return False
        self.apply(snapshot)
        return True

    async def reload_seed_off_loop(self) -> bool:
        """SIGHUP: the same, with parsing and validation in a thread so traffic keeps flowing; only the
        swap happens on the event loop. With a control plane the seed is only a boot fallback: ignored."""
        if self.settings.control_plane_url:
            logger.info("SIGHUP ignored: the config comes from the control plane")
            return False
        snapshot = await asyncio.to_thread(self._read_seed)
        if snapshot is None:
            return False
        self.apply(snapshot)
        return True
