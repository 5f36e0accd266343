"""Read-side queries about data-plane nodes: which are live, stale or gone (ARCHITECTURE §4).

- live: reported within GATEWAY_NODE_STALE_SECONDS;
- stale: silent longer than that, but not longer than GATEWAY_NODE_GONE_SECONDS: something may be
  wrong, and the system status counts it as degradation;
- gone: silent longer than GATEWAY_NODE_GONE_SECONDS: listed until purged (GATEWAY_NODE_PURGE_SECONDS) or
  retired, but no longer counted as degradation, so a node stopped on purpose does not keep the fleet
  "degraded" for days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from .models import DataPlaneNode

LIVE, STALE, GONE = "live", "stale", "gone"
NODE_STATES = (LIVE, STALE, GONE)


def stale_before(now: datetime | None = None) -> datetime:
    """Nodes last seen before this moment are stale (GATEWAY_NODE_STALE_SECONDS)."""
    return (now or timezone.now()) - timedelta(seconds=settings.GATEWAY_NODE_STALE_SECONDS)


def gone_before(now: datetime | None = None) -> datetime:
    """Nodes last seen before this moment are gone (GATEWAY_NODE_GONE_SECONDS)."""
    return (now or timezone.now()) - timedelta(seconds=settings.GATEWAY_NODE_GONE_SECONDS)


@dataclass(frozen=True)
class NodeClock:
    """The two thresholds of one moment, so a page or an answer classifies every node the same way."""

    stale_before: datetime
    gone_before: datetime

    @classmethod
    def at(cls, now: datetime | None = None) -> NodeClock:
        now = now or timezone.now()
        return cls(stale_before=stale_before(now), gone_before=gone_before(now))

    def state(self, node: DataPlaneNode) -> str:
        if node.last_seen >= self.stale_before:
            return LIVE
        return STALE if node.last_seen >= self.gone_before else GONE

    def filter(self, queryset: QuerySet[DataPlaneNode], state: str) -> QuerySet[DataPlaneNode]:
        """`queryset` narrowed to the nodes in `state` (live, stale or gone)."""
        if state == LIVE:
            return queryset.filter(last_seen__gte=self.stale_before)
        if state == STALE:
            return queryset.filter(last_seen__lt=self.stale_before, last_seen__gte=self.gone_before)
        if state == GONE:
            return queryset.filter(last_seen__lt=self.gone_before)
        raise ValueError(f"unknown node state {state!r}")


def live_nodes(now: datetime | None = None) -> QuerySet[DataPlaneNode]:
    """The nodes that reported within GATEWAY_NODE_STALE_SECONDS."""
    return DataPlaneNode.objects.filter(last_seen__gte=stale_before(now))
