"""Reads of the health app: the snapshot's `state.targets`, the API's list, uptime and percentiles."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, IntegerField, OuterRef, QuerySet, Subquery, Sum, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from controlplane.routing.models import Target

from .models import HealthResult, HealthRollup, HealthStatus, TargetHealth
from .stats import bucket_percentile, merge_buckets, percentile, uptime

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}

# Why a target's status is `unknown` (null for a known status): an operator must tell "nothing will ever
# check this" from "a check is configured and has not run yet".
NO_HEALTH_CHECK = "no_health_check"  # its endpoint's effective health_check has no path, or is disabled
NOT_CHECKED_YET = "not_checked_yet"  # active checks are configured; no probe has decided yet
DISABLED = "disabled"  # checks are configured, but the target or its endpoint is disabled, so none run
UNKNOWN_REASONS = (NO_HEALTH_CHECK, NOT_CHECKED_YET, DISABLED)
UNKNOWN_REASON_LABELS = {
    NO_HEALTH_CHECK: "no health check configured",
    NOT_CHECKED_YET: "not checked yet",
    DISABLED: "not checked: disabled",
}


def unknown_reasons(targets: Iterable[Target]) -> dict[int, str]:
    """target id → why it is `unknown`, for the given targets whose status is unknown (others are left
    out). Each target needs its `endpoint` and `health` loaded (select_related); one query for the
    document's health_check defaults whenever there are targets (always, so a page costs the same number
    of queries whatever its targets' states)."""
    from configdoc import effective_endpoint

    from .services import _health_check_defaults, health_check_configured

    targets = list(targets)
    if not targets:
        return {}
    defaults = _health_check_defaults()
    configured: dict[int, bool] = {}
    reasons: dict[int, str] = {}
    for target in targets:
        row = getattr(target, "health", None)
        if row is not None and row.status != HealthStatus.UNKNOWN:
            continue
        endpoint = target.endpoint
        if endpoint.pk not in configured:
            configured[endpoint.pk] = health_check_configured(effective_endpoint(endpoint.document, defaults))
        if not configured[endpoint.pk]:
            reasons[target.pk] = NO_HEALTH_CHECK
        elif not (target.enabled and endpoint.enabled):
            reasons[target.pk] = DISABLED
        else:
            reasons[target.pk] = NOT_CHECKED_YET
    return reasons


def target_health_state() -> dict[str, dict[str, str]]:
    """The snapshot's `state.targets` (ARCHITECTURE §4): `{<endpoint key>: {<url>: status}}`.

    Only targets whose endpoint has active checks now, and only a status other than `unknown`: a target
    left out is `unknown`, which is routable, so removing an endpoint's health path (a config change,
    which changes the ETag) makes its targets routable again rather than stuck on an old verdict.
    """
    from .services import check_plans

    # Plans only for the endpoints that have a known status: building every endpoint's plan made each
    # snapshot cost O(all endpoints) in Python (~4 s at 10,000 endpoints, bench/large_config.py).
    rows = list(
        TargetHealth.objects.exclude(status=HealthStatus.UNKNOWN).values_list(
            "target_id", "status", "target__endpoint_id"
        )
    )
    if not rows:
        return {}
    plans = check_plans(endpoint_ids={endpoint_id for _, _, endpoint_id in rows})
    state: dict[str, dict[str, str]] = {}
    for target_id, status, _ in rows:
        plan = plans.get(target_id)
        if plan is not None:  # else its endpoint (or the target) has no active checks now
            state.setdefault(plan.endpoint_key, {})[plan.url] = status
    return state


def target_health_list() -> QuerySet[Target]:
    """Every target with its health (none yet: `unknown`), in endpoint key and url order."""
    return Target.objects.select_related("endpoint", "health").order_by("endpoint__name", "endpoint__version", "url")


