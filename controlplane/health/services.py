"""Writes of the health app (ARCHITECTURE §7): claiming due targets, recording probe results, retention.

Health is operational state: a status change bumps `state_seq` (core.state.bump_state_seq) and
records an AuditEvent in the same transaction, and never makes a config revision.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Subquery, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from configdoc import effective_endpoint
from controlplane.core.actors import Actor
from controlplane.core.models import AuditEvent
from controlplane.core.state import bump_state_seq
from controlplane.routing.models import Endpoint, Target

from . import hysteresis
from .models import HealthResult, HealthRollup, TargetHealth
from .probes import ProbeResult, ProbeSpec, probe_all
from .stats import bucket_index, empty_buckets

RESULTS_KEPT = 100  # §7: the last 100 results per target
RETENTION_DAYS = 35  # §7: hourly roll-ups kept ~35 days
# A claim's lease outlives the probe's own timeout by this much, so a slow write never lets a second
# worker claim a target still being recorded; a crashed worker's targets come back after it.
LEASE_MARGIN_SECONDS = 15
# When a new target is due: long ago, so it is claimed first and whichever clock is used.
DUE_AT_ONCE = datetime(2000, 1, 1, tzinfo=UTC)
DISPATCH_LIMIT = 1000  # targets claimed per dispatcher run at most; the rest wait for the next tick
# A claim schedules the next check one interval after the due time it served, not after the claim, so
# the dispatcher's tick and a busy worker do not stretch every cycle. Two checks of a target are still
# never closer than (1 - SCHEDULE_SLACK) x interval: a claim later than that fraction of the interval
# (a worker behind, or an outage) schedules from the claim instead, so there is never a catch-up burst.
SCHEDULE_SLACK = 0.1


@dataclass(frozen=True)
class CheckPlan:
    """One target that has active checks, with its endpoint's effective health_check."""

    target_id: int
    endpoint_key: str
    url: str
    interval: float
    healthy_threshold: int
    unhealthy_threshold: int
    spec: ProbeSpec


def _health_check_defaults() -> dict[str, Any]:
    from controlplane.snapshots.models import DocumentDefaults

    row = DocumentDefaults.objects.filter(pk=1).values_list("health_check", flat=True).first()
    return dict(row or {})


def health_check_configured(effective: Mapping[str, Any]) -> bool:
    """True when an endpoint's effective config asks for active checks: health_check enabled with a `path`."""
    check = effective["health_check"]
    return bool(check.get("enabled", True) and check.get("path"))


def check_plans(*, endpoint_ids: Iterable[int] | None = None) -> dict[int, CheckPlan]:
    """Targets that have active checks, by target id: enabled targets of enabled endpoints whose
    effective health_check is enabled and has a `path` (§7). Others stay `unknown`."""
    defaults = _health_check_defaults()
    endpoints = Endpoint.objects.filter(enabled=True).prefetch_related("targets")
    if endpoint_ids is not None:
        endpoints = endpoints.filter(pk__in=list(endpoint_ids))
    plans: dict[int, CheckPlan] = {}
    for endpoint in endpoints:
        effective = effective_endpoint(endpoint.document, defaults)
        check = effective["health_check"]
        if not health_check_configured(effective):
            continue
        for target in endpoint.targets.all():
            if not target.enabled:
                continue
            plans[target.pk] = CheckPlan(
                target_id=target.pk,
                endpoint_key=endpoint.key,
                url=target.url,
                interval=float(check["interval"]),
                healthy_threshold=int(check["healthy_threshold"]),
                unhealthy_threshold=int(check["unhealthy_threshold"]),
                spec=ProbeSpec(
                    target_id=target.pk,
                    url=target.url,
                    path=check["path"],
                    timeout=float(check["timeout"]),
                    expected_statuses=tuple(check["expected_statuses"]),
                    tls=dict(effective.get("tls") or {}),
                ),
            )
    return plans


