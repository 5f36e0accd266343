"""The fleet's breakers (ARCHITECTURE §4, §6): per endpoint, each live node's reported state and an aggregate.

Read from the nodes' last reports (`DataPlaneNode.breakers`) and the operators' overrides. A node reports
only endpoints whose breaker is not closed, is forced, or moved this boot, so an endpoint absent from a
live node's report is closed there. With no live node the aggregate is `unknown`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.selectors import live_nodes
from controlplane.routing.models import Endpoint

from .models import BreakerState, BreakerTransition
from .services import override_view

CLOSED = "closed"
UNKNOWN = "unknown"
MIXED = "mixed"
AGGREGATES = (*BreakerState.values, MIXED, UNKNOWN)
RECENT_TRANSITIONS = 100


def endpoints() -> QuerySet[Endpoint]:
    return Endpoint.objects.select_related("breaker_override").order_by("name", "version")


def endpoint_by_key(key: str) -> Endpoint | None:
    name, _, version = key.partition(":")
    return endpoints().filter(name=name, version=version).first()


def _node_state(node: DataPlaneNode, key: str) -> dict[str, Any]:
    entry = node.breakers.get(key) if isinstance(node.breakers, dict) else None
    entry = entry if isinstance(entry, dict) else {}
    state = entry.get("state")
    forced = entry.get("forced")
    return {
        "node_id": node.node_id,
        "state": state if state in BreakerState.values else CLOSED,
        "forced": forced if forced in ("open", "closed") else None,
        "reset_generation": entry.get("reset_generation") if isinstance(entry.get("reset_generation"), int) else None,
        "last_seen": node.last_seen,
    }


def aggregate(states: list[str]) -> str:
    """closed | open | half_open when every live node agrees, `mixed` when they differ, `unknown` with none."""
    distinct = set(states)
    if not distinct:
        return UNKNOWN
    return distinct.pop() if len(distinct) == 1 else MIXED


def breaker_row(endpoint: Endpoint, nodes: list[DataPlaneNode], now: datetime) -> dict[str, Any]:
    per_node = [_node_state(node, endpoint.key) for node in nodes]
    return {
        "key": endpoint.key,
        "aggregate": aggregate([n["state"] for n in per_node]),
        "nodes": per_node,
        "override": override_view(getattr(endpoint, "breaker_override", None), now),
    }


def fleet_breakers(*, state: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per endpoint (by key). `state` keeps the rows whose aggregate is that state or where any
    live node is in it (so `open` also finds an endpoint open on one node of two)."""
    now = now or timezone.now()
    nodes = list(live_nodes(now).order_by("node_id"))
    rows = [breaker_row(endpoint, nodes, now) for endpoint in endpoints()]
    if state:
        rows = [r for r in rows if r["aggregate"] == state or any(n["state"] == state for n in r["nodes"])]
    return rows


def endpoint_breaker(endpoint: Endpoint, *, now: datetime | None = None) -> dict[str, Any]:
    """The fleet row of one endpoint plus its most recent reported transitions, newest first."""
    now = now or timezone.now()
    nodes = list(live_nodes(now).order_by("node_id"))
    row = breaker_row(endpoint, nodes, now)
    row["transitions"] = [
        {"node_id": t.node_id, "boot_id": t.boot_id, "from": t.from_state, "to": t.to_state, "at": t.at}
        for t in BreakerTransition.objects.filter(endpoint=endpoint).order_by("-at", "-id")[:RECENT_TRANSITIONS]
    ]
    return row
