"""Reads of the health app: the snapshot's `state.targets`, the API's list, uptime and percentiles."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from controlplane.routing.models import Target

from .models import HealthResult, HealthRollup, HealthStatus, TargetHealth
from .stats import bucket_percentile, merge_buckets, percentile, uptime

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def target_health_state() -> dict[str, dict[str, str]]:
    """The snapshot's `state.targets` (ARCHITECTURE §4): `{<endpoint key>: {<url>: status}}`.

    Only targets whose endpoint has active checks now, and only a status other than `unknown`: a target
    left out is `unknown`, which is routable, so removing an endpoint's health path (a config change,
    which changes the ETag) makes its targets routable again rather than stuck on an old verdict.
    """
    from .services import check_plans

    plans = check_plans()
    rows = TargetHealth.objects.filter(target_id__in=list(plans)).exclude(status=HealthStatus.UNKNOWN)
    state: dict[str, dict[str, str]] = {}
    for target_id, status in rows.values_list("target_id", "status"):
        plan = plans[target_id]
        state.setdefault(plan.endpoint_key, {})[plan.url] = status
    return state


def target_health_list() -> QuerySet[Target]:
    """Every target with its health (none yet: `unknown`), in endpoint key and url order."""
    return Target.objects.select_related("endpoint", "health").order_by("endpoint__name", "endpoint__version", "url")


def target_health_summary(*, target_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Uptime (0..1) and p50/p95 latency (ms) over the last 100 results and 24 h / 7 d / 30 d of roll-ups."""
    now = now or timezone.now()
    results = HealthResult.objects.filter(target_id=target_id).order_by("-id")
    recent = list(results.values_list("ok", "latency_ms")[:100])
    latencies = [latency for _, latency in recent if latency is not None]
    summary: dict[str, Any] = {
        "last_100": {
            "checks": len(recent),
            "uptime": uptime(len(recent), sum(1 for ok, _ in recent if not ok)),
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
        }
    }
    rollups = list(
        HealthRollup.objects.filter(target_id=target_id, hour__gt=now - WINDOWS["30d"]).values_list(
            "hour", "checks", "failures", "latency_buckets"
        )
    )
    for name, span in WINDOWS.items():
        # An hour bucket belongs to the window when it started after now - span: whole hours, so the
        # window is at most one hour short, never padded with older data.
        chosen = [r for r in rollups if r[0] > now - span]
        checks = sum(r[1] for r in chosen)
        buckets = merge_buckets(r[3] for r in chosen)
        summary[name] = {
            "checks": checks,
            "uptime": uptime(checks, sum(r[2] for r in chosen)),
            "p50_ms": bucket_percentile(buckets, 0.50),
            "p95_ms": bucket_percentile(buckets, 0.95),
        }
    return summary


def target_health_brief(target_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each target's `health` as the endpoint representation carries it (ARCHITECTURE §8): status,
    counters, last check, last error, uptime. Targets never checked are `unknown`."""
    rows = {row.target_id: row for row in TargetHealth.objects.filter(target_id__in=target_ids)}
    brief: dict[int, dict[str, Any]] = {}
    for target_id in target_ids:
        row = rows.get(target_id) or TargetHealth(target_id=target_id)
        summary = target_health_summary(target_id=target_id)
        brief[target_id] = {
            "status": row.status,
            "consecutive_successes": row.consecutive_successes,
            "consecutive_failures": row.consecutive_failures,
            "last_checked_at": row.last_checked_at,
            "last_error": row.last_error,
            "uptime": {"last_100": summary["last_100"]["uptime"], "24h": summary["24h"]["uptime"]},
        }
    return brief