def health_rows_ensure(*, now: datetime | None = None) -> int:
    """Create the missing TargetHealth rows (new targets start `unknown`, due at `now`, else at once
    whatever the clocks say); returns how many."""
    missing = Target.objects.filter(health__isnull=True).values_list("pk", flat=True)
    rows = [TargetHealth(target_id=pk, next_check_at=now or DUE_AT_ONCE) for pk in missing]
    TargetHealth.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def targets_claim_due(
    plans: dict[int, CheckPlan], *, now: datetime | None = None, owner: str, limit: int = DISPATCH_LIMIT
) -> list[int]:
    """Claim the due targets among `plans` and return their ids.

    A target is due when `next_check_at` has passed and no unexpired lease holds it. On PostgreSQL one
    statement locks the due rows (FOR UPDATE SKIP LOCKED, so concurrent claimers split them instead of
    waiting) and sets `lease_until` and `next_check_at` (next_due below): a target is handed to one
    claimer per interval, and one whose worker crashed comes back when its lease and interval pass.
    Without `now` (tests pass one) PostgreSQL's clock is used, so workers on hosts whose clocks
    disagree still agree on what is due.
    """
    if not plans:
        return []
    ids = list(plans)
    intervals = [plans[pk].interval for pk in ids]
    leases = [plans[pk].spec.timeout + LEASE_MARGIN_SECONDS for pk in ids]
    if connection.vendor == "postgresql":
        table = TargetHealth._meta.db_table
        sql = f"""
            WITH clock AS (
                SELECT COALESCE(%s::timestamptz, statement_timestamp()) AS now
            ), plan AS (
                SELECT * FROM unnest(%s::bigint[], %s::double precision[], %s::double precision[])
                    AS p(target_id, interval_s, lease_s)
            ), due AS (
                SELECT h.id FROM {table} h JOIN plan ON plan.target_id = h.target_id, clock
                WHERE h.next_check_at <= clock.now AND (h.lease_until IS NULL OR h.lease_until <= clock.now)
                ORDER BY h.next_check_at, h.id
                LIMIT %s
                FOR UPDATE OF h SKIP LOCKED
            )
            UPDATE {table} h
            SET lease_until = clock.now + make_interval(secs => plan.lease_s),
                next_check_at = GREATEST(
                    h.next_check_at + make_interval(secs => plan.interval_s),
                    clock.now + make_interval(secs => plan.interval_s * (1 - %s::double precision))
                ),
                lease_owner = %s
            FROM due, plan, clock
            WHERE h.id = due.id AND plan.target_id = h.target_id
            RETURNING h.target_id
        """  # noqa: S608 - the table name is ours; every value is a parameter
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, ids, intervals, leases, limit, SCHEDULE_SLACK, owner])
            return [row[0] for row in cursor.fetchall()]
    now = now or timezone.now()
    # SQLite (the embedded setup): its transactions here are IMMEDIATE, which locks the whole
    # database for writing, so a plain read-then-write transaction cannot interleave with another.
    with transaction.atomic():
        due = list(
            TargetHealth.objects.filter(target_id__in=ids, next_check_at__lte=now)
            .exclude(lease_until__gt=now)
            .order_by("next_check_at", "pk")
            .values_list("pk", "target_id", "next_check_at")[:limit]
        )
        for pk, target_id, due_at in due:
            plan = plans[target_id]
            TargetHealth.objects.filter(pk=pk).update(
                lease_until=now + timedelta(seconds=plan.spec.timeout + LEASE_MARGIN_SECONDS),
                next_check_at=next_due(due_at, now=now, interval=plan.interval),
                lease_owner=owner,
            )
        return [target_id for _, target_id, _ in due]


def next_due(due_at: datetime, *, now: datetime, interval: float) -> datetime:
    """When a target claimed at `now` for its check due at `due_at` is due next: one interval after
    `due_at`, so the cycle stays the interval however late within it the claim came; but never sooner
    than (1 - SCHEDULE_SLACK) x interval after the claim, so a late claim (a busy worker, an outage)
    never makes a burst of catch-up checks. The PostgreSQL statement of targets_claim_due says the same."""
    return max(due_at + timedelta(seconds=interval), now + timedelta(seconds=interval * (1 - SCHEDULE_SLACK)))


def run_probes(specs: Sequence[ProbeSpec]) -> list[ProbeResult]:
    """Probe concurrently. Call outside any transaction: a probe may take `timeout` seconds, and
    nothing may hold row locks (or a database connection's transaction) that long."""
    allow = bool(getattr(settings, "GATEWAY_ALLOW_LINK_LOCAL_TARGETS", False))
    return asyncio.run(probe_all(specs, allow_link_local=allow))


@transaction.atomic
def health_results_record(
    *, results: Sequence[ProbeResult], plans: dict[int, CheckPlan], actor: Actor
) -> list[TargetHealth]:
    """Write a batch of probe results together: hysteresis, last results (trimmed to RESULTS_KEPT),
    hourly roll-ups, lease release; a status change bumps `state_seq` once and records an event each."""
    by_target = {result.target_id: result for result in results if result.target_id in plans}
    if not by_target:
        return []
    health_rows_ensure()
    # Lock in id order, so two writers of overlapping batches cannot deadlock; the lock also serializes
    # the roll-up upserts below per target.
    rows = list(TargetHealth.objects.select_for_update().filter(target_id__in=list(by_target)).order_by("pk"))
    # A target deleted while it was being probed has no row any more: its result is dropped.
    by_target = {row.target_id: by_target[row.target_id] for row in rows}
    changed: list[tuple[TargetHealth, str]] = []
    for row in rows:
        result = by_target[row.target_id]
        plan = plans[row.target_id]
        before = hysteresis.HealthState(row.status, row.consecutive_successes, row.consecutive_failures)
        after = hysteresis.advance(
            before,
            ok=result.ok,
            healthy_threshold=plan.healthy_threshold,
            unhealthy_threshold=plan.unhealthy_threshold,
        )
        row.status = after.status
        row.consecutive_successes = after.consecutive_successes
        row.consecutive_failures = after.consecutive_failures
        row.last_checked_at = result.checked_at
        row.last_error = result.reason
        row.last_latency_ms = result.latency_ms
        row.lease_until = None
        row.lease_owner = ""
        if after.status != before.status:
            row.changed_at = result.checked_at
            changed.append((row, before.status))
    TargetHealth.objects.bulk_update(
        rows,
        [
            "status",
            "consecutive_successes",
            "consecutive_failures",
            "last_checked_at",
            "last_error",
            "last_latency_ms",
            "lease_until",
            "lease_owner",
            "changed_at",
        ],
    )
    HealthResult.objects.bulk_create(
        HealthResult(
            target_id=r.target_id,
            checked_at=r.checked_at,
            ok=r.ok,
            status_code=r.status_code,
            latency_ms=r.latency_ms,
            reason=r.reason,
        )
        for r in by_target.values()
    )
    _trim_results(by_target)
    _rollups_add(by_target.values())
    for row, old_status in changed:
        plan = plans[row.target_id]
        AuditEvent.objects.create(
            actor_id=actor.user_id,
            actor_label=actor.label,
            action="target.health_change",
            object_type="target",
            object_key=f"{plan.endpoint_key} {plan.url}"[:255],
            before={"status": old_status},
            after={"status": row.status, "reason": row.last_error},
        )
    if changed:
        bump_state_seq()
    return rows


