"""The control plane's own gauges on `/metrics` (ARCHITECTURE §9), next to django-prometheus's.

    gateway_cp_nodes{state="live"|"stale"|"gone"}
                                             data-plane nodes by state (GATEWAY_NODE_STALE_SECONDS,
                                             GATEWAY_NODE_GONE_SECONDS; see dataplanes.selectors)
    gateway_cp_revision                      the latest config revision (0 before the first)
    gateway_cp_open_breakers                 endpoints whose breaker is open or half-open on any live node
    gateway_cp_unhealthy_targets             targets whose observed health is `unhealthy`
    gateway_cp_nodes_rejected                live nodes whose last snapshot was rejected (for the
                                             "config rejected" alert; not in §9's list, an addition)

A custom collector computes them from the database at scrape time (a few count queries), so no process
has to keep them up to date and every web process answers the same numbers. `register()` adds it to
prometheus_client's default registry once per process (config/urls.py calls it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

OPEN_STATES = ("open", "half_open")


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(
            "gateway_cp_nodes",
            "Data-plane nodes by state (live: reported recently; stale: silent; gone: silent past the grace).",
            labels=["state"],
        ),
        GaugeMetricFamily("gateway_cp_revision", "The latest config revision number."),
        GaugeMetricFamily(
            "gateway_cp_open_breakers", "Endpoints whose circuit breaker is open or half-open on any live node."
        ),
        GaugeMetricFamily("gateway_cp_unhealthy_targets", "Targets whose observed health is unhealthy."),
        GaugeMetricFamily("gateway_cp_nodes_rejected", "Live data-plane nodes whose last snapshot was rejected."),
    )


class ControlPlaneCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        # Without describe() the registry would call collect() — and query the database — at registration.
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        from controlplane.core.models import ConfigRevision
        from controlplane.health.models import HealthStatus, TargetHealth

        from .models import DataPlaneNode
        from .selectors import GONE, LIVE, STALE, NodeClock

        nodes, revision, breakers, unhealthy, rejected = _families()
        try:
            clock = NodeClock.at()
            everyone = DataPlaneNode.objects.all()
            live = list(clock.filter(everyone, LIVE).values_list("breakers", "result"))
            stale = clock.filter(everyone, STALE).count()
            gone = clock.filter(everyone, GONE).count()
            latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True).first()
            unhealthy_count = TargetHealth.objects.filter(status=HealthStatus.UNHEALTHY).count()
        except Exception:
            # A scrape must not fail django-prometheus's own metrics because the database is away.
            logger.warning("gateway_cp_* metrics: reading the database failed", exc_info=True)
            return
        open_keys = {
            key
            for reported, _ in live
            if isinstance(reported, dict)
            for key, entry in reported.items()
            if isinstance(entry, dict) and entry.get("state") in OPEN_STATES
        }
        nodes.add_metric(["live"], len(live))
        nodes.add_metric(["stale"], stale)
        nodes.add_metric(["gone"], gone)
        revision.add_metric([], latest or 0)
        breakers.add_metric([], len(open_keys))
        unhealthy.add_metric([], unhealthy_count)
        rejected.add_metric([], sum(1 for _, result in live if result == DataPlaneNode.Result.REJECTED))
        yield from (nodes, revision, breakers, unhealthy, rejected)


_lock = threading.Lock()
_collector: ControlPlaneCollector | None = None


def register() -> ControlPlaneCollector:
    """Register the collector with the default registry, once per process."""
    global _collector
    with _lock:
        if _collector is None:
            _collector = ControlPlaneCollector()
            REGISTRY.register(_collector)
        return _collector
