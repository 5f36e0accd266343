"""The data plane's mutable runtime: the current snapshot (swapped whole) and the per-endpoint state
(breaker, balancer, retry budget, response cache) that survives a reload.

What survives a change to an endpoint (an operator editing its description must not close a circuit
that is open on every node): the breaker, and the response cache its fallback serves from, unless the
endpoint's breaker policy or the targets it sends to changed; the balancer (ejections, round-robin
position) unless its targets or outlier settings changed; the retry budget (a measure of recent traffic)
always. A breaker that is not closed and is replaced is a transition to closed like any other: counted
in `gateway_circuit_transitions_total`, logged with the reason, and in the next status report.

This is the seam for the control-plane sync (§4): whatever produces a snapshot calls `apply` (at boot,
in tests) or `apply_off_loop` (the sync client, SIGHUP). Applying is two steps so the event loop does
only what changed (applying 10,000 endpoints all on the loop stalled every request for 1.9 s):

- `prepare` (any thread, touches no live state): a state for each new or changed endpoint, its metric
  label children made, the control plane's override and target health put on it; for the endpoints
  whose state is kept, which of them got a different override or health than the current snapshot's.
- `commit` (the event loop): the kept states with a new override or health get it, the states and the
  snapshot are swapped with one assignment each. A preparation made against states that have been
  replaced since is refused (`StalePreparation`), never committed over newer ones.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .balancer import Balancer
from .breaker import CircuitBreaker, ResponseCache, State
from .metrics import Metrics
from .retry import RetryBudget
from .settings import Settings
from .snapshot import Endpoint, Snapshot, SnapshotError, Target, load_seed
from .tls import Certificates

logger = logging.getLogger("dataplane")

Clock = Callable[[], float]
TRANSITION_HISTORY = 20  # configdoc.reports.MAX_TRANSITIONS
# A config this large is frozen out of the cyclic collector once applied (`gc.freeze()`, as the process
# does with what exists at boot): its ~100 objects per endpoint live until a later config replaces them,
# and without this every full collection walks them all holding the interpreter: at 10,000 endpoints,
# event-loop stalls of ~360 ms and p99 x3 (bench/large_config.py, docs/performance.md). Frozen objects
# are still freed by reference counting when the next config replaces them (a snapshot holds no cycles);
# only cyclic garbage that exists at that moment is kept for good (a few KiB per large apply).
FREEZE_AT_ENDPOINTS = 1_000


class StateGauges:
    """An endpoint state's label children of the state gauges, made once when the state is built
    (prometheus_client's `.labels()` costs a lock and a lookup each time): `gateway_circuit_state`,
    and per target, in the balancer's order, `gateway_target_health` and `gateway_target_ejected`."""

    __slots__ = ("circuit", "ejected", "health")

    def __init__(self, metrics: Metrics, key: str, targets: tuple[Target, ...]) -> None:
        self.circuit = metrics.circuit_state.labels(key)
        self.health = tuple(metrics.target_health.labels(key, target.url) for target in targets)
        self.ejected = tuple(metrics.target_ejected.labels(key, target.url) for target in targets)


@dataclass(slots=True)
class EndpointState:
    endpoint: Endpoint
    breaker: CircuitBreaker
    balancer: Balancer
    cache: ResponseCache | None
    gauges: StateGauges
    clock: Clock
    in_flight: int = field(default=0)
    _budget: RetryBudget | None = field(default=None)

    @property
    def budget(self) -> RetryBudget:
        """The retry budget, made by the first request that needs it: of 10,000 endpoints most may see
        none, and an unused budget's two empty deques cost ~1.4 KiB."""
        if self._budget is None:
            self._budget = RetryBudget(clock=self.clock)
        return self._budget

    def set_health(self, health: Mapping[str, str]) -> None:
        """The control plane's observed target health `{url: status}` (absent: `unknown`, routable)."""
        for target_state in self.balancer.states:
            target_state.healthy = health.get(target_state.target.url, "unknown") != "unhealthy"

    def show(self) -> None:
        """Put this state's values in its gauges, as a new state replaces whatever state its key had:
        its circuit, and per target the health it was given and whether it is ejected (a balancer
        carried over from the state before may have ejections)."""
        self.gauges.circuit.set(self.breaker.current_state_gauge())
        now = self.clock()
        for target_state, health, ejected in zip(
            self.balancer.states, self.gauges.health, self.gauges.ejected, strict=True
        ):
            health.set(int(target_state.healthy))
            ejected.set(int(target_state.ejected_until > now))

    def show_health(self) -> None:
        """Put the targets' health in `gateway_target_health` (a kept state whose health changed)."""
        for target_state, health in zip(self.balancer.states, self.gauges.health, strict=True):
            health.set(int(target_state.healthy))


def _upstreams(endpoint: Endpoint) -> frozenset[str]:
    """The targets an endpoint sends traffic to: what its breaker has been judging."""
    return frozenset(target.url for target in endpoint.targets if target.enabled)


def breaker_survives(before: Endpoint, after: Endpoint) -> bool:
    """Whether an endpoint's breaker state (and the cached answers its fallback serves) carries over to its
    new config: it judged these upstreams under this policy, and still would (a new description, timeout
    or route says nothing about whether the upstream is failing)."""
    return before.breaker == after.breaker and _upstreams(before) == _upstreams(after)


def balancer_survives(before: Endpoint, after: Endpoint) -> bool:
    """Whether the ejections and round-robin position carry over: the same targets, weights and outlier rules."""
    return before.targets == after.targets and before.outlier == after.outlier


class StalePreparation(RuntimeError):
    """The states a preparation was made against were replaced before it was committed."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What `Runtime.prepare` made of a snapshot, for `Runtime.commit`."""

    snapshot: Snapshot
    generation: int  # Runtime.generation when prepared: commit refuses it once that moved on
    states: dict[str, EndpointState]
    # New states whose key had a state before: their gauges are shared with it, so they are set on commit.
    replacing: tuple[EndpointState, ...]
    # Kept states whose override or target health differs from the current snapshot's.
    overrides: tuple[str, ...]
    health: tuple[str, ...]
    # Kept states whose Endpoint is an equal (same fingerprint) but different object.
    rebind: tuple[str, ...]
    # Breakers that were not closed and are replaced by a closed one (the endpoint's breaker policy or
    # targets changed): (endpoint key, the state it was in, why), recorded as transitions on commit.
    resets: tuple[tuple[str, State, str], ...] = ()
    # Gauge series of endpoints and targets the snapshot no longer has, removed on commit:
    # (endpoint key, whether the endpoint is gone, target URLs gone).
    retired: tuple[tuple[str, bool, tuple[str, ...]], ...] = ()


def _changed_keys(new: Mapping[str, Any], old: Mapping[str, Any], keys: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys of `keys` whose entry differs between `new` and `old` (looked at only where either has one)."""
    return tuple(key for key in new.keys() | old.keys() if key in keys and new.get(key) != old.get(key))


class Runtime:
    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self.states: dict[str, EndpointState] = {}
        self.generation = 0  # how many snapshots were committed: what a preparation is checked against
        self._applying = asyncio.Lock()
        self.applied_at = 0.0
        self.draining = False
        self.in_flight = 0
        # The TLS listener's certificates (tls.Certificates) when one is configured: reported (§4, report.py).
        self.certificates: Certificates | None = None
        # The last TRANSITION_HISTORY breaker transitions per endpoint key this boot, oldest first, with
        # wall-clock time: the status report's `breakers[key].transitions` (dataplane/report.py).
        self.transitions: dict[str, deque[dict[str, Any]]] = {}
        # Why the last seed read failed, one problem a line (None after a good read): a standalone node
        # that boots on a bad seed exits with it (process.py) instead of living on, never ready.
        self.seed_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and not self.draining

    def _record_transition(self, key: str, old: State, new: State, why: str = "") -> None:
        """A breaker transition of endpoint `key`: the counter, the report's history, the log."""
        self.metrics.circuit_transitions.labels(key, old.value, new.value).inc()
        history = self.transitions.setdefault(key, deque(maxlen=TRANSITION_HISTORY))
        history.append({"from": old.value, "to": new.value, "at": time.time()})
        logger.warning("circuit of %s: %s -> %s%s", key, old.value, new.value, f" ({why})" if why else "")

    def _new_state(self, endpoint: Endpoint, before: EndpointState | None = None) -> EndpointState:
        """A state for `endpoint`, its gauges not set (`EndpointState.show`). With `before` (the state its
        key had), the parts whose inputs did not change are carried over (see the module docstring)."""
        key = endpoint.key
        gauges = StateGauges(self.metrics, key, endpoint.targets)
        if before is not None and breaker_survives(before.endpoint, endpoint):
            breaker, cache = before.breaker, before.cache
        else:

            def transition(old: State, new: State) -> None:
                self._record_transition(key, old, new)
                gauges.circuit.set(new.gauge)

            policy = endpoint.breaker
            breaker = CircuitBreaker(policy, clock=self.clock, on_transition=transition)
            cache = None
            if policy.fallback_strategy == "cached_response":
                cache = ResponseCache(policy.cache, clock=self.clock)
        if before is not None and balancer_survives(before.endpoint, endpoint):
            balancer = before.balancer
        else:
            balancer = Balancer(endpoint.targets, endpoint.outlier, clock=self.clock)
        return EndpointState(
            endpoint=endpoint,
            breaker=breaker,
            balancer=balancer,
            cache=cache,
            gauges=gauges,
            clock=self.clock,
            _budget=before._budget if before is not None else None,
        )

    def prepare(self, snapshot: Snapshot) -> Prepared:
        """Everything of applying `snapshot` that can run off the event loop (see the module docstring).
        Reads the current states and snapshot, changes neither: states for new and changed endpoints,
        with the snapshot's override and health already on them (nothing else sees them yet)."""
        generation, current, previous = self.generation, self.states, self.snapshot
        states: dict[str, EndpointState] = {}
        kept: dict[str, EndpointState] = {}
        # Keys whose breaker (and so its override) or balancer (and so its targets' health) is carried
        # into a new state: like kept states, they get only what changed since the current snapshot.
        carried_breakers: dict[str, None] = {}
        carried_balancers: dict[str, None] = {}
        replacing: list[EndpointState] = []
        rebind: list[str] = []
        resets: list[tuple[str, State, str]] = []
        wall_now = time.time()
        retired: list[tuple[str, bool, tuple[str, ...]]] = []
        for key, endpoint in snapshot.endpoints.items():
            old = current.get(key)
            if old is not None and (old.endpoint is endpoint or old.endpoint.fingerprint == endpoint.fingerprint):
                states[key] = kept[key] = old
                if old.endpoint is not endpoint:
                    rebind.append(key)
                continue
            state = states[key] = self._fresh_state(endpoint, snapshot, wall_now, old)
            if old is None:
                state.show()  # a key no current state has: no one else sets these gauges
            else:
                replacing.append(state)
                if state.breaker is old.breaker:
                    carried_breakers[key] = None
                elif (was := old.breaker.peek()) is not State.CLOSED:
                    why = "breaker policy changed" if old.endpoint.breaker != endpoint.breaker else "targets changed"
                    resets.append((key, was, why))
                if state.balancer is old.balancer:
                    carried_balancers[key] = None
                urls = {target.url for target in endpoint.targets}
                gone = tuple(t.url for t in old.endpoint.targets if t.url not in urls)
                if gone:
                    retired.append((key, False, gone))
        if len(kept) + len(replacing) < len(current):  # some endpoints are gone: find them (a scan only then)
            for key, old in current.items():
                if key not in states:
                    retired.append((key, True, tuple(target.url for target in old.endpoint.targets)))
        old_overrides = previous.breaker_overrides if previous is not None else {}
        old_health = previous.target_health if previous is not None else {}
        return Prepared(
            snapshot=snapshot,
            generation=generation,
            states=states,
            replacing=tuple(replacing),
            overrides=_changed_keys(snapshot.breaker_overrides, old_overrides, kept | carried_breakers),
            health=_changed_keys(snapshot.target_health, old_health, kept | carried_balancers),
            rebind=tuple(rebind),
            retired=tuple(retired),
            resets=tuple(resets),
        )

    def _fresh_state(
        self, endpoint: Endpoint, snapshot: Snapshot, wall_now: float, before: EndpointState | None = None
    ) -> EndpointState:
        """A new state with `snapshot`'s override and target health for it already applied to the parts
        made new; the parts carried over from `before` are live, so commit updates those."""
        state = self._new_state(endpoint, before)
        override = snapshot.breaker_overrides.get(endpoint.key)
        if override and (before is None or state.breaker is not before.breaker):
            state.breaker.apply_override(override, wall_now=wall_now)
        if before is None or state.balancer is not before.balancer:
            state.set_health(snapshot.target_health.get(endpoint.key, {}))
        return state

    def commit(self, prepared: Prepared) -> None:
        """Make a prepared snapshot current; on the event loop, costs what changed, not the endpoints.
        Raises StalePreparation when the states were replaced after `prepare` (prepare again)."""
        if prepared.generation != self.generation:
            raise StalePreparation("the states changed since this snapshot was prepared")
        snapshot, states = prepared.snapshot, prepared.states
        for key, was, why in prepared.resets:
            self._record_transition(key, was, State.CLOSED, f"reset: its {why}")
        wall_now = time.time()
        for key in prepared.overrides:
            states[key].breaker.apply_override(snapshot.breaker_overrides.get(key, {}), wall_now=wall_now)
        for key in prepared.health:
            states[key].set_health(snapshot.target_health.get(key, {}))
            states[key].show_health()
        # After the overrides and health: a new state may carry over a breaker or balancer they changed.
        for state in prepared.replacing:
            state.show()
        for key in prepared.rebind:
            states[key].endpoint = snapshot.endpoints[key]
        self.metrics.retire(prepared.retired)
        # One assignment each: a request sees the old pair or the new pair's snapshot first, and looks
        # its state up by key with a fallback, so a request in between never fails.
        self.states = states
        self.snapshot = snapshot
        self.generation += 1
        self.applied_at = time.time()
        self.metrics.config_revision.set(snapshot.revision or 0)
        self.metrics.set_config(snapshot.config_sha256)
        logger.info("applied config %s (%d endpoints)", snapshot.config_sha256[:12], len(snapshot.endpoints))

    def apply(self, snapshot: Snapshot) -> None:
        """Make `snapshot` current, here and now (boot, tests). State is kept for endpoints whose
        effective config is unchanged."""
        self.commit(self.prepare(snapshot))

    async def apply_off_loop(self, snapshot: Snapshot) -> None:
        """`apply` with the preparation in a thread; only the commit runs on the event loop. One at a
        time (the lock), and prepared again if a synchronous `apply` replaced the states meanwhile."""
        async with self._applying:
            while True:
                prepared = await asyncio.to_thread(self.prepare, snapshot)
                if prepared.generation == self.generation:
                    self.commit(prepared)
                    if len(snapshot.endpoints) >= FREEZE_AT_ENDPOINTS:
                        gc.freeze()
                    return
                logger.info("the config changed while %s was prepared; preparing it again", snapshot.config_sha256[:12])

    def state_for(self, endpoint: Endpoint) -> EndpointState:
        state = self.states.get(endpoint.key)
        if state is None or state.endpoint.fingerprint != endpoint.fingerprint:
            state = self._new_state(endpoint)
        return state

    def refresh_gauges(self) -> None:
        """Bring the state gauges up to date before a scrape (ejections end and circuits move to
        HALF_OPEN by the clock, not by an event). Reads state without moving it."""
        now = self.clock()
        for state in self.states.values():
            state.gauges.circuit.set(state.breaker.current_state_gauge())
            for target_state, ejected in zip(state.balancer.states, state.gauges.ejected, strict=True):
                ejected.set(int(target_state.ejected_until > now))
        if self.snapshot is not None:
            self.metrics.config_age.set(time.time() - self.applied_at)
        self.metrics.refresh_certificates()
        self.metrics.count_tunnel_bytes()

    def _read_seed(self) -> Snapshot | None:
        """Parse, validate and compile the seed file; thread-safe (touches no runtime state)."""
        seed = self.settings.seed
        if seed is None:
            self.seed_error = "no seed file is configured (DATAPLANE_SEED or --seed)"
            logger.warning("no seed file configured; nothing to load")
            return None
        try:
            snapshot = load_seed(seed, mount_prefix=self.settings.mount_prefix, previous=self.snapshot)
        except SnapshotError as exc:
            self.seed_error = f"{seed} is not a valid config document:\n" + "\n".join(f"  {p}" for p in exc.problems)
        except (OSError, ValueError) as exc:
            self.seed_error = f"{seed} could not be read: {exc}"
        else:
            self.seed_error = None
            return snapshot
        if self.snapshot is not None:
            logger.error("seed rejected, keeping the current config: %s", self.seed_error)
        elif self.settings.control_plane_url:
            logger.error("seed rejected, waiting for the control plane: %s", self.seed_error)
        # Else a standalone node at boot: it exits with seed_error (process.require_config), said once.
        return None

    def reload_seed(self) -> bool:
        """Read the seed file and apply it (at boot). A bad seed keeps the current snapshot and is logged."""
        snapshot = self._read_seed()
        if snapshot is None:
            return False
        self.apply(snapshot)
        return True

    async def reload_seed_off_loop(self) -> bool:
        """SIGHUP: the same, with parsing, validation and the apply's preparation in a thread so traffic
        keeps flowing; only the commit happens on the event loop. With a control plane the seed is only a
        boot fallback: ignored."""
        if self.settings.control_plane_url:
            logger.info("SIGHUP ignored: the config comes from the control plane")
            return False
        snapshot = await asyncio.to_thread(self._read_seed)
        if snapshot is None:
            return False
        await self.apply_off_loop(snapshot)
        return True