def target_health_summary(*, target_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Uptime (0..1) and p50/p95 latency (ms) over the last 100 results and 24 h / 7 d / 30 d of roll-ups."""
    return target_health_summaries([target_id], now=now)[target_id]


def target_health_summaries(target_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, dict[str, Any]]:
    """target_health_summary for many targets in two queries however many (a page of the health list):
    each target's last 100 results, ranked by a window function, and the roll-ups of the last 30 days."""
    now = now or timezone.now()
    ids = list(target_ids)
    if not ids:
        return {}
    recent: dict[int, list[tuple[bool, float | None]]] = {pk: [] for pk in ids}
    ranked = (
        HealthResult.objects.filter(target_id__in=ids)
        .annotate(rank=Window(RowNumber(), partition_by=[F("target_id")], order_by=F("id").desc()))
        .filter(rank__lte=100)
        .order_by("target_id", "-id")
    )
    for target_id, ok, latency in ranked.values_list("target_id", "ok", "latency_ms"):
        recent[target_id].append((ok, latency))
    rollups: dict[int, list[tuple[datetime, int, int, list[int]]]] = {pk: [] for pk in ids}
    for target_id, *row in HealthRollup.objects.filter(target_id__in=ids, hour__gt=now - WINDOWS["30d"]).values_list(
        "target_id", "hour", "checks", "failures", "latency_buckets"
    ):
        rollups[target_id].append(tuple(row))  # type: ignore[arg-type]
    return {pk: _summary(recent[pk], rollups[pk], now) for pk in ids}


def _summary(
    recent: list[tuple[bool, float | None]], rollups: list[tuple[datetime, int, int, list[int]]], now: datetime
) -> dict[str, Any]:
    latencies = [latency for _, latency in recent if latency is not None]
    summary: dict[str, Any] = {
        "last_100": {
            "checks": len(recent),
            "uptime": uptime(len(recent), sum(1 for ok, _ in recent if not ok)),
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
        }
    }
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


def _brief_queryset(targets: QuerySet[Target], now: datetime) -> QuerySet[Target]:
    """Targets with their health row and the counts behind `uptime`, annotated in the one statement:
    the last 100 results (ids at or above the 100th newest) and the roll-ups of the last 24 h."""
    results = HealthResult.objects.filter(target_id=OuterRef("pk"))
    hundredth = HealthResult.objects.filter(target_id=OuterRef(OuterRef("pk"))).order_by("-id").values("id")[99:100]
    recent = results.filter(id__gte=Coalesce(Subquery(hundredth), Value(0)))
    rollups = HealthRollup.objects.filter(target_id=OuterRef("pk"), hour__gt=now - WINDOWS["24h"])

    def total(queryset: QuerySet[Any], expression: Any) -> Subquery:
        annotated = queryset.order_by().annotate(_group=Value(1)).values("_group").annotate(_total=expression)
        return Subquery(annotated.values("_total")[:1], output_field=IntegerField())

    return targets.select_related("health", "endpoint").annotate(
        recent_checks=Coalesce(total(recent, Count("id")), 0),
        recent_failures=Coalesce(total(recent.filter(ok=False), Count("id")), 0),
        day_checks=Coalesce(total(rollups, Sum("checks")), 0),
        day_failures=Coalesce(total(rollups, Sum("failures")), 0),
    )


def _brief_of(target: Target, reasons: dict[int, str]) -> dict[str, Any]:
    row = getattr(target, "health", None) or TargetHealth(target_id=target.pk)
    return {
        "status": row.status,
        "reason": reasons.get(target.pk),
        "consecutive_successes": row.consecutive_successes,
        "consecutive_failures": row.consecutive_failures,
        "last_checked_at": row.last_checked_at,
        "last_error": row.last_error,
        "uptime": {
            "last_100": uptime(target.recent_checks, target.recent_failures),  # type: ignore[attr-defined]
            "24h": uptime(target.day_checks, target.day_failures),  # type: ignore[attr-defined]
        },
    }


def target_health_brief(target_ids: list[int], *, now: datetime | None = None) -> dict[int, dict[str, Any]]:
    """Each target's `health` as the endpoint representation carries it (ARCHITECTURE §8): status,
    counters, last check, last error, uptime (last 100 results, 24 h). Targets never checked are
    `unknown`. One query however many targets."""
    targets = list(_brief_queryset(Target.objects.filter(pk__in=list(target_ids)), now or timezone.now()))
    reasons = unknown_reasons(targets)
    found = {target.pk: _brief_of(target, reasons) for target in targets}
    return {target_id: found.get(target_id) or unknown_health() for target_id in target_ids}


def unknown_health(reason: str | None = None) -> dict[str, Any]:
    """The `health` of a target never checked (or not stored yet)."""
    return {
        "status": HealthStatus.UNKNOWN.value, "reason": reason, "consecutive_successes": 0, "consecutive_failures": 0,
        "last_checked_at": None, "last_error": "", "uptime": {"last_100": None, "24h": None},
    }  # fmt: skip


def endpoint_targets_health(endpoint_ids: list[int], *, now: datetime | None = None) -> dict[tuple[int, str], Any]:
    """`health` of every target of these endpoints, keyed `(endpoint id, url)`: one query for a page."""
    targets = list(_brief_queryset(Target.objects.filter(endpoint_id__in=list(endpoint_ids)), now or timezone.now()))
    reasons = unknown_reasons(targets)
    return {(target.endpoint_id, target.url): _brief_of(target, reasons) for target in targets}


def endpoint_health_report(*, endpoint_id: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """The admin's per-endpoint health page: per target, its health row, uptime and p50/p95 for the
    last 100 results and 24 h / 7 d / 30 d, and the points of its response-time charts (last results
    in minutes before now; hourly p50/p95 of the last 7 days in hours before now)."""
    now = now or timezone.now()
    report = []
    targets = list(Target.objects.filter(endpoint_id=endpoint_id).select_related("health", "endpoint").order_by("url"))
    reasons = unknown_reasons(targets)
    for target in targets:
        results = list(
            HealthResult.objects.filter(target_id=target.pk)
            .order_by("-id")
            .values_list("checked_at", "ok", "latency_ms")[:100]
        )
        rollups = HealthRollup.objects.filter(target_id=target.pk, hour__gt=now - WINDOWS["7d"]).order_by("hour")
        report.append(
            {
                "target": target,
                "health": getattr(target, "health", None) or TargetHealth(target_id=target.pk),
                "unknown_reason": UNKNOWN_REASON_LABELS.get(reasons.get(target.pk, ""), ""),
                "summary": target_health_summary(target_id=target.pk, now=now),
                "recent_points": [
                    ((checked_at - now).total_seconds() / 60, latency if ok else None)
                    for checked_at, ok, latency in reversed(results)
                ],
                "hourly_p95_points": [
                    ((r.hour - now).total_seconds() / 3600, bucket_percentile(r.latency_buckets, 0.95)) for r in rollups
                ],
                "hourly_p50_points": [
                    ((r.hour - now).total_seconds() / 3600, bucket_percentile(r.latency_buckets, 0.50)) for r in rollups
                ],
            }
        )
    return report
