"""Reads of the stats app: traffic totals and series per endpoint or overall, and the system summary.

The dashboards and the `stats/` API build on these three functions; keep their signatures.

Granularity: a window that starts within the last 24 h reads the minute rows, an older start the
hour rows (minute rows are kept 24 h, hour rows 30 days). A period belongs to a window when it
starts at or after the window's start truncated to the period, so the current, partial period counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from configdoc.reports import STATUS_CLASSES, histogram_percentile, merge_histograms

from .models import ConsumerTrafficMinute, TrafficHour, TrafficMinute

MINUTE_WINDOW = timedelta(hours=24)
STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
# The summary's "degraded" threshold: share of 5xx answers over the last 5 minutes.
DEGRADED_ERROR_RATE = 0.05
SUMMARY_WINDOW = timedelta(minutes=5)

_FIELDS = (
    "endpoint_key", "start", "requests_2xx", "requests_3xx", "requests_4xx", "requests_5xx", "errors", "retries",
    "breaker_trips", "duration_buckets", "upstream_buckets",
)  # fmt: skip


def truncate(moment: datetime, step: str) -> datetime:
    """The start of the minute or hour holding `moment`."""
    moment = moment.replace(second=0, microsecond=0)
    return moment.replace(minute=0) if step == "hour" else moment


def step_for(since: datetime, now: datetime | None = None) -> str:
    """ "minute" for a window starting within the last 24 h, "hour" beyond."""
    return "minute" if since >= (now or timezone.now()) - MINUTE_WINDOW else "hour"


def _rows(since: datetime, endpoint_key: str | None, step: str) -> QuerySet[Any]:
    model = TrafficMinute if step == "minute" else TrafficHour
    rows = model.objects.filter(start__gte=truncate(since, step))
    if endpoint_key is not None:
        rows = rows.filter(endpoint_key=endpoint_key)
    return rows.order_by().values(*_FIELDS)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _percentiles(buckets: list[int]) -> dict[str, float | None]:
    return {name: _ms(histogram_percentile(buckets, q)) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def _totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    by_class = dict.fromkeys(STATUS_CLASSES, 0)
    errors: dict[str, int] = {}
    retries = trips = 0
    durations: list[list[int]] = []
    upstream: list[list[int]] = []
    for row in rows:
        for status_class in STATUS_CLASSES:
            by_class[status_class] += row[f"requests_{status_class}"]
        for code, count in (row["errors"] or {}).items():
            errors[code] = errors.get(code, 0) + count
        retries += row["retries"]
        trips += row["breaker_trips"]
        durations.append(row["duration_buckets"])
        upstream.append(row["upstream_buckets"])
    requests = sum(by_class.values())
    return {
        "requests": requests,
        "by_class": by_class,
        "errors": dict(sorted(errors.items())),
        "gateway_errors": sum(errors.values()),
        "error_rate": by_class["5xx"] / requests if requests else 0.0,
        "retries": retries,
        "breaker_trips": trips,
        "latency_ms": _percentiles(merge_histograms(durations)),
        "upstream_latency_ms": _percentiles(merge_histograms(upstream)),
    }


def traffic_totals(*, since: datetime, endpoint_key: str | None = None) -> dict:
    """Traffic since `since` for one endpoint (`name:version`) or all together.

    {"requests", "by_class": {"2xx", "3xx", "4xx", "5xx"}, "errors": {code: n}, "gateway_errors",
     "error_rate" (5xx share 0..1, 0.0 without traffic), "retries", "breaker_trips",
     "latency_ms": {"p50", "p95", "p99"}, "upstream_latency_ms": {...}} — percentiles None without data.
    """
    return _totals(_rows(since, endpoint_key, step_for(since)))


def traffic_totals_by_endpoint(*, since: datetime) -> dict[str, dict]:
    """traffic_totals for every endpoint with rows in the window, by endpoint key (sorted)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(since, None, step_for(since)):
        grouped.setdefault(row["endpoint_key"], []).append(row)
    return {key: _totals(grouped[key]) for key in sorted(grouped)}


