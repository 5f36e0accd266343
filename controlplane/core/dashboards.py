"""The admin's dashboards: the landing page's fleet at a glance and one page per endpoint.

Everything is read from what already exists — the nodes' last status reports (`DataPlaneNode`), the
health app, and the stats selectors fed by the reports — and drawn on the server (health.charts), so
the pages need no JavaScript and load nothing from elsewhere. Anyone with `config:read` (readonly
included) sees them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from controlplane.accounts.roles import CONFIG_READ, CONFIG_WRITE, has_gateway_perm
from controlplane.core.revisions import latest_revision
from controlplane.dataplanes.models import DataPlaneNode
from controlplane.dataplanes.selectors import GONE, LIVE, STALE, NodeClock, stale_before
from controlplane.health.charts import Series, line_chart, time_ticks
from controlplane.health.models import HealthStatus
from controlplane.health.selectors import UNKNOWN_REASON_LABELS, endpoint_targets_health
from controlplane.routing.models import Endpoint
from controlplane.stats.selectors import (
    system_summary,
    top_consumers,
    traffic_series,
    traffic_totals,
    version_shares,
)

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
DEFAULT_WINDOW = "1h"
# Consumers listed by name on an endpoint's dashboard; the rest are one "all other consumers" row, and
# the stats API (`stats/endpoints/{key}/consumers/`) lists up to 100.
DASHBOARD_CONSUMERS = 20
CLOSED = "closed"


# --- formatting --------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"


def milliseconds(value: float | None) -> str:
    return "–" if value is None else f"{value:g} ms"


# --- charts ------------------------------------------------------------------------------------------


def traffic_charts(
    series: list[dict[str, Any]], *, since: datetime, now: datetime, latency: bool
) -> dict[str, SafeString]:
    """Request rate, 5xx error rate and (with `latency`) p50/p95/p99 charts of a traffic series."""
    start, end = timezone.localtime(since), timezone.localtime(now)
    axis: dict[str, Any] = {
        "x_label": f"time ({timezone.get_current_timezone_name()})",
        "x_ticks": time_ticks(start, end),
        "x_range": (since.timestamp(), now.timestamp()),
    }

    def points(field: str, scale: float = 1.0) -> list[tuple[float, float | None]]:
        return [(row["at"].timestamp(), None if row[field] is None else row[field] * scale) for row in series]

    charts = {
        "rate": line_chart(
            [Series("requests/s", points("rate_per_s"))],
            title="Request rate (requests per second)", chart="request-rate", y_unit="/s", **axis,
        ),
        "errors": line_chart(
            [Series("5xx share", points("error_rate", 100.0))],
            title="Error rate (share of answers that were 5xx)", chart="error-rate", y_unit=" %", y_at_least=1.0,
            **axis,
        ),
    }  # fmt: skip
    if latency:
        charts["latency"] = line_chart(
            [Series("p50", points("p50_ms")), Series("p95", points("p95_ms")), Series("p99", points("p99_ms"))],
            title="Latency to the response head (p50, p95, p99)", chart="latency", y_unit=" ms", **axis,
        )  # fmt: skip
    return charts


# --- the nodes' breakers -----------------------------------------------------------------------------


def node_breaker(node: DataPlaneNode, key: str) -> dict[str, Any]:
    """One node's breaker for one endpoint, from its last report (absent from the report: closed)."""
    entry = node.breakers.get(key) if isinstance(node.breakers, dict) else None
    if not isinstance(entry, dict):
        return {"state": CLOSED, "forced": None, "transitions": []}
    transitions = [t for t in entry.get("transitions") or [] if isinstance(t, dict)]
    return {
        "state": str(entry.get("state") or CLOSED),
        "forced": entry.get("forced"),
        "transitions": [
            {
                "from": t.get("from"),
                "to": t.get("to"),
                "at": datetime.fromtimestamp(float(t["at"]), tz=timezone.get_current_timezone())
                if isinstance(t.get("at"), (int, float))
                else None,
            }
            for t in transitions[-5:]
        ][::-1],
    }


def open_breakers(nodes: list[DataPlaneNode]) -> list[dict[str, Any]]:
    """Per endpoint with a breaker not closed on some live node: on which nodes, in which state."""
    by_endpoint: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        for key in node.breakers if isinstance(node.breakers, dict) else {}:
            state = node_breaker(node, key)
            if state["state"] != CLOSED:
                by_endpoint.setdefault(key, []).append({"node_id": node.node_id, **state})
    return [
        {
            "key": key,
            "nodes": rows,
            "open_on": sum(1 for row in rows if row["state"] == "open"),
            "half_open_on": sum(1 for row in rows if row["state"] == "half_open"),
            "of": len(nodes),
        }
        for key, rows in sorted(by_endpoint.items())
    ]


# --- pages -------------------------------------------------------------------------------------------


def _dashboard_links(keys: list[str]) -> dict[str, str]:
    """Endpoint key → its dashboard URL, for the keys that still exist (one query, only those keys)."""
    wanted = Q(pk__in=[])
    for key in set(keys):
        name, _, version = key.partition(":")
        wanted |= Q(name=name, version=version)
    return {
        f"{name}:{version}": reverse("admin:routing_endpoint_dashboard", args=[pk])
        for pk, name, version in Endpoint.objects.filter(wanted).values_list("pk", "name", "version")
    }


