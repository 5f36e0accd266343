"""Read-side queries about data-plane nodes: which are live, which are stale (ARCHITECTURE §4)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from .models import DataPlaneNode


def stale_before(now: datetime | None = None) -> datetime:
    """Nodes last seen before this moment are stale (GATEWAY_NODE_STALE_SECONDS)."""
    return (now or timezone.now()) - timedelta(seconds=settings.GATEWAY_NODE_STALE_SECONDS)


def live_nodes(now: datetime | None = None) -> QuerySet[DataPlaneNode]:
    """The nodes that reported within GATEWAY_NODE_STALE_SECONDS."""
    return DataPlaneNode.objects.filter(last_seen__gte=stale_before(now))