def traffic_series(*, since: datetime, endpoint_key: str | None = None, step: str = "minute") -> list[dict]:
    """One point per minute or hour from `since` (truncated) to now, oldest first, empty steps as zeros:
    {"at", "requests", "rate_per_s", "errors_5xx", "error_rate", "p50_ms", "p95_ms", "p99_ms"}.
    Use step "minute" for windows up to 24 h (minute rows are kept a day), "hour" beyond."""
    if step not in STEPS:
        raise ValueError(f"step must be one of {', '.join(STEPS)}")
    width = STEPS[step]
    grouped: dict[datetime, list[dict[str, Any]]] = {}
    for row in _rows(since, endpoint_key, step):
        grouped.setdefault(row["start"], []).append(row)
    now = timezone.now()
    at = truncate(since, step)
    last = truncate(now, step)
    series = []
    while at <= last:
        rows = grouped.get(at, [])
        requests = sum(row[f"requests_{c}"] for row in rows for c in STATUS_CLASSES)
        errors_5xx = sum(row["requests_5xx"] for row in rows)
        percentiles = _percentiles(merge_histograms(row["duration_buckets"] for row in rows))
        series.append(
            {
                "at": at,
                "requests": requests,
                # The step in progress is divided by the seconds it has run, so the line does not
                # drop towards zero at its right end while the minute is still filling up.
                "rate_per_s": requests / (width.total_seconds() if at < last else max(1.0, (now - at).total_seconds())),
                "errors_5xx": errors_5xx,
                "error_rate": errors_5xx / requests if requests else 0.0,
                "p50_ms": percentiles["p50"],
                "p95_ms": percentiles["p95"],
                "p99_ms": percentiles["p99"],
            }
        )
        at += width
    return series


def version_shares(*, name: str, since: datetime) -> dict[str, Any]:
    """How the requests of every version of endpoint `name` divide up since `since` (§12's canary,
    watched from the per-endpoint counters the nodes already report): `{"name", "requests", "versions":
    [{"endpoint", "version", "requests", "share"}], "traffic_split"}`, versions in version order, every
    existing version listed (0 without traffic) and any other key with traffic in the window; `share` is
    0..1 of the name's requests (0.0 without traffic). `traffic_split` is the default version's split
    as configured (None: no split), so the observed share can be read against the configured percent.
    Requests are counted by the version that served them, however they were addressed: a client calling
    `/v2/{name}` directly counts for v2 too."""
    from configdoc import version_sort_key
    from controlplane.routing.models import Endpoint

    step = step_for(since)
    model = TrafficMinute if step == "minute" else TrafficHour
    totals = Sum("requests_2xx") + Sum("requests_3xx") + Sum("requests_4xx") + Sum("requests_5xx")
    rows = (
        model.objects.filter(start__gte=truncate(since, step), endpoint_key__startswith=f"{name}:")
        .order_by()
        .values_list("endpoint_key")
        .annotate(served=totals)
    )
    counts: dict[str, int] = {str(key): int(count or 0) for key, count in rows}
    split: dict[str, Any] | None = None
    for endpoint in Endpoint.objects.filter(name=name).only("name", "version", "is_default", "document"):
        counts.setdefault(endpoint.key, 0)
        if endpoint.is_default and endpoint.document.get("traffic_split"):
            split = {"from": endpoint.key, "percent": 0, **endpoint.document["traffic_split"]}
    total = sum(counts.values())
    versions = [
        {
            "endpoint": key,
            "version": key.partition(":")[2],
            "requests": count,
            "share": count / total if total else 0.0,
        }
        for key, count in sorted(counts.items(), key=lambda item: version_sort_key(item[0].partition(":")[2]))
    ]
    return {"name": name, "requests": total, "versions": versions, "traffic_split": split}


TOP_CONSUMERS = 100


def _by_class(row: dict[str, Any]) -> dict[str, Any]:
    by_class = {status_class: int(row[f"requests_{status_class}"] or 0) for status_class in STATUS_CLASSES}
    return {"requests": sum(by_class.values()), "by_class": by_class, "rate_limited": int(row["rate_limited"] or 0)}


def top_consumers(*, endpoint_key: str, since: datetime, limit: int = TOP_CONSUMERS) -> dict[str, Any]:
    """One endpoint's traffic by consumer since `since` (minute rows: windows up to 24 h):

    {"consumers": [{"consumer", "requests", "by_class": {"2xx", "3xx", "4xx", "5xx"}, "rate_limited"},
     ...] (at most `limit`, most requests first, ties by username), "other": {"requests", "by_class",
    "rate_limited"}} — `other` is every other consumer's traffic: the nodes' and minutes' `other` rows
    and the consumers past `limit`. `rate_limited` counts the 429 rate_limited answers among the 4xx.
    Requests no authentication plugin named a consumer for are in neither."""
    fields = [f"requests_{status_class}" for status_class in STATUS_CLASSES] + ["rate_limited"]
    grouped: QuerySet[Any] = (
        ConsumerTrafficMinute.objects.filter(endpoint_key=endpoint_key, start__gte=truncate(since, "minute"))
        .order_by()
        .values("consumer")
        .annotate(**{f"sum_{field}": Sum(field) for field in fields})  # a field's own name is taken
    )
    named: list[dict[str, Any]] = []
    other = {field: 0 for field in fields}
    for summed in grouped:
        row = {field: int(summed[f"sum_{field}"] or 0) for field in fields}
        if summed["consumer"] == ConsumerTrafficMinute.OTHER:
            for field in fields:
                other[field] += row[field]
        else:
            named.append({"consumer": summed["consumer"], **_by_class(row)})
    named.sort(key=lambda entry: (-entry["requests"], entry["consumer"]))
    for entry in named[limit:]:
        for status_class in STATUS_CLASSES:
            other[f"requests_{status_class}"] += entry["by_class"][status_class]
        other["rate_limited"] += entry["rate_limited"]
    return {"consumers": named[:limit], "other": _by_class(other)}