def _optional_url(name: str) -> str | None:
    """The breakers app's fleet page, where an operator forces or resets a breaker, when it is installed."""
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def fleet_context(request: HttpRequest, *, now: datetime | None = None) -> dict[str, Any]:
    """The landing page's dashboard; nothing for someone without config:read (a pure user manager)."""
    if not has_gateway_perm(request.user, CONFIG_READ):
        return {}
    now = now or timezone.now()
    since = now - WINDOWS["1h"]
    summary = system_summary()
    latest = latest_revision()
    latest_number = latest.number if latest else None
    clock = NodeClock.at(now)
    nodes = list(DataPlaneNode.objects.order_by("node_id"))
    node_rows: list[dict[str, Any]] = [
        {
            "node": node,
            "state": clock.state(node),
            "live": clock.state(node) == LIVE,
            "lag": latest_number - node.revision if latest_number is not None and node.revision is not None else None,
        }
        for node in nodes
    ]
    live = [row["node"] for row in node_rows if row["live"]]
    breakers = open_breakers(live)
    totals = traffic_totals(since=since)
    unhealthy = list(summary.get("unhealthy_endpoints", []))
    links = _dashboard_links([row["key"] for row in breakers] + unhealthy)
    for row in breakers:
        row["url"] = links.get(row["key"])
    return {
        "fleet": {
            "summary": summary,
            "latest_revision": latest_number,
            "nodes": node_rows,
            "live_count": len(live),
            "stale_count": sum(1 for row in node_rows if row["state"] == STALE),
            "gone_count": sum(1 for row in node_rows if row["state"] == GONE),
            "node_retire_allowed": has_gateway_perm(request.user, CONFIG_WRITE),
            "nodes_url": _optional_url("admin:dataplanes_dataplanenode_changelist"),
            "on_latest": sum(1 for row in node_rows if row["live"] and row["lag"] == 0),
            "health": summary.get("health", {}),
            "unhealthy_endpoints": [{"key": key, "url": links.get(key)} for key in unhealthy],
            "breakers": breakers,
            "breakers_url": _optional_url("admin:breakers_breakeroverride_changelist"),
            "totals": totals,
            "error_rate": percent(totals["error_rate"]),
            "p95": milliseconds(totals["latency_ms"]["p95"]),
            "charts": traffic_charts(traffic_series(since=since, step="minute"), since=since, now=now, latency=False),
        }
    }


def _versions(name: str, since: datetime) -> dict[str, Any]:
    """The share of the name's requests per version (§12's canary), with percentages for people."""
    shares = version_shares(name=name, since=since)
    for row in shares["versions"]:
        row["share_percent"] = percent(row["share"]) if shares["requests"] else "–"
    return shares


def endpoint_dashboard_view(model_admin: Any, request: HttpRequest, object_id: int) -> HttpResponse:
    """One endpoint's traffic (rate, errors, latency over `?window=1h|24h`), top consumers, uptime and breakers."""
    endpoint = Endpoint.objects.filter(pk=object_id).first()
    if endpoint is None:
        raise Http404("no such endpoint")
    if not has_gateway_perm(request.user, CONFIG_READ):
        raise PermissionDenied
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        window = DEFAULT_WINDOW
    now = timezone.now()
    since = now - WINDOWS[window]
    key = endpoint.key
    totals = traffic_totals(since=since, endpoint_key=key)
    series = traffic_series(since=since, endpoint_key=key, step="minute")
    health = endpoint_targets_health([endpoint.pk], now=now)
    targets = []
    for target in endpoint.targets.order_by("url"):
        brief = health.get((endpoint.pk, target.url), {})
        targets.append(
            {
                "url": target.url,
                "enabled": target.enabled,
                "status": brief.get("status", str(HealthStatus.UNKNOWN)),
                "unknown_reason": UNKNOWN_REASON_LABELS.get(brief.get("reason") or "", ""),
                "uptime_100": percent(brief.get("uptime", {}).get("last_100")),
                "uptime_24h": percent(brief.get("uptime", {}).get("24h")),
            }
        )
    stale = stale_before(now)
    live = list(DataPlaneNode.objects.filter(last_seen__gte=stale).order_by("node_id"))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Dashboard of {key}",
        "opts": model_admin.model._meta,
        "endpoint": endpoint,
        "window": window,
        "windows": [(name, name == window) for name in WINDOWS],
        "totals": totals,
        "error_rate": percent(totals["error_rate"]),
        "latency": {name: milliseconds(value) for name, value in totals["latency_ms"].items()},
        "upstream_latency": {name: milliseconds(value) for name, value in totals["upstream_latency_ms"].items()},
        "charts": traffic_charts(series, since=since, now=now, latency=True),
        "targets": targets,
        "consumers": top_consumers(endpoint_key=key, since=since, limit=DASHBOARD_CONSUMERS),
        "versions": _versions(endpoint.name, since),
        "breakers": [{"node": node, **node_breaker(node, key)} for node in live],
        "stale_nodes": DataPlaneNode.objects.filter(last_seen__lt=stale).count(),
        "breakers_url": _optional_url("admin:breakers_breakeroverride_changelist"),
    }
    return TemplateResponse(request, "admin/routing/endpoint/dashboard.html", context)