def _trim_results(target_ids: Iterable[int]) -> None:
    """Keep the last RESULTS_KEPT results of each of these targets: one statement for the whole batch."""
    ranked = (
        HealthResult.objects.filter(target_id__in=list(target_ids))
        .annotate(rank=Window(RowNumber(), partition_by=[F("target_id")], order_by=F("id").desc()))
        .filter(rank__gt=RESULTS_KEPT)
        .values("id")
    )
    HealthResult.objects.filter(id__in=Subquery(ranked)).delete()


def _rollups_add(results: Iterable[ProbeResult]) -> None:
    """Add a batch to the hourly roll-ups: one read, one insert, one update for the whole batch. The
    caller holds the targets' TargetHealth row locks, so no other writer touches these roll-ups meanwhile."""
    grouped: dict[tuple[int, datetime], list[ProbeResult]] = {}
    for result in results:
        hour = result.checked_at.replace(minute=0, second=0, microsecond=0)
        grouped.setdefault((result.target_id, hour), []).append(result)
    if not grouped:
        return
    existing = {
        (rollup.target_id, rollup.hour): rollup
        for rollup in HealthRollup.objects.filter(
            target_id__in={target_id for target_id, _ in grouped}, hour__in={hour for _, hour in grouped}
        )
    }
    created: list[HealthRollup] = []
    updated: list[HealthRollup] = []
    for (target_id, hour), batch in grouped.items():
        rollup = existing.get((target_id, hour))
        if rollup is None:
            rollup = HealthRollup(target_id=target_id, hour=hour, checks=0, failures=0)
            created.append(rollup)
        else:
            updated.append(rollup)
        buckets = list(rollup.latency_buckets or []) or empty_buckets()
        for result in batch:
            rollup.checks += 1
            rollup.failures += 0 if result.ok else 1
            # Latency is measured to the response head; transport failures have none to count.
            if result.latency_ms is not None:
                buckets[bucket_index(result.latency_ms)] += 1
        rollup.latency_buckets = buckets
    HealthRollup.objects.bulk_create(created, batch_size=500)
    HealthRollup.objects.bulk_update(updated, ["checks", "failures", "latency_buckets"], batch_size=500)


def health_checks_run_due(*, limit: int = DISPATCH_LIMIT, now: datetime | None = None) -> int:
    """The dispatcher: claim due targets, probe them concurrently, record the results. Returns how many."""
    health_rows_ensure(now=now)
    plans = check_plans()
    claimed = targets_claim_due(plans, now=now, owner=lease_owner(), limit=limit)
    if not claimed:
        return 0
    results = run_probes([plans[pk].spec for pk in claimed])
    health_results_record(results=results, plans=plans, actor=Actor.task("health_check"))
    return len(results)


def endpoint_check_now(*, endpoint: Endpoint, actor: Actor) -> list[tuple[CheckPlan, ProbeResult]]:
    """Probe one endpoint's checked targets now, record the results (they count like any probe) and
    return them. Raises ValueError when the endpoint has no active checks."""
    health_rows_ensure()
    plans = check_plans(endpoint_ids=[endpoint.pk])
    if not plans:
        raise ValueError(
            f"endpoint {endpoint.key} has no active health checks"
            " (disabled, no enabled target, or no health_check.path)"
        )
    ordered = sorted(plans.values(), key=lambda plan: plan.url)
    results = run_probes([plan.spec for plan in ordered])
    health_results_record(results=results, plans=plans, actor=actor)
    return list(zip(ordered, results, strict=True))


def health_history_purge(*, now: datetime | None = None) -> int:
    """Delete roll-ups (and any stray results) older than RETENTION_DAYS; returns how many rows went."""
    cutoff = (now or timezone.now()) - timedelta(days=RETENTION_DAYS)
    rollups, _ = HealthRollup.objects.filter(hour__lt=cutoff).delete()
    results, _ = HealthResult.objects.filter(checked_at__lt=cutoff).delete()
    return rollups + results