def system_summary() -> dict:
    """The fleet at a glance (the seed gateway's registry stats, health summary, open breakers and
    unhealthy endpoints) and a status with the rule documented in docs/api.md:

    - "unhealthy": nodes exist (in any state) but none is live, or an enabled endpoint has no routable
      target;
    - "degraded": otherwise, any open or half-open breaker on a live node, any unhealthy target of an
      enabled endpoint, any stale node (a gone one, silent past GATEWAY_NODE_GONE_SECONDS, does not
      count), or a 5xx share above 5 % over the last 5 minutes;
    - "healthy": otherwise.
    """
    from controlplane.dataplanes.models import DataPlaneNode
    from controlplane.dataplanes.selectors import GONE, LIVE, STALE, NodeClock
    from controlplane.health.models import HealthStatus
    from controlplane.health.selectors import target_health_list
    from controlplane.routing.models import Endpoint

    endpoints = list(Endpoint.objects.order_by("name", "version").values_list("id", "name", "version", "enabled"))
    enabled_ids = {pk for pk, _, _, enabled in endpoints if enabled}
    health = {HealthStatus.HEALTHY.value: 0, HealthStatus.UNHEALTHY.value: 0, HealthStatus.UNKNOWN.value: 0}
    routable: set[int] = set()
    targets_total = targets_enabled = 0
    for target in target_health_list():
        targets_total += 1
        if not target.enabled:
            continue
        targets_enabled += 1
        row = getattr(target, "health", None)
        status = row.status if row is not None else HealthStatus.UNKNOWN.value
        if target.endpoint_id in enabled_ids:
            health[status] = health.get(status, 0) + 1
        if status != HealthStatus.UNHEALTHY.value:  # unknown is routable
            routable.add(target.endpoint_id)
    unhealthy_endpoints = [
        f"{name}:{version}" for pk, name, version, _ in endpoints if pk in enabled_ids and pk not in routable
    ]

    clock = NodeClock.at()
    everyone = DataPlaneNode.objects.all()
    live = list(clock.filter(everyone, LIVE).values_list("breakers", flat=True))
    stale_count = clock.filter(everyone, STALE).count()
    gone_count = clock.filter(everyone, GONE).count()
    nodes_total = len(live) + stale_count + gone_count
    open_breakers = sorted(
        {
            key
            for breakers in live
            if isinstance(breakers, dict)
            for key, entry in breakers.items()
            if isinstance(entry, dict) and entry.get("state") in ("open", "half_open")
        }
    )
    recent = traffic_totals(since=timezone.now() - SUMMARY_WINDOW)
    nodes = {"live": len(live), "stale": stale_count, "gone": gone_count}

    reasons: list[str] = []
    status = "healthy"
    if nodes_total and not live:
        reasons.append("no live data-plane node")
    if unhealthy_endpoints:
        reasons.append(f"{len(unhealthy_endpoints)} enabled endpoint(s) without a routable target")
    if reasons:
        status = "unhealthy"
    else:
        if open_breakers:
            reasons.append(f"{len(open_breakers)} endpoint(s) with an open breaker")
        if health[HealthStatus.UNHEALTHY.value]:
            reasons.append(f"{health[HealthStatus.UNHEALTHY.value]} unhealthy target(s)")
        if nodes["stale"]:
            reasons.append(f"{nodes['stale']} stale node(s)")
        if recent["error_rate"] > DEGRADED_ERROR_RATE:
            reasons.append(f"5xx rate {recent['error_rate']:.1%} over the last 5 minutes")
        if reasons:
            status = "degraded"
    return {
        "status": status,
        "reasons": reasons,
        "registry": {
            "endpoints": {
                "total": len(endpoints),
                "enabled": len(enabled_ids),
                "disabled": len(endpoints) - len(enabled_ids),
            },
            "targets": {"total": targets_total, "enabled": targets_enabled},
        },
        "health": health,
        "open_breakers": open_breakers,
        "unhealthy_endpoints": unhealthy_endpoints,
        "nodes": nodes,
        "traffic_5m": {
            "requests": recent["requests"],
            "errors_5xx": recent["by_class"]["5xx"],
            "error_rate": recent["error_rate"],
        },
    }
